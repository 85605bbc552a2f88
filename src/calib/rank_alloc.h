/* Rank allocation under a byte budget (spec section 5.3; kvslim's own reading of the paper's
 * "sequential" v2 allocator). Each layer offers options (cache bytes per token, weighted output
 * error), e.g. one per candidate (r_K, r_V). Greedy: keep each layer's lower convex hull of its
 * Pareto points, start every layer at its most expensive point, and repeatedly move the layer
 * whose next cheaper hull point costs the least error per byte saved, until the total fits. The
 * moves do not depend on the budget (a larger one only stops earlier), so a larger budget never
 * raises the total error. The exact multiple-choice knapsack is kept beside it to check it. */
#ifndef KVS_LOWRANK_RANK_ALLOC_H
#define KVS_LOWRANK_RANK_ALLOC_H
#include "kvslim.h"

typedef struct {
    long bytes; /* > 0 */
    double err; /* finite, >= 0 */
} kvs_lr_option;

/* opt[l][0 .. n[l]-1] per layer; choice[l] receives the index of the option picked.
 * @return KVS_OK; KVS_ERR_ARG (no options, bytes <= 0, error not finite or negative);
 * KVS_ERR_CAPACITY when the budget is below the sum of each layer's cheapest option (the message
 * names both). */
kvs_status kvs_lr_allocate(const kvs_lr_option *const *opt, const int *n, int L, long budget, int *choice);

/* The same problem solved exactly (dynamic programming over bytes; minimal total error, ties to
 * fewer bytes); budget at most 2^22 bytes. Same return codes. */
kvs_status kvs_lr_allocate_exact(const kvs_lr_option *const *opt, const int *n, int L, long budget, int *choice);
#endif
