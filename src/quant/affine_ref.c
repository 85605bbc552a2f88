/* Asymmetric uniform INT2/3/4/8 with fp16 scale and offset (docs/methods/oscar.md section 5.2),
 * bit packing, and the int8 rounding the integer attention kernels apply to queries and
 * probabilities. */
#include <math.h>
#include <string.h>

#include "../common/fp16.h"
#include "quant.h"

void kvs_put_code(uint8_t *base, size_t bit, int bits, unsigned code) {
    /* a code spans at most two bytes for bits <= 8 */
    base[bit >> 3] |= (uint8_t)(code << (bit & 7));
    if ((bit & 7) + bits > 8) base[(bit >> 3) + 1] |= (uint8_t)(code >> (8 - (bit & 7)));
}

unsigned kvs_get_code(const uint8_t *base, size_t bit, int bits) {
    unsigned w = base[bit >> 3];
    if ((bit & 7) + bits > 8) w |= (unsigned)base[(bit >> 3) + 1] << 8;
    return (w >> (bit & 7)) & ((1u << bits) - 1);
}

float kvs_round_i8(const float *x, int n, int8_t *q) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    if (amax == 0.0f) {
        memset(q, 0, (size_t)n);
        return 0.0f;
    }
    const float inv = 127.0f / amax;
    for (int i = 0; i < n; i++) q[i] = (int8_t)rintf(x[i] * inv);
    return amax / 127.0f;
}

void kvs_affine_quant_group(const float *x, int n, int stride, int bits, uint8_t *codes, uint16_t *scale,
                            uint16_t *offset) {
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
        /* a subnormal range overflows inv to Inf, and -0 * Inf is NaN: NaN takes code 0 (what x86's
         * conversion gave), since converting NaN to an integer is undefined behaviour */
        c = c > 0.0f ? (c < qmax ? c : qmax) : 0.0f;
        codes[i] = (uint8_t)c;
    }
    *scale = kvs_fp32_to_fp16(delta);
    *offset = kvs_fp32_to_fp16(off);
}
