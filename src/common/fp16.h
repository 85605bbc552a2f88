/* IEEE-754 binary16 conversions, portable C, round to nearest even (as F16C and ggml's
 * GGML_FP32_TO_FP16 on x86). Finite values that round past 65504 become Inf here: the cache
 * rejects |x| > 65504 on append so that never happens to stored data. */
#ifndef KVS_COMMON_FP16_H
#define KVS_COMMON_FP16_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t kvs_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float kvs_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline uint16_t kvs_fp32_to_fp16(float f) {
    uint32_t x = kvs_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* Inf or NaN */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    if (ax >= 0x477ff000u) /* rounds to >= 65536: overflow to Inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* result is subnormal or zero: exponent < -14 */
        if (ax < 0x33000000u) return (uint16_t)sign; /* < 2^-25: rounds to zero */
        /* value = m * 2^(e-150) with the implicit bit in m; in units of 2^-24 that is
         * m >> (126 - e), rounded to nearest even (a carry into 0x400 gives the smallest normal) */
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), hw = 1u << (shift - 1);
        if (rem > hw || (rem == hw && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    /* normal: rebias exponent 127 -> 15, round mantissa 23 -> 10 bits */
    uint32_t r = ax - 0x38000000u; /* exponent rebiased, still 23-bit mantissa */
    uint32_t q = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1))) q++;
    return (uint16_t)(sign | q);
}

static inline float kvs_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ffu;
    if (e == 0) {
        /* subnormal or zero: m * 2^-24, exact in fp32 */
        float v = (float)m * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (e == 31) return kvs_bits_f32(sign | 0x7f800000u | (m << 13));
    return kvs_bits_f32(sign | ((e + 112) << 23) | (m << 13));
}
/* Element i of an fp16 array that may be unaligned (metadata inside packed blocks). */
static inline float kvs_fp16_at(const void *p, size_t i) {
    uint16_t h;
    memcpy(&h, (const uint8_t *)p + 2 * i, 2);
    return kvs_fp16_to_fp32(h);
}
#endif
