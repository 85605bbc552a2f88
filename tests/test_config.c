/* The config grammar: presets, keys, canonical format round trip, errors naming the offset. */
#include <string.h>

#include "test_util.h"

static void expect_error(const char *text, const char *needle) {
    kvs_config c = kvs_config_default(), before = c;
    kvs_status s = kvs_config_parse(&c, text);
    CHECK(s == KVS_ERR_CONFIG, "'%s' -> %s", text, kvs_status_str(s));
    CHECK(strstr(kvs_last_error(), needle) != NULL, "'%s': message '%s' lacks '%s'", text, kvs_last_error(), needle);
    CHECK(memcmp(&c, &before, sizeof c) == 0, "'%s': config changed on error", text);
}

int main(void) {
    kvs_config c = kvs_config_default();
    CHECK_OK(kvs_config_validate(&c));
    CHECK_OK(kvs_config_parse(&c, "k=int2,v=int2,group=32,window=128,sinks=0,rotate=hadamard,scale=token,jensen=taylor"));
    CHECK(c.k_type == KVS_TYPE_INT2 && c.window == 128 && c.rotate == KVS_ROTATE_HADAMARD && c.scale == KVS_SCALE_TOKEN &&
              c.jensen == KVS_JENSEN_TAYLOR, "issue example string");
    c = kvs_config_default();
    CHECK_OK(kvs_config_parse(&c, " oscar-int2 , jensen=exact, lambda=0.5 "));
    CHECK(c.jensen == KVS_JENSEN_EXACT && c.lambda == 0.5f && c.v_type == KVS_TYPE_INT2, "preset + override");
    CHECK_OK(kvs_config_parse(&c, ""));
    /* every preset formats to a string that parses back to the same compression */
    const char *presets[] = {"fp32", "fp16", "q8_0", "q4_0", "kivi-int2", "kivi-int4", "oscar-int2", "oscar-int4"};
    for (size_t i = 0; i < sizeof presets / sizeof *presets; i++) {
        kvs_config a = kvs_config_default(), b = kvs_config_default();
        char buf[256];
        CHECK_OK(kvs_config_parse(&a, presets[i]));
        size_t n = kvs_config_format(&a, buf, sizeof buf);
        CHECK(n > 0 && n < sizeof buf, "format length %zu", n);
        CHECK_OK(kvs_config_parse(&b, buf));
        CHECK(memcmp(&a, &b, sizeof a) == 0, "preset %s does not round-trip through '%s'", presets[i], buf);
    }
    /* eviction keys, floats in their shortest form, keep= (parsing them needs a calibration: the
     * format alone here; test_evict and the fuzzer parse them) */
    {
        kvs_config a = kvs_config_default();
        char buf[384];
        CHECK_OK(kvs_config_parse(&a, "oscar-int2,lambda=0.3"));
        a.evict = KVS_EVICT_HEATKV_PROP, a.agg = KVS_AGG_MAX, a.budget = 0.2f, a.keep = 10;
        kvs_config_format(&a, buf, sizeof buf);
        CHECK(strstr(buf, "lambda=0.3,") && strstr(buf, ",heatkv=prop,budget=0.2,agg=max,keep=10"), "eviction format: '%s'", buf);
        expect_error("keep=-1", "keep");
    }
    /* rope: who turns q and k; the base parses in its shortest form and round-trips */
    {
        kvs_config a = kvs_config_default(), b = kvs_config_default();
        char buf[384];
        CHECK_OK(kvs_config_parse(&a, "oscar-int2,rope=adjacent,rope_base=100000"));
        CHECK(a.rope == KVS_ROPE_ADJACENT && a.rope_base == 100000.0f, "rope keys");
        kvs_config_format(&a, buf, sizeof buf);
        CHECK(strstr(buf, ",rope=adjacent,rope_base=100000") != NULL, "rope format: '%s'", buf);
        CHECK_OK(kvs_config_parse(&b, buf));
        CHECK(memcmp(&a, &b, sizeof a) == 0, "rope does not round-trip through '%s'", buf);
        CHECK_OK(kvs_config_parse(&b, "rope=none"));
        kvs_config_format(&b, buf, sizeof buf);
        CHECK(!strstr(buf, "rope"), "rope=none is the default and not written: '%s'", buf);
        expect_error("rope=half", "bad value 'half' for key 'rope'");
        expect_error("rope_base=1", "bad value '1' for key 'rope_base'");
        expect_error("rope_base=inf", "bad value 'inf'");
    }
    char small[8];
    size_t need = kvs_config_format(&c, small, sizeof small);
    CHECK(need > 7 && strlen(small) == 7, "truncated format");

    expect_error("grp=32", "unknown key 'grp' at offset 0");
    expect_error("k=int2,grp=32", "unknown key 'grp' at offset 7");
    expect_error("k=int5", "bad value 'int5' for key 'k' at offset 2");
    expect_error("group=abc", "bad value 'abc'");
    expect_error("group=-8", "bad value '-8'");
    expect_error("lambda=nan", "bad value 'nan'");
    expect_error("k=int2,,v=int2", "empty item at offset 7");
    expect_error("oscar-int7", "unknown preset");
    expect_error("group=12", "group=12");
    expect_error("kivi-int2,window=100", "window=100"); /* per-channel keys leave G at a time */
    CHECK(kvs_config_parse(&c, "q4_0,window=100") == KVS_OK && c.window == 100, "per-token keys take any window");
    expect_error("head_dim=48,rotate=hadamard", "power-of-two");
    expect_error("heads=10,kv_heads=3", "heads=10");
    expect_error("head_dim=0", "bad value '0'");
    expect_error("max_tokens=99999999999", "bad value");
    expect_error("layers=100000", "layers=100000");
    expect_error("jensen=on", "bad value 'on'");
    CHECK(kvs_config_parse(NULL, "fp32") == KVS_ERR_ARG, "NULL config");
    return test_done("test_config");
}
