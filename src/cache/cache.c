/* Cache life cycle, append (sinks -> window -> quantized groups), exact accounting. */
#include "cache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/status.h"
#include "../methods/methods.h"
#include "../quant/quant.h"
#include "evict.h"
#include "lowrank.h"
#include "pack.h"

static void *libc_alloc(void *user, size_t n) {
    (void)user;
    return malloc(n);
}
static void libc_free(void *user, void *p, size_t n) {
    (void)user;
    (void)n;
    free(p);
}

/* Every allocation the cache holds goes through here so kvs_cache_bytes is exact. Zeroed: code
 * bits are OR-ed into fresh blocks. */
static void *cache_alloc(kvs_cache *c, size_t n) {
    void *p = c->mem.alloc(c->mem.user, n ? n : 1);
    if (p) {
        memset(p, 0, n ? n : 1);
        c->bytes += n;
    }
    return p;
}

static void cache_release(kvs_cache *c, void *p, size_t n) {
    if (!p) return;
    c->mem.free(c->mem.user, p, n ? n : 1);
    c->bytes -= n;
}

void kvs__counts(const kvs_method *m, long long n, long long *sinks, long long *quant, long long *win) {
    const long long S = m->sinks, W = m->window, U = m->unit;
    *sinks = n < S ? n : S;
    const long long rest = n - *sinks;
    *quant = rest >= W + U ? (rest - W) / U * U : 0;
    *win = rest - *quant;
}

/* The plan of a validated config, and for a low-rank one its per-layer plans (*lm: malloc'd, the
 * caller frees it; NULL otherwise). */
static kvs_status resolve(const kvs_config *cfg, kvs_method *m, kvs_method **lm) {
    *lm = NULL;
    kvs__method_resolve(cfg, m);
    if (!cfg->rank_k) return KVS_OK;
    const int L = cfg->n_layers;
    int *r = malloc(sizeof(int) * 2 * (size_t)L);
    if (!r || !(*lm = malloc(sizeof(kvs_method) * (size_t)L))) {
        free(r);
        return kvs_report(KVS_ERR_NOMEM, "kvs_cache_create: out of memory for %d layer plans", L);
    }
    const kvs_status st = kvs__lowrank_ranks(cfg, r, r + L);
    for (int l = 0; !st && l < L; l++) {
        (*lm)[l] = *m;
        kvs__method_ranks(cfg, r[l], r[L + l], &(*lm)[l]);
    }
    free(r);
    if (st) free(*lm), *lm = NULL;
    return st;
}

static size_t bases_floats(const kvs_config *cfg, const kvs_method *lm) {
    size_t n = 0;
    for (int l = 0; lm && l < cfg->n_layers; l++) n += (size_t)lm[l].key.dim + (size_t)cfg->n_kv_heads * lm[l].value.dim;
    return n * (size_t)cfg->head_dim;
}

/* Sizes of the fixed part; shared by create and kvs_cache_bytes_for. 0 on overflow. */
typedef struct {
    size_t fixed;     /* struct, layer and stream arrays, block tables, sink and window buffers */
    size_t per_group; /* one group in every layer: n_kv blocks + norms, summed over the layers */
} sizes;

static int compute_sizes(const kvs_config *cfg, const kvs_method *m, const kvs_method *lm, sizes *s) {
    size_t L = (size_t)cfg->n_layers, H = (size_t)cfg->n_kv_heads, d = (size_t)cfg->head_dim;
    size_t G = (size_t)cfg->group, maxg = ((size_t)cfg->max_tokens + G - 1) / G;
    size_t win_cap = (size_t)m->window + (size_t)m->unit, t, u, streams;
    size_t f = sizeof(struct kvs_cache);
    if (!kvs_mul_size(L, sizeof(kvs_layer), &t) || !kvs_add_size(f, t, &f)) return 0;
    if (!kvs_mul_size(L, H, &streams) || !kvs_mul_size(streams, sizeof(kvs_stream), &t) ||
        !kvs_add_size(f, t, &f))
        return 0;
    /* block tables */
    if (!kvs_mul_size(streams, maxg, &t) || !kvs_mul_size(t, sizeof(uint8_t *), &t) || !kvs_add_size(f, t, &f))
        return 0;
    if (m->token_norm &&
        (!kvs_mul_size(L, maxg, &t) || !kvs_mul_size(t, sizeof(float *), &t) || !kvs_add_size(f, t, &f)))
        return 0;
    /* sinks and window: k and v, fp32 */
    if (!kvs_add_size(win_cap, (size_t)cfg->sinks, &u) || !kvs_mul_size(u, d * 2 * sizeof(float), &t) ||
        !kvs_mul_size(t, streams, &t) || !kvs_add_size(f, t, &f))
        return 0;
    /* eviction plan: one drop time per (stream, block) */
    if (!kvs_mul_size(streams, (size_t)kvs__evict_n_blocks(cfg), &t) || !kvs_mul_size(t, sizeof(int32_t), &t) ||
        !kvs_add_size(f, t, &f))
        return 0;
    /* low-rank plans: the layers' plans, the cache's copy of its bases, the RoPE table */
    if (lm && (!kvs_mul_size(bases_floats(cfg, lm), sizeof(float), &t) || !kvs_add_size(f, t, &f) ||
               !kvs_mul_size(L, sizeof(kvs_method), &t) || !kvs_add_size(f, t, &f) ||
               !kvs_mul_size((size_t)cfg->max_tokens, d * sizeof(float), &t) || !kvs_add_size(f, t, &f)))
        return 0;
    s->fixed = f;
    s->per_group = 0;
    for (size_t l = 0; l < L; l++) {
        const kvs_method *x = lm ? &lm[l] : m;
        s->per_group += H * (x->key.bytes + x->value.bytes) + (m->token_norm ? G * sizeof(float) : 0);
    }
    return 1;
}

kvs_status kvs_cache_bytes_for(const kvs_config *cfg, long long n_tokens, size_t *bytes) {
    if (!cfg || !bytes || n_tokens < 0) return kvs_report(KVS_ERR_ARG, "kvs_cache_bytes_for: bad argument");
    kvs_status st = kvs_config_validate(cfg);
    if (st) return st;
    sizes s;
    long long sk, q, wi;
    size_t total;
    kvs_method m, *lm;
    if ((st = resolve(cfg, &m, &lm))) return st;
    kvs__counts(&m, n_tokens, &sk, &q, &wi);
    const long long groups = (q + cfg->group - 1) / cfg->group;
    if (!compute_sizes(cfg, &m, lm, &s)) {
        free(lm);
        return kvs_report(KVS_ERR_NOMEM, "kvs_cache_bytes_for: size overflows");
    }
    if (cfg->evict == KVS_EVICT_NONE || n_tokens > cfg->max_tokens) {
        free(lm);
        if (!kvs_mul_size(s.per_group, (size_t)groups, &total) || !kvs_add_size(total, s.fixed, bytes))
            return kvs_report(KVS_ERR_NOMEM, "kvs_cache_bytes_for: size overflows");
        return KVS_OK;
    }
    /* with eviction: the groups the plan still keeps after n_tokens appends, per stream */
    kvs_evict_plan plan;
    if ((st = kvs__evict_plan(cfg, &plan))) {
        free(lm);
        return st;
    }
    const int gpb = plan.blk_tokens / cfg->group;
    total = s.fixed;
    for (int l = 0; l < cfg->n_layers; l++) {
        const kvs_method *x = lm ? &lm[l] : &m;
        const size_t blk = x->key.bytes + x->value.bytes;
        for (long long gi = 0; gi < groups; gi++) {
            int live = 0;
            for (int h = 0; h < cfg->n_kv_heads; h++)
                live += plan.drop[((size_t)l * cfg->n_kv_heads + h) * plan.n_blocks + gi / gpb] > n_tokens;
            total += (size_t)live * blk + (live && m.token_norm ? (size_t)cfg->group * sizeof(float) : 0);
        }
    }
    kvs__evict_plan_free(&plan);
    free(lm);
    *bytes = total;
    return KVS_OK;
}

void kvs_cache_free(kvs_cache *c) {
    if (!c) return;
    size_t maxg = (size_t)c->max_groups;
    size_t winb = (size_t)c->win_cap * c->d * sizeof(float);
    size_t sinkb = (size_t)c->cfg.sinks * c->d * sizeof(float);
    if (c->streams)
        for (int l = 0; l < c->cfg.n_layers; l++)
            for (int h = 0; h < c->n_kv; h++) {
                const size_t blk = kvs_layer_blk_bytes(c, l);
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
    cache_release(c, c->plan.drop, (size_t)c->cfg.n_layers * c->n_kv * c->plan.n_blocks * sizeof(int32_t));
    cache_release(c, c->bases, c->bases_floats * sizeof(float));
    cache_release(c, c->lm, (size_t)c->cfg.n_layers * sizeof(kvs_method));
    cache_release(c, c->rope_cs, (size_t)c->cfg.max_tokens * c->d * sizeof(float));
    cache_release(c, c->streams, (size_t)c->cfg.n_layers * c->n_kv * sizeof(kvs_stream));
    cache_release(c, c->layers, (size_t)c->cfg.n_layers * sizeof(kvs_layer));
    const kvs_allocator mem = c->mem;
    mem.free(mem.user, c, sizeof *c);
}

kvs_status kvs_cache_create_with(const kvs_config *cfg, const kvs_allocator *alloc, kvs_cache **out) {
    if (!cfg || !out) return kvs_report(KVS_ERR_ARG, "kvs_cache_create: NULL argument");
    *out = NULL;
    if (alloc && (!alloc->alloc || !alloc->free))
        return kvs_report(KVS_ERR_ARG, "kvs_cache_create: allocator without alloc or free function");
    kvs_status st = kvs_config_validate(cfg);
    if (st) return st;
    sizes sz;
    kvs_method m, *lm;
    if ((st = resolve(cfg, &m, &lm))) return st;
    if (!compute_sizes(cfg, &m, lm, &sz)) {
        free(lm);
        return kvs_report(KVS_ERR_NOMEM, "kvs_cache_create: cache size overflows");
    }
    if (sz.fixed > ((size_t)1 << 40)) { /* tables and windows alone beyond 1 TiB: refuse before allocating */
        free(lm);
        return kvs_report(KVS_ERR_NOMEM, "kvs_cache_create: fixed part alone needs %zu bytes", sz.fixed);
    }
    const kvs_allocator mem = alloc ? *alloc : (kvs_allocator){libc_alloc, libc_free, NULL};
    kvs_cache *c = mem.alloc(mem.user, sizeof *c);
    if (!c) {
        free(lm);
        return kvs_report(KVS_ERR_NOMEM, "kvs_cache_create: out of memory");
    }
    memset(c, 0, sizeof *c);
    c->mem = mem;
    c->bytes = sizeof *c;
    c->cfg = *cfg;
    c->m = m;
    c->G = m.G;
    c->d = m.d;
    c->n_kv = cfg->n_kv_heads;
    c->g = m.g;
    c->win_cap = m.window + m.unit;
    c->max_groups = (cfg->max_tokens + cfg->group - 1) / cfg->group;
    size_t maxg = (size_t)c->max_groups, L = (size_t)cfg->n_layers;
    size_t winb = (size_t)c->win_cap * c->d * sizeof(float), sinkb = (size_t)cfg->sinks * c->d * sizeof(float);
    c->layers = cache_alloc(c, L * sizeof(kvs_layer));
    c->streams = cache_alloc(c, L * c->n_kv * sizeof(kvs_stream));
    if (!c->layers || !c->streams) goto oom;
    if (lm) { /* low-rank: the layers' plans (ranks per layer) */
        if (!(c->lm = cache_alloc(c, L * sizeof(kvs_method)))) goto oom;
        memcpy(c->lm, lm, L * sizeof(kvs_method));
    }
    for (size_t l = 0; l < L; l++) {
        if (m.token_norm && !(c->layers[l].norm = cache_alloc(c, maxg * sizeof(float *)))) goto oom;
        for (int h = 0; h < c->n_kv; h++) {
            kvs_stream *s = kvs_stream_at(c, (int)l, h);
            s->m = kvs_layer_plan(c, (int)l);
            if (!(s->blk = cache_alloc(c, maxg * sizeof(uint8_t *)))) goto oom;
            if (sinkb && (!(s->sink_k = cache_alloc(c, sinkb)) || !(s->sink_v = cache_alloc(c, sinkb)))) goto oom;
            if (!(s->win_k = cache_alloc(c, winb)) || !(s->win_v = cache_alloc(c, winb))) goto oom;
        }
    }
    if (lm) { /* low-rank: the bases copied out of the calibration, a pointer per stream */
        c->bases_floats = bases_floats(cfg, lm);
        if (!(c->bases = cache_alloc(c, c->bases_floats * sizeof(float))) ||
            !(c->rope_cs = cache_alloc(c, (size_t)cfg->max_tokens * c->d * sizeof(float))))
            goto oom;
        kvs_rope_table(c->rope_cs, cfg->max_tokens, c->d, 0, m.rope_base); /* keys are rebuilt and turned per step */
        int *r = malloc(sizeof(int) * 2 * L);
        float **p = malloc(sizeof(float *) * 2 * L);
        if (!r || !p) {
            free(r), free(p);
            goto oom;
        }
        for (size_t l = 0; l < L; l++) r[l] = lm[l].key.dim, r[L + l] = lm[l].value.dim;
        kvs__lowrank_fill(cfg, r, r + L, c->bases, p, p + L);
        for (size_t l = 0; l < L; l++)
            for (int h = 0; h < c->n_kv; h++) {
                kvs_stream *s = kvs_stream_at(c, (int)l, h);
                s->pkt = p[l];
                s->pv = p[L + l] + (size_t)h * c->d * lm[l].value.dim;
            }
        free(r), free(p);
    }
    if (cfg->evict != KVS_EVICT_NONE) { /* resolved once; copied into the cache's own memory */
        kvs_evict_plan plan;
        if ((st = kvs__evict_plan(cfg, &plan))) {
            free(lm);
            kvs_cache_free(c);
            return st;
        }
        const size_t pb = L * c->n_kv * plan.n_blocks * sizeof(int32_t);
        c->plan = plan;
        c->plan.drop = cache_alloc(c, pb);
        if (c->plan.drop) memcpy(c->plan.drop, plan.drop, pb);
        kvs__evict_plan_free(&plan);
        if (!c->plan.drop) goto oom;
        for (size_t x = 0; x < L * c->n_kv; x++) c->streams[x].drop = c->plan.drop + x * c->plan.n_blocks;
    }
    free(lm);
    lm = NULL;
    if (c->bytes != sz.fixed) { /* the formula in compute_sizes must describe what we allocate */
        kvs_cache_free(c);
        return kvs_report(KVS_ERR_INTERNAL, "kvs_cache_create: accounting mismatch");
    }
    *out = c;
    return KVS_OK;
oom:
    free(lm);
    kvs_cache_free(c);
    return kvs_report(KVS_ERR_NOMEM, "kvs_cache_create: out of memory for %d layers x %d KV heads x %d tokens",
                      cfg->n_layers, cfg->n_kv_heads, cfg->max_tokens);
}

kvs_status kvs_cache_create(const kvs_config *cfg, kvs_cache **out) { return kvs_cache_create_with(cfg, NULL, out); }

void kvs_cache_reset(kvs_cache *c) {
    if (!c) return;
    for (int l = 0; l < c->cfg.n_layers; l++) {
        const size_t blk = kvs_layer_blk_bytes(c, l);
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
        ly->n_sink = ly->n_quant = ly->n_groups = ly->n_win = ly->win_head = 0;
    }
}

const kvs_config *kvs_cache_config(const kvs_cache *c) { return c ? &c->cfg : NULL; }

int kvs_cache_tokens(const kvs_cache *c, int layer) {
    if (!c || layer < 0 || layer >= c->cfg.n_layers) return -1;
    const kvs_layer *ly = &c->layers[layer];
    return ly->n_sink + ly->n_quant + ly->n_win;
}

size_t kvs_cache_bytes(const kvs_cache *c) { return c ? c->bytes : 0; }

double kvs_cache_bits_per_element(const kvs_cache *c) {
    if (!c) return 0.0;
    double elems = 0.0;
    for (int l = 0; l < c->cfg.n_layers; l++) elems += (double)kvs_cache_tokens(c, l);
    elems *= (double)c->n_kv * c->d * 2.0;
    return elems > 0.0 ? 8.0 * (double)c->bytes / elems : 0.0;
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
            if (quantized && exceeds_range(r, d, c->m.rotate))
                return kvs_report(KVS_ERR_RANGE, "append: %s[token %d][head %d] exceeds the fp16 range (65504) of the cache type",
                                  what, t, h);
        }
    return KVS_OK;
}

/* Move the oldest `unit` window tokens of every KV head into group storage. */
static void leave_window(kvs_cache *c, int layer, float *tmp) {
    kvs_layer *ly = &c->layers[layer];
    const int H = c->n_kv, d = c->d, U = c->m.unit, grp = ly->n_quant / c->G;
    uint8_t *blocks[KVS_MAX_KV_HEADS];
    for (int h = 0; h < H; h++) blocks[h] = kvs_stream_at(c, layer, h)->blk[grp];
    float *kt = tmp, *vt = tmp + (size_t)H * U * d;
    for (int h = 0; h < H; h++) {
        const kvs_stream *s = kvs_stream_at(c, layer, h);
        for (int u = 0; u < U; u++) {
            const size_t slot = (size_t)((ly->win_head + u) % c->win_cap) * d;
            memcpy(kt + ((size_t)h * U + u) * d, s->win_k + slot, (size_t)d * sizeof(float));
            memcpy(vt + ((size_t)h * U + u) * d, s->win_v + slot, (size_t)d * sizeof(float));
        }
    }
    float *norm = ly->norm ? ly->norm[grp] : NULL;
    if (U == c->G) kvs__pack_group(c, layer, (long long)c->m.sinks + ly->n_quant, kt, vt, blocks, norm);
    else kvs__pack_token(c, layer, (long long)c->m.sinks + ly->n_quant, kt, vt, blocks, ly->n_quant % c->G, norm);
    ly->win_head = (ly->win_head + U) % c->win_cap;
    ly->n_win -= U;
    ly->n_quant += U;
    ly->n_groups = (ly->n_quant + c->G - 1) / c->G;
}

/* Free the blocks the plan drops by the layer's current token count: every group of the block in
 * that stream, and a group's norms once no stream of the layer holds the group. */
static void evict(kvs_cache *c, int layer) {
    kvs_layer *ly = &c->layers[layer];
    const long long t = kvs_cache_tokens(c, layer);
    const int gpb = c->plan.blk_tokens / c->G, full = ly->n_quant / c->plan.blk_tokens; /* complete blocks */
    for (int h = 0; h < c->n_kv; h++) {
        kvs_stream *s = kvs_stream_at(c, layer, h);
        const int32_t *drop = s->drop;
        for (int b = 0; b < full; b++) {
            if (drop[b] > t || !s->blk[b * gpb]) continue;
            for (int gi = b * gpb; gi < (b + 1) * gpb; gi++) {
                cache_release(c, s->blk[gi], kvs_layer_blk_bytes(c, layer));
                s->blk[gi] = NULL;
            }
        }
    }
    if (!ly->norm) return;
    for (int gi = 0; gi < full * gpb; gi++) {
        if (!ly->norm[gi]) continue;
        int live = 0;
        for (int h = 0; h < c->n_kv; h++) live += kvs_stream_at(c, layer, h)->blk[gi] != NULL;
        if (!live) {
            cache_release(c, ly->norm[gi], (size_t)c->G * sizeof(float));
            ly->norm[gi] = NULL;
        }
    }
}

size_t kvs_cache_stream_bytes(const kvs_cache *c, int layer, int h) {
    if (!c || layer < 0 || layer >= c->cfg.n_layers || h < 0 || h >= c->n_kv) return 0;
    const kvs_layer *ly = &c->layers[layer];
    const kvs_stream *s = kvs_stream_at(c, layer, h);
    size_t bytes = (size_t)(s->m->sinks * 2 + c->win_cap * 2) * c->d * sizeof(float);
    for (int gi = 0; gi < ly->n_groups; gi++) {
        if (!s->blk[gi]) continue;
        bytes += s->m->key.bytes + s->m->value.bytes;
        if (ly->norm && ly->norm[gi]) { /* shared by the streams of the layer that still hold the group */
            int live = 0;
            for (int x = 0; x < c->n_kv; x++) live += kvs_stream_at(c, layer, x)->blk[gi] != NULL;
            bytes += (size_t)c->G * sizeof(float) / (size_t)live;
        }
    }
    return bytes;
}

static kvs_status append(kvs_cache *c, int layer, int n, const float *k, const float *v) {
    if (!c || !k || !v) return kvs_report(KVS_ERR_ARG, "append: NULL argument");
    if (layer < 0 || layer >= c->cfg.n_layers)
        return kvs_report(KVS_ERR_ARG, "append: layer %d out of range [0, %d)", layer, c->cfg.n_layers);
    if (n < 1) return kvs_report(KVS_ERR_ARG, "append: n = %d tokens, need >= 1", n);
    kvs_layer *ly = &c->layers[layer];
    long long have = kvs_cache_tokens(c, layer);
    if (have + n > c->cfg.max_tokens)
        return kvs_report(KVS_ERR_CAPACITY, "append: layer %d holds %lld tokens, %d more exceed max_tokens=%d",
                          layer, have, n, c->cfg.max_tokens);
    kvs_status st = check_rows(c, k, n, "k", c->m.key.type != KVS_TYPE_FP32);
    if (!st) st = check_rows(c, v, n, "v", c->m.value.type != KVS_TYPE_FP32);
    if (st) return st;

    /* Allocate every block this append will start before changing anything: all or nothing. */
    const int G = c->G, d = c->d, H = c->n_kv, W = c->m.window, U = c->m.unit;
    long long s1, q1, w1;
    kvs__counts(&c->m, have + n, &s1, &q1, &w1);
    const int g0 = ly->n_groups, g1 = (int)((q1 + G - 1) / G);
    const size_t blk = kvs_layer_blk_bytes(c, layer);
    float *tmp = NULL;
    if (q1 > ly->n_quant) {
        tmp = malloc((size_t)2 * H * U * d * sizeof(float));
        if (!tmp) return kvs_report(KVS_ERR_NOMEM, "append: out of memory");
        for (int gi = g0; gi < g1; gi++) {
            for (int h = 0; h < H; h++) {
                kvs_stream *s = kvs_stream_at(c, layer, h);
                if (!(s->blk[gi] = cache_alloc(c, blk))) goto oom;
            }
            if (ly->norm && !(ly->norm[gi] = cache_alloc(c, (size_t)G * sizeof(float)))) goto oom;
        }
    }
    for (int t = 0; t < n; t++) {
        const float *kt = k + (size_t)t * H * d, *vt = v + (size_t)t * H * d;
        if (ly->n_sink < c->m.sinks) {
            for (int h = 0; h < H; h++) {
                kvs_stream *s = kvs_stream_at(c, layer, h);
                memcpy(s->sink_k + (size_t)ly->n_sink * d, kt + (size_t)h * d, (size_t)d * sizeof(float));
                memcpy(s->sink_v + (size_t)ly->n_sink * d, vt + (size_t)h * d, (size_t)d * sizeof(float));
            }
            ly->n_sink++;
            continue;
        }
        const size_t slot = (size_t)((ly->win_head + ly->n_win) % c->win_cap) * d;
        for (int h = 0; h < H; h++) {
            kvs_stream *s = kvs_stream_at(c, layer, h);
            memcpy(s->win_k + slot, kt + (size_t)h * d, (size_t)d * sizeof(float));
            memcpy(s->win_v + slot, vt + (size_t)h * d, (size_t)d * sizeof(float));
        }
        if (++ly->n_win == W + U) leave_window(c, layer, tmp);
    }
    free(tmp);
    if (c->plan.drop) evict(c, layer);
    return KVS_OK;
oom:
    for (int gi = g0; gi < g1; gi++) {
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
    return kvs_report(KVS_ERR_NOMEM, "append: out of memory for %d new groups", g1 - g0);
}

/* With rope=adjacent the caller's keys are before RoPE: a rotated copy by position is stored, as an
 * engine's rotated rows would be. */
kvs_status kvs_cache_append(kvs_cache *c, int layer, int n, const float *k, const float *v) {
    if (!c || !c->m.rope || !k || !v || layer < 0 || layer >= c->cfg.n_layers || n < 1 || n > (1 << 28))
        return append(c, layer, n, k, v); /* no RoPE to apply, or its checks name what is wrong */
    const size_t nk = (size_t)n * c->n_kv * c->d;
    float *kr = malloc(nk * sizeof(float));
    if (!kr) return kvs_report(KVS_ERR_NOMEM, "append: out of memory for RoPE of %d tokens", n);
    memcpy(kr, k, nk * sizeof(float));
    kvs_rope_rows(kr, n, c->n_kv, c->d, kvs_cache_tokens(c, layer), c->m.rope_base);
    const kvs_status st = append(c, layer, n, kr, v);
    free(kr);
    return st;
}
