/* The engine's matrix-vector product over GGUF blocks: every type the engine reads, the AVX2
 * variant against the scalar reference (KVS_QGEMV_REL_TOL × Σ|w x| per row), the reference against
 * a product over kvs_ggml_dequant's floats, row ranges that change no bit, and views that refuse
 * tensors whose bytes do not match their shape. */
#include <string.h>

#include "common/fp16.h"
#include "qgemv.h"
#include "test_util.h"

/* where each type keeps its fp16 scales (byte offsets in a block), to give them sane values */
static int scale_offsets(uint32_t t, int off[2]) {
    switch (t) {
    case KVS_GGML_Q4_0: case KVS_GGML_Q5_0: case KVS_GGML_Q8_0: off[0] = 0; return 1;
    case KVS_GGML_Q4_1: case KVS_GGML_Q5_1: case KVS_GGML_Q4_K: off[0] = 0, off[1] = 2; return 2;
    case KVS_GGML_Q6_K: off[0] = 208; return 1;
    default: return 0;
    }
}

/* random blocks of type t: codes random bytes, scales in ±[0.001, 0.05] */
static void fill(uint32_t t, uint8_t *data, size_t bytes, int cols, rng_t *r) {
    if (t == KVS_GGML_F32) {
        for (size_t i = 0; i < bytes / 4; i++) {
            const float f = (float)rng_normal(r) * 0.05f;
            memcpy(data + 4 * i, &f, 4);
        }
        return;
    }
    if (t == KVS_GGML_F16) {
        for (size_t i = 0; i < bytes / 2; i++) {
            const uint16_t h = kvs_fp32_to_fp16((float)rng_normal(r) * 0.05f);
            memcpy(data + 2 * i, &h, 2);
        }
        return;
    }
    for (size_t i = 0; i < bytes; i++) data[i] = (uint8_t)rng_u64(r);
    const size_t bb = kvs_ggml_block_bytes(t);
    int off[2];
    const int ns = scale_offsets(t, off);
    (void)cols;
    for (size_t b = 0; b < bytes / bb; b++)
        for (int s = 0; s < ns; s++) {
            const float v = (float)((rng_uniform(r) < 0.5 ? -1 : 1) * (0.001 + 0.049 * rng_uniform(r)));
            const uint16_t h = kvs_fp32_to_fp16(v);
            memcpy(data + b * bb + off[s], &h, 2);
        }
}

static void one_type(uint32_t t, int rows, int cols, rng_t *r) {
    const int bs = kvs_ggml_block_size(t);
    const size_t row_bytes = (size_t)(cols / bs) * kvs_ggml_block_bytes(t), bytes = row_bytes * rows;
    uint8_t *data = malloc(bytes);
    float *x = malloc(sizeof(float) * cols), *wf = malloc(sizeof(float) * (size_t)rows * cols);
    float *y_ref = malloc(sizeof(float) * rows), *y = malloc(sizeof(float) * rows), *y_split = malloc(sizeof(float) * rows);
    if (!data || !x || !wf || !y_ref || !y || !y_split) {
        CHECK(0, "out of memory");
        goto out;
    }
    fill(t, data, bytes, cols, r);
    for (int j = 0; j < cols; j++) x[j] = (float)(rng_normal(r) * (j % 7 == 0 ? 30.0 : 1.0)); /* outlier channels */
    kvs_gguf_tensor tn = {"w", 2, {cols, rows, 1, 1}, t, 0, data, bytes};
    kvs_wmat w;
    CHECK_OK(kvs_wmat_from_tensor(&tn, &w));
    float *direct = malloc(sizeof(float) * (size_t)rows * cols);
    if (direct) { /* every decoder variant gives kvs_ggml_dequant's floats, bit for bit */
        CHECK_OK(kvs_ggml_dequant(t, data, direct, (int64_t)rows * cols));
        static const char *dn[] = {"ref", "auto"};
        for (int v = 0; v < 2; v++) {
            const char *got = kvs_qgemv_select(dn[v]);
            memset(wf, 0xff, sizeof(float) * (size_t)rows * cols);
            kvs_wmat_dequant_rows(&w, 0, rows, wf);
            CHECK(!memcmp(direct, wf, sizeof(float) * (size_t)rows * cols), "%s %s: dequant_rows differs from kvs_ggml_dequant",
                  got, kvs_ggml_type_name(t));
            kvs_wmat_dequant_rows(&w, rows / 2, rows, wf);
            CHECK(!memcmp(direct + (size_t)(rows / 2) * cols, wf, sizeof(float) * (size_t)(rows - rows / 2) * cols),
                  "%s %s: dequant_rows of a row range", got, kvs_ggml_type_name(t));
        }
        free(direct);
    }
    kvs_wmat_dequant_rows(&w, 0, rows, wf);
    unsigned char *qbuf = malloc(kvs_qvec_bytes(cols));
    kvs_qvec xv;
    if (!qbuf) {
        CHECK(0, "out of memory");
        goto out;
    }
    kvs_qvec_prepare(x, cols, qbuf, &xv);
    double qerr = 0.0; /* x's 16-bit codes: within half a step, never -32768 */
    int lowest = 0;
    for (int b = 0; b < xv.nb; b++)
        for (int j = 0; j < 32; j++) {
            const int16_t c = xv.xq[32 * b + j];
            lowest = c < lowest ? c : lowest;
            const double e = fabs((double)c * xv.sx[8 * b] - x[32 * b + j]) / (xv.sx[8 * b] > 0 ? xv.sx[8 * b] : 1.0);
            qerr = e > qerr ? e : qerr;
        }
    CHECK(qerr <= 0.5 + 1e-3 && lowest >= -32767, "%s: x's codes off by %g steps (lowest %d)", kvs_ggml_type_name(t), qerr, lowest);
    kvs_qgemv_ref(&w, &xv, y_ref, 0, rows);
    double worst = 0.0;
    for (int o = 0; o < rows; o++) { /* the reference is the double-precision product of the decoded floats */
        double s = 0.0, mag = 0.0;
        for (int j = 0; j < cols; j++) s += (double)wf[(size_t)o * cols + j] * x[j], mag += fabs((double)wf[(size_t)o * cols + j] * x[j]);
        const double e = fabs(y_ref[o] - s) / (mag + 1e-30);
        worst = e > worst ? e : worst;
    }
    CHECK(worst <= 1e-7, "%s %dx%d: reference vs the decoded floats: %g of Σ|w x|", kvs_ggml_type_name(t), rows, cols, worst);
    static const char *names[] = {"ref", "auto"};
    for (int v = 0; v < 2; v++) {
        const char *got = kvs_qgemv_select(names[v]);
        const kvs_qgemv_fn fn = kvs_qgemv_best();
        fn(&w, &xv, y, 0, rows);
        fn(&w, &xv, y_split, 0, rows / 3);
        fn(&w, &xv, y_split + rows / 3, rows / 3, rows);
        CHECK(!memcmp(y, y_split, sizeof(float) * rows), "%s %s: a row's result depends on the row range", got,
              kvs_ggml_type_name(t));
        double err = 0.0, rel = 0.0; /* against the bound, and (printed) relative to Σ|w x| */
        for (int o = 0; o < rows; o++) {
            double mag = 0.0;
            for (int j = 0; j < cols; j++) mag += fabs((double)wf[(size_t)o * cols + j] * x[j]);
            const double d = fabs((double)y[o] - y_ref[o]), e = d / (kvs_qgemv_bound(&w, &xv, o) + 1e-30);
            err = e > err ? e : err;
            rel = d / (mag + 1e-30) > rel ? d / (mag + 1e-30) : rel;
        }
        printf("%-5s %-5s %5dx%-5d max |y - ref| = %.3g of the bound, %.3g of Σ|w x|\n", got, kvs_ggml_type_name(t), rows, cols, err, rel);
        CHECK(err <= 1.0, "%s %s %dx%d: %g of the bound from the reference", got, kvs_ggml_type_name(t), rows, cols, err);
        if (v == 0) CHECK(err == 0.0, "ref %s: the reference differs from itself", kvs_ggml_type_name(t));
    }
    free(qbuf);
    kvs_qgemv_select("auto");
    /* a view must match its bytes */
    kvs_gguf_tensor bad = tn;
    bad.bytes--;
    CHECK(kvs_wmat_from_tensor(&bad, &w) == KVS_ERR_FORMAT, "%s: short tensor accepted", kvs_ggml_type_name(t));
    if (bs > 1) {
        bad = tn;
        bad.ne[0] = cols - 1;
        CHECK(kvs_wmat_from_tensor(&bad, &w) == KVS_ERR_FORMAT, "%s: partial block row accepted", kvs_ggml_type_name(t));
    }
out:
    free(data), free(x), free(wf), free(y_ref), free(y), free(y_split);
}

int main(void) {
    rng_t r = {12345};
    static const uint32_t types[] = {KVS_GGML_F32, KVS_GGML_F16, KVS_GGML_Q4_0, KVS_GGML_Q4_1, KVS_GGML_Q5_0,
                                     KVS_GGML_Q5_1, KVS_GGML_Q8_0, KVS_GGML_Q4_K, KVS_GGML_Q6_K};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        const int k = kvs_ggml_block_size(types[i]) == 256;
        one_type(types[i], 37, k ? 256 : 32, &r);
        one_type(types[i], 64, k ? 512 : 576, &r);
        one_type(types[i], 19, 1536, &r);
    }
    kvs_gguf_tensor odd = {"w", 2, {576, 4, 1, 1}, 99, 0, NULL, 0};
    kvs_wmat w;
    CHECK(kvs_wmat_from_tensor(&odd, &w) == KVS_ERR_UNSUPPORTED, "unknown type accepted");
    float *owned = calloc(8 * 4, sizeof(float));
    w = kvs_wmat_f32(owned, 4, 8);
    CHECK(w.type == KVS_GGML_F32 && w.row_bytes == 32 && w.owned == owned, "owned fp32 view");
    kvs_wmat_free(&w);
    CHECK(w.owned == NULL && w.data == NULL, "freed view is cleared");
    return test_done("test_qgemv");
}
