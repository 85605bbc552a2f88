/* Weight matrices kept in their GGUF format, and the matrix-vector product that reads them in it.
 *
 * The engine keeps a weight as the file's own blocks (Q4_1 is 5 bits per weight, fp32 is 32): a
 * decode step streams every weight once, so bytes are time. The product is y[o] = W[o] · x with the
 * weights as kvs_ggml_dequant decodes them. The scalar reference is the definition: x in fp32, each
 * row summed in double over the decoded floats. The AVX2 variant, for the 32-weight block types
 * (Q4_0, Q4_1, Q8_0), multiplies the integer codes by x rounded to 16-bit integers per 32-element
 * block (step = the block's max |x| / 32767; ggml rounds x to 8 bits) with pmaddwd, folds each
 * block's scale and minimum out of the sum (d Σ q x + m Σ x, Σ x in fp32), and sums in fp32; F32
 * and F16 rows are fp32 dots. Its distance from the reference is bounded per row by
 * kvs_qgemv_bound (the activation rounding, at most half a step per element, times Σ |d q|, plus
 * KVS_QGEMV_REL_TOL × Σ |w x| for the fp32 sums); tests/test_qgemv.c holds it to that. */
#ifndef KVS_QGEMV_H
#define KVS_QGEMV_H
#include <stddef.h>
#include <stdint.h>

#include "model.h"

typedef struct {
    uint32_t type;       /* ggml type of every row */
    int rows, cols;      /* out, in: y = W x, W [rows][cols] */
    size_t row_bytes;    /* cols / block size × block bytes */
    const uint8_t *data; /* rows × row_bytes: in the GGUF mapping, or `owned` */
    float *owned;        /* fp32 rows this matrix owns (a folded product), else NULL */
} kvs_wmat;

/* fp32 summation slack of a product variant against the reference, per row, in units of
 * Σ_j |w_j x_j| (sums of ≤ 2^16 terms in a different order, plus the folded minimum). */
#define KVS_QGEMV_REL_TOL 2e-6

/* An input vector prepared once for every row of a product: x itself, each 32-block's 8 partial
 * sums (lane l = x[l] + x[8+l] + x[16+l] + x[24+l]), its 16-bit codes and its step. Depends on x
 * alone, so a row's result never depends on the batch. */
typedef struct {
    const float *x;
    int cols, nb;    /* nb: 32-element blocks (0 when cols % 32 != 0: only fp32/fp16 rows then) */
    float *xs, *sx;  /* [nb][8]: partial sums; the step broadcast to 8 lanes */
    int16_t *xq;     /* [nb * 32] round(x / step), |.| <= 32767 */
} kvs_qvec;
/* Bytes of the buffer kvs_qvec_prepare needs for cols elements (32-byte aligned inside). */
size_t kvs_qvec_bytes(int cols);
/* x must outlive *v; buf holds kvs_qvec_bytes(cols) bytes. */
void kvs_qvec_prepare(const float *x, int cols, void *buf, kvs_qvec *v);
/* The AVX2 variant's distance bound from the reference for row o (see the top of this file). */
double kvs_qgemv_bound(const kvs_wmat *w, const kvs_qvec *x, int o);

/* A view of a GGUF tensor [ne1 rows][ne0 cols]. @return KVS_OK, KVS_ERR_UNSUPPORTED (no decoder
 * for the type), KVS_ERR_FORMAT (a row not whole blocks, or bytes that do not match the shape). */
KVS_NODISCARD kvs_status kvs_wmat_from_tensor(const kvs_gguf_tensor *t, kvs_wmat *out);
/* A matrix over owned fp32 rows (taken over: freed by kvs_wmat_free). */
kvs_wmat kvs_wmat_f32(float *rows_data, int rows, int cols);
void kvs_wmat_free(kvs_wmat *w);
/* Rows [o0, o1) as fp32, out [(o1 - o0)][cols]: exactly kvs_ggml_dequant's values (every variant,
 * bit for bit), through the variant kvs_qgemv_select chose. */
void kvs_wmat_dequant_rows(const kvs_wmat *w, int o0, int o1, float *out);
typedef void (*kvs_dequant_rows_fn)(const kvs_wmat *w, int o0, int o1, float *out);
void kvs_wmat_dequant_rows_ref(const kvs_wmat *w, int o0, int o1, float *out);
#if defined(__x86_64__) || defined(_M_X64)
void kvs_wmat_dequant_rows_avx2(const kvs_wmat *w, int o0, int o1, float *out);
#endif

/* y[o - o0] = W[o] · x for o in [o0, o1); x prepared for w->cols. Each row's result depends only on
 * that row and x (not on o0, o1 or threads), so splitting rows across threads changes no bit. */
typedef void (*kvs_qgemv_fn)(const kvs_wmat *w, const kvs_qvec *x, float *y, int o0, int o1);
void kvs_qgemv_ref(const kvs_wmat *w, const kvs_qvec *x, float *y, int o0, int o1);
#if defined(__x86_64__) || defined(_M_X64)
void kvs_qgemv_avx2(const kvs_wmat *w, const kvs_qvec *x, float *y, int o0, int o1);
#endif
/* The AVX2 variants (product and decoder) where the CPU has AVX2, FMA and F16C, else the
 * references; "ref" forces the references (tests), "auto" restores the default. Not to be called
 * while another thread runs a product. @return the variant's name. */
kvs_qgemv_fn kvs_qgemv_best(void);
const char *kvs_qgemv_select(const char *name);
#endif
