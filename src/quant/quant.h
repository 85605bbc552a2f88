/* Reference quantizers: these define the bits; every fast path must reproduce them. */
#ifndef KVS_QUANT_QUANT_H
#define KVS_QUANT_QUANT_H
#include <stdint.h>

#include "formats.h"

/* LSB-first bit packing of n codes of `bits` bits (n*bits multiple of 8). */
void kvs_pack_bits(const uint8_t *codes, int n, int bits, uint8_t *out);
void kvs_unpack_bits(const uint8_t *in, int n, int bits, uint8_t *codes);

/* Asymmetric min-max quantizer of one group (OScaR spec 5.2): n values x[i*stride], codes in
 * [0, 2^bits-1], metadata rounded to fp16. */
void kvs_affine_quant_group(const float *x, int n, int stride, int bits, uint8_t *codes,
                            kvs_affine_meta *meta);

/* Keys: x is [G][ld] (token-major, first d channels used); writes codes [d][G*b/8] and meta [d]. */
void kvs_affine_quant_keys(const float *x, int G, int d, int ld, int bits, uint8_t *codes,
                           kvs_affine_meta *meta);
/* Dequantize token t of a key group to out[d]. */
void kvs_affine_dequant_key(const uint8_t *codes, const kvs_affine_meta *meta, int G, int d,
                            int bits, int t, float *out);

/* Values: one token row x[d], channel groups of g: codes [d*b/8], meta [d/g]. */
void kvs_affine_quant_row(const float *x, int d, int g, int bits, uint8_t *codes,
                          kvs_affine_meta *meta);
void kvs_affine_dequant_row(const uint8_t *codes, const kvs_affine_meta *meta, int d, int g,
                            int bits, float *out);

/* ggml q8_0 / q4_0, rounding-for-rounding as quantize_row_q*_ref; n multiple of 32. */
void kvs_quant_row_q8_0(const float *x, kvs_block_q8_0 *y, int n);
void kvs_dequant_row_q8_0(const kvs_block_q8_0 *x, float *y, int n);
void kvs_quant_row_q4_0(const float *x, kvs_block_q4_0 *y, int n);
void kvs_dequant_row_q4_0(const kvs_block_q4_0 *x, float *y, int n);

/* Any per-token row type (fp32, fp16, q8_0, q4_0, affine with channel groups g): quantize one
 * row of d values into `row` (kvs_row_bytes bytes), and back. */
void kvs_quant_row(kvs_type t, const float *x, int d, int g, uint8_t *row);
void kvs_dequant_row(kvs_type t, const uint8_t *row, int d, int g, float *out);
#endif
