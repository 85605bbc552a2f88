/* Transforms and corrections the cache applies on append and the kernels inline. */
#ifndef KVS_METHODS_H
#define KVS_METHODS_H
#include <stddef.h>
#include <stdint.h>

/* Orthonormal Walsh-Hadamard transform in place, x[d], d a power of two (Sylvester order, no
 * random signs: H[i][j] = (-1)^popcount(i&j)/sqrt(d)). H is symmetric and its own inverse. */
void kvs_fwht(float *x, int d);

/* OScaR per-token norm over all KV heads: the L2 norm of n_heads vectors of d floats, head h at
 * k + h * head_stride; 1 if that is 0 or not finite (so an all-zero key stays 0, never NaN). */
float kvs_oscar_norm(const float *k, int n_heads, int d, size_t head_stride);

/* RoPE on adjacent pairs (2p, 2p+1) of every head of x [n][heads][d], token i at position pos0 + i:
 * angle pos * base^(-2p/d), computed in double and applied in float, the arithmetic of the engine
 * (src/model/llama.c) so that a cache that rotates gives the bits of an engine that does. */
void kvs_rope_rows(float *x, int n, int heads, int d, long long pos0, float base);
/* The angles of positions pos0 .. pos0 + n - 1: cs[i][p] = (cos, sin), [n][d/2][2], the same floats
 * kvs_rope_rows uses; and one row x[d] turned by a row of such a table. */
void kvs_rope_table(float *cs, int n, int d, long long pos0, float base);
static inline void kvs_rope_apply(float *x, int d, const float *cs) {
    for (int p = 0; p < d / 2; p++) {
        const float c = cs[2 * p], s = cs[2 * p + 1], a = x[2 * p], b = x[2 * p + 1];
        x[2 * p] = a * c - b * s;
        x[2 * p + 1] = a * s + b * c;
    }
}

/* Jensen bias correction (docs/methods/jensen.md).
 * ln(sinh a / a), accurate for all a (series near 0, log form elsewhere; never calls sinh). */
double kvs_log_sinhc(double a);
/* Taylor (second-order) per-channel weights: w[c] = lambda * tau^2 * q[c]^2 / 24. */
void kvs_jensen_weights(const float *q, int d, float tau, float lambda, float *w);
/* Exact form for one key: sum_c ln(sinh(a_c)/a_c), a_c = tau * n * q[c] * delta[c] / 2,
 * times lambda. */
float kvs_jensen_exact(const float *q, const float *delta, int d, float tau, float n, float lambda);
#endif
