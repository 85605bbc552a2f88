/* Reading single cached tokens back in float: the reference kernel and the tests use these; the
 * fast kernels never materialize keys or values. */
#include "../quant/quant.h"
#include "cache.h"

void kvs__block_key(const struct kvs_cache *c, const uint8_t *blk, const float *norm, int t, float *k) {
    kvs_dequant_key(c->cfg.k_type, blk, c->G, c->d, t, k);
    if (norm)
        for (int i = 0; i < c->d; i++) k[i] *= norm[t];
}

void kvs__block_value(const struct kvs_cache *c, const uint8_t *blk, int t, float *v) {
    kvs_dequant_value(c->cfg.v_type, blk + c->kbytes, c->G, c->d, t, v);
}

void kvs__block_key_delta(const struct kvs_cache *c, const uint8_t *blk, int t, float *delta) {
    kvs_key_delta(c->cfg.k_type, blk, c->G, c->d, t, delta);
}
