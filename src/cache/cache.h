/* The cache object (internal). Per (layer, KV head) a stream:
 *   sinks [S][d] fp32 | group blocks blk[0..n_groups) | window ring [win_cap][d] fp32 (raw basis)
 * A group block = [K part kbytes][V part vbytes] (quant/formats.h), in the rotated basis when
 * rotate=hadamard, keys divided by the per-token OScaR norm when scale=token. The norms of a
 * group's G tokens are shared by the layer's KV heads: layer->norm[group][G] fp32.
 *
 * When a token leaves the window: keys quantized per channel (affine types) need G tokens, so
 * the oldest G leave together once the window holds W + G; per-token key types (fp32, fp16, q8_0,
 * q4_0) leave one at a time once it holds W + 1 and are written into the next row of the last,
 * possibly partial, group (what llama.cpp does with q8_0/q4_0 when W = 0). `unit` is that G or 1.
 * The window is a ring so that leaving costs no copy.
 *
 * A stream owns its block table, its method plan (plan.h, resolved once at creation) and its
 * eviction schedule, so a per-head budget (HeatKV) drops and frees blocks of one head only; the
 * kernels read groups through a table of block pointers (kvs_view), never through the cache's own
 * arrays, and read what to compute from the stream's plan, never from the config. */
#ifndef KVS_CACHE_H
#define KVS_CACHE_H
#include <stddef.h>
#include <stdint.h>

#include "../quant/formats.h"
#include "evict.h"
#include "kvslim.h"
#include "plan.h"

enum { KVS_MAX_KV_HEADS = 1024 }; /* kvs_config_validate's bound; sizes stack tables */

typedef struct {
    const kvs_method *m;    /* what this stream stores and how it is attended */
    const int32_t *drop;    /* drop time of each evictable block, or NULL: nothing is evicted */
    const float *pkt, *pv;  /* low-rank plans: the layer's key basis transposed [rank_k][d], this head's value basis [d][rank_v] */
    uint8_t **blk;          /* [max_groups] */
    float *sink_k, *sink_v; /* [sinks][d] */
    float *win_k, *win_v;   /* ring [win_cap][d]; window token u at slot (win_head + u) % win_cap */
} kvs_stream;

typedef struct {
    int n_sink, n_quant, n_win; /* tokens: sinks, in group blocks, in the window */
    int n_groups;               /* ceil(n_quant / G): the last group may be partial (unit 1) */
    int win_head;
    float **norm; /* [max_groups] -> [G], only with scale=token */
} kvs_layer;

struct kvs_cache {
    kvs_config cfg;    /* as given; only creation and the accessors read it */
    kvs_method m;      /* the plan every stream runs (plan.h); a low-rank cache's layers run lm[layer] */
    kvs_method *lm;    /* low-rank: per-layer plans [n_layers] (ranks per layer), or NULL */
    kvs_allocator mem;
    int G, d, n_kv, g; /* group, head_dim, KV heads, query heads per KV head */
    int win_cap, max_groups;
    size_t bytes;      /* exact payload bytes allocated now */
    kvs_layer *layers;     /* [n_layers] */
    kvs_stream *streams;   /* [n_layers * n_kv] */
    kvs_evict_plan plan;   /* eviction: drop times (plan.drop through the allocator), or n_blocks 0 */
    float *bases;          /* low-rank plans: the cache's copy of its bases (cache/lowrank.h), or NULL */
    size_t bases_floats;
    float *rope_cs;        /* low-rank plans: RoPE angles of every position, [max_tokens][d/2][2] (cos, sin) */
};

/* The plan of a layer's streams, and the bytes of one of its group blocks (key part then value part). */
static inline const kvs_method *kvs_layer_plan(const struct kvs_cache *c, int layer) { return c->lm ? &c->lm[layer] : &c->m; }
static inline size_t kvs_layer_blk_bytes(const struct kvs_cache *c, int layer) {
    const kvs_method *m = kvs_layer_plan(c, layer);
    return m->key.bytes + m->value.bytes;
}

static inline kvs_stream *kvs_stream_at(const struct kvs_cache *c, int layer, int h) {
    return &c->streams[(size_t)layer * c->n_kv + h];
}

/* Tokens in sinks, in group blocks and in the window after n tokens were appended to a layer:
 * the one definition of the layout that append, the byte estimate and attention share. */
void kvs__counts(const kvs_method *m, long long n, long long *sinks, long long *quant, long long *win);

/* Dequantize token t of a group block: key in the stored basis times its norm (rotated but
 * unscaled), value in the stored basis, and the quantization step of each key channel in the
 * stored (normalized) basis. norm: the group's norms or NULL. */
void kvs__block_key(const kvs_method *m, const uint8_t *blk, const float *norm, int t, float *k);
void kvs__block_value(const kvs_method *m, const uint8_t *blk, int t, float *v);
void kvs__block_key_delta(const kvs_method *m, const uint8_t *blk, int t, float *delta);

/* fp32 rows k + t * stride, v + t * stride for t in [0, n). */
typedef struct {
    const float *k, *v;
    size_t stride;
    int n;
} kvs_rows;

/* What the n queries of a chunk see of one layer, as token-by-token decoding would have left
 * the cache: query i (position P = cached tokens + i) sees the cache after P appends plus its own
 * token at full precision. Groups that the chunk's own appends will complete are quantized here
 * ahead of time (blocks owned by the view, bit-identical to what append will store), so a chunk
 * needs no fp32 window that real decoding never has. */
typedef struct {
    int n;              /* queries */
    int q0;             /* tokens in group blocks before the chunk */
    int cs;             /* chunk tokens that become sinks */
    int n_groups;       /* groups in the tables: all the last query sees */
    const uint8_t **blk;/* [n_kv][n_groups] */
    const float **norm; /* [n_groups], or NULL without scale=token */
    int *vis;           /* [n] tokens of the groups query i sees (a prefix) */
    long long state0;   /* query i sees the cache after state0 + i appends */
    int gpb;            /* groups per evictable block (eviction only) */
    void *mem;          /* everything above, one allocation (libc) */
} kvs_view;

/* Build the view of a chunk of n tokens k, v: [n][n_kv][d]. @return KVS_OK or KVS_ERR_NOMEM. */
kvs_status kvs__view_build(const struct kvs_cache *c, int layer, int n, const float *k, const float *v, kvs_view *view);
void kvs__view_free(kvs_view *view);
/* The fp32 rows query i of the chunk sees in KV head h, in position order: sinks, window, chunk.
 * Writes at most 5 runs; returns their count. */
int kvs__view_rows(const struct kvs_cache *c, const kvs_view *view, int layer, int h, const float *k, const float *v,
                   int i, kvs_rows *rows);
#endif
