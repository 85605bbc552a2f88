/* Every bit layout of the cache, in one place. CPU (and later CUDA) kernels include this file;
 * memory accounting reads its sizes from here.
 *
 * ggml blocks (bit-identical to ggml-common.h), per token along head_dim, 32 channels a block:
 *   q8_0: fp16 d, int8 qs[32]                 value = qs[j] * d
 *   q4_0: fp16 d, uint8 qs[16]                element j in the low nibble of qs[j], element j+16
 *                                             in the high nibble; value = (nibble - 8) * d
 * Affine INTb (b in 2,3,4,8), codes LSB-first, metadata = fp16 (scale S, offset O), x = c*S + O:
 *   keys, one group = G tokens x head_dim channels, per channel:
 *     codes [head_dim][G*b/8]   row c holds token t at bits [b*t, b*t+b)   (b=2,G=32: one u64)
 *     meta  [head_dim][2]       (S, O) of channel c over the G tokens
 *   values, per token, groups of G channels, one row per token = [codes][meta]:
 *     codes [head_dim*b/8]      channel i at bits [b*i, b*i+b)
 *     meta  [head_dim/G][2]
 * Per-token types (fp32, fp16, q8_0, q4_0, affine values): a group is [G tokens][row bytes].
 * head_dim is a multiple of 16, so every row and meta offset is even (2-byte fields aligned).
 * A cache block holds one group of G tokens of one (layer, KV head): [K part][V part]; the OScaR
 * norms of those G tokens (fp32, one per token per layer) live in a per-layer block. */
#ifndef KVS_QUANT_FORMATS_H
#define KVS_QUANT_FORMATS_H
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "kvslim.h"

#define KVS_QK 32 /* ggml block length */

typedef struct {
    uint16_t d;
    int8_t qs[KVS_QK];
} kvs_block_q8_0;
static_assert(sizeof(kvs_block_q8_0) == 34, "q8_0 block must be 34 bytes");

typedef struct {
    uint16_t d;
    uint8_t qs[KVS_QK / 2];
} kvs_block_q4_0;
static_assert(sizeof(kvs_block_q4_0) == 18, "q4_0 block must be 18 bytes");

/* One affine group's metadata. */
typedef struct {
    uint16_t scale, offset;
} kvs_affine_meta;
static_assert(sizeof(kvs_affine_meta) == 4, "affine meta must be 4 bytes");

/* Bits of an affine type, 0 for the others. */
static inline int kvs_affine_bits(kvs_type t) {
    switch (t) {
    case KVS_TYPE_INT2: return 2;
    case KVS_TYPE_INT3: return 3;
    case KVS_TYPE_INT4: return 4;
    case KVS_TYPE_INT8: return 8;
    default: return 0;
    }
}

/* Bytes of one token row of head_dim elements for the per-token types (fp32, fp16, q8_0, q4_0,
 * and affine values with channel groups of g). */
static inline size_t kvs_row_bytes(kvs_type t, int head_dim, int g) {
    int b = kvs_affine_bits(t);
    if (b) return (size_t)head_dim * b / 8 + (size_t)(head_dim / g) * sizeof(kvs_affine_meta);
    switch (t) {
    case KVS_TYPE_FP32: return (size_t)head_dim * 4;
    case KVS_TYPE_FP16: return (size_t)head_dim * 2;
    case KVS_TYPE_Q8_0: return (size_t)(head_dim / KVS_QK) * sizeof(kvs_block_q8_0);
    case KVS_TYPE_Q4_0: return (size_t)(head_dim / KVS_QK) * sizeof(kvs_block_q4_0);
    default: return 0;
    }
}

/* Bytes of the key part of one group of G tokens: affine keys are per channel. */
static inline size_t kvs_kgroup_bytes(kvs_type t, int head_dim, int G) {
    int b = kvs_affine_bits(t);
    if (b) return (size_t)head_dim * ((size_t)G * b / 8 + sizeof(kvs_affine_meta));
    return (size_t)G * kvs_row_bytes(t, head_dim, G);
}

/* Bytes of the value part of one group of G tokens: values are always per token. */
static inline size_t kvs_vgroup_bytes(kvs_type t, int head_dim, int G) {
    return (size_t)G * kvs_row_bytes(t, head_dim, G);
}
#endif
