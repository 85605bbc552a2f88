/* GGUF reader on hand-made files: a valid one with every metadata value type, and one corrupt
 * file per failure class, each asserting its specific error; every truncation fails cleanly.
 * ggml dequantizers against blocks decoded by the gguf Python package (fixtures). */
#include <stdio.h>
#include <string.h>

#include "fixtures/dequant_fixtures.h"
#include "gguf_builder.h"
#include "model.h"
#include "test_util.h"

/* A valid file: metadata of every type, an F32 [4,2] tensor and a Q8_0 [32] tensor. */
static gbuf valid_file(uint32_t alignment_kv) {
    gbuf b = {0};
    gb_header(&b, 3, 2, 15 + (alignment_kv ? 1 : 0));
    gb_str(&b, "t.u8"), gb_u32(&b, 0), gb_put(&b, "\x07", 1);
    gb_str(&b, "t.i8"), gb_u32(&b, 1), gb_put(&b, "\xfe", 1);
    gb_str(&b, "t.u16"), gb_u32(&b, 2), gb_put(&b, "\x34\x12", 2);
    gb_str(&b, "t.i16"), gb_u32(&b, 3), gb_put(&b, "\xff\xff", 2);
    gb_kv_u32(&b, "t.u32", 123456);
    gb_str(&b, "t.i32"), gb_u32(&b, 5), gb_u32(&b, (uint32_t)-5);
    gb_kv_f32(&b, "t.f32", 1.5f);
    gb_str(&b, "t.bool"), gb_u32(&b, 7), gb_put(&b, "\x01", 1);
    gb_kv_str(&b, "t.str", "hello");
    gb_str(&b, "t.arr"), gb_u32(&b, 9), gb_u32(&b, 4), gb_u64(&b, 3), gb_u32(&b, 1), gb_u32(&b, 2), gb_u32(&b, 3);
    gb_str(&b, "t.u64"), gb_u32(&b, 10), gb_u64(&b, 1ull << 40);
    gb_str(&b, "t.i64"), gb_u32(&b, 11), gb_u64(&b, (uint64_t)-7);
    gb_str(&b, "t.f64"), gb_u32(&b, 12), gb_put(&b, &(double){2.25}, 8);
    const char *strs[] = {"a", "bc", ""};
    gb_kv_strs(&b, "t.strs", strs, 3);
    gb_str(&b, "t.empty"), gb_u32(&b, 9), gb_u32(&b, 0), gb_u64(&b, 0);
    if (alignment_kv) gb_kv_u32(&b, "general.alignment", alignment_kv);
    const size_t al = alignment_kv ? alignment_kv : 32;
    uint64_t ne_a[2] = {4, 2}, ne_b[1] = {32};
    gb_tensor(&b, "a", 2, ne_a, 0, 0);
    gb_tensor(&b, "b", 1, ne_b, 8, (32 + al - 1) / al * al);
    gb_align(&b, al);
    for (int i = 0; i < 8; i++) gb_f32(&b, (float)i);
    gb_align(&b, al);
    uint8_t q8[34] = {0x00, 0x3c}; /* d = 1.0 */
    for (int i = 0; i < 32; i++) q8[2 + i] = (uint8_t)(i - 16);
    gb_put(&b, q8, 34);
    return b;
}

static void expect(const gbuf *b, kvs_gguf_error want, const char *what) {
    kvs_gguf *g = NULL;
    kvs_gguf_error e = KVS_GGUF_OK;
    kvs_status s = kvs_gguf_open_mem(b->p, b->n, &g, &e);
    CHECK(s != KVS_OK && e == want && g == NULL, "%s: status %s, class '%s' (want '%s'): %s", what, kvs_status_str(s),
          kvs_gguf_error_str(e), kvs_gguf_error_str(want), kvs_last_error());
    kvs_gguf_close(g);
}

/* Rebuild with one tensor described by the caller (the rest valid). */
static gbuf one_tensor(const char *name, int nd, const uint64_t *ne, uint32_t type, uint64_t off, size_t data) {
    gbuf b = {0};
    gb_header(&b, 3, 1, 0);
    gb_tensor(&b, name, nd, ne, type, off);
    gb_align(&b, 32);
    for (size_t i = 0; i < data; i++) gb_put(&b, "\0", 1);
    return b;
}

static void test_valid(void) {
    gbuf b = valid_file(0);
    kvs_gguf *g = NULL;
    kvs_gguf_error e;
    CHECK_OK(kvs_gguf_open_mem(b.p, b.n, &g, &e));
    if (!g) return;
    int64_t v;
    float f;
    const char *s;
    size_t n;
    CHECK(kvs_gguf_n_kv(g) == 15 && kvs_gguf_n_tensors(g) == 2, "counts");
    CHECK(!kvs_gguf_get_int(g, "t.u8", &v) && v == 7, "u8");
    CHECK(!kvs_gguf_get_int(g, "t.i8", &v) && v == -2, "i8");
    CHECK(!kvs_gguf_get_int(g, "t.u16", &v) && v == 0x1234, "u16");
    CHECK(!kvs_gguf_get_int(g, "t.i16", &v) && v == -1, "i16");
    CHECK(!kvs_gguf_get_int(g, "t.u32", &v) && v == 123456, "u32");
    CHECK(!kvs_gguf_get_int(g, "t.i32", &v) && v == -5, "i32");
    CHECK(!kvs_gguf_get_int(g, "t.u64", &v) && v == (1ll << 40), "u64");
    CHECK(!kvs_gguf_get_int(g, "t.i64", &v) && v == -7, "i64");
    CHECK(!kvs_gguf_get_int(g, "t.bool", &v) && v == 1, "bool");
    CHECK(!kvs_gguf_get_f32(g, "t.f32", &f) && f == 1.5f, "f32");
    CHECK(!kvs_gguf_get_f32(g, "t.f64", &f) && f == 2.25f, "f64");
    CHECK(!kvs_gguf_get_str(g, "t.str", &s, &n) && n == 5 && !memcmp(s, "hello", 5), "string");
    CHECK(kvs_gguf_get_int(g, "t.str", &v) == KVS_ERR_FORMAT && strstr(kvs_last_error(), "t.str"), "type mismatch named");
    CHECK(kvs_gguf_get_int(g, "missing.key", &v) == KVS_ERR_FORMAT && strstr(kvs_last_error(), "missing.key"), "missing key named");
    uint64_t cnt;
    const char **ss;
    uint32_t *ll;
    CHECK_OK(kvs_gguf_get_str_array(g, "t.strs", &cnt, &ss, &ll));
    CHECK(cnt == 3 && ll[0] == 1 && ll[1] == 2 && ll[2] == 0 && !memcmp(ss[1], "bc", 2), "string array");
    free(ss);
    free(ll);
    uint32_t ty;
    const uint8_t *data;
    CHECK(!kvs_gguf_get_array(g, "t.arr", &ty, &cnt, &data) && ty == 4 && cnt == 3 && data[8] == 3, "u32 array");
    const kvs_gguf_tensor *ta = kvs_gguf_find_tensor(g, "a"), *tb = kvs_gguf_find_tensor(g, "b");
    CHECK(ta && ta->ne[0] == 4 && ta->ne[1] == 2 && ta->bytes == 32 && tb && tb->bytes == 34 && tb->type == 8, "tensor infos");
    float out[32];
    if (ta && tb) {
        CHECK_OK(kvs_ggml_dequant(ta->type, ta->data, out, 8));
        CHECK(out[7] == 7.0f, "F32 data");
        CHECK_OK(kvs_ggml_dequant(tb->type, tb->data, out, 32));
        CHECK(out[0] == -16.0f && out[31] == 15.0f, "Q8_0 data %g %g", (double)out[0], (double)out[31]);
    }
    kvs_gguf_close(g);
    /* every truncation fails with a named class, never crashes (ASan checks the reads) */
    int bad = 0;
    for (size_t cut = 0; cut < b.n; cut++) {
        kvs_gguf_error ce = KVS_GGUF_OK;
        kvs_gguf *h = NULL;
        if (kvs_gguf_open_mem(b.p, cut, &h, &ce) == KVS_OK || ce == KVS_GGUF_OK) bad++;
        kvs_gguf_close(h);
    }
    CHECK(bad == 0, "%d truncations accepted", bad);
    kvs_gguf *h = NULL;
    CHECK(kvs_gguf_open_mem(b.p, 20, &h, &e) == KVS_ERR_FORMAT && e == KVS_GGUF_TRUNCATED, "cut in the header");
    CHECK(kvs_gguf_open_mem(b.p, b.n - 1, &h, &e) == KVS_ERR_FORMAT && e == KVS_GGUF_BAD_OFFSET, "cut in the data");
    free(b.p);
    b = valid_file(64);
    CHECK_OK(kvs_gguf_open_mem(b.p, b.n, &h, &e));
    kvs_gguf_close(h);
    free(b.p);
}

static void test_corrupt(void) {
    gbuf b = valid_file(0);
    gbuf c = {0};
#define MUTATE(off, bytes, len, cls, what)                \
    do {                                                  \
        c.n = 0;                                          \
        gb_put(&c, b.p, b.n);                             \
        memcpy(c.p + (off), bytes, len);                  \
        expect(&c, cls, what);                            \
    } while (0)
    MUTATE(0, "GGUX", 4, KVS_GGUF_BAD_MAGIC, "bad magic");
    MUTATE(4, "\x01\0\0\0", 4, KVS_GGUF_BAD_VERSION, "version 1");
    MUTATE(4, "\0\0\0\x03", 4, KVS_GGUF_BAD_VERSION, "byte-swapped version");
    MUTATE(16, "\xff\xff\xff\xff\xff\xff\0\0", 8, KVS_GGUF_BAD_COUNT, "absurd key count");
    MUTATE(8, "\xff\xff\xff\xff\xff\0\0\0", 8, KVS_GGUF_BAD_COUNT, "absurd tensor count");
    /* first key "t.u8": length at 24, name at 32, type at 36 */
    MUTATE(36, "\x63\0\0\0", 4, KVS_GGUF_BAD_VALUE_TYPE, "unknown value type");
    MUTATE(24, "\0\0\0\0\0\0\0\0", 8, KVS_GGUF_BAD_NAME, "empty key");
    MUTATE(24, "\xff\xff\xff\xff\0\0\0\0", 8, KVS_GGUF_TRUNCATED, "key length past the end");
#undef MUTATE
    free(c.p);
    free(b.p);
    /* value-level corruptions built directly */
    gbuf d = {0};
    gb_header(&d, 3, 0, 1);
    gb_str(&d, "nested"), gb_u32(&d, 9), gb_u32(&d, 9), gb_u64(&d, 1);
    expect(&d, KVS_GGUF_BAD_VALUE_TYPE, "nested array");
    d.n = 0;
    gb_header(&d, 3, 0, 1);
    gb_str(&d, "flag"), gb_u32(&d, 7), gb_put(&d, "\x02", 1);
    expect(&d, KVS_GGUF_BAD_VALUE_TYPE, "bool 2");
    d.n = 0;
    gb_header(&d, 3, 0, 2);
    gb_kv_u32(&d, "same", 1);
    gb_kv_u32(&d, "same", 2);
    expect(&d, KVS_GGUF_DUPLICATE_KEY, "duplicate key");
    d.n = 0;
    gb_header(&d, 3, 0, 1);
    gb_kv_u32(&d, "general.alignment", 48);
    expect(&d, KVS_GGUF_BAD_ALIGNMENT, "alignment 48");
    d.n = 0;
    gb_header(&d, 3, 0, 1);
    gb_str(&d, "arr"), gb_u32(&d, 9), gb_u32(&d, 4), gb_u64(&d, 1ull << 60);
    expect(&d, KVS_GGUF_TRUNCATED, "array longer than the file");
    free(d.p);
    /* tensor-level */
    uint64_t ne1[1] = {32}, ne2[2] = {32, 2}, ne5[5] = {1, 1, 1, 1, 1}, ne0[1] = {0}, big[2] = {1ull << 40, 1ull << 40};
    gbuf t;
    t = one_tensor("x", 5, ne5, 0, 0, 64), expect(&t, KVS_GGUF_BAD_SHAPE, "5 dims"), free(t.p);
    t = one_tensor("x", 1, ne0, 0, 0, 64), expect(&t, KVS_GGUF_BAD_SHAPE, "zero dim"), free(t.p);
    t = one_tensor("x", 2, big, 0, 0, 64), expect(&t, KVS_GGUF_BAD_SHAPE, "overflowing shape"), free(t.p);
    uint64_t ne31[1] = {31};
    t = one_tensor("x", 1, ne31, 8, 0, 64), expect(&t, KVS_GGUF_BAD_SHAPE, "row not whole blocks"), free(t.p);
    t = one_tensor("x", 1, ne1, 99, 0, 64), expect(&t, KVS_GGUF_BAD_TENSOR_TYPE, "unknown tensor type"), free(t.p);
    t = one_tensor("x", 1, ne1, 0, 8, 256), expect(&t, KVS_GGUF_BAD_ALIGNMENT, "misaligned offset"), free(t.p);
    t = one_tensor("x", 2, ne2, 0, 0, 100), expect(&t, KVS_GGUF_BAD_OFFSET, "data past the end"), free(t.p);
    t = one_tensor("", 1, ne1, 0, 0, 128), expect(&t, KVS_GGUF_BAD_NAME, "empty tensor name"), free(t.p);
    char longname[80];
    memset(longname, 'n', 70);
    longname[70] = 0;
    t = one_tensor(longname, 1, ne1, 0, 0, 128), expect(&t, KVS_GGUF_BAD_NAME, "70-byte tensor name"), free(t.p);
    gbuf u = {0};
    gb_header(&u, 3, 2, 0);
    gb_tensor(&u, "a", 1, ne1, 0, 0);
    gb_tensor(&u, "a", 1, ne1, 0, 128);
    gb_align(&u, 32);
    for (int i = 0; i < 256; i++) gb_put(&u, "\0", 1);
    expect(&u, KVS_GGUF_DUPLICATE_TENSOR, "duplicate tensor");
    u.n = 0;
    gb_header(&u, 3, 2, 0);
    gb_tensor(&u, "a", 1, ne1, 0, 0);
    gb_tensor(&u, "b", 1, ne1, 0, 96);
    gb_align(&u, 32);
    for (int i = 0; i < 256; i++) gb_put(&u, "\0", 1);
    expect(&u, KVS_GGUF_BAD_OFFSET, "overlapping tensors");
    free(u.p);
    kvs_gguf *g = NULL;
    kvs_gguf_error e;
    CHECK(kvs_gguf_open("/nonexistent/model.gguf", &g, &e) == KVS_ERR_IO && e == KVS_GGUF_IO &&
              strstr(kvs_last_error(), "/nonexistent/model.gguf"),
          "missing file named");
}

static void test_dequant(void) {
    struct {
        uint32_t type;
        const uint8_t *raw;
        const float *val;
        int n;
    } fx[] = {{KVS_GGML_Q4_0, fx_Q4_0_raw, fx_Q4_0_val, 64}, {KVS_GGML_Q4_1, fx_Q4_1_raw, fx_Q4_1_val, 64},
              {KVS_GGML_Q5_0, fx_Q5_0_raw, fx_Q5_0_val, 64}, {KVS_GGML_Q5_1, fx_Q5_1_raw, fx_Q5_1_val, 64},
              {KVS_GGML_Q8_0, fx_Q8_0_raw, fx_Q8_0_val, 64}, {KVS_GGML_Q4_K, fx_Q4_K_raw, fx_Q4_K_val, 512},
              {KVS_GGML_Q6_K, fx_Q6_K_raw, fx_Q6_K_val, 512}, {KVS_GGML_F16, fx_F16_raw, fx_F16_val, 64}};
    float out[512];
    for (size_t i = 0; i < sizeof fx / sizeof *fx; i++) {
        CHECK_OK(kvs_ggml_dequant(fx[i].type, fx[i].raw, out, fx[i].n));
        size_t where;
        double worst = 0;
        for (int k = 0; k < fx[i].n; k++) worst = fmax(worst, fabs(out[k] - fx[i].val[k]) / (1e-6 + fabs(fx[i].val[k])));
        (void)where;
        CHECK(worst <= 1e-6, "%s: relative difference %g from the gguf package", kvs_ggml_type_name(fx[i].type), worst);
    }
    /* hand-made: Q4_1 d = 0.5, m = -1, nibbles j -> j*0.5 - 1 ; Q4_0 d = 2, (nibble - 8) * 2 */
    uint8_t q41[20] = {0x00, 0x38, 0x00, 0xbc};
    for (int j = 0; j < 16; j++) q41[4 + j] = (uint8_t)(j | (15 - j) << 4);
    CHECK_OK(kvs_ggml_dequant(KVS_GGML_Q4_1, q41, out, 32));
    CHECK(out[3] == 0.5f && out[16] == 6.5f && out[31] == -1.0f, "Q4_1 by hand: %g %g %g", (double)out[3], (double)out[16], (double)out[31]);
    uint8_t q40[18] = {0x00, 0x40};
    for (int j = 0; j < 16; j++) q40[2 + j] = (uint8_t)(j | j << 4);
    CHECK_OK(kvs_ggml_dequant(KVS_GGML_Q4_0, q40, out, 32));
    CHECK(out[0] == -16.0f && out[15] == 14.0f && out[31] == 14.0f, "Q4_0 by hand");
    CHECK(kvs_ggml_dequant(99, q40, out, 32) == KVS_ERR_UNSUPPORTED, "unknown type");
    CHECK(kvs_ggml_dequant(KVS_GGML_Q4_0, q40, out, 31) == KVS_ERR_ARG, "partial block");
}

int main(void) {
    test_valid();
    test_corrupt();
    test_dequant();
    return test_done("test_gguf");
}
