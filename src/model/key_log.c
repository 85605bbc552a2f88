/* kvs_key_log (key_log.h). */
#include "key_log.h"

#include <stdlib.h>
#include <string.h>

#include "model.h"

kvs_status kvs__key_log_init(kvs_key_log *g, int n_layers, int n_kv_heads, int head_dim, int ctx) {
    *g = (kvs_key_log){n_layers, n_kv_heads, head_dim, ctx, NULL, NULL};
    g->keys = malloc((size_t)n_layers * ctx * n_kv_heads * head_dim * sizeof(float));
    g->seen = calloc((size_t)n_layers, sizeof(int));
    if (g->keys && g->seen) return KVS_OK;
    kvs__key_log_free(g);
    return kvs_report(KVS_ERR_NOMEM, "calibrate: out of memory for the keys of %d layers x %d tokens", n_layers, ctx);
}

void kvs__key_log_free(kvs_key_log *g) {
    free(g->keys), free(g->seen);
    g->keys = NULL, g->seen = NULL;
}

void kvs__key_log_begin(kvs_key_log *g) { memset(g->seen, 0, (size_t)g->L * sizeof(int)); }

float *kvs__key_log_add(kvs_key_log *g, int layer, int n, int pos0, const float *k) {
    if (layer < 0 || layer >= g->L || pos0 != g->seen[layer] || n < 0 || pos0 + n > g->ctx) {
        kvs_report(KVS_ERR_ARG, "calibrate: layer %d saw positions %d.. after %d (ctx %d)", layer, pos0,
                   layer >= 0 && layer < g->L ? g->seen[layer] : -1, g->ctx);
        return NULL;
    }
    float *K = g->keys + (size_t)layer * g->ctx * g->H * g->d;
    memcpy(K + (size_t)pos0 * g->H * g->d, k, (size_t)n * g->H * g->d * sizeof(float));
    g->seen[layer] = pos0 + n;
    return K;
}
