/* Eviction plans (HeatKV and its baselines, docs/methods/heatkv.md): resolved once, at cache
 * creation, into one number per (layer, KV head, block of quantized tokens): the token count after
 * which that block is gone. Append frees a block when its layer reaches that count; attention
 * hides it from every query whose cache state is at or past it. So the cache never decides
 * anything at run time, a chunk sees what token-by-token decoding would, and evictions only add. */
#ifndef KVS_CACHE_EVICT_H
#define KVS_CACHE_EVICT_H
#include <stdint.h>

#include "kvslim.h"

enum { KVS_EVICT_MAX_TOKENS = 1 << 20, KVS_RANDOM_BLOCK = 256 };
#define KVS_NEVER INT32_MAX

typedef struct {
    int blk_tokens;    /* tokens per evictable block, a multiple of the group */
    int n_blocks;      /* blocks per stream: ceil(quantized tokens at max_tokens / blk_tokens) */
    long long slots;   /* M: token slots the whole cache may hold (sinks and window included) */
    int32_t *drop;     /* [n_layers][n_kv_heads][n_blocks] (malloc) */
} kvs_evict_plan;

/* Tokens per evictable block for this config (0 without eviction). */
int kvs__evict_block(const kvs_config *cfg);
/* Blocks per stream (0 without eviction). */
int kvs__evict_n_blocks(const kvs_config *cfg);
/* Check budget, calibration and shapes. @return KVS_OK or KVS_ERR_CONFIG naming the problem. */
kvs_status kvs__evict_validate(const kvs_config *cfg);
/* Build the plan (cfg already validated). @return KVS_OK, KVS_ERR_CONFIG, KVS_ERR_NOMEM. */
kvs_status kvs__evict_plan(const kvs_config *cfg, kvs_evict_plan *plan);
void kvs__evict_plan_free(kvs_evict_plan *plan);
/* Per-unit slot budgets (heatkv=prop, heatkv=greedy), each >= base and <= cap, summing to M (less
 * only when every unit is capped). 1, or 0 out of memory. Exposed for the tests. */
int kvs__prop_budgets(const double *score, int U, long long base, long long M, long long cap, long long *b);
/* keep=K's streams: the K units with the most induction mass under agg, as prot[U] = 1. Returns K. */
int kvs__retrieval_units(const struct kvs_calib *cal, int agg, int U, int K, char *prot);
int kvs__greedy_budgets(const struct kvs_calib *cal, int agg, int U, long long base, long long M, long long cap,
                         long long *b);
#endif
