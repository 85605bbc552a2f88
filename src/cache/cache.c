/* Cache life cycle, append (sinks -> window -> flush into quantized groups), exact accounting. */
#include "cache.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../common/fp16.h"
#include "../common/status.h"
#include "../methods/methods.h"
#include "../quant/quant.h"

static atomic_size_t g_live_bytes;

size_t kvs__live_bytes(void) { return atomic_load(&g_live_bytes); }

/* Every allocation the cache holds goes through here so kvs_cache_bytes is exact. */
static void *cache_alloc(kvs_cache *c, size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (p) {
        c->bytes += n;
        atomic_fetch_add(&g_live_bytes, n);
    }
    return p;
}

static void cache_release(kvs_cache *c, void *p, size_t n) {
    if (!p) return;
    free(p);
    c->bytes -= n;
    atomic_fetch_sub(&g_live_bytes, n);
}

/* Sizes of the fixed part; shared by create and kvs_cache_bytes_for. 0 on overflow. */
typedef struct {
    size_t fixed;     /* struct, layer and stream arrays, block tables, sink and window buffers */
    size_t per_group; /* one group of one layer: n_kv blocks + norms */
} sizes;

static int compute_sizes(const kvs_config *cfg, sizes *s) {
    size_t L = (size_t)cfg->n_layers, H = (size_t)cfg->n_kv_heads, d = (size_t)cfg->head_dim;
    size_t G = (size_t)cfg->group, maxg = ((size_t)cfg->max_tokens + G - 1) / G;
    size_t win_cap = (size_t)cfg->window + G, t, u, streams;
    size_t f = sizeof(struct kvs_cache);
    if (!kvs_mul_size(L, sizeof(kvs_layer), &t) || !kvs_add_size(f, t, &f)) return 0;
    if (!kvs_mul_size(L, H, &streams) || !kvs_mul_size(streams, sizeof(kvs_stream), &t) ||
        !kvs_add_size(f, t, &f))
        return 0;
    /* block tables */
    if (!kvs_mul_size(streams, maxg, &t) || !kvs_mul_size(t, sizeof(uint8_t *), &t) || !kvs_add_size(f, t, &f))
        return 0;
    if (cfg->scale == KVS_SCALE_TOKEN &&
        (!kvs_mul_size(L, maxg, &t) || !kvs_mul_size(t, sizeof(float *), &t) || !kvs_add_size(f, t, &f)))
        return 0;
    /* sinks and window: k and v, fp32 */
    if (!kvs_add_size(win_cap, (size_t)cfg->sinks, &u) || !kvs_mul_size(u, d * 2 * sizeof(float), &t) ||
        !kvs_mul_size(t, streams, &t) || !kvs_add_size(f, t, &f))
        return 0;
    s->fixed = f;
    size_t blk = kvs_kgroup_bytes(cfg->k_type, cfg->head_dim, cfg->group) +
                 kvs_vgroup_bytes(cfg->v_type, cfg->head_dim, cfg->group);
    s->per_group = H * blk + (cfg->scale == KVS_SCALE_TOKEN ? G * sizeof(float) : 0);
    return 1;
}

/* State of one layer after n tokens, the same arithmetic append uses. */
static void layer_counts(const kvs_config *cfg, long long n, long long *sinks, long long *groups,
                         long long *win) {
    long long S = cfg->sinks, W = cfg->window, G = cfg->group;
    *sinks = n < S ? n : S;
    long long rest = n - *sinks;
    *groups = rest >= W + G ? (rest - W) / G : 0;
    *win = rest - *groups * G;
}

kvs_status kvs_cache_bytes_for(const kvs_config *cfg, long long n_tokens, size_t *bytes) {
    if (!cfg || !bytes || n_tokens < 0) return kvs_report(KVS_ERR_ARG, "kvs_cache_bytes_for: bad argument");
    kvs_status st = kvs_config_validate(cfg);
    if (st) return st;
    sizes s;
    long long sk, gr, wi;
    size_t total;
    layer_counts(cfg, n_tokens, &sk, &gr, &wi);
    if (!compute_sizes(cfg, &s) || !kvs_mul_size(s.per_group, (size_t)gr, &total) ||
        !kvs_mul_size(total, (size_t)cfg->n_layers, &total) || !kvs_add_size(total, s.fixed, bytes))
        return kvs_report(KVS_ERR_NOMEM, "kvs_cache_bytes_for: size overflows");
    return KVS_OK;
}

void kvs_cache_free(kvs_cache *c) {
    if (!c) return;
    size_t maxg = (size_t)c->max_groups;
    size_t blk = c->kbytes + c->vbytes, winb = (size_t)c->win_cap * c->d * sizeof(float);
    size_t sinkb = (size_t)c->cfg.sinks * c->d * sizeof(float);
    if (c->streams)
        for (int l = 0; l < c->cfg.n_layers; l++)
            for (int h = 0; h < c->n_kv; h++) {
                kvs_stream *s = kvs_stream_at(c, l, h);
                if (s->blk) {
                    for (size_t i = 0; i < maxg; i++) cache_release(c, s->blk[i], blk);
                    cache_release(c, s->blk, maxg * sizeof(uint8_t *));
                }
                cache_release(c, s->sink_k, sinkb);
                cache_release(c, s->sink_v, sinkb);
                cache_release(c, s->win_k, winb);
                cache_release(c, s->win_v, winb);
            }
    if (c->layers)
        for (int l = 0; l < c->cfg.n_layers; l++) {
            kvs_layer *ly = &c->layers[l];
            if (!ly->norm) continue;
            for (size_t i = 0; i < maxg; i++) cache_release(c, ly->norm[i], (size_t)c->G * sizeof(float));
            cache_release(c, ly->norm, maxg * sizeof(float *));
        }
    cache_release(c, c->streams, (size_t)c->cfg.n_layers * c->n_kv * sizeof(kvs_stream));
    cache_release(c, c->layers, (size_t)c->cfg.n_layers * sizeof(kvs_layer));
    atomic_fetch_sub(&g_live_bytes, sizeof *c);
    free(c);
}

kvs_status kvs_cache_create(const kvs_config *cfg, kvs_cache **out) {
    if (!cfg || !out) return kvs_report(KVS_ERR_ARG, "kvs_cache_create: NULL argument");
    *out = NULL;
    kvs_status st = kvs_config_validate(cfg);
    if (st) return st;
    sizes sz;
    if (!compute_sizes(cfg, &sz)) return kvs_report(KVS_ERR_NOMEM, "kvs_cache_create: cache size overflows");
    if (sz.fixed > ((size_t)1 << 40)) /* tables and windows alone beyond 1 TiB: refuse before allocating */
        return kvs_report(KVS_ERR_NOMEM, "kvs_cache_create: fixed part alone needs %zu bytes", sz.fixed);
    kvs_cache *c = calloc(1, sizeof *c);
    if (!c) return kvs_report(KVS_ERR_NOMEM, "kvs_cache_create: out of memory");
    atomic_fetch_add(&g_live_bytes, sizeof *c);
    c->bytes = sizeof *c;
    c->cfg = *cfg;
    c->G = cfg->group;
    c->d = cfg->head_dim;
    c->n_kv = cfg->n_kv_heads;
    c->g = cfg->n_heads / cfg->n_kv_heads;
    c->win_cap = cfg->window + cfg->group;
    c->max_groups = (cfg->max_tokens + cfg->group - 1) / cfg->group;
    c->tau = cfg->tau > 0.0f ? cfg->tau : 1.0f / sqrtf((float)cfg->head_dim);
    c->kbytes = kvs_kgroup_bytes(cfg->k_type, c->d, c->G);
    c->vbytes = kvs_vgroup_bytes(cfg->v_type, c->d, c->G);
    size_t maxg = (size_t)c->max_groups, L = (size_t)cfg->n_layers;
    size_t winb = (size_t)c->win_cap * c->d * sizeof(float), sinkb = (size_t)cfg->sinks * c->d * sizeof(float);
    c->layers = cache_alloc(c, L * sizeof(kvs_layer));
    c->streams = cache_alloc(c, L * c->n_kv * sizeof(kvs_stream));
    if (!c->layers || !c->streams) goto oom;
    for (size_t l = 0; l < L; l++) {
        if (cfg->scale == KVS_SCALE_TOKEN && !(c->layers[l].norm = cache_alloc(c, maxg * sizeof(float *)))) goto oom;
        for (int h = 0; h < c->n_kv; h++) {
            kvs_stream *s = kvs_stream_at(c, (int)l, h);
            if (!(s->blk = cache_alloc(c, maxg * sizeof(uint8_t *)))) goto oom;
            if (sinkb && (!(s->sink_k = cache_alloc(c, sinkb)) || !(s->sink_v = cache_alloc(c, sinkb)))) goto oom;
            if (!(s->win_k = cache_alloc(c, winb)) || !(s->win_v = cache_alloc(c, winb))) goto oom;
        }
    }
    if (c->bytes != sz.fixed) { /* the formula in compute_sizes must describe what we allocate */
        kvs_cache_free(c);
        return kvs_report(KVS_ERR_INTERNAL, "kvs_cache_create: accounting mismatch");
    }
    *out = c;
    return KVS_OK;
oom:
    kvs_cache_free(c);
    return kvs_report(KVS_ERR_NOMEM, "kvs_cache_create: out of memory for %d layers x %d KV heads x %d tokens",
                    cfg->n_layers, cfg->n_kv_heads, cfg->max_tokens);
}

void kvs_cache_reset(kvs_cache *c) {
    if (!c) return;
    size_t blk = c->kbytes + c->vbytes;
    for (int l = 0; l < c->cfg.n_layers; l++) {
        kvs_layer *ly = &c->layers[l];
        for (int h = 0; h < c->n_kv; h++) {
            kvs_stream *s = kvs_stream_at(c, l, h);
            for (int i = 0; i < ly->n_groups; i++) {
                cache_release(c, s->blk[i], blk);
                s->blk[i] = NULL;
            }
        }
        if (ly->norm)
            for (int i = 0; i < ly->n_groups; i++) {
                cache_release(c, ly->norm[i], (size_t)c->G * sizeof(float));
                ly->norm[i] = NULL;
            }
        ly->n_sink = ly->n_groups = ly->n_win = 0;
    }
}

const kvs_config *kvs_cache_config(const kvs_cache *c) { return c ? &c->cfg : NULL; }

int kvs_cache_tokens(const kvs_cache *c, int layer) {
    if (!c || layer < 0 || layer >= c->cfg.n_layers) return -1;
    const kvs_layer *ly = &c->layers[layer];
    return ly->n_sink + ly->n_groups * c->G + ly->n_win;
}

size_t kvs_cache_bytes(const kvs_cache *c) { return c ? c->bytes : 0; }

double kvs_cache_bits_per_element(const kvs_cache *c) {
    if (!c) return 0.0;
    double elems = 0.0;
    for (int l = 0; l < c->cfg.n_layers; l++) elems += (double)kvs_cache_tokens(c, l);
    elems *= (double)c->n_kv * c->d * 2.0;
    return elems > 0.0 ? 8.0 * (double)c->bytes / elems : 0.0;
}

/* Compress the oldest G window tokens of every KV head of `layer` into group blocks that the
 * caller has already allocated (blocks[h], norm). tmp: [n_kv + 1][G][d] scratch. */
static void flush_group(kvs_cache *c, int layer, uint8_t **blocks, float *norm, float *tmp) {
    const int G = c->G, d = c->d, H = c->n_kv;
    const kvs_config *cfg = &c->cfg;
    for (int h = 0; h < H; h++) {
        kvs_stream *s = kvs_stream_at(c, layer, h);
        memcpy(tmp + (size_t)h * G * d, s->win_k, (size_t)G * d * sizeof(float));
        if (cfg->rotate == KVS_ROTATE_HADAMARD)
            for (int t = 0; t < G; t++) kvs_fwht(tmp + ((size_t)h * G + t) * d, d);
    }
    if (norm) /* OScaR: one norm per token over all KV heads of the layer, rotated basis */
        for (int t = 0; t < G; t++) {
            norm[t] = kvs_oscar_norm(tmp + (size_t)t * d, H, d, (size_t)G * d);
            const float inv = 1.0f / norm[t];
            for (int h = 0; h < H; h++) {
                float *x = tmp + ((size_t)h * G + t) * d;
                for (int i = 0; i < d; i++) x[i] *= inv;
            }
        }
    float *vr = tmp + (size_t)H * G * d; /* [G][d] values of one head */
    for (int h = 0; h < H; h++) {
        kvs_stream *s = kvs_stream_at(c, layer, h);
        kvs_quant_keys(cfg->k_type, tmp + (size_t)h * G * d, G, d, blocks[h]);
        memcpy(vr, s->win_v, (size_t)G * d * sizeof(float));
        if (cfg->rotate == KVS_ROTATE_HADAMARD)
            for (int t = 0; t < G; t++) kvs_fwht(vr + (size_t)t * d, d);
        kvs_quant_values(cfg->v_type, vr, G, d, blocks[h] + c->kbytes);
    }
}

/* The largest magnitude a stored element may reach: fp16 metadata and fp16 elements. A rotated
 * vector's entries are bounded by its L2 norm, so that is what is checked when rotating. */
static int exceeds_range(const float *x, int d, int rotated) {
    if (rotated) {
        double ss = 0.0;
        for (int i = 0; i < d; i++) ss += (double)x[i] * x[i];
        return ss > 65504.0 * 65504.0;
    }
    for (int i = 0; i < d; i++)
        if (fabsf(x[i]) > 65504.0f) return 1;
    return 0;
}

static kvs_status check_rows(const kvs_cache *c, const float *x, int n, const char *what, int quantized) {
    const int d = c->d, H = c->n_kv;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < H; h++) {
            const float *r = x + ((size_t)t * H + h) * d;
            for (int i = 0; i < d; i++)
                if (!isfinite(r[i]))
                    return kvs_report(KVS_ERR_NONFINITE, "append: %s[token %d][head %d][%d] = %g is not finite",
                                    what, t, h, i, (double)r[i]);
            if (quantized && exceeds_range(r, d, c->cfg.rotate == KVS_ROTATE_HADAMARD))
                return kvs_report(KVS_ERR_RANGE, "append: %s[token %d][head %d] exceeds the fp16 range (65504) of the cache type",
                                what, t, h);
        }
    return KVS_OK;
}

kvs_status kvs_cache_append(kvs_cache *c, int layer, int n, const float *k, const float *v) {
    if (!c || !k || !v) return kvs_report(KVS_ERR_ARG, "append: NULL argument");
    if (layer < 0 || layer >= c->cfg.n_layers)
        return kvs_report(KVS_ERR_ARG, "append: layer %d out of range [0, %d)", layer, c->cfg.n_layers);
    if (n < 1) return kvs_report(KVS_ERR_ARG, "append: n = %d tokens, need >= 1", n);
    kvs_layer *ly = &c->layers[layer];
    long long have = kvs_cache_tokens(c, layer);
    if (have + n > c->cfg.max_tokens)
        return kvs_report(KVS_ERR_CAPACITY, "append: layer %d holds %lld tokens, %d more exceed max_tokens=%d",
                        layer, have, n, c->cfg.max_tokens);
    kvs_status st = check_rows(c, k, n, "k", c->cfg.k_type != KVS_TYPE_FP32);
    if (!st) st = check_rows(c, v, n, "v", c->cfg.v_type != KVS_TYPE_FP32);
    if (st) return st;

    /* Allocate every block this append will fill before changing anything: all or nothing. */
    const int G = c->G, d = c->d, H = c->n_kv, W = c->cfg.window;
    long long s0, g0, w0, s1, g1, w1;
    layer_counts(&c->cfg, have, &s0, &g0, &w0);
    layer_counts(&c->cfg, have + n, &s1, &g1, &w1);
    const int new_groups = (int)(g1 - g0);
    const size_t blk = c->kbytes + c->vbytes;
    float *tmp = NULL;
    if (new_groups > 0) {
        tmp = malloc((size_t)(H + 1) * G * d * sizeof(float));
        if (!tmp) return kvs_report(KVS_ERR_NOMEM, "append: out of memory");
        for (int i = 0; i < new_groups; i++) {
            int gi = (int)g0 + i;
            for (int h = 0; h < H; h++) {
                kvs_stream *s = kvs_stream_at(c, layer, h);
                if (!(s->blk[gi] = cache_alloc(c, blk))) goto oom;
            }
            if (ly->norm && !(ly->norm[gi] = cache_alloc(c, (size_t)G * sizeof(float)))) goto oom;
        }
    }
    uint8_t *blocks[1024];
    for (int t = 0; t < n; t++) {
        const float *kt = k + (size_t)t * H * d, *vt = v + (size_t)t * H * d;
        if (ly->n_sink < c->cfg.sinks) {
            for (int h = 0; h < H; h++) {
                kvs_stream *s = kvs_stream_at(c, layer, h);
                memcpy(s->sink_k + (size_t)ly->n_sink * d, kt + (size_t)h * d, (size_t)d * sizeof(float));
                memcpy(s->sink_v + (size_t)ly->n_sink * d, vt + (size_t)h * d, (size_t)d * sizeof(float));
            }
            ly->n_sink++;
            continue;
        }
        for (int h = 0; h < H; h++) {
            kvs_stream *s = kvs_stream_at(c, layer, h);
            memcpy(s->win_k + (size_t)ly->n_win * d, kt + (size_t)h * d, (size_t)d * sizeof(float));
            memcpy(s->win_v + (size_t)ly->n_win * d, vt + (size_t)h * d, (size_t)d * sizeof(float));
        }
        if (++ly->n_win == W + G) {
            for (int h = 0; h < H; h++) blocks[h] = kvs_stream_at(c, layer, h)->blk[ly->n_groups];
            flush_group(c, layer, blocks, ly->norm ? ly->norm[ly->n_groups] : NULL, tmp);
            for (int h = 0; h < H; h++) {
                kvs_stream *s = kvs_stream_at(c, layer, h);
                memmove(s->win_k, s->win_k + (size_t)G * d, (size_t)W * d * sizeof(float));
                memmove(s->win_v, s->win_v + (size_t)G * d, (size_t)W * d * sizeof(float));
            }
            ly->n_win -= G;
            ly->n_groups++;
        }
    }
    free(tmp);
    return KVS_OK;
oom:
    for (int i = 0; i < new_groups; i++) {
        int gi = (int)g0 + i;
        for (int h = 0; h < H; h++) {
            kvs_stream *s = kvs_stream_at(c, layer, h);
            cache_release(c, s->blk[gi], blk);
            s->blk[gi] = NULL;
        }
        if (ly->norm) {
            cache_release(c, ly->norm[gi], (size_t)G * sizeof(float));
            ly->norm[gi] = NULL;
        }
    }
    free(tmp);
    return kvs_report(KVS_ERR_NOMEM, "append: out of memory for %d new groups", new_groups);
}
