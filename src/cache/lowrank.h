/* StiefAttention in the cache (docs/methods/stiefel.md): keys and values stored as coefficients in
 * the calibration's orthonormal bases, c_K = P_K^T k before RoPE (one basis per layer) and
 * c_V = P_V,h^T v (one per KV head). The cache keeps its own copy of the bases it uses (counted in
 * kvs_cache_bytes), so the calibration may be freed after creation. */
#ifndef KVS_CACHE_LOWRANK_H
#define KVS_CACHE_LOWRANK_H
#include <stddef.h>

#include "kvslim.h"

/* The stiefel= part of a config: ranks, the other settings it needs (rope=adjacent; fp32 or fp16
 * coefficients; no Hadamard, OScaR norm or Jensen term, which act on full-width keys), the
 * calibration's bases of that kind for these shapes, learned bases at exactly the asked ranks
 * (PCA bases are nested: any smaller rank is their prefix). @return KVS_OK or KVS_ERR_CONFIG. */
kvs_status kvs__lowrank_validate(const kvs_config *cfg);
/* Floats of the cache's copy of the bases: layers * d * (rank_k + kv_heads * rank_v); 0 when off. */
size_t kvs__lowrank_floats(const kvs_config *cfg);
/* Copy the bases (validated config): key bases transposed, pkt [layers][rank_k][d] (a key is rebuilt
 * as a sum of rows of P_K^T: contiguous in the channels), value bases pv [layers][kv_heads][d][rank_v]
 * (the output projection reads rows of P_V: contiguous in the coefficients). */
void kvs__lowrank_fill(const kvs_config *cfg, float *pkt, float *pv);
#endif
