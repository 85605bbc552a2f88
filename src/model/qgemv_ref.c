/* Weight matrices in their GGUF format: views, decoding, and the scalar reference product
 * (qgemv.h). The reference decodes each block with kvs_ggml_dequant and sums the row in double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qgemv.h"

kvs_status kvs_wmat_from_tensor(const kvs_gguf_tensor *t, kvs_wmat *out) {
    const int bs = kvs_ggml_block_size(t->type);
    if (!bs) return kvs_report(KVS_ERR_UNSUPPORTED, "weights: tensor '%s' has ggml type %u, no decoder", t->name, t->type);
    if (t->ne[0] < 1 || t->ne[0] > (1 << 24) || t->ne[1] < 1 || t->ne[1] > (1 << 24) || t->ne[0] % bs)
        return kvs_report(KVS_ERR_FORMAT, "weights: tensor '%s' rows of %lld are not whole %s blocks", t->name, (long long)t->ne[0],
                          kvs_ggml_type_name(t->type));
    const size_t row_bytes = (size_t)(t->ne[0] / bs) * kvs_ggml_block_bytes(t->type);
    if (row_bytes * (size_t)t->ne[1] != t->bytes)
        return kvs_report(KVS_ERR_FORMAT, "weights: tensor '%s' has %zu bytes, its shape needs %zu", t->name, t->bytes,
                          row_bytes * (size_t)t->ne[1]);
    const kvs_wmat w = {t->type, (int)t->ne[1], (int)t->ne[0], row_bytes, t->data, NULL};
    *out = w;
    return KVS_OK;
}

kvs_wmat kvs_wmat_f32(float *rows_data, int rows, int cols) {
    const kvs_wmat w = {KVS_GGML_F32, rows, cols, (size_t)cols * sizeof(float), (const uint8_t *)rows_data, rows_data};
    return w;
}

void kvs_wmat_free(kvs_wmat *w) {
    if (!w) return;
    free(w->owned);
    memset(w, 0, sizeof *w);
}

void kvs_wmat_dequant_rows_ref(const kvs_wmat *w, int o0, int o1, float *out) {
    for (int o = o0; o < o1; o++) { /* the type and the row length were checked when the view was made */
        const kvs_status s = kvs_ggml_dequant(w->type, w->data + (size_t)o * w->row_bytes, out + (size_t)(o - o0) * w->cols, w->cols);
        (void)s;
    }
}

void kvs_qgemv_ref(const kvs_wmat *w, const kvs_qvec *xv, float *y, int o0, int o1) {
    const int bs = kvs_ggml_block_size(w->type);
    const size_t bb = kvs_ggml_block_bytes(w->type);
    const float *x = xv->x;
    float blk[256]; /* the largest block (k-quants) */
    for (int o = o0; o < o1; o++) {
        const uint8_t *row = w->data + (size_t)o * w->row_bytes;
        double acc = 0.0;
        for (int b = 0; b < w->cols / bs; b++) {
            const kvs_status s = kvs_ggml_dequant(w->type, row + (size_t)b * bb, blk, bs); /* checked by the view */
            (void)s;
            for (int j = 0; j < bs; j++) acc += (double)blk[j] * x[b * bs + j];
        }
        y[o - o0] = (float)acc;
    }
}

static size_t up32(size_t n) { return (n + 31) / 32 * 32; }

size_t kvs_qvec_bytes(int cols) {
    const size_t nb = cols % 32 ? 0 : (size_t)cols / 32;
    return 32 + 2 * up32(nb * 8 * sizeof(float)) + up32(nb * 32 * sizeof(int16_t));
}

void kvs_qvec_prepare(const float *x, int cols, void *buf, kvs_qvec *v) {
    const int nb = cols % 32 ? 0 : cols / 32;
    uint8_t *p = (uint8_t *)(((uintptr_t)buf + 31) / 32 * 32);
    v->x = x;
    v->cols = cols;
    v->nb = nb;
    v->xs = (float *)(void *)p;
    v->sx = (float *)(void *)(p + up32((size_t)nb * 8 * sizeof(float)));
    v->xq = (int16_t *)(void *)(p + 2 * up32((size_t)nb * 8 * sizeof(float)));
    for (int b = 0; b < nb; b++) {
        const float *xb = x + 32 * b;
        float amax = 0.0f;
        for (int l = 0; l < 8; l++) v->xs[8 * b + l] = (xb[l] + xb[8 + l]) + (xb[16 + l] + xb[24 + l]);
        for (int j = 0; j < 32; j++) amax = fabsf(xb[j]) > amax ? fabsf(xb[j]) : amax;
        const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
        for (int l = 0; l < 8; l++) v->sx[8 * b + l] = amax / 32767.0f;
        for (int j = 0; j < 32; j++) {
            const float r = nearbyintf(xb[j] * inv);
            v->xq[32 * b + j] = (int16_t)(r > 32767.0f ? 32767 : r < -32767.0f ? -32767 : r);
        }
    }
}

/* Σ_b step_b / 2 × Σ_j |d_b q_bj| over the row's codes (rounding of x), + the fp32 slack */
double kvs_qgemv_bound(const kvs_wmat *w, const kvs_qvec *xv, int o) {
    const int bs = kvs_ggml_block_size(w->type);
    const size_t bb = kvs_ggml_block_bytes(w->type);
    const uint8_t *row = w->data + (size_t)o * w->row_bytes;
    float blk[256];
    double mag = 0.0, rnd = 0.0;
    for (int b = 0; b < w->cols / bs; b++) {
        const kvs_status s = kvs_ggml_dequant(w->type, row + (size_t)b * bb, blk, bs);
        (void)s;
        for (int j = 0; j < bs; j++) mag += fabs((double)blk[j] * xv->x[b * bs + j]);
        if (bs == 32 && xv->nb && (w->type == KVS_GGML_Q4_0 || w->type == KVS_GGML_Q4_1 || w->type == KVS_GGML_Q8_0)) {
            /* |d q| per element: Q4_1's w - m, Q4_0's w + 8 d (codes are nibbles), Q8_0's w */
            float df;
            const kvs_status s2 = kvs_ggml_dequant(KVS_GGML_F16, row + (size_t)b * bb, &df, 1); /* the block's d */
            (void)s2;
            const double d = fabs((double)df);
            const double qmax = w->type == KVS_GGML_Q8_0 ? 128.0 : 15.0;
            rnd += 0.5 * (double)xv->sx[8 * b] * 32.0 * d * qmax;
        }
    }
    return rnd + KVS_QGEMV_REL_TOL * mag;
}

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
static int cpu_has_avx2(void) { /* AVX2, FMA, F16C, and the OS saves the ymm state */
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int fma = (c >> 12) & 1, f16c = (c >> 29) & 1, osxsave = (c >> 27) & 1;
    if (!fma || !f16c || !osxsave) return 0;
    unsigned lo, hi;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 6) != 6) return 0;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 5) & 1;
}
#endif

static kvs_qgemv_fn chosen;
static kvs_dequant_rows_fn chosen_dequant;

const char *kvs_qgemv_select(const char *name) {
    chosen = kvs_qgemv_ref;
    chosen_dequant = kvs_wmat_dequant_rows_ref;
#if defined(__x86_64__) || defined(_M_X64)
    if (strcmp(name, "ref") != 0 && cpu_has_avx2()) chosen = kvs_qgemv_avx2, chosen_dequant = kvs_wmat_dequant_rows_avx2;
#else
    (void)name;
#endif
    return chosen == kvs_qgemv_ref ? "ref" : "avx2";
}

kvs_qgemv_fn kvs_qgemv_best(void) {
    if (!chosen) kvs_qgemv_select("auto");
    return chosen;
}

void kvs_wmat_dequant_rows(const kvs_wmat *w, int o0, int o1, float *out) {
    if (!chosen_dequant) kvs_qgemv_select("auto");
    chosen_dequant(w, o0, o1, out);
}
