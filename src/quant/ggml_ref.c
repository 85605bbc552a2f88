/* ggml's q8_0 and q4_0, ported rounding-for-rounding from quantize_row_q8_0_ref and
 * quantize_row_q4_0_ref so a kvslim q8_0/q4_0 cache holds the bytes llama.cpp would hold. */
#include <math.h>
#include <string.h>

#include "../common/fp16.h"
#include "quant.h"

void kvs_quant_row_q8_0(const float *x, kvs_block_q8_0 *y, int n) {
    for (int i = 0; i < n / KVS_QK; i++) {
        float amax = 0.0f;
        for (int j = 0; j < KVS_QK; j++) amax = fmaxf(amax, fabsf(x[i * KVS_QK + j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = kvs_fp32_to_fp16(d);
        for (int j = 0; j < KVS_QK; j++) y[i].qs[j] = (int8_t)roundf(x[i * KVS_QK + j] * id);
    }
}

void kvs_dequant_row_q8_0(const kvs_block_q8_0 *x, float *y, int n) {
    for (int i = 0; i < n / KVS_QK; i++) {
        const float d = kvs_fp16_to_fp32(x[i].d);
        for (int j = 0; j < KVS_QK; j++) y[i * KVS_QK + j] = (float)x[i].qs[j] * d;
    }
}

void kvs_quant_row_q4_0(const float *x, kvs_block_q4_0 *y, int n) {
    for (int i = 0; i < n / KVS_QK; i++) {
        float amax = 0.0f, max = 0.0f; /* the signed value of largest magnitude sets the scale */
        for (int j = 0; j < KVS_QK; j++) {
            const float v = x[i * KVS_QK + j];
            if (amax < fabsf(v)) {
                amax = fabsf(v);
                max = v;
            }
        }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = kvs_fp32_to_fp16(d);
        for (int j = 0; j < KVS_QK / 2; j++) {
            const float x0 = x[i * KVS_QK + j] * id;
            const float x1 = x[i * KVS_QK + KVS_QK / 2 + j] * id;
            int xi0 = (int8_t)(x0 + 8.5f), xi1 = (int8_t)(x1 + 8.5f);
            xi0 = xi0 < 15 ? xi0 : 15;
            xi1 = xi1 < 15 ? xi1 : 15;
            y[i].qs[j] = (uint8_t)(xi0 | (xi1 << 4));
        }
    }
}

void kvs_dequant_row_q4_0(const kvs_block_q4_0 *x, float *y, int n) {
    for (int i = 0; i < n / KVS_QK; i++) {
        const float d = kvs_fp16_to_fp32(x[i].d);
        for (int j = 0; j < KVS_QK / 2; j++) {
            y[i * KVS_QK + j] = (float)((x[i].qs[j] & 0x0f) - 8) * d;
            y[i * KVS_QK + KVS_QK / 2 + j] = (float)((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

