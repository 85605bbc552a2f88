/* The cache object (internal). Per (layer, KV head) a stream:
 *   sinks [S][d] fp32 | group blocks blk[0..n_groups) | window [n_win][d] fp32 (raw basis)
 * A group block = [K part kbytes][V part vbytes] (quant/formats.h), in the rotated basis when
 * rotate=hadamard, keys divided by the per-token OScaR norm when scale=token. The norms of a
 * group's G tokens are shared by the layer's KV heads: layer->norm[group][G] fp32.
 * Design for what comes next: a stream owns its block table, so a per-head budget (HeatKV) can
 * drop or skip blocks of one head only; group blocks are located by index, so a per-group
 * position table (for pre-RoPE StiefAttention coefficients) slots in beside blk[]. */
#ifndef KVS_CACHE_H
#define KVS_CACHE_H
#include <stddef.h>
#include <stdint.h>

#include "../quant/formats.h"
#include "kvslim.h"

typedef struct {
    uint8_t **blk;          /* [max_groups] */
    float *sink_k, *sink_v; /* [sinks][d] */
    float *win_k, *win_v;   /* [win_cap][d] */
} kvs_stream;

typedef struct {
    int n_sink, n_groups, n_win;
    float **norm; /* [max_groups] -> [G], only with scale=token */
} kvs_layer;

struct kvs_cache {
    kvs_config cfg;
    int G, d, n_kv, g; /* group, head_dim, KV heads, query heads per KV head */
    int win_cap, max_groups;
    float tau;
    size_t kbytes, vbytes; /* per group block */
    size_t bytes;          /* exact payload bytes allocated now */
    kvs_layer *layers;     /* [n_layers] */
    kvs_stream *streams;   /* [n_layers * n_kv] */
};

static inline kvs_stream *kvs_stream_at(const struct kvs_cache *c, int layer, int h) {
    return &c->streams[(size_t)layer * c->n_kv + h];
}

/* Live bytes allocated by all caches of the process (tests compare it with kvs_cache_bytes). */
size_t kvs__live_bytes(void);

/* Dequantize cached token t of group `grp` in stream (layer, h): key in the stored basis times
 * its norm (i.e. rotated but unscaled), value in the stored basis. Tests and the reference use it. */
void kvs__group_key(const struct kvs_cache *c, int layer, int h, int grp, int t, float *k);
void kvs__group_value(const struct kvs_cache *c, int layer, int h, int grp, int t, float *v);
/* Quantization step per channel of cached key (grp, t), in the stored (normalized) basis. */
void kvs__group_key_delta(const struct kvs_cache *c, int layer, int h, int grp, int t, float *delta);
#endif
