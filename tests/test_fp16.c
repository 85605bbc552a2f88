/* fp16 conversion: exhaustive round trip and agreement with the F16C instruction (RNE). */
#include <string.h>

#include "common/fp16.h"
#include "test_util.h"

#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("f16c"))) static uint16_t hw_to_half(float f) { return (uint16_t)_cvtss_sh(f, 0); }
static int has_f16c(void) { return __builtin_cpu_supports("avx"); }
#endif

int main(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kvs_fp16_to_fp32((uint16_t)h);
        if (isnan(f)) continue;
        if (kvs_fp32_to_fp16(f) != h) bad++;
    }
    CHECK(bad == 0, "%d halves do not round-trip", bad);
    CHECK(kvs_fp16_to_fp32(0x3c00) == 1.0f, "1.0");
    CHECK(kvs_fp16_to_fp32(0x7bff) == 65504.0f, "max half");
    CHECK(kvs_fp16_to_fp32(0x0001) == 5.9604644775390625e-8f, "min subnormal");
    /* ties to even: 1 + 2^-11 is halfway between 1 and 1+2^-10 -> 1 */
    CHECK(kvs_fp32_to_fp16(1.0f + 1.0f / 2048) == 0x3c00, "tie to even down");
    CHECK(kvs_fp32_to_fp16(1.0f + 3.0f / 2048) == 0x3c02, "tie to even up");
    CHECK(kvs_fp32_to_fp16(65520.0f) == 0x7c00, "overflow to inf");
#if defined(__x86_64__)
    if (has_f16c()) {
        rng_t r = {7};
        int mism = 0;
        for (int i = 0; i < 2000000; i++) {
            uint32_t u = (uint32_t)rng_u64(&r);
            float f;
            memcpy(&f, &u, 4);
            if (isnan(f)) continue;
            if (hw_to_half(f) != kvs_fp32_to_fp16(f)) mism++;
        }
        CHECK(mism == 0, "%d random floats convert differently from F16C", mism);
    }
#endif
    return test_done("test_fp16");
}
