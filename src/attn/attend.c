/* kvs_attend: checks, each stream's query transform and score weights (from its plan), work items
 * over (KV head, group range) run by the kernels that the plans' codecs select, threads, and the
 * fixed-order merge of online-softmax partials with each stream's output transform. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/status.h"
#include "../methods/methods.h"
#include "attn.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static kvs_status check_finite(const float *x, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return kvs_report(KVS_ERR_NONFINITE, "attend: %s[%zu] = %g is not finite", what, i, (double)x[i]);
    return KVS_OK;
}

/* Groups per work item, fixed in absolute group indices (never a function of the thread count or
 * the chunk length), so the merge order and the result bits are the same however the work is cut;
 * queries are split into blocks so that a chunk still spreads over the threads. */
enum { QUERY_BLOCK = 16 };
static int groups_per_item(int G) { return 4096 / G > 0 ? 4096 / G : 1; }

/* coef: each query head's output is its value coefficients (kvs_attend_coef; checked there) */
static kvs_status attend(kvs_cache *c, int layer, int n, const float *q, const float *k, const float *v, float *out, int coef) {
    if (!c || !q || !k || !v || !out) return kvs_report(KVS_ERR_ARG, "attend: NULL argument");
    if (layer < 0 || layer >= c->cfg.n_layers)
        return kvs_report(KVS_ERR_ARG, "attend: layer %d out of range [0, %d)", layer, c->cfg.n_layers);
    if (n < 1 || n > (1 << 20)) return kvs_report(KVS_ERR_ARG, "attend: n = %d queries out of range [1, 2^20]", n);
    const int d = c->d, g = c->g, H = c->n_kv, NH = c->cfg.n_heads;
    const size_t nq = (size_t)n * NH * d, nkv = (size_t)n * H * d;
    kvs_status st = check_finite(q, nq, "q");
    if (!st) st = check_finite(k, nkv, "k");
    if (!st) st = check_finite(v, nkv, "v");
    if (st) return st;

    kvs_view view;
    if ((st = kvs__view_build(c, layer, n, k, v, &view))) return st;
    const int ngroups = view.n_groups;
    const int per = groups_per_item(c->G);
    const int nsplit = (ngroups + per - 1) / per;
    const int items_per_head = 1 + nsplit, nqb = (n + QUERY_BLOCK - 1) / QUERY_BLOCK;
    const int n_items = H * items_per_head * nqb;
    const size_t part = (size_t)n * g * (2 + (size_t)d); /* floats per (KV head, item) */

    /* per stream: the query in the stored basis and the Jensen weights, when its plan has them */
    int rotate = 0, taylor = 0;
    for (int h = 0; h < H; h++) {
        const kvs_method *m = kvs_stream_at(c, layer, h)->m;
        rotate |= m->rotate;
        taylor |= m->jensen == KVS_JENSEN_TAYLOR && ngroups > 0;
    }
    float *qr = NULL, *w = NULL;
    float *parts = malloc((size_t)H * items_per_head * part * sizeof(float));
    int ok = parts != NULL && (!rotate || (qr = malloc(nq * sizeof(float)))) && (!taylor || (w = malloc(nq * sizeof(float))));
    for (int h = 0; ok && h < H; h++) {
        const kvs_method *m = kvs_stream_at(c, layer, h)->m;
        for (int i = 0; i < n; i++) {
            const size_t r0 = ((size_t)i * NH + (size_t)h * g) * d, len = (size_t)g * d;
            if (qr) {
                memcpy(qr + r0, q + r0, len * sizeof(float));
                if (m->rotate)
                    for (int hh = 0; hh < g; hh++) kvs_fwht(qr + r0 + (size_t)hh * d, d);
            }
            if (w && m->jensen == KVS_JENSEN_TAYLOR) kvs_jensen_weights((qr ? qr : q) + r0, (int)len, m->tau, m->lambda, w + r0);
        }
    }
    if (!ok) {
        free(parts);
        free(qr);
        kvs__view_free(&view);
        return kvs_report(KVS_ERR_NOMEM, "attend: out of memory for %d queries", n);
    }
    const kvs_kernel_table *kt = kvs__kernels();
    kvs_groups_fn groups_fn[KVS_MAX_KV_HEADS]; /* per stream, keyed by its plan's codecs */
    for (int h = 0; h < H; h++) groups_fn[h] = kvs__groups_for(kt, kvs_stream_at(c, layer, h)->m)->fn;

#ifdef _OPENMP
    const int threads = c->m.n_threads;
    int nt = threads > 0 ? threads : omp_get_max_threads();
    if (nt > n_items) nt = n_items;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
#endif
    for (int it = 0; it < n_items; it++) {
        const int qb = it % nqb, s = it / nqb % items_per_head, h = it / nqb / items_per_head;
        const int i0 = qb * QUERY_BLOCK, i1 = i0 + QUERY_BLOCK < n ? i0 + QUERY_BLOCK : n;
        const kvs_stream *sm = kvs_stream_at(c, layer, h);
        kvs_attn_job j = {c, sm->m, &view, layer, h, i0, i1, q, qr ? qr : q, w, k, v, view.blk + (size_t)h * ngroups,
                          sm->drop, sm->pkt};
        float *base = parts + (size_t)(h * items_per_head + s) * part;
        kvs_partial p = {base, base + (size_t)n * g, base + (size_t)n * g * 2};
        if (s == 0) {
            kt->fp(&j, &p);
        } else {
            const int g0 = (s - 1) * per, g1 = g0 + per < ngroups ? g0 + per : ngroups;
            groups_fn[h](&j, g0, g1, &p);
        }
    }

    /* Merge: M = max m, L = sum l e^(m-M), out = (R * sum_q acc e^(m-M) + sum_fp acc e^(m-M)) / L,
     * R the inverse rotation (H itself) for the group items when rotate=hadamard. */
    float accq[1024], accf[1024];
    for (int i = 0; i < n; i++)
        for (int h = 0; h < H; h++)
            for (int hh = 0; hh < g; hh++) {
                const size_t o = (size_t)i * g + hh;
                float M = -INFINITY, L = 0.0f;
                for (int s = 0; s < items_per_head; s++) {
                    const float m = parts[(size_t)(h * items_per_head + s) * part + o];
                    M = m > M ? m : M;
                }
                memset(accq, 0, (size_t)d * sizeof(float));
                memset(accf, 0, (size_t)d * sizeof(float));
                for (int s = 0; s < items_per_head; s++) {
                    const float *base = parts + (size_t)(h * items_per_head + s) * part;
                    const float m = base[o], l = base[(size_t)n * g + o];
                    if (l == 0.0f) continue;
                    const float e = expf(m - M);
                    const float *acc = base + (size_t)n * g * 2 + o * d;
                    float *dst = s == 0 ? accf : accq;
                    L += l * e;
                    for (int x = 0; x < d; x++) dst[x] += e * acc[x];
                }
                const kvs_stream *sm = kvs_stream_at(c, layer, h);
                if (coef) { /* every token is stored as coefficients (checked): accf is empty */
                    const int rv = sm->m->value.dim;
                    float *dst = out + ((size_t)i * NH + (size_t)h * g + hh) * rv;
                    for (int r = 0; r < rv; r++) dst[r] = accq[r] / L;
                    continue;
                }
                if (sm->m->rotate) kvs_fwht(accq, d);
                if (sm->m->value.layout == KVS_LAYOUT_LOWRANK) { /* coefficients to channels: P_V once per output */
                    const int rv = sm->m->value.dim;
                    float coefs[1024];
                    memcpy(coefs, accq, (size_t)rv * sizeof(float));
                    for (int x = 0; x < d; x++) {
                        float a = 0.0f;
                        for (int r = 0; r < rv; r++) a += sm->pv[(size_t)x * rv + r] * coefs[r];
                        accq[x] = a;
                    }
                }
                float *dst = out + ((size_t)i * NH + (size_t)h * g + hh) * d;
                const float inv = 1.0f / L;
                for (int x = 0; x < d; x++) dst[x] = (accq[x] + accf[x]) * inv;
            }
    free(parts);
    free(qr);
    free(w);
    kvs__view_free(&view);
    return KVS_OK;
}

/* With rope=adjacent the caller's q and k are before RoPE: rotated copies by position (the cached
 * token count plus the index in the chunk) go through the same path as an engine's rotated rows. */
static kvs_status attend_roped(kvs_cache *c, int layer, int n, const float *q, const float *k, const float *v, float *out, int coef) {
    if (!c || !c->m.rope || !q || !k || !v || !out || layer < 0 || layer >= c->cfg.n_layers || n < 1 || n > (1 << 20))
        return attend(c, layer, n, q, k, v, out, coef); /* no RoPE to apply, or its checks name what is wrong */
    const int d = c->d, NH = c->cfg.n_heads, H = c->n_kv;
    const size_t nq = (size_t)n * NH * d, nk = (size_t)n * H * d;
    float *qr = malloc(nq * sizeof(float)), *kr = malloc(nk * sizeof(float));
    kvs_status st = KVS_OK;
    if (!qr || !kr) st = kvs_report(KVS_ERR_NOMEM, "attend: out of memory for RoPE of %d tokens", n);
    if (!st) {
        const long long pos0 = kvs_cache_tokens(c, layer);
        memcpy(qr, q, nq * sizeof(float));
        memcpy(kr, k, nk * sizeof(float));
        kvs_rope_rows(qr, n, NH, d, pos0, c->m.rope_base);
        kvs_rope_rows(kr, n, H, d, pos0, c->m.rope_base);
        st = attend(c, layer, n, qr, kr, v, out, coef);
    }
    free(qr), free(kr);
    return st;
}

kvs_status kvs_attend(kvs_cache *c, int layer, int n, const float *q, const float *k, const float *v, float *out) {
    return attend_roped(c, layer, n, q, k, v, out, 0);
}

kvs_status kvs_attend_coef(kvs_cache *c, int layer, int n, const float *q, const float *k, const float *v, float *out) {
    if (!c) return kvs_report(KVS_ERR_ARG, "attend_coef: NULL cache");
    const kvs_config *cfg = &c->cfg;
    if (!c->lm || cfg->window || cfg->sinks || cfg->self != KVS_SELF_CACHE)
        return kvs_report(KVS_ERR_CONFIG, "attend_coef: needs a low-rank cache (stiefel=) that stores every token it attends to as "
                          "coefficients: window=0, sinks=0, self=cache (this one: %s, window=%d, sinks=%d, self=%s)",
                          c->lm ? "low-rank" : "full width", cfg->window, cfg->sinks, cfg->self == KVS_SELF_CACHE ? "cache" : "exact");
    return attend_roped(c, layer, n, q, k, v, out, 1);
}
