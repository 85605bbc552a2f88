/* ggml block decoders (layouts in ggml-common.h; docs/engine.md section 3), used to turn
 * GGUF weights into fp32 at load time. One function per type, plain C. */
#include <math.h>
#include <string.h>

#include "model.h"

/* IEEE binary16 -> float, exact for every input. */
static float half(const uint8_t *p) {
    const unsigned h = (unsigned)p[0] | (unsigned)p[1] << 8;
    const unsigned e = (h >> 10) & 31, m = h & 1023;
    float v;
    if (e == 0) v = ldexpf((float)m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexpf((float)(m | 1024), (int)e - 25);
    return (h & 0x8000) ? -v : v;
}

static void dq_q4_0(const uint8_t *b, float *y) { /* half d, u8 qs[16]: (nibble - 8) * d */
    const float d = half(b);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((b[2 + j] & 15) - 8) * d;
        y[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
    }
}

static void dq_q4_1(const uint8_t *b, float *y) { /* half d, half m, u8 qs[16]: nibble * d + m */
    const float d = half(b), m = half(b + 2);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(b[4 + j] & 15) * d + m;
        y[j + 16] = (float)(b[4 + j] >> 4) * d + m;
    }
}

/* q5: low nibble from qs, 5th bit j of the little-endian u32 qh */
static void dq_q5(const uint8_t *qh_p, const uint8_t *qs, float d, float m, int offset, float *y) {
    uint32_t qh;
    memcpy(&qh, qh_p, 4);
    for (int j = 0; j < 16; j++) {
        const int x0 = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
        const int x1 = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)(x0 - offset) * d + m;
        y[j + 16] = (float)(x1 - offset) * d + m;
    }
}

static void dq_q8_0(const uint8_t *b, float *y) {
    const float d = half(b);
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

/* q4_K: 8 sub-blocks of 32 with 6-bit scales and mins packed in 12 bytes */
static void dq_q4_k(const uint8_t *b, float *y) {
    const float d = half(b), dmin = half(b + 2);
    const uint8_t *sc = b + 4, *qs = b + 16;
    for (int g = 0; g < 4; g++) {
        for (int half_i = 0; half_i < 2; half_i++) {
            const int s = 2 * g + half_i;
            int scale, min;
            if (s < 4) {
                scale = sc[s] & 63;
                min = sc[s + 4] & 63;
            } else {
                scale = (sc[s + 4] & 15) | ((sc[s - 4] >> 6) << 4);
                min = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
            }
            for (int l = 0; l < 32; l++) {
                const int q = half_i ? qs[32 * g + l] >> 4 : qs[32 * g + l] & 15;
                y[64 * g + 32 * half_i + l] = d * (float)scale * (float)q - dmin * (float)min;
            }
        }
    }
}

/* q6_K: ql[128], qh[64], int8 scales[16], half d (last) */
static void dq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    const float d = half(b + 208);
    for (int h = 0; h < 2; h++) {
        const uint8_t *l_ = ql + 64 * h, *h_ = qh + 32 * h;
        const int8_t *s_ = sc + 8 * h;
        float *o = y + 128 * h;
        for (int l = 0; l < 32; l++) {
            const int q1 = ((l_[l] & 15) | ((h_[l] >> 0) & 3) << 4) - 32;
            const int q2 = ((l_[l + 32] & 15) | ((h_[l] >> 2) & 3) << 4) - 32;
            const int q3 = ((l_[l] >> 4) | ((h_[l] >> 4) & 3) << 4) - 32;
            const int q4 = ((l_[l + 32] >> 4) | ((h_[l] >> 6) & 3) << 4) - 32;
            o[l] = d * (float)s_[l / 16] * (float)q1;
            o[l + 32] = d * (float)s_[l / 16 + 2] * (float)q2;
            o[l + 64] = d * (float)s_[l / 16 + 4] * (float)q3;
            o[l + 96] = d * (float)s_[l / 16 + 6] * (float)q4;
        }
    }
}

kvs_status kvs_ggml_dequant(uint32_t type, const uint8_t *src, float *dst, int64_t n) {
    const int bs = kvs_ggml_block_size(type);
    const size_t bb = kvs_ggml_block_bytes(type);
    if (!bs) return kvs_report(KVS_ERR_UNSUPPORTED, "dequant: ggml type %u has no decoder", type);
    if (n % bs) return kvs_report(KVS_ERR_ARG, "dequant: %lld elements are not whole %s blocks", (long long)n, kvs_ggml_type_name(type));
    for (int64_t i = 0; i < n / bs; i++) {
        const uint8_t *b = src + (size_t)i * bb;
        float *y = dst + i * bs;
        switch (type) {
        case KVS_GGML_F32: memcpy(y, b, 4); break;
        case KVS_GGML_F16: y[0] = half(b); break;
        case KVS_GGML_Q4_0: dq_q4_0(b, y); break;
        case KVS_GGML_Q4_1: dq_q4_1(b, y); break;
        case KVS_GGML_Q5_0: dq_q5(b + 2, b + 6, half(b), 0.0f, 16, y); break;
        case KVS_GGML_Q5_1: dq_q5(b + 4, b + 8, half(b), half(b + 2), 0, y); break;
        case KVS_GGML_Q8_0: dq_q8_0(b, y); break;
        case KVS_GGML_Q4_K: dq_q4_k(b, y); break;
        default: dq_q6_k(b, y); break;
        }
    }
    return KVS_OK;
}
