/* OScaR omni-token scaling (docs/methods/oscar.md section 4): one L2 norm per token over all KV heads of a
 * layer, so every stored key vector has unit norm and shares one per-channel range. */
#include <math.h>

#include "methods.h"

float kvs_oscar_norm(const float *k, int n_heads, int d, size_t head_stride) {
    double s = 0.0; /* double: the norm must not depend on summation order across platforms */
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < d; i++) s += (double)k[h * head_stride + i] * k[h * head_stride + i];
    const float r = (float)sqrt(s);
    return (r > 0.0f && isfinite(r)) ? r : 1.0f;
}
