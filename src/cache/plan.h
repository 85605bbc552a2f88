/* The method plan: a cache config resolved once, at cache creation, into what append, the chunk
 * view, the driver and the kernels run. Below the config layer nothing reads kvs_config's method
 * fields again: a new method adds a field here (and an entry to the kernel tables), not a flag
 * re-tested in five files.
 *
 * A plan belongs to a stream: every (layer, KV head) stream points at the plan it runs and at its
 * own eviction schedule. One plan serves all streams of a cache, except low-rank caches, whose
 * layers each have a plan (ranks per layer); what differs is only the codecs' width and bytes. */
#ifndef KVS_CACHE_PLAN_H
#define KVS_CACHE_PLAN_H
#include <stddef.h>
#include <stdint.h>

#include "kvslim.h"

/* How one group of G tokens is laid out (quant/formats.h); the kernel tables are keyed by it. */
typedef enum {
    KVS_LAYOUT_ROWS = 0,   /* per-token rows: fp32, fp16, q8_0, q4_0 */
    KVS_LAYOUT_AFFINE = 1, /* affine INTb, one code row per channel (keys) or token (values) */
    KVS_LAYOUT_PAIRED = 2, /* affine INT2/INT4 in the integer multiply-add order */
    KVS_LAYOUT_ANY = 3,    /* kernel tables only: matches every layout */
    KVS_LAYOUT_LOWRANK = 4 /* StiefAttention: per-token rows of `dim` coefficients (fp32, fp16, q8_0, q4_0) in the
                              stream's basis; keys before RoPE (cache/lowrank.h) */
} kvs_layout;

typedef struct {
    kvs_type type;
    kvs_layout layout;
    int bits;     /* affine bits, 0 for per-token rows */
    int perm;     /* affine code rows in the broadcast-word slot order (formats.h, kvs_code_slot) */
    size_t row;   /* bytes of a token row (ROWS) or of a code row (AFFINE, PAIRED) */
    size_t bytes; /* one group */
    int dim;      /* channels stored per token: head_dim, or the rank of a low-rank codec */
} kvs_codec;

typedef struct kvs_method {
    kvs_codec key, value;
    int G, d, g, n_heads; /* group, head_dim, query heads per KV head, query heads */
    int sinks, window;    /* first tokens kept fp32 forever; newest tokens kept fp32 */
    int unit;             /* tokens that leave the window together: G for affine keys, else 1 */
    float tau;            /* softmax scale */
    int rotate;           /* query transform (Hadamard in) and output transform (Hadamard back) */
    int token_norm;       /* score term: keys stored divided by the OScaR per-token norm */
    kvs_jensen jensen;    /* score term: Jensen bias correction of quantized keys */
    float lambda;
    int self_cache;       /* the current token attends through its stored key (llama.cpp's order) */
    int rope;             /* q and k arrive before RoPE: the cache rotates them (kvs_rope) */
    float rope_base;
    int n_threads;        /* 0 = all */
} kvs_method;

/* Resolve a validated config. Never fails: validation already refused what has no plan. A low-rank
 * config resolves here to its full-width plan; kvs__method_ranks then makes a layer's plan store
 * rank_k, rank_v coefficients (cache/lowrank.h gives the ranks). */
void kvs__method_resolve(const kvs_config *cfg, kvs_method *m);
void kvs__method_ranks(const kvs_config *cfg, int rank_k, int rank_v, kvs_method *m);
/* "int2/paired", "q8_0/rows", ...: what info and tests print. */
const char *kvs__layout_name(kvs_layout l);
#endif
