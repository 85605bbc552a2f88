/* AVX2 matrix-vector products over GGUF blocks (contract in qgemv.h; reference in qgemv_ref.c).
 *
 * Q4_0, Q4_1 and Q8_0 blocks hold 32 weights w = d q + m (Q4_0: m = -8 d, Q8_0: m = 0), so
 * Σ w x = d Σ q x + m Σ x. The codes widen to int16 and meet x's 16-bit codes in pmaddwd (exact
 * int32 sums: |q| <= 128, |xq| <= 32767), one convert, times x's step and d; m times the block's
 * fp32 Σ x, whose 8 partial sums are prepared once per vector, so the minimum needs no scalar
 * chain. Rounding x to 16 bits (ggml rounds it to 8) cuts about a quarter of the instructions per
 * block against fp32 codes and FMAs: 23 against 17 G weights/s on one core of the development machine. F32 and
 * F16 rows are plain fp32 dots; the other types (Q5_*, k-quants) take the reference. */
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

/* A block's 32 codes as two vectors of 16 int16 (elements 0..15, 16..31): Q8_0's signed bytes,
 * Q4_0/Q4_1's nibbles (low nibbles first; Q4_0's -8 is applied through Σ x). */
static inline __attribute__((always_inline)) void codes16(uint32_t type, const uint8_t *qs, __m256i c[2]) {
    if (type == KVS_GGML_Q8_0) {
        c[0] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)qs));
        c[1] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(qs + 16)));
    } else {
        const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)qs));
        c[0] = _mm256_and_si256(b, _mm256_set1_epi16(15));
        c[1] = _mm256_srli_epi16(b, 4);
    }
}

/* acc + d step Σ q xq (pmaddwd: exact in int32) + the block's minimum times its fp32 Σ x */
static inline __attribute__((always_inline)) __m256 block_i16(uint32_t type, const uint8_t *blk, const kvs_qvec *x, int b,
                                                              __m256 acc) {
    __m256i c[2];
    codes16(type, blk + (type == KVS_GGML_Q4_1 ? 4 : 2), c);
    const int16_t *xq = x->xq + 32 * b;
    const __m256i s = _mm256_add_epi32(_mm256_madd_epi16(c[0], _mm256_load_si256((const __m256i *)xq)),
                                       _mm256_madd_epi16(c[1], _mm256_load_si256((const __m256i *)(xq + 16))));
    const float d = h2f(blk);
    acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_load_ps(x->sx + 8 * b)), _mm256_set1_ps(d), acc);
    if (type == KVS_GGML_Q4_1) acc = _mm256_fmadd_ps(_mm256_load_ps(x->xs + 8 * b), _mm256_set1_ps(h2f(blk + 2)), acc);
    if (type == KVS_GGML_Q4_0) acc = _mm256_fmadd_ps(_mm256_load_ps(x->xs + 8 * b), _mm256_set1_ps(-8.0f * d), acc);
    return acc;
}

/* Two rows at once (they share x's loads), even and odd blocks in separate accumulators (two
 * chains per row). Each row's sums depend only on that row and x, whichever slot it takes. Inlined
 * with a constant type, so each type's loop carries no type test. */
static inline __attribute__((always_inline)) void row2_blocks(uint32_t type, const uint8_t *r0, const uint8_t *r1,
                                                              const kvs_qvec *x, float *y) {
    const size_t bb = type == KVS_GGML_Q4_1 ? 20 : type == KVS_GGML_Q4_0 ? 18 : 34;
    const int nb = x->nb;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps();
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        a0 = block_i16(type, r0 + (size_t)b * bb, x, b, a0);
        c0 = block_i16(type, r1 + (size_t)b * bb, x, b, c0);
        a1 = block_i16(type, r0 + (size_t)(b + 1) * bb, x, b + 1, a1);
        c1 = block_i16(type, r1 + (size_t)(b + 1) * bb, x, b + 1, c1);
    }
    if (b < nb) {
        a0 = block_i16(type, r0 + (size_t)b * bb, x, b, a0);
        c0 = block_i16(type, r1 + (size_t)b * bb, x, b, c0);
    }
    y[0] = hsum(_mm256_add_ps(a0, a1));
    y[1] = hsum(_mm256_add_ps(c0, c1));
}

static void row2_q4_1(const uint8_t *r0, const uint8_t *r1, const kvs_qvec *x, float *y) { row2_blocks(KVS_GGML_Q4_1, r0, r1, x, y); }
static void row2_q4_0(const uint8_t *r0, const uint8_t *r1, const kvs_qvec *x, float *y) { row2_blocks(KVS_GGML_Q4_0, r0, r1, x, y); }
static void row2_q8_0(const uint8_t *r0, const uint8_t *r1, const kvs_qvec *x, float *y) { row2_blocks(KVS_GGML_Q8_0, r0, r1, x, y); }

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

void kvs_qgemv_avx2(const kvs_wmat *w, const kvs_qvec *x, float *y, int o0, int o1) {
    const uint32_t t = w->type;
    if (t == KVS_GGML_F32) {
        for (int o = o0; o < o1; o++) /* fp32 rows are 4-byte aligned (owned, or GGUF data aligned to 32) */
            y[o - o0] = row_f32((const float *)(const void *)(w->data + (size_t)o * w->row_bytes), w->cols, x->x);
        return;
    }
    if (t == KVS_GGML_F16) {
        for (int o = o0; o < o1; o++) y[o - o0] = row_f16(w->data + (size_t)o * w->row_bytes, w->cols, x->x);
        return;
    }
    if ((t != KVS_GGML_Q4_0 && t != KVS_GGML_Q4_1 && t != KVS_GGML_Q8_0) || x->nb * 32 != w->cols) {
        kvs_qgemv_ref(w, x, y, o0, o1);
        return;
    }
    void (*row2)(const uint8_t *, const uint8_t *, const kvs_qvec *, float *) =
        t == KVS_GGML_Q4_1 ? row2_q4_1 : t == KVS_GGML_Q8_0 ? row2_q8_0 : row2_q4_0;
    int o = o0;
    /* The rows stream from DRAM once per token; the hardware prefetcher alone left the products
     * waiting on their loads (a third of the decode step at depth 0), so each pair asks for the
     * rows about 4 KB ahead. asm, not _mm_prefetch: GCC may delete prefetch-only loops. */
    const int ahead = (int)((4096 + w->row_bytes - 1) / w->row_bytes);
    for (; o + 1 < o1; o += 2) {
        if (o + ahead + 2 <= w->rows) {
            const char *c = (const char *)w->data + (size_t)(o + ahead) * w->row_bytes;
            for (size_t k = 0; k < 2 * w->row_bytes; k += 64) __asm__ volatile("prefetcht0 %0" : : "m"(c[k]));
        }
        row2(w->data + (size_t)o * w->row_bytes, w->data + (size_t)(o + 1) * w->row_bytes, x, y + (o - o0));
    }
    if (o < o1) { /* the last row alone, paired with itself */
        float pair[2];
        row2(w->data + (size_t)o * w->row_bytes, w->data + (size_t)o * w->row_bytes, x, pair);
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
