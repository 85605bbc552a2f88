/* Reading single cached tokens back in float: the reference kernel and the tests use these; the
 * fast kernels never materialize keys or values. And a low-rank cache's value bases, for engines
 * that fold them into their output projection. */
#include "../common/status.h"
#include "../quant/quant.h"
#include "cache.h"

void kvs__block_key(const kvs_method *m, const uint8_t *blk, const float *norm, int t, float *k) {
    kvs_dequant_key(m->key.type, blk, m->G, m->d, t, k);
    if (norm)
        for (int i = 0; i < m->d; i++) k[i] *= norm[t];
}

void kvs__block_value(const kvs_method *m, const uint8_t *blk, int t, float *v) {
    kvs_dequant_value(m->value.type, blk + m->key.bytes, m->G, m->d, t, v);
}

void kvs__block_key_delta(const kvs_method *m, const uint8_t *blk, int t, float *delta) {
    kvs_key_delta(m->key.type, blk, m->G, m->d, t, delta);
}

kvs_status kvs_cache_value_basis(const kvs_cache *c, int layer, int kv_head, const float **basis, int *rank) {
    if (!c || !basis || !rank || layer < 0 || layer >= c->cfg.n_layers || kv_head < 0 || kv_head >= c->n_kv)
        return kvs_report(KVS_ERR_ARG, "kvs_cache_value_basis: bad argument (layer %d, KV head %d)", layer, kv_head);
    if (!c->lm) return kvs_report(KVS_ERR_CONFIG, "kvs_cache_value_basis: the cache is full width (no stiefel=)");
    *basis = kvs_stream_at(c, layer, kv_head)->pv;
    *rank = c->lm[layer].value.dim;
    return KVS_OK;
}
