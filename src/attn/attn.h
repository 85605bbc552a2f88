/* Attention over [sinks | quantized groups | window | chunk] (internal contract shared by the
 * reference and the AVX2 kernels, see docs/kernels.md).
 *
 * Each query of a chunk sees what token-by-token decoding would show it (cache/view.c): a prefix
 * of the view's group table (quantized, stored basis: rotated when rotate=hadamard) and a list of
 * fp32 rows (sinks, window, chunk; raw basis). Work is split into items per KV head and range of
 * queries: one "fp" item and one item per fixed range of groups. An item produces, per (query i,
 * head hh of the KV head's g query heads), an online-softmax partial:
 *   m = max score, l = sum exp(s - m), acc[d] = sum exp(s - m) * v
 * The driver merges partials in a fixed order. Group ranges are fixed in absolute group indices
 * and every query is computed on its own, so the result bits depend neither on the thread count
 * nor on how the tokens were chunked. */
#ifndef KVS_ATTN_H
#define KVS_ATTN_H
#include <math.h>
#include <string.h>

#include "../cache/cache.h"

typedef struct {
    const struct kvs_cache *c;
    const kvs_method *m;   /* the stream's plan: codecs, transforms, score terms (cache/plan.h) */
    const kvs_view *view;
    int layer, kvh;
    int i0, i1;      /* queries of this item */
    const float *q;  /* [n][n_heads][d] raw queries */
    const float *qr; /* [n][n_heads][d] queries in the stored basis (== q without rotation) */
    const float *w;  /* [n][n_heads][d] Jensen weights lambda*tau^2*qr^2/24 (this KV head's rows), or NULL */
    const float *k, *v; /* the chunk: [n][n_kv][d] */
    const uint8_t *const *blk; /* [view->n_groups] group blocks of this KV head (NULL: evicted) */
    const int32_t *drop;       /* drop times of this KV head's blocks, or NULL without eviction */
    const float *pkt;          /* low-rank plans: the layer's key basis, transposed [rank_k][d] */
} kvs_attn_job;

typedef struct {
    float *m, *l; /* [n][g] */
    float *acc;   /* [n][g][d] */
} kvs_partial;

typedef void (*kvs_groups_fn)(const kvs_attn_job *j, int g0, int g1, kvs_partial *p);
typedef void (*kvs_fp_fn)(const kvs_attn_job *j, kvs_partial *p);

/* A groups kernel and the plans it runs: codec layouts of keys and values (KVS_LAYOUT_ANY: all)
 * and the shape it is compiled for (0: any). */
typedef struct {
    kvs_layout key, value;
    int G, d;
    kvs_groups_fn fn;
    const char *name;
} kvs_groups_entry;

/* A kernel set: its groups kernels keyed by codec, first match wins (the last entry matches every
 * plan), and the fp32 kernel for sinks, window and chunk. */
typedef struct {
    const char *name;
    const kvs_groups_entry *groups;
    int n_groups;
    kvs_fp_fn fp;
} kvs_kernel_table;

extern const kvs_kernel_table kvs_kernels_ref;
extern const kvs_kernel_table kvs_kernels_avx2;
const kvs_kernel_table *kvs__kernels(void);
/* The entry of table t that runs plan m. */
const kvs_groups_entry *kvs__groups_for(const kvs_kernel_table *t, const kvs_method *m);
/* Tests only: run kvs_attend with this table (NULL restores the default). Process-wide. */
void kvs__set_kernel_table(const kvs_kernel_table *t);

/* Pieces of the reference kernel (attend_ref.c) that a variant rounding elsewhere reuses: the
 * Jensen term of nt keys of a group subtracted from s[t] (query i, head hh), and one tile of nt
 * scores folded into an online softmax (l and acc[d] rescaled to the new max m; s becomes the
 * weights exp(s - m)). */
void kvs__ref_jensen(const kvs_attn_job *j, int i, int hh, const uint8_t *blk, const float *norm, int nt, float *s);
void kvs__ref_softmax_tile(float *s, int nt, float *m, float *l, float *acc, int d);

/* Low-rank groups (attend_lowrank_ref.c): one loop, the inner operations per kernel set. With a
 * low-rank value codec the partial's acc holds value coefficients in its first rank_v entries; the
 * driver's merge projects them with the stream's P_V. */
typedef struct {
    void (*rebuild)(const float *Pt, const float *c, int d, int r, float *k); /* k[d] = sum_j c[j] Pt[j][:] */
    void (*rope)(float *k, int d, const float *cs);                           /* kvs_rope_apply */
    /* coefficients of token tok: kvs_dequant_key (is_key) or kvs_dequant_value on r channels */
    void (*dequant)(kvs_type t, int is_key, const uint8_t *part, int G, int r, int tok, float *out);
    /* s[h][t] = tau * q[h] . k[t] for g query heads and nt keys k[nt][d]; s has rows of stride G */
    void (*scores)(const float *const *q, int g, const float *k, int nt, int d, float tau, float *s, int G);
    float (*dot)(const float *a, const float *b, int n);
    void (*axpy)(float *acc, float w, const float *x, int n);
} kvs_lowrank_ops;
void kvs__lowrank_groups(const kvs_attn_job *j, int g0, int g1, kvs_partial *p, const kvs_lowrank_ops *ops);
void kvs__groups_lowrank_ref(const kvs_attn_job *j, int g0, int g1, kvs_partial *p);
void kvs__lowrank_dequant_ref(kvs_type t, int is_key, const uint8_t *part, int G, int r, int tok, float *out);
void kvs__groups_lowrank_avx2(const kvs_attn_job *j, int g0, int g1, kvs_partial *p);

/* An empty partial for the item's queries: m = -inf, l = 0, acc = 0. */
static inline void kvs_partial_init(const kvs_attn_job *j, kvs_partial *p) {
    const int g = j->m->g, d = j->m->d;
    for (int x = j->i0 * g; x < j->i1 * g; x++) {
        p->m[x] = -INFINITY;
        p->l[x] = 0.0f;
    }
    memset(p->acc + (size_t)j->i0 * g * d, 0, (size_t)(j->i1 - j->i0) * g * d * sizeof(float));
}

/* Row pointer helpers. */
static inline const float *kvs_job_q(const kvs_attn_job *j, const float *base, int i, int hh) {
    const kvs_method *m = j->m;
    return base + ((size_t)i * m->n_heads + (size_t)j->kvh * m->g + hh) * m->d;
}
/* Tokens of group grp that query i sees: G, fewer for a partial last group, <= 0 for none (not yet
 * stored, or evicted by the time of query i: exactly as if its keys were masked). */
static inline int kvs_job_group_tokens(const kvs_attn_job *j, int i, int grp) {
    if (j->drop && j->view->state0 + i >= j->drop[grp / j->view->gpb]) return 0;
    const int left = j->view->vis[i] - grp * j->m->G;
    return left < j->m->G ? left : j->m->G;
}
/* OScaR norms of group grp, or NULL. */
static inline const float *kvs_job_norm(const kvs_attn_job *j, int grp) {
    return j->view->norm ? j->view->norm[grp] : NULL;
}
#endif
