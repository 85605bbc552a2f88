/* The AVX2 inner operations of the low-rank groups kernel (attend_lowrank_ref.c has the loop and
 * the contract): the key rebuilt as 8-wide FMAs over rows of P_K^T, the score dot product, the
 * coefficient accumulation. Shapes with d or r_V not a multiple of 8 finish in scalar code. */
#include <immintrin.h>

#include "attn.h"

static void rebuild_avx2(const float *Pt, const float *c, int d, int r, float *k) {
    int x = 0;
    for (; x + 8 <= d; x += 8) {
        __m256 a = _mm256_setzero_ps();
        for (int j = 0; j < r; j++) a = _mm256_fmadd_ps(_mm256_set1_ps(c[j]), _mm256_loadu_ps(Pt + (size_t)j * d + x), a);
        _mm256_storeu_ps(k + x, a);
    }
    for (; x < d; x++) {
        float a = 0.0f;
        for (int j = 0; j < r; j++) a += c[j] * Pt[(size_t)j * d + x];
        k[x] = a;
    }
}

static float dot_avx2(const float *a, const float *b, int n) {
    __m256 v = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) v = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), v);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float s = _mm_cvtss_f32(h);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_avx2(float *acc, float w, const float *x, int n) {
    const __m256 vw = _mm256_set1_ps(w);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(vw, _mm256_loadu_ps(x + i), _mm256_loadu_ps(acc + i)));
    for (; i < n; i++) acc[i] += w * x[i];
}

static const kvs_lowrank_ops avx2_ops = {rebuild_avx2, dot_avx2, axpy_avx2};

void kvs__groups_lowrank_avx2(const kvs_attn_job *j, int g0, int g1, kvs_partial *p) { kvs__lowrank_groups(j, g0, g1, p, &avx2_ops); }
