/* The cache as each query of a chunk must see it (cache.h, kvs_view): decode-faithful chunks.
 *
 * Query i of a chunk sits at position P = T + i (T tokens cached). Token-by-token decoding would
 * attend it over the cache after P appends, plus the token itself at full precision. Compared with
 * the cache after T appends, that cache holds the chunk tokens 0..i-1, and the tokens that left the
 * window meanwhile are in group blocks. Leaving the window is deterministic (groups are aligned to
 * absolute positions, a token's codes depend only on its group), so the groups the chunk will
 * complete are quantized here once, and every query gets a prefix of one table of groups plus the
 * fp32 rows that are still in its window. */
#include <stdlib.h>
#include <string.h>

#include "../common/status.h"
#include "cache.h"
#include "pack.h"

/* Window-then-chunk "stream" token u of KV head h (u counts non-sink tokens after the groups). */
static const float *stream_row(const struct kvs_cache *c, const kvs_layer *ly, const kvs_stream *s, const float *x,
                               const float *ring, int cs, int u, int h) {
    (void)s;
    if (u < ly->n_win) return ring + (size_t)((ly->win_head + u) % c->win_cap) * c->d;
    return x + ((size_t)(cs + u - ly->n_win) * c->n_kv + h) * c->d;
}

static void gather(const struct kvs_cache *c, int layer, const float *k, const float *v, int cs, int u0, int cnt,
                   float *kt, float *vt) {
    const kvs_layer *ly = &c->layers[layer];
    const int d = c->d;
    for (int h = 0; h < c->n_kv; h++) {
        const kvs_stream *s = kvs_stream_at(c, layer, h);
        for (int u = 0; u < cnt; u++) {
            memcpy(kt + ((size_t)h * cnt + u) * d, stream_row(c, ly, s, k, s->win_k, cs, u0 + u, h), (size_t)d * sizeof(float));
            memcpy(vt + ((size_t)h * cnt + u) * d, stream_row(c, ly, s, v, s->win_v, cs, u0 + u, h), (size_t)d * sizeof(float));
        }
    }
}

static long long quant_after(const struct kvs_cache *c, long long n) {
    long long s, q, w;
    kvs__counts(&c->m, n, &s, &q, &w);
    return q;
}

kvs_status kvs__view_build(const struct kvs_cache *c, int layer, int n, const float *k, const float *v, kvs_view *view) {
    const kvs_layer *ly = &c->layers[layer];
    const int G = c->G, H = c->n_kv, d = c->d, U = c->m.unit;
    const long long T = kvs_cache_tokens(c, layer), S = c->m.sinks;
    memset(view, 0, sizeof *view);
    view->n = n;
    view->q0 = ly->n_quant;
    view->cs = T < S ? (int)(S - T < n ? S - T : n) : 0;
    const int self = c->m.self_cache; /* query i attends after its own append */
    const int q_last = (int)quant_after(c, T + n - 1 + self);
    const int ng = (q_last + G - 1) / G;
    /* the first group this chunk changes: the cache's partial last group, or the next new one */
    const int first_new = q_last > ly->n_quant ? ly->n_quant / G : ng;
    const int n_new = ng - first_new;
    const size_t blk = kvs_layer_blk_bytes(c, layer), stride = (blk + 63) & ~(size_t)63, ptrs = (size_t)H * ng + (ly->norm ? (size_t)ng : 0);
    const size_t scratch = q_last > ly->n_quant ? (size_t)2 * H * U * d : 0;
    /* one allocation: pointer tables | vis | provisional norms | scratch floats | blocks */
    const size_t bytes = ptrs * sizeof(void *) + (size_t)n * sizeof(int) + (size_t)n_new * G * sizeof(float) +
                         scratch * sizeof(float) + (size_t)n_new * H * stride + 64;
    uint8_t *mem = malloc(bytes);
    if (!mem) return kvs_report(KVS_ERR_NOMEM, "attend: out of memory for the view of %d queries", n);
    view->mem = mem;
    view->n_groups = ng;
    view->blk = (const uint8_t **)mem;
    view->norm = ly->norm ? (const float **)(view->blk + (size_t)H * ng) : NULL;
    view->vis = (int *)(mem + ptrs * sizeof(void *));
    float *pnorm = (float *)(view->vis + n), *kt = pnorm + (size_t)n_new * G, *vt = kt + scratch / 2;
    uint8_t *pblk = (uint8_t *)(((uintptr_t)(kt + scratch) + 63) & ~(uintptr_t)63);
    memset(pblk, 0, (size_t)n_new * H * stride);
    memset(pnorm, 0, (size_t)n_new * G * sizeof(float));
    for (int i = 0; i < n; i++) view->vis[i] = (int)quant_after(c, T + i + self);
    view->state0 = T + self;
    view->gpb = c->plan.blk_tokens ? c->plan.blk_tokens / G : 1;
    for (int gi = 0; gi < ng; gi++) {
        const int pi = gi - first_new; /* index among the provisional groups, < 0 for cached ones */
        for (int h = 0; h < H; h++) {
            const kvs_stream *s = kvs_stream_at(c, layer, h);
            uint8_t *p = pi >= 0 ? pblk + ((size_t)pi * H + h) * stride : NULL;
            if (p && gi < ly->n_groups) memcpy(p, s->blk[gi], blk); /* partial group: keep its rows */
            view->blk[(size_t)h * ng + gi] = p ? p : s->blk[gi];
        }
        if (ly->norm) {
            float *p = pi >= 0 ? pnorm + (size_t)pi * G : NULL;
            if (p && gi < ly->n_groups) memcpy(p, ly->norm[gi], (size_t)G * sizeof(float));
            view->norm[gi] = p ? p : ly->norm[gi];
        }
    }
    /* quantize the stream tokens that leave the window during the chunk */
    uint8_t *blocks[KVS_MAX_KV_HEADS];
    for (int u = 0; u < q_last - ly->n_quant; u += U) {
        const int tok = ly->n_quant + u, gi = tok / G, pi = gi - first_new;
        for (int h = 0; h < H; h++) blocks[h] = pblk + ((size_t)pi * H + h) * stride;
        float *norm = ly->norm ? pnorm + (size_t)pi * G : NULL;
        gather(c, layer, k, v, view->cs, u, U, kt, vt);
        if (U == G) kvs__pack_group(c, layer, (long long)c->m.sinks + tok, kt, vt, blocks, norm);
        else kvs__pack_token(c, layer, (long long)c->m.sinks + tok, kt, vt, blocks, tok % G, norm);
    }
    return KVS_OK;
}

void kvs__view_free(kvs_view *view) {
    free(view->mem);
    view->mem = NULL;
}

int kvs__view_rows(const struct kvs_cache *c, const kvs_view *view, int layer, int h, const float *k, const float *v,
                   int i, kvs_rows *rows) {
    const kvs_layer *ly = &c->layers[layer];
    const kvs_stream *s = kvs_stream_at(c, layer, h);
    const int d = c->d, cs = view->cs;
    const size_t cstride = (size_t)c->n_kv * d;
    const int left = view->vis[i] - view->q0; /* stream tokens that left the window by position T + i */
    int nr = 0;
    if (ly->n_sink) rows[nr++] = (kvs_rows){s->sink_k, s->sink_v, (size_t)d, ly->n_sink};
    const int csi = i + 1 < cs ? i + 1 : cs;
    if (csi) rows[nr++] = (kvs_rows){k + (size_t)h * d, v + (size_t)h * d, cstride, csi};
    const int w0 = left < ly->n_win ? left : ly->n_win;
    if (w0 < ly->n_win) { /* the ring holds the window in at most two runs */
        const int start = (ly->win_head + w0) % c->win_cap, cnt = ly->n_win - w0;
        const int first = cnt < c->win_cap - start ? cnt : c->win_cap - start;
        rows[nr++] = (kvs_rows){s->win_k + (size_t)start * d, s->win_v + (size_t)start * d, (size_t)d, first};
        if (cnt > first) rows[nr++] = (kvs_rows){s->win_k, s->win_v, (size_t)d, cnt - first};
    }
    const int c0 = cs + (left > ly->n_win ? left - ly->n_win : 0);
    if (i >= cs && i + 1 > c0)
        rows[nr++] = (kvs_rows){k + ((size_t)c0 * c->n_kv + h) * d, v + ((size_t)c0 * c->n_kv + h) * d, cstride, i + 1 - c0};
    return nr;
}
