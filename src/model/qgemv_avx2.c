/* AVX2 matrix-vector products over GGUF blocks (contract in qgemv.h; reference in qgemv_ref.c).
 *
 * Q4_0, Q4_1 and Q8_0 blocks hold 32 weights w = d q + m (Q4_0: m = -8 d, Q8_0: m = 0), so
 * Σ w x = d Σ q x + m Σ x: the codes go to fp32 in registers, 4 FMAs against x per block, one FMA
 * by the block's d into one of two accumulators (even and odd blocks: two independent chains), and
 * m times the block's Σ x, computed once per call. F32 and F16 rows are plain dots; the
 * other types (Q5_*, k-quants) take the reference. */
#include <immintrin.h>
#include <string.h>

#include "qgemv.h"

static inline float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 16 packed nibbles -> the block's 32 codes as fp32: low nibbles are elements 0..15, high 16..31.
 * Each 8 bytes widen straight from memory to 32-bit lanes (one load-and-extend), then the nibbles
 * are masked and shifted in those lanes: no byte shuffles. */
static inline void nibbles(const uint8_t *qs, __m256 f[4]) {
    const __m256i b0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)qs));
    const __m256i b1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qs + 8)));
    const __m256i m4 = _mm256_set1_epi32(15);
    f[0] = _mm256_cvtepi32_ps(_mm256_and_si256(b0, m4));
    f[1] = _mm256_cvtepi32_ps(_mm256_and_si256(b1, m4));
    f[2] = _mm256_cvtepi32_ps(_mm256_srli_epi32(b0, 4));
    f[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(b1, 4));
}

static inline void bytes8(const uint8_t *qs, __m256 f[4]) {
    for (int i = 0; i < 4; i++) f[i] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(qs + 8 * i))));
}

enum { MAX_BLOCKS = 4096 }; /* x's block sums on the stack: rows up to 131072 weights */

/* Two rows of 32-weight blocks at once (they share x's loads). Per block: s = Σ q x over the 32
 * codes (4 FMAs), then acc += d s and, for Q4_1, acc += m xv, where xv's 8 lanes sum to the block's
 * Σ x, so the minimum needs no scalar chain; even and odd blocks accumulate apart (two chains per
 * row). Each row's sums depend only on that row and x, whichever slot it takes. Inlined with a
 * constant type, so each type's loop carries no type test. */
/* acc + d Σ q x (+ m Σ x for Q4_1) of one block against x's 4 vectors at xb */
static inline __attribute__((always_inline)) __m256 block_fma(uint32_t type, const uint8_t *blk, const __m256 xv[4],
                                                              const float *xsb, __m256 acc) {
    __m256 f[4];
    if (type == KVS_GGML_Q4_1) nibbles(blk + 4, f);
    else bytes8(blk + 2, f);
    const __m256 s =
        _mm256_fmadd_ps(f[3], xv[3], _mm256_fmadd_ps(f[2], xv[2], _mm256_fmadd_ps(f[1], xv[1], _mm256_mul_ps(f[0], xv[0]))));
    acc = _mm256_fmadd_ps(s, _mm256_set1_ps(h2f(blk)), acc);
    if (type == KVS_GGML_Q4_1) acc = _mm256_fmadd_ps(_mm256_load_ps(xsb), _mm256_set1_ps(h2f(blk + 2)), acc);
    return acc;
}

static inline __attribute__((always_inline)) void load_x(const float *xb, __m256 xv[4]) {
    for (int i = 0; i < 4; i++) xv[i] = _mm256_loadu_ps(xb + 8 * i);
}

static inline __attribute__((always_inline)) void row2_blocks(uint32_t type, const uint8_t *r0, const uint8_t *r1, int nb,
                                                              const float *x, const float *xs, float *y) {
    const size_t bb = type == KVS_GGML_Q4_1 ? 20 : 34;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps();
    __m256 xv[4];
    int b = 0;
    for (; b + 2 <= nb; b += 2) { /* even blocks into a0/c0, odd into a1/c1: registers, two chains per row */
        load_x(x + 32 * b, xv);
        a0 = block_fma(type, r0 + (size_t)b * bb, xv, xs + 8 * b, a0);
        c0 = block_fma(type, r1 + (size_t)b * bb, xv, xs + 8 * b, c0);
        load_x(x + 32 * (b + 1), xv);
        a1 = block_fma(type, r0 + (size_t)(b + 1) * bb, xv, xs + 8 * (b + 1), a1);
        c1 = block_fma(type, r1 + (size_t)(b + 1) * bb, xv, xs + 8 * (b + 1), c1);
    }
    if (b < nb) {
        load_x(x + 32 * b, xv);
        a0 = block_fma(type, r0 + (size_t)b * bb, xv, xs + 8 * b, a0);
        c0 = block_fma(type, r1 + (size_t)b * bb, xv, xs + 8 * b, c0);
    }
    y[0] = hsum(_mm256_add_ps(a0, a1));
    y[1] = hsum(_mm256_add_ps(c0, c1));
}

static void row2_q4_1(const uint8_t *r0, const uint8_t *r1, int nb, const float *x, const float *xs, float *y) {
    row2_blocks(KVS_GGML_Q4_1, r0, r1, nb, x, xs, y);
}
static void row2_q8_0(const uint8_t *r0, const uint8_t *r1, int nb, const float *x, const float *xs, float *y) {
    row2_blocks(KVS_GGML_Q8_0, r0, r1, nb, x, xs, y);
}
/* Q4_0's codes are nibble - 8: Σ (n - 8) x = Σ n x - 8 Σ x, the minimum being -8 d */
static void row2_q4_0(const uint8_t *r0, const uint8_t *r1, int nb, const float *x, const float *xs, float *y) {
    __m256 a0 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps();
    __m256 f[4];
    for (int b = 0; b < nb; b++) {
        const uint8_t *p = r0 + (size_t)b * 18, *q = r1 + (size_t)b * 18;
        const float *xb = x + 32 * b;
        const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8), x2 = _mm256_loadu_ps(xb + 16),
                     x3 = _mm256_loadu_ps(xb + 24), xv8 = _mm256_mul_ps(_mm256_load_ps(xs + 8 * b), _mm256_set1_ps(-8.0f));
        nibbles(p + 2, f);
        __m256 s = _mm256_fmadd_ps(f[3], x3, _mm256_fmadd_ps(f[2], x2, _mm256_fmadd_ps(f[1], x1, _mm256_fmadd_ps(f[0], x0, xv8))));
        nibbles(q + 2, f);
        __m256 t = _mm256_fmadd_ps(f[3], x3, _mm256_fmadd_ps(f[2], x2, _mm256_fmadd_ps(f[1], x1, _mm256_fmadd_ps(f[0], x0, xv8))));
        a0 = _mm256_fmadd_ps(s, _mm256_set1_ps(h2f(p)), a0);
        b0 = _mm256_fmadd_ps(t, _mm256_set1_ps(h2f(q)), b0);
    }
    y[0] = hsum(a0);
    y[1] = hsum(b0);
}

static float row_f32(const float *w, int n, const float *x) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(x + j), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j + 8), _mm256_loadu_ps(x + j + 8), a1);
    }
    float s = hsum(_mm256_add_ps(a0, a1));
    for (; j < n; j++) s += w[j] * x[j];
    return s;
}

static float row_f16(const uint8_t *w, int n, const float *x) {
    __m256 a0 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8)
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 2 * j))), _mm256_loadu_ps(x + j), a0);
    float s = hsum(a0);
    for (; j < n; j++) s += h2f(w + 2 * j) * x[j];
    return s;
}

void kvs_qgemv_avx2(const kvs_wmat *w, const float *x, float *y, int o0, int o1) {
    const uint32_t t = w->type;
    if (t == KVS_GGML_F32) {
        for (int o = o0; o < o1; o++) /* fp32 rows are 4-byte aligned (owned, or GGUF data aligned to 32) */
            y[o - o0] = row_f32((const float *)(const void *)(w->data + (size_t)o * w->row_bytes), w->cols, x);
        return;
    }
    if (t == KVS_GGML_F16) {
        for (int o = o0; o < o1; o++) y[o - o0] = row_f16(w->data + (size_t)o * w->row_bytes, w->cols, x);
        return;
    }
    const int nb = w->cols / 32;
    if ((t != KVS_GGML_Q4_0 && t != KVS_GGML_Q4_1 && t != KVS_GGML_Q8_0) || nb > MAX_BLOCKS) {
        kvs_qgemv_ref(w, x, y, o0, o1);
        return;
    }
    static _Thread_local float xs[8 * MAX_BLOCKS] __attribute__((aligned(32))); /* per block: 8 lanes summing to its Σ x */
    for (int b = 0; b < nb; b++) {
        const float *xb = x + 32 * b;
        _mm256_store_ps(xs + 8 * b, _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(xb), _mm256_loadu_ps(xb + 8)),
                                                  _mm256_add_ps(_mm256_loadu_ps(xb + 16), _mm256_loadu_ps(xb + 24))));
    }
    void (*row2)(const uint8_t *, const uint8_t *, int, const float *, const float *, float *) =
        t == KVS_GGML_Q4_1 ? row2_q4_1 : t == KVS_GGML_Q8_0 ? row2_q8_0 : row2_q4_0;
    int o = o0;
    for (; o + 1 < o1; o += 2) row2(w->data + (size_t)o * w->row_bytes, w->data + (size_t)(o + 1) * w->row_bytes, nb, x, xs, y + (o - o0));
    if (o < o1) { /* the last row alone, paired with itself */
        float pair[2];
        row2(w->data + (size_t)o * w->row_bytes, w->data + (size_t)o * w->row_bytes, nb, x, xs, pair);
        y[o - o0] = pair[0];
    }
}

/* Rows to fp32 with exactly the reference's values: codes times d, then plus m, each rounded as
 * the scalar decoder does (a multiply and an add, never fused). */
void kvs_wmat_dequant_rows_avx2(const kvs_wmat *w, int o0, int o1, float *out) {
    const uint32_t t = w->type;
    if (t != KVS_GGML_Q4_0 && t != KVS_GGML_Q4_1 && t != KVS_GGML_Q8_0) {
        kvs_wmat_dequant_rows_ref(w, o0, o1, out);
        return;
    }
    const int nb = w->cols / 32;
    __m256 f[4];
    for (int o = o0; o < o1; o++) {
        const uint8_t *row = w->data + (size_t)o * w->row_bytes;
        float *y = out + (size_t)(o - o0) * w->cols;
        for (int b = 0; b < nb; b++, y += 32) {
            __m256 d, m = _mm256_setzero_ps();
            int add = 0;
            if (t == KVS_GGML_Q4_1) {
                const uint8_t *blk = row + (size_t)b * 20;
                d = _mm256_set1_ps(h2f(blk));
                m = _mm256_set1_ps(h2f(blk + 2));
                add = 1;
                nibbles(blk + 4, f);
            } else if (t == KVS_GGML_Q4_0) {
                const uint8_t *blk = row + (size_t)b * 18;
                d = _mm256_set1_ps(h2f(blk));
                nibbles(blk + 2, f);
                for (int i = 0; i < 4; i++) f[i] = _mm256_sub_ps(f[i], _mm256_set1_ps(8.0f)); /* exact: small integers */
            } else {
                const uint8_t *blk = row + (size_t)b * 34;
                d = _mm256_set1_ps(h2f(blk));
                bytes8(blk + 2, f);
            }
            for (int i = 0; i < 4; i++) {
                __m256 v = _mm256_mul_ps(f[i], d);
                if (add) v = _mm256_add_ps(v, m);
                _mm256_storeu_ps(y + 8 * i, v);
            }
        }
    }
}
