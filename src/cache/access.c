/* Reading single cached tokens back in float: the reference kernel and the tests use these; the
 * fast kernels never materialize keys or values. */
#include <string.h>

#include "../quant/quant.h"
#include "cache.h"

static const uint8_t *block(const struct kvs_cache *c, int layer, int h, int grp) {
    return kvs_stream_at(c, layer, h)->blk[grp];
}

void kvs__group_key(const struct kvs_cache *c, int layer, int h, int grp, int t, float *k) {
    kvs_dequant_key(c->cfg.k_type, block(c, layer, h, grp), c->G, c->d, t, k);
    if (c->cfg.scale == KVS_SCALE_TOKEN) {
        const float n = c->layers[layer].norm[grp][t];
        for (int i = 0; i < c->d; i++) k[i] *= n;
    }
}

void kvs__group_value(const struct kvs_cache *c, int layer, int h, int grp, int t, float *v) {
    kvs_dequant_value(c->cfg.v_type, block(c, layer, h, grp) + c->kbytes, c->G, c->d, t, v);
}

void kvs__group_key_delta(const struct kvs_cache *c, int layer, int h, int grp, int t, float *delta) {
    kvs_key_delta(c->cfg.k_type, block(c, layer, h, grp), c->G, c->d, t, delta);
}
