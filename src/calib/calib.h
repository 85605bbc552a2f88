/* Calibration container (internal): what `kvslim calibrate` measures on one model, in one versioned
 * file that every calibrated method shares (HeatKV's statistics now, StiefAttention's bases next).
 * Layout and validation rules: docs/calibration.md. */
#ifndef KVS_CALIB_H
#define KVS_CALIB_H
#include <stddef.h>
#include <stdint.h>

#include "kvslim.h"

enum { KVS_CALIB_VERSION = 1, KVS_CALIB_MAX_BLOCKS = 4096 };

/* The loader's failure classes (each also named in kvs_last_error()). */
typedef enum {
    KVS_CALIB_OK = 0,
    KVS_CALIB_IO,
    KVS_CALIB_BAD_MAGIC,
    KVS_CALIB_BAD_VERSION,
    KVS_CALIB_TRUNCATED,    /* shorter than its header says, or a section runs past the end */
    KVS_CALIB_BAD_SIZE,     /* longer than its header says */
    KVS_CALIB_BAD_CHECKSUM,
    KVS_CALIB_BAD_SHAPE,    /* model shapes, block sizes or counts out of range or inconsistent */
    KVS_CALIB_BAD_SECTION,  /* a section of the wrong size, or given twice */
    KVS_CALIB_BAD_VALUE,    /* a statistic not finite or outside [0, 1] */
    KVS_CALIB_BAD_RANKING   /* a ranking that is not a permutation, or disagrees with the statistics */
} kvs_calib_error;

/* HeatKV statistics: per (agg, layer, KV head, query block t, source block s) the attention mass
 * that the queries of block t put on the keys of block s (summed over s's keys, aggregated over
 * the KV head's query heads, averaged over t's eligible queries); blocks count positions after the
 * first `sinks`. nq[t][s]: eligible queries (0: no query of t may see s outside its window). */
typedef struct {
    int block, sinks, window, ctx, n_blocks, n_texts;
    double *mass;     /* [2][L][H][nb][nb] */
    uint32_t *nq;     /* [nb][nb] */
    /* derived (kvs__calib_derive), also stored in the file and checked on load: */
    double *scas;     /* [2][L][H][nb]: mean over query blocks with nq > 0 (NaN-free: 0 if none) */
    double *far;      /* [2][L][H]: mean over query blocks of the mass on every eligible source block */
    uint16_t *order;  /* [2][nb][U]: units (layer * H + head) by ascending scas, ties by head, then layer */
    uint16_t *horder; /* [2][U]: units by ascending far mass, same ties */
} kvs_calib_heat;

/* Retrieval-head statistics (RazorAttention's probe, retrieval_stats.c in the engine): per (agg,
 * layer, KV head) the mean attention mass that a token's repeat puts on the token itself (echo) and
 * on the token after it (induction), over random sequences of `period` tokens read twice. */
typedef struct {
    int period, n_texts;
    double *echo, *induction; /* [2][L][H] */
} kvs_calib_retr;

/* StiefAttention's low-rank bases (section LRNK, lowrank.c): per basis kind (kvs_basis) one set of
 * per-layer bases, and the error-rank profiles that the rank allocator reads. */
enum { KVS_CALIB_MAX_SETS = 3, KVS_CALIB_MAX_RANKS = 1024 };
typedef struct {
    int basis;            /* kvs_basis */
    int *rank_k, *rank_v; /* [L] */
    size_t *koff, *voff;  /* [L + 1]: layer l's keys at keys + koff[l], values at values + voff[l] */
    float *keys;          /* per layer: [d][rank_k]; one basis shared by the layer's KV heads */
    float *values;        /* per layer: [H][d][rank_v]; one basis per KV head */
} kvs_calib_bases;
typedef struct {
    int n_sets;
    kvs_calib_bases set[KVS_CALIB_MAX_SETS];
    int n_ranks;          /* 0: no profiles */
    int *ranks;           /* [n_ranks], strictly ascending in 1..d */
    double *profile;      /* [2: keys, values][L][n_ranks]: relative layer-output error, PCA bases at that rank */
} kvs_calib_lowrank;

struct kvs_calib {
    int n_layers, n_heads, n_kv_heads, head_dim;
    char model[64];
    uint64_t model_hash;
    int has_heat, has_retr;
    kvs_calib_heat heat;
    kvs_calib_retr retr;
    kvs_calib_lowrank lrnk; /* present when lrnk.n_sets or lrnk.n_ranks */
};

/* LRNK section (lowrank.c): payload bytes (0 when absent), writer, parser, free. */
size_t kvs__lrnk_payload(const kvs_calib *c);
void kvs__lrnk_write(const kvs_calib *c, uint8_t *p);
kvs_status kvs__lrnk_parse(kvs_calib *c, const uint8_t *p, uint64_t pay, kvs_calib_error *err);
void kvs__lrnk_free(kvs_calib_lowrank *lr);
/* Layer `layer`'s basis of `basis` for keys (kind 0: [d][*rank]) or KV head `head`'s values (kind 1);
 * NULL when the file has no such set. */
const float *kvs__calib_basis(const kvs_calib *c, int basis, int layer, int kind, int head, int *rank);

/* An empty calibration for these shapes (heat arrays allocated, zero, for nb blocks). */
kvs_status kvs__calib_new(int n_layers, int n_heads, int n_kv_heads, int head_dim, int block, int sinks, int window,
                          int ctx, int n_blocks, kvs_calib **out);
/* Fill scas, far and the rankings from mass and nq. */
void kvs__calib_derive(kvs_calib *cal);
/* Serialize (checksum included) into a malloc'ed buffer / a file. */
kvs_status kvs__calib_serialize(const kvs_calib *cal, uint8_t **data, size_t *size);
kvs_status kvs__calib_save(const kvs_calib *cal, const char *path);
/* kvs_calib_load_mem with the failure class. */
kvs_status kvs__calib_parse(const uint8_t *data, size_t size, kvs_calib **out, kvs_calib_error *err);

static inline double *kvs__heat_mass(const kvs_calib *c, int agg, int l, int h, int t, int s) {
    const size_t nb = (size_t)c->heat.n_blocks;
    return c->heat.mass + ((((size_t)agg * c->n_layers + l) * c->n_kv_heads + h) * nb + t) * nb + s;
}
#endif
