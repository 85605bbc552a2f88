/* Weight matrices kept in their GGUF format, and the matrix-vector product that reads them in it.
 *
 * The engine keeps a weight as the file's own blocks (Q4_1 is 5 bits per weight, fp32 is 32): a
 * decode step streams every weight once, so bytes are time. The product is y[o] = W[o] · x with the
 * weights as kvs_ggml_dequant decodes them and x in fp32 (the activations are not quantized, unlike
 * ggml's q8 dot products): the scalar reference sums each row in double over those decoded floats;
 * the AVX2 variant folds each block's scale and minimum out of the sum (d Σ q x + m Σ x) and sums in
 * fp32 with a different order. tests/test_qgemv.c holds them together within
 * KVS_QGEMV_REL_TOL × Σ |w x| per row. */
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

/* Relative tolerance of every product variant against the reference, per row, in units of
 * Σ_j |w_j x_j| (fp32 sums of ≤ 2^16 terms in a different order, plus the folded minimum). */
#define KVS_QGEMV_REL_TOL 2e-6

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

/* y[o - o0] = W[o] · x for o in [o0, o1); x [cols]. Each row's result depends only on that row and x
 * (not on o0, o1 or threads), so splitting rows across threads changes no bit. */
typedef void (*kvs_qgemv_fn)(const kvs_wmat *w, const float *x, float *y, int o0, int o1);
void kvs_qgemv_ref(const kvs_wmat *w, const float *x, float *y, int o0, int o1);
#if defined(__x86_64__) || defined(_M_X64)
void kvs_qgemv_avx2(const kvs_wmat *w, const float *x, float *y, int o0, int o1);
#endif
/* The AVX2 variants (product and decoder) where the CPU has AVX2, FMA and F16C, else the
 * references; "ref" forces the references (tests), "auto" restores the default. Not to be called
 * while another thread runs a product. @return the variant's name. */
kvs_qgemv_fn kvs_qgemv_best(void);
const char *kvs_qgemv_select(const char *name);
#endif
