/* The AVX2 inner operations of the low-rank groups kernel (attend_lowrank_ref.c has the loop and
 * the contract): the key rebuilt as 8-wide FMAs over rows of P_K^T, RoPE on pairs, the scores of a
 * KV head's query heads, the coefficient accumulation. Shapes with d or r_V not a multiple of 8
 * finish in scalar code. */
#include <immintrin.h>

#include "attn.h"

/* 64 channels at a time in 8 accumulators: independent FMA chains, one broadcast of c[j] per row
 * (one accumulator per 8 channels would wait on the FMA latency at every row) */
static void rebuild_avx2(const float *Pt, const float *c, int d, int r, float *k) {
    int x = 0;
    for (; x + 64 <= d; x += 64) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int j = 0; j < r; j++) {
            const __m256 cj = _mm256_set1_ps(c[j]);
            const float *p = Pt + (size_t)j * d + x;
            a0 = _mm256_fmadd_ps(cj, _mm256_loadu_ps(p), a0), a1 = _mm256_fmadd_ps(cj, _mm256_loadu_ps(p + 8), a1);
            a2 = _mm256_fmadd_ps(cj, _mm256_loadu_ps(p + 16), a2), a3 = _mm256_fmadd_ps(cj, _mm256_loadu_ps(p + 24), a3);
            a4 = _mm256_fmadd_ps(cj, _mm256_loadu_ps(p + 32), a4), a5 = _mm256_fmadd_ps(cj, _mm256_loadu_ps(p + 40), a5);
            a6 = _mm256_fmadd_ps(cj, _mm256_loadu_ps(p + 48), a6), a7 = _mm256_fmadd_ps(cj, _mm256_loadu_ps(p + 56), a7);
        }
        _mm256_storeu_ps(k + x, a0), _mm256_storeu_ps(k + x + 8, a1), _mm256_storeu_ps(k + x + 16, a2), _mm256_storeu_ps(k + x + 24, a3);
        _mm256_storeu_ps(k + x + 32, a4), _mm256_storeu_ps(k + x + 40, a5), _mm256_storeu_ps(k + x + 48, a6), _mm256_storeu_ps(k + x + 56, a7);
    }
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

/* RoPE on adjacent pairs, 4 pairs at a time: cs holds (cos, sin) per pair in the key's own
 * layout, so (k0, k1) -> (k0 c - k1 s, k1 c + k0 s) is addsub(k * c, swap(k) * s) */
static void rope_avx2(float *k, int d, const float *cs) {
    int x = 0;
    for (; x + 8 <= d; x += 8) {
        const __m256 v = _mm256_loadu_ps(k + x), t = _mm256_loadu_ps(cs + x);
        const __m256 c = _mm256_moveldup_ps(t), sn = _mm256_movehdup_ps(t), sw = _mm256_permute_ps(v, 0xB1);
        _mm256_storeu_ps(k + x, _mm256_addsub_ps(_mm256_mul_ps(v, c), _mm256_mul_ps(sw, sn)));
    }
    for (; x + 2 <= d; x += 2) {
        const float a = k[x], b = k[x + 1], c = cs[x], sn = cs[x + 1];
        k[x] = a * c - b * sn, k[x + 1] = b * c + a * sn;
    }
}

/* the sums of four accumulators in one vector */
static inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 e) {
    const __m256 r = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, e));
    return _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1));
}

/* up to 4 heads x 2 keys per pass: 8 independent chains, the keys' loads shared by the heads */
static void scores_avx2(const float *const *q, int g, const float *k, int nt, int d, float tau, float *s, int G) {
    if (d % 8) { /* not this kernel's shapes: plain dot products */
        for (int h = 0; h < g; h++)
            for (int t = 0; t < nt; t++) s[(size_t)h * G + t] = tau * dot_avx2(q[h], k + (size_t)t * d, d);
        return;
    }
    for (int h0 = 0; h0 < g; h0 += 4) {
        const int hb = g - h0 < 4 ? g - h0 : 4;
        const float *q0 = q[h0], *q1 = q[h0 + (hb > 1)], *q2 = q[h0 + (hb > 2 ? 2 : 0)], *q3 = q[h0 + (hb > 3 ? 3 : 0)];
        for (int t = 0; t < nt; t += 2) {
            const float *k0 = k + (size_t)t * d, *k1 = t + 1 < nt ? k0 + d : k0;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            for (int x = 0; x < d; x += 8) {
                const __m256 x0 = _mm256_loadu_ps(k0 + x), x1 = _mm256_loadu_ps(k1 + x);
                const __m256 y0 = _mm256_loadu_ps(q0 + x), y1 = _mm256_loadu_ps(q1 + x), y2 = _mm256_loadu_ps(q2 + x), y3 = _mm256_loadu_ps(q3 + x);
                a0 = _mm256_fmadd_ps(y0, x0, a0), a1 = _mm256_fmadd_ps(y1, x0, a1), a2 = _mm256_fmadd_ps(y2, x0, a2), a3 = _mm256_fmadd_ps(y3, x0, a3);
                b0 = _mm256_fmadd_ps(y0, x1, b0), b1 = _mm256_fmadd_ps(y1, x1, b1), b2 = _mm256_fmadd_ps(y2, x1, b2), b3 = _mm256_fmadd_ps(y3, x1, b3);
            }
            float ra[4], rb[4];
            _mm_storeu_ps(ra, _mm_mul_ps(hsum4(a0, a1, a2, a3), _mm_set1_ps(tau)));
            _mm_storeu_ps(rb, _mm_mul_ps(hsum4(b0, b1, b2, b3), _mm_set1_ps(tau)));
            for (int h = 0; h < hb; h++) {
                s[(size_t)(h0 + h) * G + t] = ra[h];
                if (t + 1 < nt) s[(size_t)(h0 + h) * G + t + 1] = rb[h];
            }
        }
    }
}

/* fp16 rows through F16C (the portable conversion is a dozen integer operations per element);
 * other types as the reference does */
static void dequant_avx2(kvs_type t, int is_key, const uint8_t *part, int G, int r, int tok, float *out) {
    if (t != KVS_TYPE_FP16) {
        kvs__lowrank_dequant_ref(t, is_key, part, G, r, tok, out);
        return;
    }
    const uint8_t *row = part + (size_t)tok * r * 2;
    int i = 0;
    for (; i + 8 <= r; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + (size_t)i * 2))));
    for (; i < r; i++) out[i] = _cvtsh_ss((unsigned short)(row[2 * i] | row[2 * i + 1] << 8));
}

static const kvs_lowrank_ops avx2_ops = {rebuild_avx2, rope_avx2, dequant_avx2, scores_avx2, dot_avx2, axpy_avx2};

void kvs__groups_lowrank_avx2(const kvs_attn_job *j, int g0, int g1, kvs_partial *p) { kvs__lowrank_groups(j, g0, g1, p, &avx2_ops); }
