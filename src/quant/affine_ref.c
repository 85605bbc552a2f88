/* Asymmetric uniform INT2/3/4/8 with fp16 scale and offset (OScaR spec 5.2), and bit packing. */
#include <math.h>
#include <string.h>

#include "../common/fp16.h"
#include "quant.h"

void kvs_pack_bits(const uint8_t *codes, int n, int bits, uint8_t *out) {
    memset(out, 0, (size_t)n * bits / 8);
    for (int i = 0; i < n; i++) {
        size_t bit = (size_t)i * bits;
        uint32_t c = codes[i];
        /* a code spans at most two bytes for bits <= 8 */
        out[bit >> 3] |= (uint8_t)(c << (bit & 7));
        if ((bit & 7) + bits > 8) out[(bit >> 3) + 1] |= (uint8_t)(c >> (8 - (bit & 7)));
    }
}

void kvs_unpack_bits(const uint8_t *in, int n, int bits, uint8_t *codes) {
    uint32_t mask = (1u << bits) - 1;
    for (int i = 0; i < n; i++) {
        size_t bit = (size_t)i * bits;
        uint32_t w = in[bit >> 3];
        if ((bit & 7) + bits > 8) w |= (uint32_t)in[(bit >> 3) + 1] << 8;
        codes[i] = (uint8_t)((w >> (bit & 7)) & mask);
    }
}

void kvs_affine_quant_group(const float *x, int n, int stride, int bits, uint8_t *codes,
                            kvs_affine_meta *meta) {
    const float qmax = (float)((1 << bits) - 1);
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        float v = x[(size_t)i * stride];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    if (lo == 0.0f && hi == 0.0f) { /* all zero: a symmetric range reconstructs 0 exactly */
        lo = -1.0f;
        hi = 1.0f;
    }
    float r = hi - lo, delta, inv, z, off;
    if (r > 0.0f) {
        delta = r / qmax;
        inv = qmax / r;
        z = rintf(-lo / delta); /* integer-valued, deliberately not clamped to [0, qmax] */
        off = -z * delta;
    } else { /* constant non-zero group */
        delta = 0.0f;
        inv = 0.0f;
        z = 0.0f;
        off = lo;
    }
    for (int i = 0; i < n; i++) {
        float c = rintf(x[(size_t)i * stride] * inv + z);
        c = c < 0.0f ? 0.0f : (c > qmax ? qmax : c);
        codes[i] = (uint8_t)c;
    }
    meta->scale = kvs_fp32_to_fp16(delta);
    meta->offset = kvs_fp32_to_fp16(off);
}

void kvs_affine_quant_keys(const float *x, int G, int d, int ld, int bits, uint8_t *codes,
                           kvs_affine_meta *meta) {
    uint8_t tmp[256];
    size_t row = (size_t)G * bits / 8;
    for (int c = 0; c < d; c++) {
        kvs_affine_quant_group(x + c, G, ld, bits, tmp, &meta[c]);
        kvs_pack_bits(tmp, G, bits, codes + (size_t)c * row);
    }
}

void kvs_affine_dequant_key(const uint8_t *codes, const kvs_affine_meta *meta, int G, int d,
                            int bits, int t, float *out) {
    size_t row = (size_t)G * bits / 8;
    for (int c = 0; c < d; c++) {
        uint8_t code;
        size_t bit = (size_t)t * bits;
        const uint8_t *r = codes + (size_t)c * row;
        uint32_t w = r[bit >> 3];
        if ((bit & 7) + bits > 8) w |= (uint32_t)r[(bit >> 3) + 1] << 8;
        code = (uint8_t)((w >> (bit & 7)) & ((1u << bits) - 1));
        out[c] = (float)code * kvs_fp16_to_fp32(meta[c].scale) + kvs_fp16_to_fp32(meta[c].offset);
    }
}

void kvs_affine_quant_row(const float *x, int d, int g, int bits, uint8_t *codes,
                          kvs_affine_meta *meta) {
    uint8_t tmp[1024];
    for (int j = 0; j < d / g; j++) kvs_affine_quant_group(x + j * g, g, 1, bits, tmp + j * g, &meta[j]);
    kvs_pack_bits(tmp, d, bits, codes);
}

void kvs_affine_dequant_row(const uint8_t *codes, const kvs_affine_meta *meta, int d, int g,
                            int bits, float *out) {
    uint8_t tmp[1024];
    kvs_unpack_bits(codes, d, bits, tmp);
    for (int i = 0; i < d; i++) {
        const kvs_affine_meta *m = &meta[i / g];
        out[i] = (float)tmp[i] * kvs_fp16_to_fp32(m->scale) + kvs_fp16_to_fp32(m->offset);
    }
}
