/* AVX2/FMA/F16C kernels, same contract as attend_ref.c. Nothing is dequantized into a buffer:
 * per-channel key scales and offsets are folded into the query (a_c = q_c*S_c, beta = q.O), the
 * OScaR norm and Jensen term into the score, per-token value scales into the probabilities
 * (acc += (p*S) * code, offsets summed once per group). Codes are unpacked in registers.
 *
 * Codes: for b in {2,4,8} one 64-bit word is broadcast and each lane shifted by its own amount;
 * the slot order of formats.h makes the 8 lanes come out as 8 consecutive tokens (keys) or
 * channels (values), so no result needs re-ordering. */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/fp16.h"
#include "../methods/methods.h"
#include "../quant/quant.h"
#include "attn.h"

static inline float hsum(__m256 v) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

static inline float hmax(__m256 v) {
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

/* exp(x) for x <= 0 (scores minus their running max): Cody-Waite reduction and a degree-6
 * polynomial, relative error ~2e-7; inputs below -87 flush to 0. */
static inline __m256 exp_neg(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, y);
}

/* ---- code unpacking ---------------------------------------------------------------------- */


/* Lane shifts of sub-vector `sub` of a broadcast 64-bit word: lanes alternate between the low
 * and high 32-bit halves, lane l takes element (l>>1) + 4*sub of its half. */
static inline __m256i perm_shift(const int B, int sub) {
    return _mm256_setr_epi32(B * (4 * sub), B * (4 * sub), B * (4 * sub + 1), B * (4 * sub + 1), B * (4 * sub + 2),
                             B * (4 * sub + 2), B * (4 * sub + 3), B * (4 * sub + 3));
}

static inline __m256 codes_perm(__m256i word, __m256i shift, const int B) {
    return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(word, shift), _mm256_set1_epi32((1 << B) - 1)));
}

static inline __m256i bcast_word(const uint8_t *p) {
    int64_t w;
    memcpy(&w, p, 8);
    return _mm256_set1_epi64x(w);
}

/* Elements 8k..8k+7 of a row in natural order. */
static inline __m256 codes_nat(const uint8_t *row, int k, const int B) {
    if (B == 8) return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(row + 8 * k))));
    uint32_t w = 0;
    memcpy(&w, row + B * k, (size_t)B);
    const __m256i sh = _mm256_setr_epi32(0, B, 2 * B, 3 * B, 4 * B, 5 * B, 6 * B, 7 * B);
    return _mm256_cvtepi32_ps(
        _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w), sh), _mm256_set1_epi32((1 << B) - 1)));
}

/* Elements 8k..8k+7 of a row of codes, as floats. */
static inline __m256 codes_vec(const uint8_t *row, int k, const int B, const int perm) {
    if (!perm) return codes_nat(row, k, B);
    const int vpw = 8 / B;
    return codes_perm(bcast_word(row + 8 * (k / vpw)), perm_shift(B, k % vpw), B);
}

/* ---- per-token row types (fp32, fp16, q8_0, q4_0) ----------------------------------------- */

/* Elements c0..c0+7 of a row; *scale receives the block scale the values must be multiplied by. */
static inline __m256 row_vec(const uint8_t *row, int c0, float *scale, const kvs_type T) {
    if (T == KVS_TYPE_FP32) {
        *scale = 1.0f;
        return _mm256_loadu_ps((const float *)row + c0);
    }
    if (T == KVS_TYPE_FP16) {
        *scale = 1.0f;
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * c0)));
    }
    if (T == KVS_TYPE_Q8_0) {
        const kvs_block_q8_0 *b = (const kvs_block_q8_0 *)row + c0 / KVS_QK;
        *scale = _cvtsh_ss(b->d);
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b->qs + c0 % KVS_QK))));
    }
    /* q4_0: elements j and j+16 share byte j */
    const kvs_block_q4_0 *b = (const kvs_block_q4_0 *)row + c0 / KVS_QK;
    const int j = c0 % KVS_QK;
    *scale = _cvtsh_ss(b->d);
    __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b->qs + (j & 15))));
    x = j < 16 ? _mm256_and_si256(x, _mm256_set1_epi32(15)) : _mm256_srli_epi32(x, 4);
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(x, _mm256_set1_epi32(8)));
}

/* Sum of each of 8 vectors, as one vector (lane t = sum of v[t]). */
static inline __m256 reduce8(const __m256 *v) {
    const __m256 h01 = _mm256_hadd_ps(v[0], v[1]), h23 = _mm256_hadd_ps(v[2], v[3]);
    const __m256 h45 = _mm256_hadd_ps(v[4], v[5]), h67 = _mm256_hadd_ps(v[6], v[7]);
    const __m256 a = _mm256_hadd_ps(h01, h23), b = _mm256_hadd_ps(h45, h67);
    return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

/* s[h*G + t] = q_h . row_t for HB heads, rows of a per-token type T: each row is loaded once for
 * all heads; 8 tokens' partial vectors are reduced together. */
static inline __attribute__((always_inline)) void row_dots_TH(const uint8_t *kp, size_t krow, int G, int d,
                                                              const float *const *qh, float *s, int ldS,
                                                              const kvs_type T, const int HB) {
    for (int t0 = 0; t0 < G; t0 += 8) {
        __m256 part[4][8];
        for (int tt = 0; tt < 8; tt++) {
            const uint8_t *row = kp + (size_t)(t0 + tt) * krow;
            __m256 acc[4];
            for (int h = 0; h < HB; h++) acc[h] = _mm256_setzero_ps();
            if (T == KVS_TYPE_FP32 || T == KVS_TYPE_FP16) {
                for (int c = 0; c < d; c += 8) {
                    float sc;
                    const __m256 x = row_vec(row, c, &sc, T);
                    for (int h = 0; h < HB; h++) acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(qh[h] + c), x, acc[h]);
                }
            } else {
                for (int c = 0; c < d; c += KVS_QK) { /* one scale per 32-element block */
                    float sc;
                    __m256 blk[4];
                    const __m256 x0 = row_vec(row, c, &sc, T);
                    for (int h = 0; h < HB; h++) blk[h] = _mm256_mul_ps(_mm256_loadu_ps(qh[h] + c), x0);
                    for (int x = 8; x < KVS_QK; x += 8) {
                        const __m256 xv = row_vec(row, c + x, &sc, T);
                        for (int h = 0; h < HB; h++) blk[h] = _mm256_fmadd_ps(_mm256_loadu_ps(qh[h] + c + x), xv, blk[h]);
                    }
                    const __m256 sv = _mm256_set1_ps(sc);
                    for (int h = 0; h < HB; h++) acc[h] = _mm256_fmadd_ps(sv, blk[h], acc[h]);
                }
            }
            for (int h = 0; h < HB; h++) part[h][tt] = acc[h];
        }
        for (int h = 0; h < HB; h++) _mm256_storeu_ps(s + (size_t)h * ldS + t0, reduce8(part[h]));
    }
}

static inline __attribute__((always_inline)) void row_dots_T(const uint8_t *kp, size_t krow, int G, int d, int g,
                                                             const float *const *qh, float *s, const kvs_type T) {
    for (int h0 = 0; h0 < g; h0 += 3) {
        switch (g - h0 < 3 ? g - h0 : 3) {
        case 1: row_dots_TH(kp, krow, G, d, qh + h0, s + (size_t)h0 * G, G, T, 1); break;
        case 2: row_dots_TH(kp, krow, G, d, qh + h0, s + (size_t)h0 * G, G, T, 2); break;
        default: row_dots_TH(kp, krow, G, d, qh + h0, s + (size_t)h0 * G, G, T, 3); break;
        }
    }
}

static void row_dots(kvs_type T, const uint8_t *kp, size_t krow, int G, int d, int g, const float *const *qh, float *s) {
    switch (T) {
    case KVS_TYPE_FP32: row_dots_T(kp, krow, G, d, g, qh, s, KVS_TYPE_FP32); break;
    case KVS_TYPE_FP16: row_dots_T(kp, krow, G, d, g, qh, s, KVS_TYPE_FP16); break;
    case KVS_TYPE_Q8_0: row_dots_T(kp, krow, G, d, g, qh, s, KVS_TYPE_Q8_0); break;
    default: row_dots_T(kp, krow, G, d, g, qh, s, KVS_TYPE_Q4_0); break;
    }
}

/* acc[h][:] += sum_t p[h][t] * row_t for HB heads, 16 channels at a time in registers */
static inline __attribute__((always_inline)) void row_axpy_TH(const uint8_t *vp, size_t vrow, int G, int d,
                                                              const float *p, float *acc, const kvs_type T,
                                                              const int HB) {
    for (int cb = 0; cb < d; cb += 16) { /* d is a multiple of 16; a 16-chunk lies in one q block */
        __m256 A[3][2];
        for (int h = 0; h < HB; h++) {
            A[h][0] = _mm256_loadu_ps(acc + (size_t)h * d + cb);
            A[h][1] = _mm256_loadu_ps(acc + (size_t)h * d + cb + 8);
        }
        for (int t = 0; t < G; t++) {
            const uint8_t *row = vp + (size_t)t * vrow;
            float sc;
            const __m256 x0 = row_vec(row, cb, &sc, T), x1 = row_vec(row, cb + 8, &sc, T);
            for (int h = 0; h < HB; h++) {
                const __m256 pv = _mm256_set1_ps(p[(size_t)h * G + t] * sc);
                A[h][0] = _mm256_fmadd_ps(pv, x0, A[h][0]);
                A[h][1] = _mm256_fmadd_ps(pv, x1, A[h][1]);
            }
        }
        for (int h = 0; h < HB; h++) {
            _mm256_storeu_ps(acc + (size_t)h * d + cb, A[h][0]);
            _mm256_storeu_ps(acc + (size_t)h * d + cb + 8, A[h][1]);
        }
    }
}

static inline __attribute__((always_inline)) void row_axpy_T(const uint8_t *vp, size_t vrow, int G, int d, int g,
                                                             const float *p, float *acc, const kvs_type T) {
    for (int h0 = 0; h0 < g; h0 += 3) {
        const float *ph = p + (size_t)h0 * G;
        float *ah = acc + (size_t)h0 * d;
        switch (g - h0 < 3 ? g - h0 : 3) {
        case 1: row_axpy_TH(vp, vrow, G, d, ph, ah, T, 1); break;
        case 2: row_axpy_TH(vp, vrow, G, d, ph, ah, T, 2); break;
        default: row_axpy_TH(vp, vrow, G, d, ph, ah, T, 3); break;
        }
    }
}

static void row_axpy(kvs_type T, const uint8_t *vp, size_t vrow, int G, int d, int g, const float *p, float *acc) {
    switch (T) {
    case KVS_TYPE_FP32: row_axpy_T(vp, vrow, G, d, g, p, acc, KVS_TYPE_FP32); break;
    case KVS_TYPE_FP16: row_axpy_T(vp, vrow, G, d, g, p, acc, KVS_TYPE_FP16); break;
    case KVS_TYPE_Q8_0: row_axpy_T(vp, vrow, G, d, g, p, acc, KVS_TYPE_Q8_0); break;
    default: row_axpy_T(vp, vrow, G, d, g, p, acc, KVS_TYPE_Q4_0); break;
    }
}

/* Bring the next group's block (and norms) toward L1 while this one is being computed: blocks
 * are separate allocations, so the hardware prefetcher does not see one stream. An asm statement,
 * not _mm_prefetch: GCC 12 classes a helper whose body is only a loop of prefetch builtins as
 * "looping const" (ipa-pure-const) and deletes its calls, which cost the GCC build a third of the
 * INT2 kernel's speed in first-touch misses (docs/kernels.md). */
static inline void prefetch_block(const void *p, size_t bytes) {
    const char *c = p;
    for (size_t o = 0; o < bytes; o += 64) __asm__ volatile("prefetcht0 %0" : : "m"(c[o]));
    if (bytes) __asm__ volatile("prefetcht0 %0" : : "m"(c[bytes - 1])); /* the tail line of an unaligned range */
}

/* A group's block (line by line when it is small enough for that to pay) and its norms. */
static inline void prefetch_group(const kvs_attn_job *j, int grp, int G, size_t blk_bytes) {
    if (!j->blk[grp]) return;
    prefetch_block(j->blk[grp], blk_bytes < 4096 ? blk_bytes : 0);
    const float *nrm = kvs_job_norm(j, grp);
    if (nrm) prefetch_block(nrm, (size_t)G * sizeof(float));
}

/* ---- online softmax over a tile of scores ------------------------------------------------ */

/* s[nt] scores -> probabilities relative to the new running max; rescales l and acc[d]. */
static inline __attribute__((always_inline)) void softmax_tile(float *s, int nt, float *m, float *l, float *acc, int d) {
    __m256 mx = _mm256_set1_ps(-INFINITY);
    int t = 0;
    for (; t + 8 <= nt; t += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(s + t));
    float mt = hmax(mx);
    for (; t < nt; t++) mt = s[t] > mt ? s[t] : mt;
    if (mt > *m) {
        const float r = expf(*m - mt); /* 0 while m = -inf */
        *l *= r;
        const __m256 rv = _mm256_set1_ps(r);
        for (int c = 0; c < d; c += 8) _mm256_storeu_ps(acc + c, _mm256_mul_ps(rv, _mm256_loadu_ps(acc + c)));
        *m = mt;
    }
    const __m256 mv = _mm256_set1_ps(*m);
    __m256 sum = _mm256_setzero_ps();
    for (t = 0; t + 8 <= nt; t += 8) {
        const __m256 p = exp_neg(_mm256_sub_ps(_mm256_loadu_ps(s + t), mv));
        _mm256_storeu_ps(s + t, p);
        sum = _mm256_add_ps(sum, p);
    }
    float ls = hsum(sum);
    for (; t < nt; t++) {
        s[t] = expf(s[t] - *m);
        ls += s[t];
    }
    *l += ls;
}

/* ---- affine keys: s[h][lane order] = sum_c a[h][c] * code[c][t] ------------------------- */

static inline __attribute__((always_inline)) void key_dots_BH(const uint8_t *codes, int G, int d, const float *a,
                                                              float *s, const int B, const int perm, const int HB) {
    const size_t rowb = (size_t)G * B / 8;
    const int nvec = G / 8;
    for (int k = 0; k < nvec; k += 2) {
        const int two = k + 1 < nvec; /* G = 8 * odd leaves one vector at the end */
        __m256 acc[4][2];
        for (int h = 0; h < HB; h++) acc[h][0] = acc[h][1] = _mm256_setzero_ps();
        for (int c = 0; c < d; c++) {
            const uint8_t *row = codes + (size_t)c * rowb;
            __m256 x0, x1;
            if (perm && B < 8) { /* k is even and 8/B >= 2: both vectors in one word */
                const __m256i word = bcast_word(row + 8 * (k / (8 / B)));
                x0 = codes_perm(word, perm_shift(B, k % (8 / B)), B);
                x1 = codes_perm(word, perm_shift(B, (k + 1) % (8 / B)), B);
            } else {
                x0 = codes_vec(row, k, B, perm);
                x1 = two ? codes_vec(row, k + 1, B, perm) : _mm256_setzero_ps();
            }
            for (int h = 0; h < HB; h++) {
                const __m256 av = _mm256_broadcast_ss(a + (size_t)h * d + c);
                acc[h][0] = _mm256_fmadd_ps(av, x0, acc[h][0]);
                acc[h][1] = _mm256_fmadd_ps(av, x1, acc[h][1]);
            }
        }
        for (int h = 0; h < HB; h++) {
            _mm256_storeu_ps(s + (size_t)h * G + 8 * k, acc[h][0]);
            if (two) _mm256_storeu_ps(s + (size_t)h * G + 8 * k + 8, acc[h][1]);
        }
    }
}

static inline __attribute__((always_inline)) void key_dots_B(const uint8_t *codes, int G, int d, const float *a,
                                                             float *s, int hb, const int B, const int perm) {
    switch (hb) {
    case 1: key_dots_BH(codes, G, d, a, s, B, perm, 1); break;
    case 2: key_dots_BH(codes, G, d, a, s, B, perm, 2); break;
    case 3: key_dots_BH(codes, G, d, a, s, B, perm, 3); break;
    default: key_dots_BH(codes, G, d, a, s, B, perm, 4); break;
    }
}

static void key_dots(const uint8_t *codes, int b, int perm, int G, int d, const float *a, float *s, int hb) {
    switch (b * 2 + perm) {
    case 4: key_dots_B(codes, G, d, a, s, hb, 2, 0); break;
    case 5: key_dots_B(codes, G, d, a, s, hb, 2, 1); break;
    case 6: key_dots_B(codes, G, d, a, s, hb, 3, 0); break;
    case 8: key_dots_B(codes, G, d, a, s, hb, 4, 0); break;
    case 9: key_dots_B(codes, G, d, a, s, hb, 4, 1); break;
    case 16: key_dots_B(codes, G, d, a, s, hb, 8, 0); break;
    default: key_dots_B(codes, G, d, a, s, hb, 8, 1); break;
    }
}

/* ---- affine values: acc[h][c] += sum_t ws[h][group(c)][t] * code[t][c] ------------------- */

static inline __attribute__((always_inline)) void value_acc_BH(const uint8_t *vp, size_t vrow, int G, int d,
                                                               const float *ws, int nj, float *acc, const int B,
                                                               const int perm, const int HB) {
    for (int k = 0; k < d / 8; k += 2) { /* d is a multiple of 16 */
        const int j0 = 8 * k / G, j1 = (8 * k + 8) / G;
        __m256 A[4][2];
        for (int h = 0; h < HB; h++) {
            A[h][0] = _mm256_loadu_ps(acc + (size_t)h * d + 8 * k);
            A[h][1] = _mm256_loadu_ps(acc + (size_t)h * d + 8 * k + 8);
        }
        const int same = j0 == j1; /* always for G >= 16: one weight per head and token */
        for (int t = 0; t < G; t++) {
            const uint8_t *row = vp + (size_t)t * vrow;
            __m256 x0, x1;
            if (perm && B < 8) { /* both vectors come from one 64-bit word: broadcast it once */
                const __m256i word = bcast_word(row + 8 * (k / (8 / B)));
                x0 = codes_perm(word, perm_shift(B, k % (8 / B)), B);
                x1 = codes_perm(word, perm_shift(B, (k + 1) % (8 / B)), B);
            } else {
                x0 = codes_vec(row, k, B, perm);
                x1 = codes_vec(row, k + 1, B, perm);
            }
            for (int h = 0; h < HB; h++) {
                const float *w = ws + (size_t)h * nj * G + t;
                const __m256 w0 = _mm256_broadcast_ss(w + (size_t)j0 * G);
                const __m256 w1 = same ? w0 : _mm256_broadcast_ss(w + (size_t)j1 * G);
                A[h][0] = _mm256_fmadd_ps(w0, x0, A[h][0]);
                A[h][1] = _mm256_fmadd_ps(w1, x1, A[h][1]);
            }
        }
        for (int h = 0; h < HB; h++) {
            _mm256_storeu_ps(acc + (size_t)h * d + 8 * k, A[h][0]);
            _mm256_storeu_ps(acc + (size_t)h * d + 8 * k + 8, A[h][1]);
        }
    }
}

static inline __attribute__((always_inline)) void value_acc_B(const uint8_t *vp, size_t vrow, int G, int d,
                                                              const float *ws, int nj, float *acc, int hb, const int B,
                                                              const int perm) {
    switch (hb) {
    case 1: value_acc_BH(vp, vrow, G, d, ws, nj, acc, B, perm, 1); break;
    case 2: value_acc_BH(vp, vrow, G, d, ws, nj, acc, B, perm, 2); break;
    case 3: value_acc_BH(vp, vrow, G, d, ws, nj, acc, B, perm, 3); break;
    default: value_acc_BH(vp, vrow, G, d, ws, nj, acc, B, perm, 4); break;
    }
}

static void value_acc(const uint8_t *vp, size_t vrow, int b, int perm, int G, int d, const float *ws, int nj,
                      float *acc, int hb) {
    switch (b * 2 + perm) {
    case 4: value_acc_B(vp, vrow, G, d, ws, nj, acc, hb, 2, 0); break;
    case 5: value_acc_B(vp, vrow, G, d, ws, nj, acc, hb, 2, 1); break;
    case 6: value_acc_B(vp, vrow, G, d, ws, nj, acc, hb, 3, 0); break;
    case 8: value_acc_B(vp, vrow, G, d, ws, nj, acc, hb, 4, 0); break;
    case 9: value_acc_B(vp, vrow, G, d, ws, nj, acc, hb, 4, 1); break;
    case 16: value_acc_B(vp, vrow, G, d, ws, nj, acc, hb, 8, 0); break;
    default: value_acc_B(vp, vrow, G, d, ws, nj, acc, hb, 8, 1); break;
    }
}

/* ---- paired INT2/INT4 layouts: integer multiply-add on codes (formats.h "paired") ----------- */

/* Round a[n] (n multiple of 8) to int8 exactly as kvs_round_i8 does; returns the scale, and in
 * *res the rounding residual sum_i (a_i - scale * q_i), which the caller adds back at the middle
 * code (docs/kernels.md: the rounding then errs only with the code's distance from the middle). */
static inline __attribute__((always_inline)) float round_i8(const float *a, int n, int8_t *q, float *res) {
    __m256 mx = _mm256_setzero_ps();
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int x = 0; x < n; x += 8) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(a + x)));
    const float amax = hmax(mx);
    if (amax == 0.0f) {
        memset(q, 0, (size_t)n);
        *res = 0.0f;
        return 0.0f;
    }
    const __m256 inv = _mm256_set1_ps(127.0f / amax), scale = _mm256_set1_ps(amax / 127.0f);
    __m256 r = _mm256_setzero_ps();
    int x = 0;
    for (; x + 32 <= n; x += 32) { /* 32 at a time: two packs and one lane fix-up per 32 values */
        __m256i v[4];
        for (int u = 0; u < 4; u++) {
            const __m256 av = _mm256_loadu_ps(a + x + 8 * u);
            v[u] = _mm256_cvtps_epi32(_mm256_mul_ps(av, inv)); /* rint (MXCSR) */
            r = _mm256_add_ps(r, _mm256_fnmadd_ps(scale, _mm256_cvtepi32_ps(v[u]), av));
        }
        const __m256i w = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
        _mm256_storeu_si256((__m256i *)(q + x), _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    }
    for (; x < n; x += 8) {
        const __m256 av = _mm256_loadu_ps(a + x);
        const __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(av, inv));
        r = _mm256_add_ps(r, _mm256_fnmadd_ps(scale, _mm256_cvtepi32_ps(v), av));
        const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        _mm_storel_epi64((__m128i *)(q + x), _mm_packs_epi16(w, w));
    }
    *res = hsum(r);
    return amax / 127.0f;
}

/* Two int8 (a pair for the multiply-add) broadcast to all 16-bit lanes. */
static inline __m256i bcast_pair(const int8_t *p) {
    int16_t v;
    memcpy(&v, p, 2);
    return _mm256_set1_epi16(v);
}

/* The code planes of one 32-byte paired chunk: plane k holds bits [kB, kB + B) of every byte
 * (B = 2: four planes, B = 4: two), each a vector of u8 codes for vpmaddubsw. */
static inline __attribute__((always_inline)) void code_planes(__m256i x, __m256i mask, const int B, __m256i v[4]) {
    v[0] = _mm256_and_si256(x, mask);
    v[1] = _mm256_and_si256(_mm256_srli_epi16(x, B), mask);
    if (B == 2) {
        v[2] = _mm256_and_si256(_mm256_srli_epi16(x, 4), mask);
        v[3] = _mm256_and_si256(_mm256_srli_epi16(x, 6), mask);
    }
}

/* isum[h][t] (t < 32) += sum_c a8[h][c] * code(c, t) over channels [0, d), keys paired. */
static inline __attribute__((always_inline)) void key_isums_BH(const uint8_t *codes, int d, const int8_t *a8,
                                                               int32_t *isum, const int B, const int HB) {
    const int cps = 8 / B, nsub = d / cps, flush = B == 2 ? 16 : 8; /* i16 lanes stay below 2^15 */
    const __m256i mask = _mm256_set1_epi8((char)((1 << B) - 1));
    for (int s0 = 0; s0 < nsub; s0 += flush) {
        __m256i lo[4], hi[4];
        for (int h = 0; h < HB; h++) lo[h] = hi[h] = _mm256_setzero_si256();
        const int s1 = s0 + flush < nsub ? s0 + flush : nsub;
        for (int sub = s0; sub < s1; sub++) {
            __m256i v[4];
            code_planes(_mm256_loadu_si256((const __m256i *)(codes + 32 * (size_t)sub)), mask, B, v);
            for (int h = 0; h < HB; h++) {
                if (B == 2) {
                    const __m256i pa = bcast_pair(a8 + (size_t)h * d + 4 * sub), pb = bcast_pair(a8 + (size_t)h * d + 4 * sub + 2);
                    lo[h] = _mm256_add_epi16(lo[h], _mm256_add_epi16(_mm256_maddubs_epi16(v[0], pa), _mm256_maddubs_epi16(v[2], pb)));
                    hi[h] = _mm256_add_epi16(hi[h], _mm256_add_epi16(_mm256_maddubs_epi16(v[1], pa), _mm256_maddubs_epi16(v[3], pb)));
                } else {
                    const __m256i pa = bcast_pair(a8 + (size_t)h * d + 2 * sub);
                    lo[h] = _mm256_add_epi16(lo[h], _mm256_maddubs_epi16(v[0], pa));
                    hi[h] = _mm256_add_epi16(hi[h], _mm256_maddubs_epi16(v[1], pa));
                }
            }
        }
        for (int h = 0; h < HB; h++) { /* i16 lane k of lo = token k, of hi = token 16 + k */
            int32_t *o = isum + (size_t)h * 32;
            const __m256i q[4] = {_mm256_cvtepi16_epi32(_mm256_castsi256_si128(lo[h])),
                                  _mm256_cvtepi16_epi32(_mm256_extracti128_si256(lo[h], 1)),
                                  _mm256_cvtepi16_epi32(_mm256_castsi256_si128(hi[h])),
                                  _mm256_cvtepi16_epi32(_mm256_extracti128_si256(hi[h], 1))};
            for (int v = 0; v < 4; v++)
                _mm256_storeu_si256((__m256i *)(o + 8 * v),
                                    _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(o + 8 * v)), q[v]));
        }
    }
}

static inline __attribute__((always_inline)) void key_isums(const uint8_t *codes, int d, const int8_t *a8, int32_t *isum, int hb, int B) {
    if (B == 2) {
        switch (hb) {
        case 1: key_isums_BH(codes, d, a8, isum, 2, 1); break;
        case 2: key_isums_BH(codes, d, a8, isum, 2, 2); break;
        case 3: key_isums_BH(codes, d, a8, isum, 2, 3); break;
        default: key_isums_BH(codes, d, a8, isum, 2, 4); break;
        }
    } else {
        switch (hb) {
        case 1: key_isums_BH(codes, d, a8, isum, 4, 1); break;
        case 2: key_isums_BH(codes, d, a8, isum, 4, 2); break;
        case 3: key_isums_BH(codes, d, a8, isum, 4, 3); break;
        default: key_isums_BH(codes, d, a8, isum, 4, 4); break;
        }
    }
}

/* acc[h][c] += sw[h][j(c)] * sum_t w8[h][j(c)][t] * code(t, c), values paired. */
static inline __attribute__((always_inline)) void value_isums_BH(const uint8_t *codes, int G, int d, const int8_t *w8,
                                                                 const float *sw, int nj, float *acc, const int B,
                                                                 const int HB) {
    const int cps = 128 / B, vps = 8 / B, flush = B == 2 ? 16 : 8;
    const size_t pair_bytes = (size_t)d * B / 4;
    const __m256i mask = _mm256_set1_epi8((char)((1 << B) - 1));
    for (int sub = 0; sub < d / cps; sub++) {
        int jv[4];
        for (int v = 0; v < vps; v++) jv[v] = (sub * cps + 16 * v) / G;
        for (int u0 = 0; u0 < G / 2; u0 += flush) {
            const int u1 = u0 + flush < G / 2 ? u0 + flush : G / 2;
            __m256i A[3][4];
            for (int h = 0; h < HB; h++)
                for (int v = 0; v < vps; v++) A[h][v] = _mm256_setzero_si256();
            for (int u = u0; u < u1; u++) {
                const __m256i x = _mm256_loadu_si256((const __m256i *)(codes + (size_t)u * pair_bytes + 32 * (size_t)sub));
                for (int v = 0; v < vps; v++) {
                    const __m256i cv = _mm256_and_si256(v ? _mm256_srli_epi16(x, B * v) : x, mask);
                    for (int h = 0; h < HB; h++)
                        A[h][v] = _mm256_add_epi16(
                            A[h][v], _mm256_maddubs_epi16(cv, bcast_pair(w8 + ((size_t)h * nj + jv[v]) * G + 2 * u)));
                }
            }
            for (int h = 0; h < HB; h++) /* i16 lane k of vector v = channel sub*cps + 16v + k */
                for (int v = 0; v < vps; v++) {
                    float *a = acc + (size_t)h * d + sub * cps + 16 * v;
                    const __m256 scale = _mm256_set1_ps(sw[(size_t)h * nj + jv[v]]);
                    const __m256 f0 = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(A[h][v])));
                    const __m256 f1 = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(A[h][v], 1)));
                    _mm256_storeu_ps(a, _mm256_fmadd_ps(scale, f0, _mm256_loadu_ps(a)));
                    _mm256_storeu_ps(a + 8, _mm256_fmadd_ps(scale, f1, _mm256_loadu_ps(a + 8)));
                }
        }
    }
}

static inline __attribute__((always_inline)) void value_isums(const uint8_t *codes, int G, int d, const int8_t *w8,
                                                              const float *sw, int nj, float *acc, int hb, int B) {
    if (B == 2) {
        switch (hb) {
        case 1: value_isums_BH(codes, G, d, w8, sw, nj, acc, 2, 1); break;
        case 2: value_isums_BH(codes, G, d, w8, sw, nj, acc, 2, 2); break;
        default: value_isums_BH(codes, G, d, w8, sw, nj, acc, 2, 3); break;
        }
    } else {
        switch (hb) {
        case 1: value_isums_BH(codes, G, d, w8, sw, nj, acc, 4, 1); break;
        case 2: value_isums_BH(codes, G, d, w8, sw, nj, acc, 4, 2); break;
        default: value_isums_BH(codes, G, d, w8, sw, nj, acc, 4, 3); break;
        }
    }
}

/* ---- the groups kernel ------------------------------------------------------------------ */

/* One body, stamped out per entry of the codec table at the end of this file: the codec layouts
 * (KL, VL; -1 = the plan's, at run time) and the shape (GC, DC; 0 = the plan's) as constants let
 * the compiler drop the other codecs' branches and unroll the per-group loops. */
static inline __attribute__((always_inline)) void groups_body(const kvs_attn_job *j, int g0, int g1, kvs_partial *p,
                                                              const int GC, const int DC, const int KL, const int VL) {
    const kvs_method *m = j->m;
    const int d = DC ? DC : m->d, g = m->g, G = GC ? GC : m->G;
    const kvs_layout kl = KL >= 0 ? (kvs_layout)KL : m->key.layout, vl = VL >= 0 ? (kvs_layout)VL : m->value.layout;
    const kvs_type kt = m->key.type, vt = m->value.type;
    const int kaff = kl != KVS_LAYOUT_ROWS, vaff = vl != KVS_LAYOUT_ROWS; /* affine codes with scale and offset */
    const int kb = kaff ? m->key.bits : 0, vb = vaff ? m->value.bits : 0;
    const int kperm = kaff && m->key.perm, vperm = vaff && m->value.perm;
    const int kpair = kl == KVS_LAYOUT_PAIRED, vpair = vl == KVS_LAYOUT_PAIRED;
    const float mid_k = 0.5f * (float)((1 << kb) - 1), mid_v = 0.5f * (float)((1 << vb) - 1); /* middle codes */
    const size_t krow = m->key.row, vrow = m->value.row, kbytes = m->key.bytes, blk_bytes = kbytes + m->value.bytes;
    const int nj = d / G > 0 ? d / G : 1;
    const int ggml_k = kt == KVS_TYPE_Q8_0 || kt == KVS_TYPE_Q4_0;
    const float tau = m->tau, lambda = m->lambda;
    const int jensen = m->jensen;

    /* scratch: scores [g][G], folded query a [g][d], steps [d], value weights [g][nj][G],
     * value offsets [g][nj] */
    const size_t nscr = (size_t)g * G + (size_t)g * d + (size_t)d + (size_t)g * nj * G + 2 * (size_t)g * nj;
    float *scr = malloc(nscr * sizeof(float));
    const float **qh = malloc((size_t)g * sizeof(float *));
    int8_t *i8 = malloc((size_t)g * d + (size_t)g * nj * G); /* int8 query a8 [g][d], weights w8 [g][nj][G] */
    int32_t *isum = malloc((size_t)g * G * sizeof(int32_t));
    if (!scr || !qh || !i8 || !isum) { /* tiny allocations; if even these fail, use the reference */
        free(scr);
        free(qh);
        free(i8);
        free(isum);
        kvs_kernels_ref.groups[0].fn(j, g0, g1, p);
        return;
    }
    float *S = scr, *A = S + (size_t)g * G, *dl = A + (size_t)g * d, *ws = dl + d, *wo = ws + (size_t)g * nj * G;
    float *swv = wo + (size_t)g * nj; /* [g][nj] scales of the int8 value weights */
    int8_t *a8 = i8, *w8 = i8 + (size_t)g * d;

    kvs_partial_init(j, p);

    for (int grp = g0; grp < g1; grp++) {
        const uint8_t *kp = j->blk[grp];
        if (!kp) continue; /* evicted before this chunk */
        const uint8_t *vp = kp + kbytes;
        const float *nrm = kvs_job_norm(j, grp);
        if (grp + 2 < g1) prefetch_group(j, grp + 2, G, blk_bytes); /* one group's work is shorter than a DRAM miss chain */
        const uint16_t *Sk = kaff ? (const uint16_t *)(kp + (size_t)d * G * kb / 8) : NULL, *Ok = Sk ? Sk + d : NULL;
        if (kaff && jensen == KVS_JENSEN_EXACT)
            for (int x = 0; x < d; x += 8) _mm256_storeu_ps(dl + x, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(Sk + x))));
        for (int i = j->i0; i < j->i1; i++) {
            const int vis = kvs_job_group_tokens(j, i, grp); /* < G only in a partial last group */
            if (vis <= 0) continue;
            for (int h = 0; h < g; h++) qh[h] = kvs_job_q(j, j->qr, i, h);
            /* scores of the G tokens for the g heads */
            if (kaff) {
                float beta[256], bj[256];
                for (int h = 0; h < g; h++) {
                    __m256 bacc = _mm256_setzero_ps(), jacc = _mm256_setzero_ps();
                    const float *w = jensen == KVS_JENSEN_TAYLOR ? kvs_job_q(j, j->w, i, h) : NULL;
                    for (int x = 0; x < d; x += 8) {
                        const __m256 qv = _mm256_loadu_ps(qh[h] + x);
                        const __m256 sv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(Sk + x)));
                        const __m256 ov = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(Ok + x)));
                        _mm256_storeu_ps(A + (size_t)h * d + x, _mm256_mul_ps(qv, sv));
                        bacc = _mm256_fmadd_ps(qv, ov, bacc);
                        if (w) jacc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(w + x), sv), sv, jacc);
                    }
                    beta[h] = hsum(bacc);
                    bj[h] = hsum(jacc);
                }
                if (kpair) { /* s = scale_a * sum a8 * code, integer multiply-add on the codes */
                    float sa[256];
                    for (int h = 0; h < g; h++) {
                        float res;
                        sa[h] = round_i8(A + (size_t)h * d, d, a8 + (size_t)h * d, &res);
                        beta[h] += mid_k * res;
                    }
                    memset(isum, 0, (size_t)g * G * sizeof(int32_t));
                    for (int h0 = 0; h0 < g; h0 += 4) {
                        const int hb = g - h0 < 4 ? g - h0 : 4;
                        key_isums(kp, d, a8 + (size_t)h0 * d, isum + (size_t)h0 * G, hb, kb);
                    }
                    for (int h = 0; h < g; h++) {
                        const __m256 sv = _mm256_set1_ps(sa[h]);
                        for (int t = 0; t < G; t += 8)
                            _mm256_storeu_ps(S + (size_t)h * G + t,
                                             _mm256_mul_ps(sv, _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(isum + (size_t)h * G + t)))));
                    }
                } else {
                    for (int h0 = 0; h0 < g; h0 += 4) {
                        const int hb = g - h0 < 4 ? g - h0 : 4;
                        key_dots(kp, kb, kperm, G, d, A + (size_t)h0 * d, S + (size_t)h0 * G, hb);
                    }
                }
                /* s = tau n (a.code + beta) - n^2 b, the norm and Jensen term folded per token */
                for (int h = 0; h < g; h++) {
                    float *s = S + (size_t)h * G;
                    const __m256 bv = _mm256_set1_ps(beta[h]), jv = _mm256_set1_ps(bj[h]), tv = _mm256_set1_ps(tau);
                    for (int t = 0; t < G; t += 8) {
                        const __m256 nv = nrm ? _mm256_loadu_ps(nrm + t) : _mm256_set1_ps(1.0f);
                        __m256 x = _mm256_mul_ps(_mm256_mul_ps(tv, nv), _mm256_add_ps(_mm256_loadu_ps(s + t), bv));
                        if (jensen == KVS_JENSEN_TAYLOR) x = _mm256_fnmadd_ps(_mm256_mul_ps(nv, nv), jv, x);
                        _mm256_storeu_ps(s + t, x);
                    }
                    if (jensen == KVS_JENSEN_EXACT)
                        for (int t = 0; t < G; t++) s[t] -= kvs_jensen_exact(qh[h], dl, d, tau, nrm ? nrm[t] : 1.0f, lambda);
                }
            } else {
                row_dots(kt, kp, krow, G, d, g, qh, S);
                if (!(jensen && ggml_k) && G % 8 == 0) { /* s = (tau n) s, as the scalar loop below rounds it */
                    const __m256 tv = _mm256_set1_ps(tau);
                    for (int h = 0; h < g; h++)
                        for (int t = 0; t < G; t += 8) {
                            const __m256 nv = nrm ? _mm256_loadu_ps(nrm + t) : _mm256_set1_ps(1.0f);
                            float *s = S + (size_t)h * G + t;
                            _mm256_storeu_ps(s, _mm256_mul_ps(_mm256_mul_ps(tv, nv), _mm256_loadu_ps(s)));
                        }
                } else {
                    for (int t = 0; t < vis; t++) {
                        const float nt = nrm ? nrm[t] : 1.0f;
                        if (jensen && ggml_k) kvs__block_key_delta(m, kp, t, dl);
                        for (int h = 0; h < g; h++) {
                            float s = tau * nt * S[(size_t)h * G + t];
                            if (jensen == KVS_JENSEN_TAYLOR && ggml_k) {
                                const float *w = kvs_job_q(j, j->w, i, h);
                                float b = 0.0f;
                                for (int x = 0; x < d; x++) b += w[x] * dl[x] * dl[x];
                                s -= nt * nt * b;
                            } else if (jensen == KVS_JENSEN_EXACT && ggml_k) {
                                s -= kvs_jensen_exact(qh[h], dl, d, tau, nt, lambda);
                            }
                            S[(size_t)h * G + t] = s;
                        }
                    }
                }
            }
            /* tokens this query does not see yet get no weight (their rows are zero, never NaN) */
            for (int h = 0; h < g; h++)
                for (int t = vis; t < G; t++) S[(size_t)h * G + t] = -INFINITY;
            /* softmax and values */
            for (int h = 0; h < g; h++) {
                const size_t o = (size_t)i * g + h;
                softmax_tile(S + (size_t)h * G, G, &p->m[o], &p->l[o], p->acc + o * d, d);
            }
            float *acc0 = p->acc + (size_t)i * g * d;
            if (vaff) {
                /* per-token scales folded into the probabilities, offsets summed once per group */
                const uint16_t *Sv = (const uint16_t *)(vp + (size_t)G * vrow), *Ov = Sv + (size_t)nj * G;
                for (int jg = 0; jg < nj; jg++)
                    for (int h = 0; h < g; h++) {
                        __m256 oacc = _mm256_setzero_ps();
                        float *wr = ws + ((size_t)h * nj + jg) * G;
                        for (int t = 0; t < G; t += 8) {
                            const __m256 pv = _mm256_loadu_ps(S + (size_t)h * G + t);
                            const __m256 sv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(Sv + (size_t)jg * G + t)));
                            const __m256 ov = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(Ov + (size_t)jg * G + t)));
                            _mm256_storeu_ps(wr + t, _mm256_mul_ps(pv, sv));
                            oacc = _mm256_fmadd_ps(pv, ov, oacc);
                        }
                        wo[(size_t)h * nj + jg] = hsum(oacc);
                        if (vpair) {
                            float res;
                            swv[(size_t)h * nj + jg] = round_i8(wr, G, w8 + ((size_t)h * nj + jg) * G, &res);
                            wo[(size_t)h * nj + jg] += mid_v * res;
                        }
                    }
                for (int h0 = 0; h0 < g; h0 += 3) {
                    const int hb = g - h0 < 3 ? g - h0 : 3;
                    if (vpair)
                        value_isums(vp, G, d, w8 + (size_t)h0 * nj * G, swv + (size_t)h0 * nj, nj, acc0 + (size_t)h0 * d, hb, vb);
                    else
                        value_acc(vp, vrow, vb, vperm, G, d, ws + (size_t)h0 * nj * G, nj, acc0 + (size_t)h0 * d, hb);
                }
                for (int h = 0; h < g; h++)
                    for (int jg = 0; jg < nj; jg++) {
                        const __m256 ov = _mm256_set1_ps(wo[(size_t)h * nj + jg]);
                        float *a = acc0 + (size_t)h * d + (size_t)jg * G; /* G <= d: value groups tile d */
                        for (int x = 0; x < G; x += 8) _mm256_storeu_ps(a + x, _mm256_add_ps(_mm256_loadu_ps(a + x), ov));
                    }
            } else {
                row_axpy(vt, vp, vrow, G, d, g, S, acc0);
            }
        }
    }
    free(scr);
    free(qh);
    free(i8);
    free(isum);
}

/* ---- paired INT2/INT4 keys and values at G = 32: the decode kernel ------------------------ */

/* Lane h of the result = max (sum) of the 8 lanes of v[h], for 4 vectors at once: a transposed
 * reduction, 7 operations instead of 4 separate horizontal ones. */
static inline __m128 max4(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 t0 = _mm256_max_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
    const __m256 t1 = _mm256_max_ps(_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
    const __m256 u = _mm256_max_ps(_mm256_shuffle_ps(t0, t1, 0x44), _mm256_shuffle_ps(t0, t1, 0xee));
    return _mm_max_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
}
static inline __m128 sum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 t0 = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
    const __m256 t1 = _mm256_add_ps(_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
    const __m256 u = _mm256_add_ps(_mm256_shuffle_ps(t0, t1, 0x44), _mm256_shuffle_ps(t0, t1, 0xee));
    return _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
}

/* kvs_round_i8's step for up to 4 maxima at once (one divide for all): inv = 127/amax and
 * scale = amax/127 lane-wise, both 0 where amax = 0 (the codes are then all 0, as there). */
static inline void i8_steps(__m128 amax, __m128 *inv, __m128 *scale) {
    const __m128 nz = _mm_cmpgt_ps(amax, _mm_setzero_ps()), c = _mm_set1_ps(127.0f);
    *inv = _mm_and_ps(nz, _mm_div_ps(c, _mm_or_ps(amax, _mm_andnot_ps(nz, c)))); /* no 127/0 */
    *scale = _mm_div_ps(amax, c);
}

/* 32 floats x (4 vectors) rounded to int8 with step 1/inv (round_i8's arithmetic, the step
 * given); returns the residual vector sum of x - scale * x8. */
static inline __m256 round32(const __m256 *x, __m256 inv, __m256 scale, int8_t *q) {
    __m256i v[4];
    __m256 r = _mm256_setzero_ps();
    for (int u = 0; u < 4; u++) {
        v[u] = _mm256_cvtps_epi32(_mm256_mul_ps(x[u], inv)); /* rint (MXCSR) */
        r = _mm256_add_ps(r, _mm256_fnmadd_ps(scale, _mm256_cvtepi32_ps(v[u]), x[u]));
    }
    const __m256i w = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
    _mm256_storeu_si256((__m256i *)q, _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    return r;
}

static inline float lane(__m128 v, int h) {
    float f[4];
    _mm_storeu_ps(f, v);
    return f[h];
}

enum { PB = 4 }; /* groups per softmax step of the paired kernel */

/* Scores of one group for HB heads into s[h * lds + t]: the query folded into the channel
 * scales and rounded to int8 for all heads in one pass over S and O, integer sums on the codes
 * kept in registers, then s = tau n (scale_a isum + beta) - n^2 bj in one epilogue. */
static inline __attribute__((always_inline)) void paired_scores(const uint8_t *kp, const float *nrm, int vis,
                                                                const float *const *qh, const float *const *wh,
                                                                float tau, float *s, int lds, const int D,
                                                                const int KB, const int HB) {
    const uint16_t *Sk = (const uint16_t *)(kp + (size_t)D * 32 * KB / 8), *Ok = Sk + D;
    const __m256 sign = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
    __m256 am[4] = {zero, zero, zero, zero}, ba[4] = {zero, zero, zero, zero}, ja[4] = {zero, zero, zero, zero};
    float A[3][128];
    for (int x = 0; x < D; x += 8) {
        const __m256 sv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(Sk + x)));
        const __m256 ov = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(Ok + x)));
        const __m256 s2 = _mm256_mul_ps(sv, sv);
        for (int h = 0; h < HB; h++) {
            const __m256 qv = _mm256_loadu_ps(qh[h] + x), a = _mm256_mul_ps(qv, sv);
            _mm256_storeu_ps(A[h] + x, a);
            am[h] = _mm256_max_ps(am[h], _mm256_andnot_ps(sign, a));
            ba[h] = _mm256_fmadd_ps(qv, ov, ba[h]);
            if (wh) ja[h] = _mm256_fmadd_ps(_mm256_loadu_ps(wh[h] + x), s2, ja[h]);
        }
    }
    __m128 inv, scale;
    i8_steps(max4(am[0], am[1], am[2], am[3]), &inv, &scale);
    int8_t a8[3][128];
    __m256 res[4] = {zero, zero, zero, zero};
    for (int h = 0; h < HB; h++) {
        const __m256 iv = _mm256_set1_ps(lane(inv, h)), sc = _mm256_set1_ps(lane(scale, h));
        for (int x = 0; x < D; x += 32) {
            const __m256 xv[4] = {_mm256_loadu_ps(A[h] + x), _mm256_loadu_ps(A[h] + x + 8), _mm256_loadu_ps(A[h] + x + 16),
                                  _mm256_loadu_ps(A[h] + x + 24)};
            res[h] = _mm256_add_ps(res[h], round32(xv, iv, sc, a8[h] + x));
        }
    }
    /* beta = q.O plus the rounding residual at the middle code */
    const __m128 beta = _mm_fmadd_ps(_mm_set1_ps(0.5f * (float)((1 << KB) - 1)), sum4(res[0], res[1], res[2], res[3]),
                                     sum4(ba[0], ba[1], ba[2], ba[3]));
    const __m128 bj = sum4(ja[0], ja[1], ja[2], ja[3]);

    /* isum[h][t] = sum_c a8[h][c] code(c, t): i16 lanes (token k of lo, 16 + k of hi) flushed
     * to i32 before they can overflow */
    const int cps = 8 / KB, nsub = D / cps, flush = KB == 2 ? 16 : 8;
    const __m256i mask = _mm256_set1_epi8((char)((1 << KB) - 1));
    __m256i is[3][4] = {{_mm256_setzero_si256()}}; /* (heads past HB stay unused) */
    for (int s0 = 0; s0 < nsub; s0 += flush) {
        __m256i lo[3], hi[3];
        for (int h = 0; h < HB; h++) lo[h] = hi[h] = _mm256_setzero_si256();
        for (int sub = s0; sub < s0 + flush; sub++) {
            __m256i v[4];
            code_planes(_mm256_loadu_si256((const __m256i *)(kp + 32 * (size_t)sub)), mask, KB, v);
            for (int h = 0; h < HB; h++) {
                if (KB == 2) {
                    const __m256i pa = bcast_pair(a8[h] + 4 * sub), pb = bcast_pair(a8[h] + 4 * sub + 2);
                    lo[h] = _mm256_add_epi16(lo[h], _mm256_add_epi16(_mm256_maddubs_epi16(v[0], pa), _mm256_maddubs_epi16(v[2], pb)));
                    hi[h] = _mm256_add_epi16(hi[h], _mm256_add_epi16(_mm256_maddubs_epi16(v[1], pa), _mm256_maddubs_epi16(v[3], pb)));
                } else {
                    const __m256i pa = bcast_pair(a8[h] + 2 * sub);
                    lo[h] = _mm256_add_epi16(lo[h], _mm256_maddubs_epi16(v[0], pa));
                    hi[h] = _mm256_add_epi16(hi[h], _mm256_maddubs_epi16(v[1], pa));
                }
            }
        }
        for (int h = 0; h < HB; h++) {
            const __m256i q[4] = {_mm256_cvtepi16_epi32(_mm256_castsi256_si128(lo[h])),
                                  _mm256_cvtepi16_epi32(_mm256_extracti128_si256(lo[h], 1)),
                                  _mm256_cvtepi16_epi32(_mm256_castsi256_si128(hi[h])),
                                  _mm256_cvtepi16_epi32(_mm256_extracti128_si256(hi[h], 1))};
            for (int v = 0; v < 4; v++) is[h][v] = s0 ? _mm256_add_epi32(is[h][v], q[v]) : q[v];
        }
    }
    const __m256 tv = _mm256_set1_ps(tau);
    for (int v = 0; v < 4; v++) {
        const __m256 nv = nrm ? _mm256_loadu_ps(nrm + 8 * v) : _mm256_set1_ps(1.0f);
        const __m256 tn = _mm256_mul_ps(tv, nv), n2 = _mm256_mul_ps(nv, nv);
        for (int h = 0; h < HB; h++) {
            __m256 x = _mm256_fmadd_ps(_mm256_set1_ps(lane(scale, h)), _mm256_cvtepi32_ps(is[h][v]), _mm256_set1_ps(lane(beta, h)));
            x = _mm256_mul_ps(tn, x);
            if (wh) x = _mm256_fnmadd_ps(n2, _mm256_set1_ps(lane(bj, h)), x);
            _mm256_storeu_ps(s + (size_t)h * lds + 8 * v, x);
        }
    }
    for (int h = 0; h < HB; h++) /* tokens this query does not see yet get no weight */
        for (int t = vis; t < 32; t++) s[(size_t)h * lds + t] = -INFINITY;
}

/* acc[h] += sum_t p[h][t] v^_t for one group and HB heads: the weights p S rounded to int8 per
 * channel group (amax of each head and group from one pass, one divide for all heads), integer
 * sums over token pairs per pair of 16-channel vectors of one channel group (6 accumulators, no
 * spills), the offsets sum_t p O added in the same epilogue. */
static inline __attribute__((always_inline)) void paired_values(const uint8_t *vp, const float *p, int ldp, float *acc,
                                                                const int D, const int VB, const int HB) {
    enum { NJ = 128 / 32 };
    const int nj = D / 32;
    const uint16_t *Sv = (const uint16_t *)(vp + (size_t)32 * D * VB / 8), *Ov = Sv + (size_t)nj * 32;
    const __m256 sign = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
    const float mid = 0.5f * (float)((1 << VB) - 1);
    int8_t w8[NJ][3][32];
    float sw[NJ][4], wo[NJ][4];
    for (int jg = 0; jg < nj; jg++) {
        __m256 sv[4], ov[4];
        for (int k = 0; k < 4; k++) {
            sv[k] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(Sv + jg * 32 + 8 * k)));
            ov[k] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(Ov + jg * 32 + 8 * k)));
        }
        __m256 w[3][4], am[4] = {zero, zero, zero, zero}, oa[4] = {zero, zero, zero, zero};
        for (int h = 0; h < HB; h++)
            for (int k = 0; k < 4; k++) {
                const __m256 pv = _mm256_loadu_ps(p + (size_t)h * ldp + 8 * k);
                w[h][k] = _mm256_mul_ps(pv, sv[k]);
                am[h] = _mm256_max_ps(am[h], _mm256_andnot_ps(sign, w[h][k]));
                oa[h] = _mm256_fmadd_ps(pv, ov[k], oa[h]);
            }
        __m128 inv, scale;
        i8_steps(max4(am[0], am[1], am[2], am[3]), &inv, &scale);
        __m256 res[4] = {zero, zero, zero, zero};
        for (int h = 0; h < HB; h++)
            res[h] = round32(w[h], _mm256_set1_ps(lane(inv, h)), _mm256_set1_ps(lane(scale, h)), w8[jg][h]);
        _mm_storeu_ps(sw[jg], scale);
        _mm_storeu_ps(wo[jg], _mm_fmadd_ps(_mm_set1_ps(mid), sum4(res[0], res[1], res[2], res[3]), sum4(oa[0], oa[1], oa[2], oa[3])));
    }
    /* a 32-byte chunk holds 128/VB channels of a token pair; vectors v and v+1 (16 channels
     * each) lie in one channel group of 32 */
    const int cps = 128 / VB, vps = 8 / VB, flush = VB == 2 ? 16 : 8;
    const size_t pair_bytes = (size_t)D * VB / 4;
    const __m256i mask = _mm256_set1_epi8((char)((1 << VB) - 1));
    for (int sub = 0; sub < D / cps; sub++)
        for (int v = 0; v < vps; v += 2) {
            const int jg = (sub * cps + 16 * v) / 32;
            for (int u0 = 0; u0 < 16; u0 += flush) {
                __m256i A0[3], A1[3];
                for (int h = 0; h < HB; h++) A0[h] = A1[h] = _mm256_setzero_si256();
                for (int u = u0; u < u0 + flush; u++) {
                    const __m256i x = _mm256_loadu_si256((const __m256i *)(vp + (size_t)u * pair_bytes + 32 * (size_t)sub));
                    const __m256i c0 = _mm256_and_si256(v ? _mm256_srli_epi16(x, VB * v) : x, mask);
                    const __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(x, VB * (v + 1)), mask);
                    for (int h = 0; h < HB; h++) {
                        const __m256i wp = bcast_pair(w8[jg][h] + 2 * u);
                        A0[h] = _mm256_add_epi16(A0[h], _mm256_maddubs_epi16(c0, wp));
                        A1[h] = _mm256_add_epi16(A1[h], _mm256_maddubs_epi16(c1, wp));
                    }
                }
                for (int h = 0; h < HB; h++) { /* i16 lane k of A0 = channel sub*cps + 16v + k */
                    float *a = acc + (size_t)h * D + sub * cps + 16 * v;
                    const __m256 sc = _mm256_set1_ps(sw[jg][h]);
                    const __m256 off = u0 ? zero : _mm256_set1_ps(wo[jg][h]);
                    const __m256i AA[2] = {A0[h], A1[h]};
                    for (int e = 0; e < 2; e++) {
                        const __m256 f0 = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(AA[e])));
                        const __m256 f1 = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(AA[e], 1)));
                        _mm256_storeu_ps(a + 16 * e, _mm256_fmadd_ps(sc, f0, _mm256_add_ps(_mm256_loadu_ps(a + 16 * e), off)));
                        _mm256_storeu_ps(a + 16 * e + 8, _mm256_fmadd_ps(sc, f1, _mm256_add_ps(_mm256_loadu_ps(a + 16 * e + 8), off)));
                    }
                }
            }
        }
}

/* Per query, PB groups at a time: scores of every head block, one online-softmax step per head
 * over the PB * 32 scores, then the values. Ranges of PB groups are fixed in absolute group
 * indices (items start at multiples of PB), so a query's bits do not depend on the chunking. */
static inline __attribute__((always_inline)) void paired_body(const kvs_attn_job *j, int g0, int g1, kvs_partial *p,
                                                              const int D, const int KB, const int VB) {
    const kvs_method *m = j->m;
    const int g = m->g;
    const size_t kbytes = m->key.bytes, blk_bytes = kbytes + m->value.bytes;
    const float tau = m->tau;
    const int taylor = m->jensen == KVS_JENSEN_TAYLOR;
    float S[3][PB * 32];
    kvs_partial_init(j, p);
    for (int grp = g0; grp < g0 + PB && grp < g1; grp++) prefetch_group(j, grp, 32, blk_bytes); /* the first range */
    for (int b0 = g0; b0 < g1; b0 += PB) {
        const int b1 = b0 + PB < g1 ? b0 + PB : g1;
        for (int i = j->i0; i < j->i1; i++) {
            int gl[PB], vis[PB], n = 0; /* the range's groups this query sees */
            for (int grp = b0; grp < b1; grp++) {
                const int t = j->blk[grp] ? kvs_job_group_tokens(j, i, grp) : 0;
                if (t > 0) gl[n] = grp, vis[n++] = t;
            }
            if (!n) continue;
            for (int h0 = 0; h0 < g; h0 += 3) {
                const int hb = g - h0 < 3 ? g - h0 : 3;
                const float *qh[3], *wh[3];
                for (int h = 0; h < hb; h++) {
                    qh[h] = kvs_job_q(j, j->qr, i, h0 + h);
                    wh[h] = taylor ? kvs_job_q(j, j->w, i, h0 + h) : NULL;
                }
                for (int x = 0; x < n; x++) {
                    const uint8_t *kp = j->blk[gl[x]];
                    const float *nrm = kvs_job_norm(j, gl[x]);
                    float *s = S[0] + 32 * x;
                    if (i == j->i0 && h0 == 0 && b0 + PB + x < g1) /* one block a group, a range ahead: a burst of them stalls */
                        prefetch_group(j, b0 + PB + x, 32, blk_bytes);
                    switch (hb * 2 + taylor) { /* heads and Jensen as constants: no per-lane branches */
                    case 2: paired_scores(kp, nrm, vis[x], qh, NULL, tau, s, PB * 32, D, KB, 1); break;
                    case 3: paired_scores(kp, nrm, vis[x], qh, wh, tau, s, PB * 32, D, KB, 1); break;
                    case 4: paired_scores(kp, nrm, vis[x], qh, NULL, tau, s, PB * 32, D, KB, 2); break;
                    case 5: paired_scores(kp, nrm, vis[x], qh, wh, tau, s, PB * 32, D, KB, 2); break;
                    case 6: paired_scores(kp, nrm, vis[x], qh, NULL, tau, s, PB * 32, D, KB, 3); break;
                    default: paired_scores(kp, nrm, vis[x], qh, wh, tau, s, PB * 32, D, KB, 3); break;
                    }
                }
                float *acc = p->acc + ((size_t)i * g + h0) * D;
                for (int h = 0; h < hb; h++) {
                    const size_t o = (size_t)i * g + h0 + h;
                    softmax_tile(S[h], 32 * n, &p->m[o], &p->l[o], acc + (size_t)h * D, D);
                }
                for (int x = 0; x < n; x++) {
                    const uint8_t *vp = j->blk[gl[x]] + kbytes;
                    switch (hb) {
                    case 1: paired_values(vp, S[0] + 32 * x, PB * 32, acc, D, VB, 1); break;
                    case 2: paired_values(vp, S[0] + 32 * x, PB * 32, acc, D, VB, 2); break;
                    default: paired_values(vp, S[0] + 32 * x, PB * 32, acc, D, VB, 3); break;
                    }
                }
            }
        }
    }
}

static void paired_kernel(const kvs_attn_job *j, int g0, int g1, kvs_partial *p, const int D) {
    switch (j->m->key.bits * 8 + j->m->value.bits) {
    case 2 * 8 + 2: paired_body(j, g0, g1, p, D, 2, 2); break;
    case 2 * 8 + 4: paired_body(j, g0, g1, p, D, 2, 4); break;
    case 4 * 8 + 2: paired_body(j, g0, g1, p, D, 4, 2); break;
    default: paired_body(j, g0, g1, p, D, 4, 4); break;
    }
}

enum { ROWS = KVS_LAYOUT_ROWS, PAIRED = KVS_LAYOUT_PAIRED };
/* paired INT2/INT4 keys and values (OScaR, KIVI at G = 32): integer multiply-adds throughout; the
 * exact Jensen term is per token and stays in the general body */
static void groups_paired_32_64(const kvs_attn_job *j, int g0, int g1, kvs_partial *p) {
    if (j->m->jensen == KVS_JENSEN_EXACT) groups_body(j, g0, g1, p, 32, 64, PAIRED, PAIRED); /* per-token Jensen */
    else paired_kernel(j, g0, g1, p, 64);
}
static void groups_paired_32_128(const kvs_attn_job *j, int g0, int g1, kvs_partial *p) {
    if (j->m->jensen == KVS_JENSEN_EXACT) groups_body(j, g0, g1, p, 32, 128, PAIRED, PAIRED);
    else paired_kernel(j, g0, g1, p, 128);
}
/* per-token rows (fp16, q8_0, q4_0, fp32) on both sides: llama.cpp's cache types */
static void groups_rows_32_64(const kvs_attn_job *j, int g0, int g1, kvs_partial *p) { groups_body(j, g0, g1, p, 32, 64, ROWS, ROWS); }
static void groups_rows_32_128(const kvs_attn_job *j, int g0, int g1, kvs_partial *p) { groups_body(j, g0, g1, p, 32, 128, ROWS, ROWS); }
/* every other codec pair (mixed, INT3, INT8, affine rows), by shape, then anything */
static void groups_any_32_64(const kvs_attn_job *j, int g0, int g1, kvs_partial *p) { groups_body(j, g0, g1, p, 32, 64, -1, -1); }
static void groups_any_32_128(const kvs_attn_job *j, int g0, int g1, kvs_partial *p) { groups_body(j, g0, g1, p, 32, 128, -1, -1); }
static void groups_any(const kvs_attn_job *j, int g0, int g1, kvs_partial *p) { groups_body(j, g0, g1, p, 0, 0, -1, -1); }

static const kvs_groups_entry avx2_groups[] = {
    {KVS_LAYOUT_LOWRANK, KVS_LAYOUT_LOWRANK, 0, 0, kvs__groups_lowrank_avx2, "lowrank"},
    {KVS_LAYOUT_PAIRED, KVS_LAYOUT_PAIRED, 32, 64, groups_paired_32_64, "paired/paired G32 d64"},
    {KVS_LAYOUT_PAIRED, KVS_LAYOUT_PAIRED, 32, 128, groups_paired_32_128, "paired/paired G32 d128"},
    {KVS_LAYOUT_ROWS, KVS_LAYOUT_ROWS, 32, 64, groups_rows_32_64, "rows/rows G32 d64"},
    {KVS_LAYOUT_ROWS, KVS_LAYOUT_ROWS, 32, 128, groups_rows_32_128, "rows/rows G32 d128"},
    {KVS_LAYOUT_ANY, KVS_LAYOUT_ANY, 32, 64, groups_any_32_64, "any G32 d64"},
    {KVS_LAYOUT_ANY, KVS_LAYOUT_ANY, 32, 128, groups_any_32_128, "any G32 d128"},
    {KVS_LAYOUT_ANY, KVS_LAYOUT_ANY, 0, 0, groups_any, "any"},
};

/* ---- the fp kernel: sinks, window and the chunk, fp32 rows --------------------------------- */

enum { FP_TILE = 64 };

/* Scores of a tile for up to 3 query heads, 4 keys at a time: 12 independent accumulators, each
 * key chunk loaded once for the heads. Every score is still its own chain, a = fma(q[c..c+7],
 * k[c..c+7], a) over c in order, then hsum and × tau: the bits of one query and one key alone. */
static inline __attribute__((always_inline)) void fp_scores_H(const float *const *qh, int d, float tau,
                                                              const float *const *kr, int cnt, float *s, const int HB) {
    int t = 0;
    for (; t + 4 <= cnt; t += 4) {
        __m256 a[3][4];
        for (int h = 0; h < HB; h++)
            for (int u = 0; u < 4; u++) a[h][u] = _mm256_setzero_ps();
        for (int c = 0; c < d; c += 8) {
            __m256 kv[4];
            for (int u = 0; u < 4; u++) kv[u] = _mm256_loadu_ps(kr[t + u] + c);
            for (int h = 0; h < HB; h++) {
                const __m256 qv = _mm256_loadu_ps(qh[h] + c);
                for (int u = 0; u < 4; u++) a[h][u] = _mm256_fmadd_ps(qv, kv[u], a[h][u]);
            }
        }
        for (int h = 0; h < HB; h++)
            for (int u = 0; u < 4; u++) s[h * FP_TILE + t + u] = tau * hsum(a[h][u]);
    }
    for (; t < cnt; t++)
        for (int h = 0; h < HB; h++) {
            __m256 a = _mm256_setzero_ps();
            for (int c = 0; c < d; c += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(qh[h] + c), _mm256_loadu_ps(kr[t] + c), a);
            s[h * FP_TILE + t] = tau * hsum(a);
        }
}

/* acc[0..d) += Σ_t s[t] v_t, 64 channels at a time held in registers across the tile's rows: per
 * channel the same fma sequence over t as a load-add-store per row, without the store-to-load
 * chain through memory. */
static inline void fp_values(const float *s, const float *const *vr, int cnt, int d, float *acc) {
    for (int c0 = 0; c0 < d; c0 += 64) {
        const int nv = (d - c0 < 64 ? d - c0 : 64) / 8;
        __m256 A[8];
        for (int x = 0; x < nv; x++) A[x] = _mm256_loadu_ps(acc + c0 + 8 * x);
        for (int t = 0; t < cnt; t++) {
            const __m256 pv = _mm256_set1_ps(s[t]);
            for (int x = 0; x < nv; x++) A[x] = _mm256_fmadd_ps(pv, _mm256_loadu_ps(vr[t] + c0 + 8 * x), A[x]);
        }
        for (int x = 0; x < nv; x++) _mm256_storeu_ps(acc + c0 + 8 * x, A[x]);
    }
}

/* A tile of rows for the g query heads of query i: scores 3 heads at a time, then each head's
 * online-softmax step and value accumulation. */
static void fp_heads(const kvs_attn_job *j, kvs_partial *p, int i, const float *const *kr, const float *const *vr,
                     int cnt, float *s) {
    const int d = j->m->d, g = j->m->g;
    for (int h0 = 0; h0 < g; h0 += 3) {
        const int hb = g - h0 < 3 ? g - h0 : 3;
        const float *qh[3];
        for (int h = 0; h < hb; h++) qh[h] = kvs_job_q(j, j->q, i, h0 + h);
        switch (hb) {
        case 1: fp_scores_H(qh, d, j->m->tau, kr, cnt, s, 1); break;
        case 2: fp_scores_H(qh, d, j->m->tau, kr, cnt, s, 2); break;
        default: fp_scores_H(qh, d, j->m->tau, kr, cnt, s, 3); break;
        }
        for (int h = 0; h < hb; h++) {
            const size_t o = (size_t)i * g + h0 + h;
            float *sh = s + (size_t)h * FP_TILE;
            softmax_tile(sh, cnt, &p->m[o], &p->l[o], p->acc + o * d, d);
            fp_values(sh, vr, cnt, d, p->acc + o * d);
        }
    }
}

/* Tiles are cut from the query's row sequence as a whole, not per run: the runs of a query in a
 * chunk (window, chunk) and in token-by-token decoding (window, itself) differ, the sequence does
 * not, so both give the same bits. */
static void fp_avx2(const kvs_attn_job *j, kvs_partial *p) {
    const struct kvs_cache *c = j->c;
    const int d = j->m->d, g = j->m->g;
    const float *kr[FP_TILE], *vr[FP_TILE];
    float s[3 * FP_TILE];
    kvs_rows rows[5];
    for (int i = j->i0; i < j->i1; i++) {
        for (int h = 0; h < g; h++) {
            const size_t o = (size_t)i * g + h;
            p->m[o] = -INFINITY;
            p->l[o] = 0.0f;
            memset(p->acc + o * d, 0, (size_t)d * sizeof(float));
        }
        const int nr = kvs__view_rows(c, j->view, j->layer, j->kvh, j->k, j->v, i, rows);
        int cnt = 0;
        for (int r = 0; r < nr; r++)
            for (int t = 0; t < rows[r].n; t++) {
                kr[cnt] = rows[r].k + (size_t)t * rows[r].stride;
                vr[cnt] = rows[r].v + (size_t)t * rows[r].stride;
                if (++cnt == FP_TILE) {
                    fp_heads(j, p, i, kr, vr, cnt, s);
                    cnt = 0;
                }
            }
        if (cnt) fp_heads(j, p, i, kr, vr, cnt, s);
    }
}

const kvs_kernel_table kvs_kernels_avx2 = {"avx2", avx2_groups, (int)(sizeof avx2_groups / sizeof avx2_groups[0]),
                                           fp_avx2};
