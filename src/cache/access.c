/* Reading single cached tokens back in float: the reference kernel and the tests use these; the
 * fast kernels never materialize keys or values. */
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
