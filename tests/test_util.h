/* Tiny test harness: named tolerances, a seeded RNG, checks that report where and by how much. */
#ifndef KVS_TEST_UTIL_H
#define KVS_TEST_UTIL_H
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kvslim.h"

/* Named tolerances (relative to the output scale unless said otherwise). */
#define KVS_TOL_FP32 2e-5         /* fp32 cache vs double reference */
#define KVS_TOL_REF_VS_SIMD 2e-4  /* AVX2 kernel vs scalar reference: summation order, exp poly */

static int g_fail = 0, g_pass = 0;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (cond) g_pass++;                                                    \
        else {                                                                 \
            g_fail++;                                                          \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, "\n");                                             \
        }                                                                      \
    } while (0)

#define CHECK_OK(expr)                                                                        \
    do {                                                                                      \
        kvs_status st_ = (expr);                                                              \
        CHECK(st_ == KVS_OK, "%s -> %s (%s)", #expr, kvs_status_str(st_), kvs_last_error()); \
    } while (0)

static inline int test_done(const char *name) {
    printf("%s: %d passed, %d failed\n", name, g_pass, g_fail);
    return g_fail ? 1 : 0;
}

/* splitmix64 */
typedef struct { uint64_t s; } rng_t;
static inline uint64_t rng_u64(rng_t *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline double rng_uniform(rng_t *r) { return (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }
static inline double rng_normal(rng_t *r) {
    double u = rng_uniform(r), v = rng_uniform(r);
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}
static inline void fill_normal(rng_t *r, float *x, size_t n, double sd) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(sd * rng_normal(r));
}
/* P [d][r] (d <= 64) with orthonormal columns: Gaussian columns through modified Gram-Schmidt in
 * double (low-rank bases for tests) */
static inline void test_orthonormal(rng_t *g, float *P, int d, int r) {
    double A[64 * 64];
    for (int i = 0; i < d * r; i++) A[i] = rng_normal(g);
    for (int j = 0; j < r; j++) {
        for (int k = 0; k < j; k++) {
            double dot = 0;
            for (int t = 0; t < d; t++) dot += A[t * r + j] * A[t * r + k];
            for (int t = 0; t < d; t++) A[t * r + j] -= dot * A[t * r + k];
        }
        double nn = 0;
        for (int t = 0; t < d; t++) nn += A[t * r + j] * A[t * r + j];
        for (int t = 0; t < d; t++) A[t * r + j] /= sqrt(nn);
    }
    for (int i = 0; i < d * r; i++) P[i] = (float)A[i];
}

/* Max |a-b| over n, and the index where it occurred. */
static inline double max_abs_diff(const float *a, const float *b, size_t n, size_t *where) {
    double m = 0.0;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (e > m || e != e) {
            m = e;
            w = i;
        }
    }
    if (where) *where = w;
    return m;
}
#endif
