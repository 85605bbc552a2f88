/* Every bit layout of the cache, in one place. CPU (and later CUDA) kernels include this file;
 * memory accounting reads its sizes from here.
 *
 * ggml blocks (bit-identical to ggml-common.h), per token along head_dim, 32 channels a block:
 *   q8_0: fp16 d, int8 qs[32]                 value = qs[j] * d
 *   q4_0: fp16 d, uint8 qs[16]                element j in the low nibble of qs[j], element j+16
 *                                             in the high nibble; value = (nibble - 8) * d
 * Affine INTb (b in 2,3,4,8), fp16 scale S and offset O per group, x = c*S + O, metadata as
 * separate S and O arrays so kernels convert 8 of them with one instruction:
 *   keys, one group = G tokens x head_dim channels, per channel over the G tokens:
 *     codes [head_dim * G * b / 8 bytes], code (c, t) at bit kvs_key_bit(b, G, c, t)
 *     S [head_dim], O [head_dim]
 *   values, per token, channel groups of G (nj = head_dim / G groups):
 *     codes [G * head_dim * b / 8 bytes], code (t, c) at bit kvs_val_bit(b, G, d, t, c)
 *     S [nj][G], O [nj][G]
 * Two code layouts, both chosen by shape alone:
 *   paired (b in {2,4}; keys with G = 32, values with G % 16 == 0 and head_dim % (128/b) == 0): 32-byte chunks
 *     whose bytes, after (x >> b*s) & mask, hold adjacent pairs (two channels of one token for
 *     keys, two tokens of one channel for values) in the order the integer multiply-add
 *     instruction (u8 x s8, pairs summed) consumes them;
 *   rows (otherwise): one row per channel (keys) or token (values), slot kvs_code_slot within it.
 * Per-token types (fp32, fp16, q8_0, q4_0): a group is [G tokens][row bytes].
 * head_dim is a multiple of 16, so every array offset is even (2-byte fields aligned).
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

/* Slot of element i in a row of n codes of b bits. For b in {2, 4, 8} and n a multiple of the
 * 64/b codes of a word, element 8k+l (l < 8) of word w goes to slot
 *   w*epw + (l&1)*epw/2 + (l>>1) + 4*(k mod epw/8),   epw = 64/b,
 * i.e. the lanes of an 8-wide vector alternate between the low and high 32-bit half of the word;
 * otherwise slot = i (plain LSB-first order). */
static inline int kvs_code_slot(int b, int n, int i) {
    if (b == 3 || n % (64 / b)) return i;
    const int epw = 64 / b, word = i / epw, k = (i % epw) / 8, l = i % 8;
    return word * epw + (l & 1) * (epw / 2) + (l >> 1) + 4 * k;
}

/* Which layout applies (see above). */
static inline int kvs_key_paired(int b, int G) { return (b == 2 || b == 4) && G == 32; }
static inline int kvs_val_paired(int b, int G, int d) { return (b == 2 || b == 4) && d % (128 / b) == 0 && G % 16 == 0; }

/* Bit offset of key code (channel c, token t) in a group's key codes. Paired: a 32-byte chunk
 * holds 8/b channels x 32 tokens; shift s = 2*(pair in chunk) + t/16, byte p = 2*(t%16) + c%2. */
static inline size_t kvs_key_bit(int b, int G, int c, int t) {
    if (kvs_key_paired(b, G)) {
        const int cps = 8 / b, sub = c / cps, cc = c % cps;
        const int s = 2 * (cc / 2) + t / 16, p = 2 * (t % 16) + (cc & 1);
        return (size_t)sub * 256 + 8 * (size_t)p + (size_t)b * s;
    }
    return (size_t)c * G * b + (size_t)b * kvs_code_slot(b, G, t);
}

/* Bit offset of value code (token t, channel c) in a group's value codes. Paired: tokens 2u and
 * 2u+1 share d*b/4 bytes; a 32-byte chunk holds 128/b channels, shift s = (c%cps)/16, byte
 * p = 2*(c%16) + t%2. */
static inline size_t kvs_val_bit(int b, int G, int d, int t, int c) {
    if (kvs_val_paired(b, G, d)) {
        const int cps = 128 / b, sub = c / cps, cc = c % cps;
        const int s = cc / 16, p = 2 * (cc % 16) + (t & 1);
        return (size_t)(t / 2) * d * b * 2 + (size_t)sub * 256 + 8 * (size_t)p + (size_t)b * s;
    }
    return (size_t)t * d * b + (size_t)b * kvs_code_slot(b, d, c);
}

/* Bytes of one token row of the per-token types (fp32, fp16, q8_0, q4_0); 0 for affine types. */
static inline size_t kvs_row_bytes(kvs_type t, int head_dim) {
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
    if (b) return (size_t)head_dim * ((size_t)G * b / 8 + 2 * sizeof(uint16_t));
    return (size_t)G * kvs_row_bytes(t, head_dim);
}

/* Bytes of the value part of one group of G tokens: values are per token. */
static inline size_t kvs_vgroup_bytes(kvs_type t, int head_dim, int G) {
    int b = kvs_affine_bits(t);
    if (b) return (size_t)G * ((size_t)head_dim * b / 8 + (size_t)(head_dim / G) * 2 * sizeof(uint16_t));
    return (size_t)G * kvs_row_bytes(t, head_dim);
}
#endif
