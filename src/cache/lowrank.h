/* StiefAttention in the cache (docs/methods/stiefel.md): keys and values stored as coefficients in
 * the calibration's orthonormal bases, c_K = P_K^T k before RoPE (one basis per layer) and
 * c_V = P_V,h^T v (one per KV head), with ranks per layer. The cache keeps its own copy of the
 * bases it uses (counted in kvs_cache_bytes), so the calibration may be freed after creation. */
#ifndef KVS_CACHE_LOWRANK_H
#define KVS_CACHE_LOWRANK_H
#include <stddef.h>

#include "kvslim.h"

/* The stiefel= part of a config: the other settings it needs (rope=adjacent; any key and value
 * type: fp32, fp16, q8_0, q4_0 coefficient rows or affine INTb groups, values' ranks a multiple of
 * group=; no OScaR norm, which acts on full-width keys; Jensen's term only on quantized keys;
 * rotate=hadamard turns the coefficient space instead, P H, spec section 6: PCA coefficients
 * decay, so one scale per 32 of them wastes the small ones' bits, and P H is still orthonormal), the
 * calibration's bases of that kind for these shapes, and ranks that the set can give: learned
 * bases at exactly their fitted ranks, PCA and EigenAttention bases at any rank up to what is stored
 * (they are eigenvectors by descending eigenvalue: a smaller rank is a prefix).
 * @return KVS_OK or KVS_ERR_CONFIG (KVS_ERR_NOMEM for the rank tables). */
kvs_status kvs__lowrank_validate(const kvs_config *cfg);
/* Per-layer ranks rk[L], rv[L] of a validated low-rank config: stiefel=RK/RV everywhere; auto with
 * a budget: the allocator (calib/rank_alloc.h; exact knapsack) over the calibration's error-rank profiles, each
 * option's cost the coefficient row bytes, the budget rank_budget times the full rows' bytes;
 * auto without: the basis set's own ranks. Reports like kvs__lowrank_validate. */
kvs_status kvs__lowrank_ranks(const kvs_config *cfg, int *rk, int *rv);
/* Floats of the cache's copy of the bases: d * sum_l (rk[l] + kv_heads * rv[l]). */
size_t kvs__lowrank_floats(const kvs_config *cfg, const int *rk, const int *rv);
/* Copy the bases (validated config, its ranks): per layer the key basis transposed [rk[l]][d] (a key
 * is rebuilt as a sum of rows of P_K^T: contiguous in the channels) then the value bases
 * [kv_heads][d][rv[l]] (the output projection reads rows of P_V: contiguous in the coefficients).
 * With rotate=hadamard each basis is P H (normalized, power-of-two ranks: validated).
 * pkt[l], pv[l] receive where each layer's start. */
void kvs__lowrank_fill(const kvs_config *cfg, const int *rk, const int *rv, float *bases, float **pkt, float **pv);
#endif
