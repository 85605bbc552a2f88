/* RoPE inside the cache (methods.h): for caches whose keys are projected before RoPE (low-rank
 * bases act on pre-RoPE keys), the cache, not the engine, turns queries and keys. */
#include <math.h>

#include "methods.h"

void kvs_rope_rows(float *x, int n, int heads, int d, long long pos0, float base) {
    float cs[1024]; /* one position's angles; head_dim <= 1024 (config) */
    for (int i = 0; i < n; i++) {
        kvs_rope_table(cs, 1, d, pos0 + i, base);
        for (int h = 0; h < heads; h++) kvs_rope_apply(x + ((size_t)i * heads + h) * d, d, cs);
    }
}

void kvs_rope_table(float *cs, int n, int d, long long pos0, float base) {
    for (int i = 0; i < n; i++)
        for (int p = 0; p < d / 2; p++) {
            const double theta = (double)(pos0 + i) * pow((double)base, -2.0 * p / d);
            cs[((size_t)i * (d / 2) + p) * 2] = (float)cos(theta);
            cs[((size_t)i * (d / 2) + p) * 2 + 1] = (float)sin(theta);
        }
}
