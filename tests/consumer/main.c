/* A program built against an installed kvslim: parse a config, fill two layers, attend once. */
#include <kvslim.h>
#include <stdio.h>
#include <stdlib.h>

static int fail(const char *what, kvs_status s) {
    fprintf(stderr, "consumer: %s: %s (%s)\n", what, kvs_status_str(s), kvs_last_error());
    return 1;
}

int main(void) {
    kvs_config cfg = kvs_config_default();
    kvs_status s = kvs_config_parse(&cfg, "oscar-int2,layers=2,max_tokens=256");
    if (s != KVS_OK) return fail("kvs_config_parse", s);
    kvs_cache *c = NULL;
    if ((s = kvs_cache_create(&cfg, &c)) != KVS_OK) return fail("kvs_cache_create", s);
    const int n = 200, kv = cfg.n_kv_heads * cfg.head_dim, qd = cfg.n_heads * cfg.head_dim;
    float *k = malloc(sizeof(float) * n * kv), *v = malloc(sizeof(float) * n * kv);
    float *q = malloc(sizeof(float) * qd), *out = malloc(sizeof(float) * qd);
    if (!k || !v || !q || !out) return fail("malloc", KVS_ERR_NOMEM);
    unsigned r = 12345; /* an LCG in [-1, 1): the consumer needs nothing but kvslim and libc */
    for (int i = 0; i < n * kv; i++) {
        k[i] = (float)((r = r * 1103515245u + 12345u) >> 16) / 32768.0f - 1.0f;
        v[i] = (float)((r = r * 1103515245u + 12345u) >> 16) / 32768.0f - 1.0f;
    }
    for (int i = 0; i < qd; i++) q[i] = (float)((r = r * 1103515245u + 12345u) >> 16) / 32768.0f - 1.0f;
    for (int l = 0; l < cfg.n_layers; l++)
        if ((s = kvs_cache_append(c, l, n - 1, k, v)) != KVS_OK) return fail("kvs_cache_append", s);
    /* the last token attends over the 199 cached ones (quantized groups and window) and itself */
    if ((s = kvs_attend(c, 0, 1, q, k + (n - 1) * kv, v + (n - 1) * kv, out)) != KVS_OK) return fail("kvs_attend", s);
    for (int i = 0; i < qd; i++)
        if (!(out[i] >= -2.0f && out[i] <= 2.0f)) return fail("output far outside the values' range", KVS_ERR_INTERNAL);
    printf("consumer: kvslim %d.%d.%d, %s kernels, %d tokens, %.3f bits/element\n", KVSLIM_VERSION_MAJOR,
           KVSLIM_VERSION_MINOR, KVSLIM_VERSION_PATCH, kvs_kernels(), kvs_cache_tokens(c, 0),
           kvs_cache_bits_per_element(c));
    kvs_cache_free(c);
    free(k);
    free(v);
    free(q);
    free(out);
    return 0;
}
