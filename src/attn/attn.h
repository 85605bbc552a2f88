/* Attention over [sinks | quantized groups | window | chunk] (internal contract shared by the
 * reference and the AVX2 kernels, see docs/kernels.md).
 *
 * Work is split into items per KV head: one "fp" item (sinks, window and the chunk itself, raw
 * basis) and one item per range of groups (stored basis: rotated when rotate=hadamard). An item
 * produces, per (query i, head hh of the KV head's g query heads), an online-softmax partial:
 *   m = max score, l = sum exp(s - m), acc[d] = sum exp(s - m) * v
 * The driver merges partials in a fixed order, so results do not depend on the thread count. */
#ifndef KVS_ATTN_H
#define KVS_ATTN_H
#include "../cache/cache.h"

typedef struct {
    const struct kvs_cache *c;
    int layer, kvh, n;
    const float *q;  /* [n][n_heads][d] raw queries */
    const float *qr; /* [n][n_heads][d] queries in the stored basis (== q without rotation) */
    const float *w;  /* [n][n_heads][d] Jensen weights lambda*tau^2*qr^2/24, or NULL */
    const float *k, *v; /* the chunk: [n][n_kv][d] */
} kvs_attn_job;

typedef struct {
    float *m, *l; /* [n][g] */
    float *acc;   /* [n][g][d] */
} kvs_partial;

typedef void (*kvs_groups_fn)(const kvs_attn_job *j, int g0, int g1, kvs_partial *p);
typedef void (*kvs_fp_fn)(const kvs_attn_job *j, kvs_partial *p);

typedef struct {
    const char *name;
    kvs_groups_fn groups;
    kvs_fp_fn fp;
} kvs_kernel_table;

extern const kvs_kernel_table kvs_kernels_ref;
extern const kvs_kernel_table kvs_kernels_avx2;
const kvs_kernel_table *kvs__kernels(void);

/* Row pointer helpers. */
static inline const float *kvs_job_q(const kvs_attn_job *j, const float *base, int i, int hh) {
    const struct kvs_cache *c = j->c;
    return base + ((size_t)i * c->cfg.n_heads + (size_t)j->kvh * c->g + hh) * c->d;
}
static inline const float *kvs_job_kv(const kvs_attn_job *j, const float *base, int i) {
    const struct kvs_cache *c = j->c;
    return base + ((size_t)i * c->n_kv + j->kvh) * c->d;
}
#endif
