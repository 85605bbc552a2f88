/* The keys of the current calibration text, per layer, as an observer collects them chunk by chunk
 * (heat_stats.c, retrieval_stats.c): a query's attention needs every earlier key of its layer. */
#ifndef KVS_MODEL_KEY_LOG_H
#define KVS_MODEL_KEY_LOG_H
#include "kvslim.h"

typedef struct {
    int L, H, d, ctx;
    float *keys; /* [L][ctx][H][d] */
    int *seen;   /* [L] positions stored of the current text */
} kvs_key_log;

/* @return KVS_OK or KVS_ERR_NOMEM (then nothing to free). */
kvs_status kvs__key_log_init(kvs_key_log *g, int n_layers, int n_kv_heads, int head_dim, int ctx);
void kvs__key_log_free(kvs_key_log *g);
/* A new text: positions start at 0 again. */
void kvs__key_log_begin(kvs_key_log *g);
/* Store the chunk's keys [n][H][d] at positions pos0.. of `layer`; returns that layer's key rows,
 * or NULL (and reports KVS_ERR_ARG) when the positions do not continue the layer's or pass ctx. */
float *kvs__key_log_add(kvs_key_log *g, int layer, int n, int pos0, const float *k);
#endif
