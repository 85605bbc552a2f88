/* AVX2/FMA/F16C kernels, same contract as attend_ref.c. Nothing is dequantized into a buffer:
 * per-channel key scales and offsets are folded into the query (a_c = q_c*S_c, beta = q.O), the
 * OScaR norm and Jensen term into the score, per-token value scales into the probabilities
 * (acc += (p*S) * code, offsets summed once per group). Codes are unpacked in registers.
 *
 * Lane order: for b in {2,4,8} and rows whose length is a multiple of 64/b, one 64-bit word is
 * broadcast and shifted per lane (variable shifts), which visits the word's elements in a
 * permuted order (elem_of_lane below). Scores are un-permuted after the dot products; value
 * accumulators stay permuted inside an item and are un-permuted once at its end. */
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

/* Element index visited by lane l of vector k (8 elements per vector). */
static inline int elem_of_lane(int b, int perm, int k, int l) {
    if (!perm) return 8 * k + l;
    const int epw = 64 / b, vpw = epw / 8, word = k / vpw, sub = k % vpw;
    return word * epw + (l & 1) * (epw / 2) + (l >> 1) + 4 * sub;
}

/* Codes of vector k of a row, as floats. */
static inline __m256 unpack8(const uint8_t *row, int b, int perm, int k) {
    const __m256i mask = _mm256_set1_epi32((1 << b) - 1);
    if (perm) {
        const int vpw = 8 / b, word = k / vpw, sub = k % vpw;
        int64_t w;
        memcpy(&w, row + 8 * word, 8);
        const __m256i sh = _mm256_add_epi32(_mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3),
                                            _mm256_set1_epi32(4 * sub));
        const __m256i v = _mm256_srlv_epi32(_mm256_set1_epi64x(w), _mm256_mullo_epi32(sh, _mm256_set1_epi32(b)));
        return _mm256_cvtepi32_ps(_mm256_and_si256(v, mask));
    }
    if (b == 8) return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(row + 8 * k))));
    uint32_t w = 0;
    memcpy(&w, row + b * k, (size_t)b);
    const __m256i sh = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(b));
    return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w), sh), mask));
}

/* ---- per-token row types (fp32, fp16, q8_0, q4_0): dot and axpy ------------------------- */

static inline __m256 load8_row(kvs_type t, const uint8_t *row, int c0, float *scale) {
    switch (t) {
    case KVS_TYPE_FP32: *scale = 1.0f; return _mm256_loadu_ps((const float *)row + c0);
    case KVS_TYPE_FP16: *scale = 1.0f; return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * c0)));
    case KVS_TYPE_Q8_0: {
        const kvs_block_q8_0 *b = (const kvs_block_q8_0 *)row + c0 / KVS_QK;
        *scale = _cvtsh_ss(b->d);
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b->qs + c0 % KVS_QK))));
    }
    default: { /* q4_0: elements j and j+16 share byte j */
        const kvs_block_q4_0 *b = (const kvs_block_q4_0 *)row + c0 / KVS_QK;
        const int j = c0 % KVS_QK;
        *scale = _cvtsh_ss(b->d);
        __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b->qs + (j & 15))));
        x = j < 16 ? _mm256_and_si256(x, _mm256_set1_epi32(15)) : _mm256_srli_epi32(x, 4);
        return _mm256_cvtepi32_ps(_mm256_sub_epi32(x, _mm256_set1_epi32(8)));
    }
    }
}

static inline float row_dot(kvs_type t, const uint8_t *row, const float *q, int d) {
    __m256 acc = _mm256_setzero_ps();
    for (int c = 0; c < d; c += 8) {
        float s;
        const __m256 x = load8_row(t, row, c, &s);
        acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(q + c), _mm256_set1_ps(s)), x, acc);
    }
    return hsum(acc);
}

static inline void row_axpy(kvs_type t, const uint8_t *row, float p, float *acc, int d) {
    for (int c = 0; c < d; c += 8) {
        float s;
        const __m256 x = load8_row(t, row, c, &s);
        _mm256_storeu_ps(acc + c, _mm256_fmadd_ps(_mm256_set1_ps(p * s), x, _mm256_loadu_ps(acc + c)));
    }
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

/* ---- affine keys: s[hh][perm t] = sum_c a[hh][c] * code[c][t] ------------------------------ */

static inline __attribute__((always_inline)) void key_dots_hb(const uint8_t *codes, int b, int perm, int G,
                                                              int d, const float *a, float *s, const int HB) {
    const size_t rowb = (size_t)G * b / 8;
    for (int k = 0; k < G / 8; k += 2) {
        __m256 acc[4][2];
        for (int h = 0; h < HB; h++) acc[h][0] = acc[h][1] = _mm256_setzero_ps();
        const int two = k + 1 < G / 8; /* G = 8 * odd leaves one vector at the end */
        for (int c = 0; c < d; c++) {
            const uint8_t *row = codes + (size_t)c * rowb;
            const __m256 x0 = unpack8(row, b, perm, k);
            const __m256 x1 = two ? unpack8(row, b, perm, k + 1) : _mm256_setzero_ps();
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

static void key_dots(const uint8_t *codes, int b, int perm, int G, int d, const float *a, float *s, int hb) {
    switch (hb) {
    case 1: key_dots_hb(codes, b, perm, G, d, a, s, 1); break;
    case 2: key_dots_hb(codes, b, perm, G, d, a, s, 2); break;
    case 3: key_dots_hb(codes, b, perm, G, d, a, s, 3); break;
    default: key_dots_hb(codes, b, perm, G, d, a, s, 4); break;
    }
}

/* ---- affine values: acc[hh][perm c] += sum_t ws[hh][t][j] * code[t][c] --------------------- */

static inline __attribute__((always_inline)) void value_acc_hb(const uint8_t *vp, size_t vrow, int b, int perm,
                                                               int G, int d, const float *ws, int nj,
                                                               float *acc, const int HB) {
    for (int cb = 0; cb < d; cb += 32) {
        const int nv = (d - cb) >= 32 ? 4 : (d - cb) / 8;
        __m256 A[3][4];
        int grp[4];
        for (int v = 0; v < nv; v++) grp[v] = elem_of_lane(b, perm, cb / 8 + v, 0) / G;
        for (int h = 0; h < HB; h++)
            for (int v = 0; v < nv; v++) A[h][v] = _mm256_loadu_ps(acc + (size_t)h * d + cb + 8 * v);
        for (int t = 0; t < G; t++) {
            const uint8_t *row = vp + (size_t)t * vrow;
            __m256 x[4];
            for (int v = 0; v < nv; v++) x[v] = unpack8(row, b, perm, cb / 8 + v);
            for (int h = 0; h < HB; h++)
                for (int v = 0; v < nv; v++)
                    A[h][v] = _mm256_fmadd_ps(_mm256_broadcast_ss(ws + ((size_t)h * G + t) * nj + grp[v]), x[v], A[h][v]);
        }
        for (int h = 0; h < HB; h++)
            for (int v = 0; v < nv; v++) _mm256_storeu_ps(acc + (size_t)h * d + cb + 8 * v, A[h][v]);
    }
}

static void value_acc(const uint8_t *vp, size_t vrow, int b, int perm, int G, int d, const float *ws, int nj,
                      float *acc, int hb) {
    switch (hb) {
    case 1: value_acc_hb(vp, vrow, b, perm, G, d, ws, nj, acc, 1); break;
    case 2: value_acc_hb(vp, vrow, b, perm, G, d, ws, nj, acc, 2); break;
    default: value_acc_hb(vp, vrow, b, perm, G, d, ws, nj, acc, 3); break;
    }
}

/* ---- the groups kernel ------------------------------------------------------------------ */

static void groups_avx2(const kvs_attn_job *j, int g0, int g1, kvs_partial *p) {
    const struct kvs_cache *c = j->c;
    const kvs_config *cfg = &c->cfg;
    const int d = c->d, g = c->g, G = c->G, n = j->n;
    const kvs_type kt = cfg->k_type, vt = cfg->v_type;
    const int kb = kvs_affine_bits(kt), vb = kvs_affine_bits(vt);
    const int kperm = kb && perm_mode(kb, G), vperm = vb && perm_mode(vb, d) && G % (64 / vb) == 0;
    const size_t krow = kvs_row_bytes(kt, d, G), vrow = kvs_row_bytes(vt, d, G);
    const int nj = d / G > 0 ? d / G : 1;
    const float tau = c->tau;
    const int jensen = cfg->jensen;
    const float *const *norms = cfg->scale == KVS_SCALE_TOKEN ? (const float *const *)c->layers[j->layer].norm : NULL;
    const kvs_stream *st = kvs_stream_at(c, j->layer, j->kvh);

    /* scratch: scores [g][G], folded query a [g][d], meta sc/of [d], value weights [g][G][nj],
     * offsets [g][nj], delta^2 [d], permutation tables */
    const size_t nscr = (size_t)g * G + (size_t)g * d + 3 * (size_t)d + (size_t)g * G * nj + (size_t)g * nj + G + d;
    float *scr = malloc(nscr * sizeof(float));
    int *kp_of = malloc(((size_t)G + d) * sizeof(int));
    if (!scr || !kp_of) { /* cannot happen for sane sizes; fall back to the reference */
        free(scr);
        free(kp_of);
        kvs_kernels_ref.groups(j, g0, g1, p);
        return;
    }
    float *S = scr, *A = S + (size_t)g * G, *sc = A + (size_t)g * d, *of = sc + d, *dd = of + d;
    float *ws = dd + d, *wo = ws + (size_t)g * G * nj, *sp = wo + (size_t)g * nj, *vtmp = sp + G;
    int *ktok = kp_of, *vch = kp_of + G;
    for (int x = 0; x < G; x++) ktok[x] = kb ? elem_of_lane(kb, kperm, x / 8, x % 8) : x;
    for (int x = 0; x < d; x++) vch[x] = vb ? elem_of_lane(vb, vperm, x / 8, x % 8) : x;

    for (int x = 0; x < n * g; x++) {
        p->m[x] = -INFINITY;
        p->l[x] = 0.0f;
    }
    memset(p->acc, 0, (size_t)n * g * d * sizeof(float));

    for (int grp = g0; grp < g1; grp++) {
        const uint8_t *kp = st->blk[grp], *vp = kp + c->kbytes;
        const float *nrm = norms ? norms[grp] : NULL;
        if (kb) {
            const kvs_affine_meta *meta = (const kvs_affine_meta *)(kp + (size_t)d * G * kb / 8);
            for (int x = 0; x < d; x++) {
                sc[x] = _cvtsh_ss(meta[x].scale);
                of[x] = _cvtsh_ss(meta[x].offset);
                dd[x] = sc[x] * sc[x];
            }
        }
        for (int i = 0; i < n; i++) {
            /* scores of the G tokens for the g heads */
            if (kb) {
                float beta[256], bj[256];
                for (int h = 0; h < g; h++) {
                    const float *qr = kvs_job_q(j, j->qr, i, h);
                    __m256 bacc = _mm256_setzero_ps(), jacc = _mm256_setzero_ps();
                    for (int x = 0; x < d; x += 8) {
                        const __m256 qv = _mm256_loadu_ps(qr + x);
                        _mm256_storeu_ps(A + (size_t)h * d + x, _mm256_mul_ps(qv, _mm256_loadu_ps(sc + x)));
                        bacc = _mm256_fmadd_ps(qv, _mm256_loadu_ps(of + x), bacc);
                        if (jensen == KVS_JENSEN_TAYLOR)
                            jacc = _mm256_fmadd_ps(_mm256_loadu_ps(kvs_job_q(j, j->w, i, h) + x), _mm256_loadu_ps(dd + x), jacc);
                    }
                    beta[h] = hsum(bacc);
                    bj[h] = hsum(jacc);
                }
                for (int h0 = 0; h0 < g; h0 += 4) {
                    const int hb = g - h0 < 4 ? g - h0 : 4;
                    key_dots(kp, kb, kperm, G, d, A + (size_t)h0 * d, S + (size_t)h0 * G, hb);
                }
                for (int h = 0; h < g; h++) {
                    float *s = S + (size_t)h * G;
                    memcpy(sp, s, (size_t)G * sizeof(float));
                    for (int x = 0; x < G; x++) s[ktok[x]] = sp[x];
                    for (int t = 0; t < G; t++) {
                        const float nt = nrm ? nrm[t] : 1.0f;
                        s[t] = tau * nt * (s[t] + beta[h]);
                        if (jensen == KVS_JENSEN_TAYLOR) s[t] -= nt * nt * bj[h];
                        else if (jensen == KVS_JENSEN_EXACT)
                            s[t] -= kvs_jensen_exact(kvs_job_q(j, j->qr, i, h), sc, d, tau, nt, cfg->lambda);
                    }
                }
            } else {
                for (int t = 0; t < G; t++) {
                    const uint8_t *row = kp + (size_t)t * krow;
                    const float nt = nrm ? nrm[t] : 1.0f;
                    if (jensen && (kt == KVS_TYPE_Q8_0 || kt == KVS_TYPE_Q4_0))
                        kvs__group_key_delta(c, j->layer, j->kvh, grp, t, dd);
                    for (int h = 0; h < g; h++) {
                        const float *qr = kvs_job_q(j, j->qr, i, h);
                        float s = tau * nt * row_dot(kt, row, qr, d);
                        if (jensen == KVS_JENSEN_TAYLOR && (kt == KVS_TYPE_Q8_0 || kt == KVS_TYPE_Q4_0)) {
                            const float *w = kvs_job_q(j, j->w, i, h);
                            float b = 0.0f;
                            for (int x = 0; x < d; x++) b += w[x] * dd[x] * dd[x];
                            s -= nt * nt * b;
                        } else if (jensen == KVS_JENSEN_EXACT && (kt == KVS_TYPE_Q8_0 || kt == KVS_TYPE_Q4_0)) {
                            s -= kvs_jensen_exact(qr, dd, d, tau, nt, cfg->lambda);
                        }
                        S[(size_t)h * G + t] = s;
                    }
                }
            }
            /* softmax and values, per head */
            for (int h = 0; h < g; h++) {
                const size_t o = (size_t)i * g + h;
                softmax_tile(S + (size_t)h * G, G, &p->m[o], &p->l[o], p->acc + o * d, d);
            }
            float *acc0 = p->acc + (size_t)i * g * d;
            if (vb) {
                for (int h = 0; h < g; h++)
                    for (int jg = 0; jg < nj; jg++) wo[(size_t)h * nj + jg] = 0.0f;
                for (int t = 0; t < G; t++) {
                    const kvs_affine_meta *meta = (const kvs_affine_meta *)(vp + (size_t)t * vrow + (size_t)d * vb / 8);
                    for (int jg = 0; jg < nj; jg++) {
                        const float s = _cvtsh_ss(meta[jg].scale), o = _cvtsh_ss(meta[jg].offset);
                        for (int h = 0; h < g; h++) {
                            const float pr = S[(size_t)h * G + t];
                            ws[((size_t)h * G + t) * nj + jg] = pr * s;
                            wo[(size_t)h * nj + jg] += pr * o;
                        }
                    }
                }
                for (int h0 = 0; h0 < g; h0 += 3) {
                    const int hb = g - h0 < 3 ? g - h0 : 3;
                    value_acc(vp, vrow, vb, vperm, G, d, ws + (size_t)h0 * G * nj, nj, acc0 + (size_t)h0 * d, hb);
                }
                for (int h = 0; h < g; h++)
                    for (int x = 0; x < d; x++) acc0[(size_t)h * d + x] += wo[(size_t)h * nj + vch[x] / G];
            } else {
                for (int t = 0; t < G; t++)
                    for (int h = 0; h < g; h++)
                        row_axpy(vt, vp + (size_t)t * vrow, S[(size_t)h * G + t], acc0 + (size_t)h * d, d);
            }
        }
    }
    if (vb && vperm) /* un-permute the value accumulators */
        for (int x = 0; x < n * g; x++) {
            float *acc = p->acc + (size_t)x * d;
            memcpy(vtmp, acc, (size_t)d * sizeof(float));
            for (int y = 0; y < d; y++) acc[vch[y]] = vtmp[y];
        }
    free(scr);
    free(kp_of);
}

/* ---- the fp kernel: sinks, window and the chunk, fp32 rows --------------------------------- */

enum { FP_TILE = 64 };

static void fp_rows(const float *q, int d, float tau, const float *k, size_t kstride, const float *v,
                    size_t vstride, int nt, float *m, float *l, float *acc, float *s) {
    for (int t0 = 0; t0 < nt; t0 += FP_TILE) {
        const int cnt = nt - t0 < FP_TILE ? nt - t0 : FP_TILE;
        for (int t = 0; t < cnt; t++)
            s[t] = tau * row_dot(KVS_TYPE_FP32, (const uint8_t *)(k + (size_t)(t0 + t) * kstride), q, d);
        softmax_tile(s, cnt, m, l, acc, d);
        for (int t = 0; t < cnt; t++)
            row_axpy(KVS_TYPE_FP32, (const uint8_t *)(v + (size_t)(t0 + t) * vstride), s[t], acc, d);
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
