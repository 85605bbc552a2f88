/* Group-level quantize/dequantize for every cache type: the layouts of formats.h, written once. */
#include <string.h>

#include "../common/fp16.h"
#include "quant.h"

/* per-token row types */
static void quant_row(kvs_type t, const float *x, int d, uint8_t *row) {
    switch (t) {
    case KVS_TYPE_FP32: memcpy(row, x, (size_t)d * 4); break;
    case KVS_TYPE_FP16:
        for (int i = 0; i < d; i++) {
            uint16_t h = kvs_fp32_to_fp16(x[i]);
            memcpy(row + 2 * i, &h, 2);
        }
        break;
    case KVS_TYPE_Q8_0: kvs_quant_row_q8_0(x, (kvs_block_q8_0 *)row, d); break;
    default: kvs_quant_row_q4_0(x, (kvs_block_q4_0 *)row, d); break;
    }
}

static void dequant_row(kvs_type t, const uint8_t *row, int d, float *out) {
    switch (t) {
    case KVS_TYPE_FP32: memcpy(out, row, (size_t)d * 4); break;
    case KVS_TYPE_FP16:
        for (int i = 0; i < d; i++) out[i] = kvs_fp16_at(row, (size_t)i);
        break;
    case KVS_TYPE_Q8_0: kvs_dequant_row_q8_0((const kvs_block_q8_0 *)row, out, d); break;
    default: kvs_dequant_row_q4_0((const kvs_block_q4_0 *)row, out, d); break;
    }
}

void kvs_quant_keys(kvs_type t, const float *x, int G, int d, uint8_t *kp) {
    const int b = kvs_affine_bits(t);
    if (!b) {
        for (int tok = 0; tok < G; tok++) kvs_quant_key_token(t, x + (size_t)tok * d, G, d, tok, kp);
        return;
    }
    const size_t nbytes = (size_t)d * G * b / 8;
    uint16_t *S = (uint16_t *)(kp + nbytes), *O = S + d;
    uint8_t codes[256];
    memset(kp, 0, nbytes);
    for (int c = 0; c < d; c++) {
        kvs_affine_quant_group(x + c, G, d, b, codes, &S[c], &O[c]);
        for (int tok = 0; tok < G; tok++) kvs_put_code(kp, kvs_key_bit(b, G, c, tok), b, codes[tok]);
    }
}

void kvs_quant_key_token(kvs_type t, const float *x, int G, int d, int tok, uint8_t *kp) {
    (void)G;
    quant_row(t, x, d, kp + (size_t)tok * kvs_row_bytes(t, d));
}

void kvs_dequant_key(kvs_type t, const uint8_t *kp, int G, int d, int tok, float *out) {
    const int b = kvs_affine_bits(t);
    if (!b) {
        dequant_row(t, kp + (size_t)tok * kvs_row_bytes(t, d), d, out);
        return;
    }
    const uint8_t *S = kp + (size_t)d * G * b / 8, *O = S + 2 * (size_t)d;
    for (int c = 0; c < d; c++)
        out[c] = (float)kvs_get_code(kp, kvs_key_bit(b, G, c, tok), b) * kvs_fp16_at(S, (size_t)c) + kvs_fp16_at(O, (size_t)c);
}

void kvs_key_delta(kvs_type t, const uint8_t *kp, int G, int d, int tok, float *delta) {
    const int b = kvs_affine_bits(t);
    if (b) {
        const uint8_t *S = kp + (size_t)d * G * b / 8;
        for (int c = 0; c < d; c++) delta[c] = kvs_fp16_at(S, (size_t)c);
    } else if (t == KVS_TYPE_Q8_0 || t == KVS_TYPE_Q4_0) {
        /* symmetric ggml blocks: the step is |d| of the token's block (d leads each block) */
        const uint8_t *row = kp + (size_t)tok * kvs_row_bytes(t, d);
        const size_t bb = t == KVS_TYPE_Q8_0 ? sizeof(kvs_block_q8_0) : sizeof(kvs_block_q4_0);
        for (int c = 0; c < d; c++) {
            const float s = kvs_fp16_at(row + (size_t)(c / KVS_QK) * bb, 0);
            delta[c] = s < 0 ? -s : s;
        }
    } else {
        memset(delta, 0, (size_t)d * sizeof(float)); /* fp32/fp16: no quantization noise modelled */
    }
}

void kvs_quant_values(kvs_type t, const float *x, int G, int d, uint8_t *vp) {
    const int b = kvs_affine_bits(t);
    if (b) memset(vp, 0, (size_t)G * d * b / 8); /* codes are OR-ed into place */
    for (int tok = 0; tok < G; tok++) kvs_quant_value_token(t, x + (size_t)tok * d, G, d, tok, vp);
}

void kvs_quant_value_token(kvs_type t, const float *x, int G, int d, int tok, uint8_t *vp) {
    const int b = kvs_affine_bits(t);
    if (!b) {
        quant_row(t, x, d, vp + (size_t)tok * kvs_row_bytes(t, d));
        return;
    }
    const int nj = d / G;
    const size_t nbytes = (size_t)G * d * b / 8;
    uint16_t *S = (uint16_t *)(vp + nbytes), *O = S + (size_t)nj * G;
    uint8_t codes[1024];
    for (int j = 0; j < nj; j++)
        kvs_affine_quant_group(x + (size_t)j * G, G, 1, b, codes + j * G, &S[j * G + tok], &O[j * G + tok]);
    for (int c = 0; c < d; c++) kvs_put_code(vp, kvs_val_bit(b, G, d, tok, c), b, codes[c]);
}

void kvs_dequant_value(kvs_type t, const uint8_t *vp, int G, int d, int tok, float *out) {
    const int b = kvs_affine_bits(t);
    if (!b) {
        dequant_row(t, vp + (size_t)tok * kvs_row_bytes(t, d), d, out);
        return;
    }
    const int nj = d / G;
    const uint8_t *S = vp + (size_t)G * d * b / 8, *O = S + 2 * (size_t)nj * G;
    for (int j = 0; j < nj; j++) { /* one step and offset per group of G channels: converted once */
        const size_t m = (size_t)j * G + tok;
        const float sc = kvs_fp16_at(S, m), of = kvs_fp16_at(O, m);
        for (int c = j * G; c < (j + 1) * G; c++) out[c] = (float)kvs_get_code(vp, kvs_val_bit(b, G, d, tok, c), b) * sc + of;
    }
}
