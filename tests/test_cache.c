/* Cache: exact byte accounting (against the allocator, the estimate and the OScaR formula),
 * bits per element, streaming invariance, reset. */
#include <string.h>

#include "cache/cache.h"
#include "test_util.h"

static const char *k_configs[] = {"fp32", "fp16", "q8_0", "q4_0", "kivi-int2", "kivi-int4", "oscar-int2",
                                  "oscar-int4", "oscar-int2,sinks=4,window=64", "k=int3,v=int8,group=16,window=32",
                                  "k=q8_0,v=int2,rotate=hadamard,scale=token,group=64"};

/* An allocator that counts what the cache holds (kvs_allocator): the truth kvs_cache_bytes must
 * equal, including the sizes handed back on free. */
typedef struct {
    size_t live, calls;
    int bad_free;
} counter;

static void *count_alloc(void *user, size_t n) {
    counter *ct = user;
    size_t *p = malloc(n + 16);
    if (!p) return NULL;
    p[0] = n;
    ct->live += n;
    ct->calls++;
    return (char *)p + 16;
}

static void count_free(void *user, void *p, size_t n) {
    counter *ct = user;
    size_t *base = (size_t *)((char *)p - 16);
    ct->bad_free += base[0] != n;
    ct->live -= base[0];
    free(base);
}

static void accounting(void) {
    rng_t r = {21};
    const int H = 3, d = 64;
    float *k = malloc(sizeof(float) * 300 * H * d), *v = malloc(sizeof(float) * 300 * H * d);
    fill_normal(&r, k, 300 * H * d, 1.0);
    fill_normal(&r, v, 300 * H * d, 1.0);
    for (size_t ci = 0; ci < sizeof k_configs / sizeof *k_configs; ci++) {
        kvs_config cfg = kvs_config_default();
        CHECK_OK(kvs_config_parse(&cfg, k_configs[ci]));
        cfg.n_layers = 2;
        cfg.max_tokens = 1000;
        counter ct = {0, 0, 0};
        const kvs_allocator mem = {count_alloc, count_free, &ct};
        kvs_cache *c = NULL;
        CHECK_OK(kvs_cache_create_with(&cfg, &mem, &c));
        if (!c) continue;
        int tokens = 0, bad = 0;
        while (tokens < 900) {
            int n = 1 + (int)(rng_u64(&r) % 200);
            if (tokens + n > 1000) n = 1000 - tokens;
            for (int l = 0; l < 2; l++) CHECK_OK(kvs_cache_append(c, l, n, k, v));
            tokens += n;
            size_t est = 0;
            CHECK_OK(kvs_cache_bytes_for(&cfg, tokens, &est));
            if (kvs_cache_bytes(c) != ct.live || kvs_cache_bytes(c) != est) bad++;
            if (kvs_cache_tokens(c, 1) != tokens) bad++;
        }
        CHECK(bad == 0, "%s: reported bytes %zu, allocated %zu (%d mismatches)", k_configs[ci], kvs_cache_bytes(c),
              ct.live, bad);
        size_t fixed = 0;
        CHECK_OK(kvs_cache_bytes_for(&cfg, 0, &fixed));
        kvs_cache_reset(c);
        CHECK(kvs_cache_tokens(c, 0) == 0 && kvs_cache_bytes(c) == fixed, "%s: reset", k_configs[ci]);
        kvs_cache_free(c);
        CHECK(ct.live == 0 && ct.bad_free == 0, "%s: free leaves %zu bytes, %d frees with a wrong size", k_configs[ci],
              ct.live, ct.bad_free);
    }
    free(k);
    free(v);
}

/* Per token per layer bytes for Hkv=8, d=128 (docs/methods/oscar.md section 6). */
static void formulas(void) {
    struct { const char *cfg; double bytes; } want[] = {
        {"oscar-int2", 772}, {"kivi-int2", 768}, {"q8_0", 2176}, {"q4_0", 1152}, {"fp16", 4096}, {"fp32", 8192},
        {"oscar-int4", 1284}};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        kvs_config cfg = kvs_config_default();
        CHECK_OK(kvs_config_parse(&cfg, want[i].cfg));
        CHECK_OK(kvs_config_parse(&cfg, "layers=4,heads=32,kv_heads=8,head_dim=128,max_tokens=131072"));
        size_t b0 = 0, b1 = 0;
        const long long n = 128 + 32 * 1000; /* window full + 1000 groups */
        CHECK_OK(kvs_cache_bytes_for(&cfg, n, &b1));
        CHECK_OK(kvs_cache_bytes_for(&cfg, n - 32 * 1000, &b0));
        const double per = (double)(b1 - b0) / (32 * 1000.0) / 4;
        CHECK(per == want[i].bytes, "%s: %.3f bytes/token/layer, want %.0f", want[i].cfg, per, want[i].bytes);
    }
    /* the target: int2 + OScaR, group 32, window 128, SmolLM2 shapes, all metadata included */
    kvs_config cfg = kvs_config_default();
    CHECK_OK(kvs_config_parse(&cfg, "oscar-int2,max_tokens=65536"));
    size_t b = 0;
    CHECK_OK(kvs_cache_bytes_for(&cfg, 65536, &b));
    const double bits = 8.0 * b / (65536.0 * 30 * 3 * 64 * 2);
    printf("oscar-int2 G=32 W=128 at 64K tokens (SmolLM2 shapes): %.4f bits per element\n", bits);
    CHECK(bits <= 3.25, "bits per element %.4f > 3.25", bits);
}

/* One append of N tokens and many random-sized appends give byte-identical caches. */
static void streaming(void) {
    rng_t r = {22};
    const int N = 700, H = 3, d = 64;
    float *k = malloc(sizeof(float) * N * H * d), *v = malloc(sizeof(float) * N * H * d);
    fill_normal(&r, k, (size_t)N * H * d, 2.0);
    fill_normal(&r, v, (size_t)N * H * d, 1.0);
    kvs_config cfg = kvs_config_default();
    CHECK_OK(kvs_config_parse(&cfg, "oscar-int2,sinks=3,window=64,layers=1,max_tokens=1024"));
    kvs_cache *a = NULL, *b = NULL;
    CHECK_OK(kvs_cache_create(&cfg, &a));
    CHECK_OK(kvs_cache_create(&cfg, &b));
    CHECK_OK(kvs_cache_append(a, 0, N, k, v));
    for (int t = 0; t < N;) {
        int n = 1 + (int)(rng_u64(&r) % 50);
        if (t + n > N) n = N - t;
        CHECK_OK(kvs_cache_append(b, 0, n, k + (size_t)t * H * d, v + (size_t)t * H * d));
        t += n;
    }
    int diff = 0;
    const kvs_layer *la = &a->layers[0], *lb = &b->layers[0];
    diff += la->n_groups != lb->n_groups || la->n_win != lb->n_win || la->n_sink != lb->n_sink;
    for (int h = 0; h < H; h++)
        for (int gi = 0; gi < la->n_groups && !diff; gi++) {
            diff += memcmp(kvs_stream_at(a, 0, h)->blk[gi], kvs_stream_at(b, 0, h)->blk[gi], kvs_layer_blk_bytes(a, 0)) != 0;
            diff += memcmp(la->norm[gi], lb->norm[gi], 32 * sizeof(float)) != 0;
        }
    CHECK(diff == 0, "chunked append differs from one append");
    CHECK(la->n_sink == 3 && la->n_groups == (N - 3 - 64) / 32 && la->n_win == N - 3 - 32 * la->n_groups,
          "layout: sinks %d groups %d window %d", la->n_sink, la->n_groups, la->n_win);
    kvs_cache_free(a);
    kvs_cache_free(b);
    free(k);
    free(v);
}

int main(void) {
    accounting();
    formulas();
    streaming();
    return test_done("test_cache");
}
