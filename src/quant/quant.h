/* Reference quantizers: these define the bits; every fast path must reproduce them. */
#ifndef KVS_QUANT_QUANT_H
#define KVS_QUANT_QUANT_H
#include <stdint.h>

#include "formats.h"

/* One code at a bit offset, LSB first (bits <= 8; the target bits must be zero before a put).
 * Where each code goes is decided by formats.h (kvs_key_bit, kvs_val_bit, kvs_code_slot). */
void kvs_put_code(uint8_t *base, size_t bit, int bits, unsigned code);
unsigned kvs_get_code(const uint8_t *base, size_t bit, int bits);
/* Round x[n] to int8 with one scale (the integer kernels' query and probability rounding):
 * q = rint(x * (127 / amax)); returns amax / 127 (0 and q = 0 if x is all zero). */
float kvs_round_i8(const float *x, int n, int8_t *q);

/* Asymmetric min-max quantizer of one group (docs/methods/oscar.md section 5.2): n values x[i*stride], codes in
 * [0, 2^bits-1], scale and offset rounded to fp16. */
void kvs_affine_quant_group(const float *x, int n, int stride, int bits, uint8_t *codes, uint16_t *scale,
                            uint16_t *offset);

/* ggml q8_0 / q4_0, rounding-for-rounding as quantize_row_q*_ref; n multiple of 32. */
void kvs_quant_row_q8_0(const float *x, kvs_block_q8_0 *y, int n);
void kvs_dequant_row_q8_0(const kvs_block_q8_0 *x, float *y, int n);
void kvs_quant_row_q4_0(const float *x, kvs_block_q4_0 *y, int n);
void kvs_dequant_row_q4_0(const kvs_block_q4_0 *x, float *y, int n);

/* Group level, any type (formats.h layouts). x: [G][d] token-major. Keys of affine types are
 * quantized per channel over the G tokens, values per token over channel groups of G. */
void kvs_quant_keys(kvs_type t, const float *x, int G, int d, uint8_t *kpart);
/* One token x[d] into row `tok` of a group, for the per-token key types (fp32, fp16, q8_0, q4_0)
 * and for values of every type: a token's codes never depend on its group mates, so a cache can
 * store it the moment it leaves the window. Affine value codes are OR-ed in: the token's bits must
 * be zero (fresh blocks are). */
void kvs_quant_key_token(kvs_type t, const float *x, int G, int d, int tok, uint8_t *kpart);
void kvs_quant_value_token(kvs_type t, const float *x, int G, int d, int tok, uint8_t *vpart);
void kvs_dequant_key(kvs_type t, const uint8_t *kpart, int G, int d, int tok, float *out);
/* Quantization step of each channel of key `tok` (0 for fp32/fp16). */
void kvs_key_delta(kvs_type t, const uint8_t *kpart, int G, int d, int tok, float *delta);
void kvs_quant_values(kvs_type t, const float *x, int G, int d, uint8_t *vpart);
void kvs_dequant_value(kvs_type t, const uint8_t *vpart, int G, int d, int tok, float *out);
#endif
