/* Reading single cached tokens back in float: the reference kernel and the tests use these; the
 * fast kernels never materialize keys or values. */
#include <string.h>

#include "../common/fp16.h"
#include "../quant/quant.h"
#include "cache.h"

static const uint8_t *block(const struct kvs_cache *c, int layer, int h, int grp) {
    return kvs_stream_at(c, layer, h)->blk[grp];
}

void kvs__group_key(const struct kvs_cache *c, int layer, int h, int grp, int t, float *k) {
    const uint8_t *kp = block(c, layer, h, grp);
    const int d = c->d, G = c->G, b = kvs_affine_bits(c->cfg.k_type);
    if (b)
        kvs_affine_dequant_key(kp, (const kvs_affine_meta *)(kp + (size_t)d * G * b / 8), G, d, b, t, k);
    else
        kvs_dequant_row(c->cfg.k_type, kp + (size_t)t * kvs_row_bytes(c->cfg.k_type, d, G), d, G, k);
    if (c->cfg.scale == KVS_SCALE_TOKEN) {
        const float n = c->layers[layer].norm[grp][t];
        for (int i = 0; i < d; i++) k[i] *= n;
    }
}

void kvs__group_value(const struct kvs_cache *c, int layer, int h, int grp, int t, float *v) {
    const uint8_t *vp = block(c, layer, h, grp) + c->kbytes;
    kvs_dequant_row(c->cfg.v_type, vp + (size_t)t * kvs_row_bytes(c->cfg.v_type, c->d, c->G), c->d, c->G, v);
}

void kvs__group_key_delta(const struct kvs_cache *c, int layer, int h, int grp, int t, float *delta) {
    const uint8_t *kp = block(c, layer, h, grp);
    const int d = c->d, G = c->G, b = kvs_affine_bits(c->cfg.k_type);
    const kvs_type kt = c->cfg.k_type;
    if (b) {
        const kvs_affine_meta *m = (const kvs_affine_meta *)(kp + (size_t)d * G * b / 8);
        for (int i = 0; i < d; i++) delta[i] = kvs_fp16_to_fp32(m[i].scale);
    } else if (kt == KVS_TYPE_Q8_0 || kt == KVS_TYPE_Q4_0) {
        /* symmetric ggml blocks: the step is |d| of the token's block */
        const uint8_t *row = kp + (size_t)t * kvs_row_bytes(kt, d, G);
        const size_t bb = kt == KVS_TYPE_Q8_0 ? sizeof(kvs_block_q8_0) : sizeof(kvs_block_q4_0);
        for (int i = 0; i < d; i++) {
            uint16_t hd;
            memcpy(&hd, row + (size_t)(i / KVS_QK) * bb, 2);
            float s = kvs_fp16_to_fp32(hd);
            delta[i] = s < 0 ? -s : s;
        }
    } else {
        memset(delta, 0, (size_t)d * sizeof(float)); /* fp32/fp16: no quantization noise modelled */
    }
}
