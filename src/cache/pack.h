/* From fp32 tokens to a group block: rotation, OScaR norm, quantization. Append and the chunk
 * view (cache/view.c) both go through these, so a group quantized ahead of time for a chunk is
 * bit-identical to the one append stores. */
#ifndef KVS_CACHE_PACK_H
#define KVS_CACHE_PACK_H
#include "cache.h"

/* G tokens of every KV head into fresh blocks[h] (zeroed) and, with scale=token, their norms[G].
 * k, v: [n_kv][G][d], raw basis; overwritten (rotated and normalized in place). A low-rank plan
 * (affine INTb coefficients) stores layer `layer`'s coefficients of the keys turned back from their
 * positions pos0 .. pos0 + G - 1. */
void kvs__pack_group(const struct kvs_cache *c, int layer, long long pos0, float *k, float *v, uint8_t *const *blocks, float *norm);
/* One token of every KV head into row `row` of blocks[h] (per-token key types only), its norm into
 * norm[row]. k, v: [n_kv][d], overwritten. A low-rank plan stores the coefficients of the token's
 * key before RoPE (turned back by its position `pos`) in layer `layer`'s bases. */
void kvs__pack_token(const struct kvs_cache *c, int layer, long long pos, float *k, float *v, uint8_t *const *blocks,
                     int row, float *norm);
#endif
