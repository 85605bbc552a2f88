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

/* 1 when rows of `len` b-bit codes use the broadcast-word (permuted) order. */
static inline int perm_mode(int b, int len) { return b != 3 && len % (64 / b) == 0; }

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
 * are separate allocations, so the hardware prefetcher does not see one stream. */
static inline void prefetch_block(const uint8_t *p, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) _mm_prefetch((const char *)p + o, _MM_HINT_T0);
}

/* ---- online softmax over a tile of scores ------------------------------------------------ */

/* s[nt] scores -> probabilities relative to the new running max; rescales l and acc[d]. */
static void softmax_tile(float *s, int nt, float *m, float *l, float *acc, int d) {
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

/* ---- the groups kernel ------------------------------------------------------------------ */

static void groups_avx2(const kvs_attn_job *j, int g0, int g1, kvs_partial *p) {
    const struct kvs_cache *c = j->c;
    const kvs_config *cfg = &c->cfg;
    const int d = c->d, g = c->g, G = c->G, n = j->n;
    const kvs_type kt = cfg->k_type, vt = cfg->v_type;
    const int kb = kvs_affine_bits(kt), vb = kvs_affine_bits(vt);
    const int kperm = kb && perm_mode(kb, G), vperm = vb && perm_mode(vb, d);
    const size_t krow = kvs_row_bytes(kt, d), vrow = vb ? (size_t)d * vb / 8 : kvs_row_bytes(vt, d);
    const int nj = d / G > 0 ? d / G : 1;
    const int ggml_k = kt == KVS_TYPE_Q8_0 || kt == KVS_TYPE_Q4_0;
    const float tau = c->tau;
    const int jensen = cfg->jensen;
    const float *const *norms = cfg->scale == KVS_SCALE_TOKEN ? (const float *const *)c->layers[j->layer].norm : NULL;
    const kvs_stream *st = kvs_stream_at(c, j->layer, j->kvh);

    /* scratch: scores [g][G], folded query a [g][d], steps [d], value weights [g][nj][G],
     * value offsets [g][nj] */
    const size_t nscr = (size_t)g * G + (size_t)g * d + (size_t)d + (size_t)g * nj * G + (size_t)g * nj;
    float *scr = malloc(nscr * sizeof(float));
    const float **qh = malloc((size_t)g * sizeof(float *));
    if (!scr || !qh) { /* tiny allocations; if even these fail, use the reference */
        free(scr);
        free(qh);
        kvs_kernels_ref.groups(j, g0, g1, p);
        return;
    }
    float *S = scr, *A = S + (size_t)g * G, *dl = A + (size_t)g * d, *ws = dl + d, *wo = ws + (size_t)g * nj * G;

    for (int x = 0; x < n * g; x++) {
        p->m[x] = -INFINITY;
        p->l[x] = 0.0f;
    }
    memset(p->acc, 0, (size_t)n * g * d * sizeof(float));

    for (int grp = g0; grp < g1; grp++) {
        const uint8_t *kp = st->blk[grp], *vp = kp + c->kbytes;
        const float *nrm = norms ? norms[grp] : NULL;
        if (grp + 1 < g1) {
            prefetch_block(st->blk[grp + 1], c->kbytes + c->vbytes < 4096 ? c->kbytes + c->vbytes : 0);
            if (norms) _mm_prefetch((const char *)norms[grp + 1], _MM_HINT_T0);
        }
        const uint16_t *Sk = kb ? (const uint16_t *)(kp + (size_t)d * G * kb / 8) : NULL, *Ok = Sk ? Sk + d : NULL;
        if (kb && jensen == KVS_JENSEN_EXACT)
            for (int x = 0; x < d; x += 8) _mm256_storeu_ps(dl + x, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(Sk + x))));
        for (int i = 0; i < n; i++) {
            for (int h = 0; h < g; h++) qh[h] = kvs_job_q(j, j->qr, i, h);
            /* scores of the G tokens for the g heads */
            if (kb) {
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
                for (int h0 = 0; h0 < g; h0 += 4) {
                    const int hb = g - h0 < 4 ? g - h0 : 4;
                    key_dots(kp, kb, kperm, G, d, A + (size_t)h0 * d, S + (size_t)h0 * G, hb);
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
                        for (int t = 0; t < G; t++) s[t] -= kvs_jensen_exact(qh[h], dl, d, tau, nrm ? nrm[t] : 1.0f, cfg->lambda);
                }
            } else {
                row_dots(kt, kp, krow, G, d, g, qh, S);
                for (int t = 0; t < G; t++) {
                    const float nt = nrm ? nrm[t] : 1.0f;
                    if (jensen && ggml_k) kvs__group_key_delta(c, j->layer, j->kvh, grp, t, dl);
                    for (int h = 0; h < g; h++) {
                        float s = tau * nt * S[(size_t)h * G + t];
                        if (jensen == KVS_JENSEN_TAYLOR && ggml_k) {
                            const float *w = kvs_job_q(j, j->w, i, h);
                            float b = 0.0f;
                            for (int x = 0; x < d; x++) b += w[x] * dl[x] * dl[x];
                            s -= nt * nt * b;
                        } else if (jensen == KVS_JENSEN_EXACT && ggml_k) {
                            s -= kvs_jensen_exact(qh[h], dl, d, tau, nt, cfg->lambda);
                        }
                        S[(size_t)h * G + t] = s;
                    }
                }
            }
            /* softmax and values */
            for (int h = 0; h < g; h++) {
                const size_t o = (size_t)i * g + h;
                softmax_tile(S + (size_t)h * G, G, &p->m[o], &p->l[o], p->acc + o * d, d);
            }
            float *acc0 = p->acc + (size_t)i * g * d;
            if (vb) {
                /* per-token scales folded into the probabilities, offsets summed once per group */
                const uint16_t *Sv = (const uint16_t *)(vp + (size_t)G * vrow), *Ov = Sv + (size_t)nj * G;
                for (int jg = 0; jg < nj; jg++)
                    for (int h = 0; h < g; h++) {
                        __m256 oacc = _mm256_setzero_ps();
                        for (int t = 0; t < G; t += 8) {
                            const __m256 pv = _mm256_loadu_ps(S + (size_t)h * G + t);
                            const __m256 sv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(Sv + (size_t)jg * G + t)));
                            const __m256 ov = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(Ov + (size_t)jg * G + t)));
                            _mm256_storeu_ps(ws + ((size_t)h * nj + jg) * G + t, _mm256_mul_ps(pv, sv));
                            oacc = _mm256_fmadd_ps(pv, ov, oacc);
                        }
                        wo[(size_t)h * nj + jg] = hsum(oacc);
                    }
                for (int h0 = 0; h0 < g; h0 += 3) {
                    const int hb = g - h0 < 3 ? g - h0 : 3;
                    value_acc(vp, vrow, vb, vperm, G, d, ws + (size_t)h0 * nj * G, nj, acc0 + (size_t)h0 * d, hb);
                }
                for (int h = 0; h < g; h++)
                    for (int x = 0; x < d; x += 8) {
                        float *a = acc0 + (size_t)h * d + x;
                        _mm256_storeu_ps(a, _mm256_add_ps(_mm256_loadu_ps(a), _mm256_set1_ps(wo[(size_t)h * nj + x / G])));
                    }
            } else {
                row_axpy(vt, vp, vrow, G, d, g, S, acc0);
            }
        }
    }
    free(scr);
    free(qh);
}

/* ---- the fp kernel: sinks, window and the chunk, fp32 rows --------------------------------- */

enum { FP_TILE = 64 };

static void fp_rows(const float *q, int d, float tau, const float *k, size_t kstride, const float *v,
                    size_t vstride, int nt, float *m, float *l, float *acc, float *s) {
    for (int t0 = 0; t0 < nt; t0 += FP_TILE) {
        const int cnt = nt - t0 < FP_TILE ? nt - t0 : FP_TILE;
        for (int t = 0; t < cnt; t++) {
            const float *kr = k + (size_t)(t0 + t) * kstride;
            __m256 a = _mm256_setzero_ps();
            for (int c = 0; c < d; c += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), _mm256_loadu_ps(kr + c), a);
            s[t] = tau * hsum(a);
        }
        softmax_tile(s, cnt, m, l, acc, d);
        for (int t = 0; t < cnt; t++) {
            const float *vr = v + (size_t)(t0 + t) * vstride;
            const __m256 pv = _mm256_set1_ps(s[t]);
            for (int c = 0; c < d; c += 8)
                _mm256_storeu_ps(acc + c, _mm256_fmadd_ps(pv, _mm256_loadu_ps(vr + c), _mm256_loadu_ps(acc + c)));
        }
    }
}

static void fp_avx2(const kvs_attn_job *j, kvs_partial *p) {
    const struct kvs_cache *c = j->c;
    const int d = c->d, g = c->g;
    const kvs_layer *ly = &c->layers[j->layer];
    const kvs_stream *st = kvs_stream_at(c, j->layer, j->kvh);
    const size_t cs = (size_t)c->n_kv * d;
    float s[FP_TILE];
    for (int i = 0; i < j->n; i++)
        for (int h = 0; h < g; h++) {
            const size_t o = (size_t)i * g + h;
            const float *q = kvs_job_q(j, j->q, i, h);
            float *acc = p->acc + o * d;
            p->m[o] = -INFINITY;
            p->l[o] = 0.0f;
            memset(acc, 0, (size_t)d * sizeof(float));
            fp_rows(q, d, c->tau, st->sink_k, d, st->sink_v, d, ly->n_sink, &p->m[o], &p->l[o], acc, s);
            fp_rows(q, d, c->tau, st->win_k, d, st->win_v, d, ly->n_win, &p->m[o], &p->l[o], acc, s);
            fp_rows(q, d, c->tau, kvs_job_kv(j, j->k, 0), cs, kvs_job_kv(j, j->v, 0), cs, i + 1, &p->m[o], &p->l[o], acc, s);
        }
}

const kvs_kernel_table kvs_kernels_avx2 = {"avx2", groups_avx2, fp_avx2};
