/* Quantizers: packing round trips, the step-size error bound, exact cases, ties, ggml blocks. */
#include <string.h>

#include "common/fp16.h"
#include "quant/quant.h"
#include "test_util.h"

static const int k_bits[] = {2, 3, 4, 8};

/* codes[i] at bit slot(i) * b, and back: the library's put/get with a caller-chosen slot order */
static void pack(const uint8_t *codes, int n, int b, int slotted, uint8_t *out) {
    memset(out, 0, (size_t)n * b / 8);
    for (int i = 0; i < n; i++) kvs_put_code(out, (size_t)(slotted ? kvs_code_slot(b, n, i) : i) * b, b, codes[i]);
}
static void unpack(const uint8_t *in, int n, int b, int slotted, uint8_t *codes) {
    for (int i = 0; i < n; i++) codes[i] = (uint8_t)kvs_get_code(in, (size_t)(slotted ? kvs_code_slot(b, n, i) : i) * b, b);
}

static void test_packing(void) {
    rng_t r = {1};
    uint8_t codes[256], back[256], packed[256], again[256];
    for (int bi = 0; bi < 4; bi++) {
        const int b = k_bits[bi];
        int bad = 0;
        for (int rep = 0; rep < 20000; rep++) {
            const int n = 8 * (1 + (int)(rng_u64(&r) % 32));
            for (int i = 0; i < n; i++) codes[i] = (uint8_t)(rng_u64(&r) & ((1u << b) - 1));
            pack(codes, n, b, 0, packed);
            unpack(packed, n, b, 0, back);
            pack(back, n, b, 0, again);
            if (memcmp(codes, back, (size_t)n) || memcmp(packed, again, (size_t)n * b / 8)) bad++;
        }
        CHECK(bad == 0, "bits=%d: %d random patterns fail to round-trip", b, bad);
        /* every byte value decodes and re-encodes to itself */
        bad = 0;
        for (int v = 0; v < 65536; v++) {
            uint8_t in[8] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v * 7), 0, 0, 0, 0, 0};
            unpack(in, 8, b, 0, back);
            pack(back, 8, b, 0, again);
            if (memcmp(in, again, (size_t)b)) bad++;
        }
        CHECK(bad == 0, "bits=%d: %d byte patterns fail", b, bad);
    }
    /* layout pin: int2 code t at bits 2t, LSB first */
    uint8_t c4[4] = {1, 2, 3, 0}, p1[1];
    pack(c4, 4, 2, 0, p1);
    CHECK(p1[0] == (1 | 2 << 2 | 3 << 4), "int2 layout byte = 0x%02x", p1[0]);
}

/* Oracle 3 of docs/methods/oscar.md: |x - x^| <= (D/2)(1+1e-5) + 1e-6 max(|lo|,|hi|) + fp16 metadata terms */
static void test_bound(void) {
    rng_t r = {2};
    float x[64];
    uint8_t codes[64];
    for (int bi = 0; bi < 4; bi++) {
        const int b = k_bits[bi], qmax = (1 << b) - 1;
        int bad = 0, range_bad = 0;
        double worst = 0;
        for (int rep = 0; rep < 20000; rep++) {
            const int kind = rep % 5;
            for (int i = 0; i < 32; i++) {
                double v = rng_normal(&r);
                if (kind == 1) v = rng_uniform(&r) * 10 - 3;
                if (kind == 2) v = v / (rng_uniform(&r) + 1e-3); /* heavy tailed */
                if (kind == 3) v = 2.5;                          /* constant */
                if (kind == 4) v = (i % 3 == 0) ? 1e-42 : (i % 3 == 1 ? -0.0 : 1e-40); /* subnormals */
                x[i] = (float)v;
            }
            uint16_t ms, mo;
            kvs_affine_quant_group(x, 32, 1, b, codes, &ms, &mo);
            float lo = x[0], hi = x[0];
            for (int i = 0; i < 32; i++) {
                lo = fminf(lo, x[i]);
                hi = fmaxf(hi, x[i]);
                if (codes[i] > qmax) range_bad++;
            }
            if (lo == 0 && hi == 0) { lo = -1; hi = 1; }
            const double D = (double)(hi - lo) / qmax;
            const double S = kvs_fp16_to_fp32(ms), O = kvs_fp16_to_fp32(mo);
            const double tol = D / 2 * (1 + 1e-5) + 1e-6 * fmax(fabs(lo), fabs(hi)) +
                               ldexp(1, -11) * (qmax * fabs(S) + fabs(O)) + ldexp(1, -24) * (qmax + 1);
            for (int i = 0; i < 32; i++) {
                const double e = fabs(codes[i] * S + O - x[i]);
                if (e > tol) bad++;
                if (e / (tol + 1e-30) > worst) worst = e / (tol + 1e-30);
            }
        }
        CHECK(bad == 0 && range_bad == 0, "bits=%d: %d values beyond the step bound (worst %.3g of tol), %d codes out of range",
              b, bad, worst, range_bad);
    }
}

static void test_exact_cases(void) {
    float x[32];
    uint8_t c[32];
    uint16_t ms, mo;
    for (int i = 0; i < 32; i++) x[i] = (float)(i % 4); /* {0,1,2,3} round-trips at INT2 */
    kvs_affine_quant_group(x, 32, 1, 2, c, &ms, &mo);
    int bad = 0;
    for (int i = 0; i < 32; i++) bad += c[i] * kvs_fp16_to_fp32(ms) + kvs_fp16_to_fp32(mo) != x[i];
    CHECK(bad == 0 && kvs_fp16_to_fp32(ms) == 1.0f, "{0,1,2,3} not exact (%d)", bad);
    for (int i = 0; i < 32; i++) x[i] = 0.1f; /* constant group -> half(c) */
    kvs_affine_quant_group(x, 32, 1, 2, c, &ms, &mo);
    CHECK(c[5] * kvs_fp16_to_fp32(ms) + kvs_fp16_to_fp32(mo) == kvs_fp16_to_fp32(kvs_fp32_to_fp16(0.1f)),
          "constant group");
    for (int i = 0; i < 32; i++) x[i] = 0.0f; /* all zero: range [-1,1], z = 2 at INT2 -> exactly 0 */
    kvs_affine_quant_group(x, 32, 1, 2, c, &ms, &mo);
    CHECK(c[0] == 2 && c[0] * kvs_fp16_to_fp32(ms) + kvs_fp16_to_fp32(mo) == 0.0f, "zero group: code %d", c[0]);
    /* tie: range [0,3] at INT2, x = 0.5 lands exactly on 0.5 in code space -> even code 0;
       x = 1.5 -> 2 */
    for (int i = 0; i < 32; i++) x[i] = (float)(i % 4);
    x[4] = 0.5f;
    x[5] = 1.5f;
    x[6] = 2.5f;
    kvs_affine_quant_group(x, 32, 1, 2, c, &ms, &mo);
    CHECK(c[4] == 0 && c[5] == 2 && c[6] == 2, "ties to even: %d %d %d", c[4], c[5], c[6]);
}

static void test_ggml(void) {
    /* hand-made block: x = j - 16, amax 16 -> d = 16/127; q8 codes round(x*127/16) */
    float x[32], y[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16);
    kvs_block_q8_0 b8;
    kvs_quant_row_q8_0(x, &b8, 32);
    CHECK(b8.d == kvs_fp32_to_fp16(16.0f / 127.0f), "q8_0 d");
    CHECK(b8.qs[0] == -127 && b8.qs[16] == 0 && b8.qs[31] == (int8_t)roundf(15 * 127.0f / 16), "q8_0 codes %d %d %d",
          b8.qs[0], b8.qs[16], b8.qs[31]);
    kvs_block_q4_0 b4;
    kvs_quant_row_q4_0(x, &b4, 32); /* max |x| is -16 -> d = 2, id = 0.5; x0 = -16 -> 0 */
    CHECK(kvs_fp16_to_fp32(b4.d) == 2.0f, "q4_0 d = %g", (double)kvs_fp16_to_fp32(b4.d));
    CHECK((b4.qs[0] & 15) == 0 && (b4.qs[0] >> 4) == 8 && (b4.qs[15] >> 4) == 15, "q4_0 nibbles 0x%02x 0x%02x",
          b4.qs[0], b4.qs[15]);
    /* error bounds on random rows: q8_0 <= d/2 (+ fp16 rounding of d), q4_0 <= d */
    rng_t r = {3};
    int bad8 = 0, bad4 = 0;
    for (int rep = 0; rep < 20000; rep++) {
        fill_normal(&r, x, 32, 1.0 + rep % 7);
        kvs_quant_row_q8_0(x, &b8, 32);
        kvs_dequant_row_q8_0(&b8, y, 32);
        float d8 = kvs_fp16_to_fp32(b8.d);
        for (int j = 0; j < 32; j++) bad8 += fabsf(x[j] - y[j]) > d8 * 0.5f + 128 * d8 * 1e-3f + 1e-6f;
        kvs_quant_row_q4_0(x, &b4, 32);
        kvs_dequant_row_q4_0(&b4, y, 32);
        float d4 = fabsf(kvs_fp16_to_fp32(b4.d));
        for (int j = 0; j < 32; j++) bad4 += fabsf(x[j] - y[j]) > d4 * 1.0f + 8 * d4 * 1e-3f + 1e-6f;
    }
    CHECK(bad8 == 0, "q8_0: %d values beyond d/2", bad8);
    CHECK(bad4 == 0, "q4_0: %d values beyond d", bad4);
}

/* The traits table and the group layouts: every type has a name, keys and values round-trip
 * within the type's step, and the slot order is a permutation that packs and unpacks exactly. */
static void test_types(void) {
    rng_t r = {4};
    enum { G = 32, D = 64 };
    float x[G * D], y[D];
    static uint8_t part[G * D * 4 + 4096];
    for (int t = 0; t < KVS_TYPE_COUNT; t++) {
        const kvs_type_info *ti = kvs_type_get((kvs_type)t);
        CHECK(ti && ti->name && ti->bits > 0, "type %d has no info", t);
        CHECK(kvs_kgroup_bytes((kvs_type)t, D, G) > 0 && kvs_vgroup_bytes((kvs_type)t, D, G) > 0, "type %d has no size", t);
        fill_normal(&r, x, G * D, 1.0);
        const double bound = t == KVS_TYPE_FP32 ? 0 : (t == KVS_TYPE_FP16 ? 4e-3 : 8.0 / ((1 << ti->bits) - 1));
        double ek = 0, ev = 0;
        kvs_quant_keys((kvs_type)t, x, G, D, part);
        for (int tok = 0; tok < G; tok++) {
            kvs_dequant_key((kvs_type)t, part, G, D, tok, y);
            ek = fmax(ek, max_abs_diff(x + tok * D, y, D, NULL));
        }
        kvs_quant_values((kvs_type)t, x, G, D, part);
        for (int tok = 0; tok < G; tok++) {
            kvs_dequant_value((kvs_type)t, part, G, D, tok, y);
            ev = fmax(ev, max_abs_diff(x + tok * D, y, D, NULL));
        }
        CHECK(ek <= bound && ev <= bound, "type %s: max error keys %g values %g > %g", ti->name, ek, ev, bound);
    }
    CHECK(kvs_type_get(KVS_TYPE_COUNT) == NULL && kvs_type_get((kvs_type)-1) == NULL, "out of range type");
    /* slots: a permutation for every (bits, n); row packing round-trips */
    const int ns[] = {8, 16, 24, 32, 48, 64, 96, 128, 256};
    int bad = 0;
    for (int bi = 0; bi < 4; bi++)
        for (int ni = 0; ni < 9; ni++) {
            const int b = k_bits[bi], n = ns[ni];
            uint8_t seen[256] = {0}, codes[256], row[256];
            for (int i = 0; i < n; i++) {
                const int sl = kvs_code_slot(b, n, i);
                if (sl < 0 || sl >= n || seen[sl]++) bad++;
                codes[i] = (uint8_t)(rng_u64(&r) & ((1u << b) - 1));
            }
            uint8_t back2[256];
            pack(codes, n, b, 1, row);
            unpack(row, n, b, 1, back2);
            for (int i = 0; i < n; i++) bad += back2[i] != codes[i];
        }
    CHECK(bad == 0, "%d slot/packing errors", bad);
    CHECK(kvs_code_slot(2, 32, 1) == 16 && kvs_code_slot(2, 32, 2) == 1 && kvs_code_slot(2, 32, 8) == 4,
          "int2 slot order pinned");
}

int main(void) {
    test_packing();
    test_bound();
    test_exact_cases();
    test_ggml();
    test_types();
    return test_done("test_quant");
}
