/* Bad input never crashes: each case returns its specific code and a message naming it. */
#include <string.h>

#include "test_util.h"

static void expect(kvs_status got, kvs_status want, const char *needle, const char *what) {
    CHECK(got == want, "%s: got %s, want %s (%s)", what, kvs_status_str(got), kvs_status_str(want), kvs_last_error());
    if (needle) CHECK(strstr(kvs_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", what, kvs_last_error(), needle);
}

/* A hand-filled config with enum values out of range: validation names the field; formatting
 * writes "?" instead of reading past its name tables (ASan checks), and that text does not parse. */
static void test_bad_enums(void) {
    char buf[256];
    kvs_config cfg = kvs_config_default();
    cfg.k_type = (kvs_type)99;
    cfg.rotate = (kvs_rotate)-3;
    cfg.scale = (kvs_scale)7;
    cfg.jensen = (kvs_jensen)1000;
    expect(kvs_config_validate(&cfg), KVS_ERR_CONFIG, "k type 99", "validate bad k type");
    size_t n = kvs_config_format(&cfg, buf, sizeof buf);
    CHECK(n == strlen(buf) && strstr(buf, "k=?,v=fp32,") == buf && strstr(buf, ",rotate=?,scale=?,jensen=?,"),
          "format of bad enums: '%s'", buf);
    kvs_config back = kvs_config_default();
    expect(kvs_config_parse(&back, buf), KVS_ERR_CONFIG, "'?' for key 'k'", "formatted bad enums parse back");
    cfg = kvs_config_default();
    cfg.v_type = KVS_TYPE_COUNT;
    n = kvs_config_format(&cfg, buf, sizeof buf);
    CHECK(strstr(buf, ",v=?,") != NULL, "format of v_type = KVS_TYPE_COUNT: '%s'", buf);
    CHECK(kvs_config_format(NULL, buf, sizeof buf) == 0 && buf[0] == 0, "format of NULL config");
    CHECK(kvs_type_get((kvs_type)99) == NULL && kvs_type_get((kvs_type)-1) == NULL, "traits of bad types");
}

int main(void) {
    test_bad_enums();
    kvs_config cfg = kvs_config_default();
    kvs_cache *c = NULL;
    expect(kvs_cache_create(NULL, &c), KVS_ERR_ARG, NULL, "create NULL cfg");
    expect(kvs_cache_create(&cfg, NULL), KVS_ERR_ARG, NULL, "create NULL out");
    cfg.head_dim = 0;
    expect(kvs_cache_create(&cfg, &c), KVS_ERR_CONFIG, "head_dim=0", "zero head_dim");
    cfg = kvs_config_default();
    cfg.n_layers = 0;
    expect(kvs_cache_create(&cfg, &c), KVS_ERR_CONFIG, "layers=0", "zero layers");
    cfg = kvs_config_default();
    cfg.max_tokens = -5;
    expect(kvs_cache_create(&cfg, &c), KVS_ERR_CONFIG, "max_tokens=-5", "negative capacity");
    cfg = kvs_config_default();
    cfg.k_type = (kvs_type)99;
    expect(kvs_cache_create(&cfg, &c), KVS_ERR_CONFIG, "k type 99", "bad enum");
    /* absurd but valid sizes: the bytes overflow check or allocation failure must answer */
    cfg = kvs_config_default();
    cfg.n_layers = 4096;
    cfg.n_kv_heads = 1024;
    cfg.n_heads = 1024;
    cfg.head_dim = 1024;
    cfg.window = 1 << 20;
    cfg.max_tokens = 1 << 28;
    cfg.group = 256;
    cfg.window = 1 << 20;
    size_t bytes = 0;
    kvs_status s = kvs_cache_create(&cfg, &c);
    CHECK(s == KVS_ERR_NOMEM && c == NULL, "absurd cache: %s", kvs_status_str(s));
    CHECK(kvs_cache_bytes_for(&cfg, 1 << 28, &bytes) == KVS_OK && bytes > ((size_t)1 << 40), "absurd size estimate");

    cfg = kvs_config_default();
    CHECK_OK(kvs_config_parse(&cfg, "oscar-int2,layers=2,max_tokens=100"));
    CHECK_OK(kvs_cache_create(&cfg, &c));
    const size_t row = 3 * 64;
    float *k = calloc(200 * row, sizeof(float)), *v = calloc(200 * row, sizeof(float));
    float *q = calloc(200 * 9 * 64, sizeof(float)), *o = calloc(200 * 9 * 64, sizeof(float));
    expect(kvs_cache_append(c, 0, 10, NULL, v), KVS_ERR_ARG, "NULL", "append NULL k");
    expect(kvs_cache_append(c, 2, 10, k, v), KVS_ERR_ARG, "layer 2", "append bad layer");
    expect(kvs_cache_append(c, -1, 10, k, v), KVS_ERR_ARG, "layer -1", "append negative layer");
    expect(kvs_cache_append(c, 0, 0, k, v), KVS_ERR_ARG, "n = 0", "append zero tokens");
    k[5 * row + 64 + 7] = NAN;
    expect(kvs_cache_append(c, 0, 10, k, v), KVS_ERR_NONFINITE, "k[token 5][head 1][7]", "NaN key");
    k[5 * row + 64 + 7] = 0;
    v[3] = INFINITY;
    expect(kvs_cache_append(c, 0, 10, k, v), KVS_ERR_NONFINITE, "v[token 0][head 0][3]", "Inf value");
    v[3] = 0;
    k[0] = 1e6f;
    expect(kvs_cache_append(c, 0, 10, k, v), KVS_ERR_RANGE, "fp16 range", "huge key");
    k[0] = 0;
    CHECK(kvs_cache_tokens(c, 0) == 0, "failed appends must append nothing");
    CHECK_OK(kvs_cache_append(c, 0, 90, k, v));
    expect(kvs_cache_append(c, 0, 11, k, v), KVS_ERR_CAPACITY, "max_tokens=100", "past capacity");
    CHECK(kvs_cache_tokens(c, 0) == 90, "capacity error must append nothing");
    CHECK_OK(kvs_cache_append(c, 0, 10, k, v));
    q[17] = NAN;
    expect(kvs_attend(c, 0, 1, q, k, v, o), KVS_ERR_NONFINITE, "q[17]", "NaN query");
    q[17] = 0;
    expect(kvs_attend(c, 0, 0, q, k, v, o), KVS_ERR_ARG, "n = 0", "attend zero queries");
    expect(kvs_attend(c, 5, 1, q, k, v, o), KVS_ERR_ARG, "layer 5", "attend bad layer");
    expect(kvs_attend(NULL, 0, 1, q, k, v, o), KVS_ERR_ARG, NULL, "attend NULL cache");
    CHECK(kvs_cache_tokens(NULL, 0) == -1 && kvs_cache_tokens(c, 9) == -1, "tokens of bad args");
    expect(kvs_set_kernels("sse9"), KVS_ERR_ARG, "sse9", "unknown kernel set");
    kvs_cache_free(c);
    kvs_cache_free(NULL);
    CHECK(strcmp(kvs_status_str((kvs_status)1234), "unknown status") == 0, "unknown status text");
    free(k);
    free(v);
    free(q);
    free(o);
    return test_done("test_errors");
}
