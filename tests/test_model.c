/* The bundled model (fetched by the CTest fixture "model"): the file's structure as documented,
 * the tokenizer on the fixture strings (ids from llama.cpp), logits of the cached path equal a
 * full recompute, decode/encode round trip, and every sweep config runs end to end.
 * Usage: test_model MODEL.gguf FIXTURES_DIR */
#include <stdio.h>
#include <string.h>

#include "model.h"
#include "test_util.h"

static int unhex(const char *h, size_t n, char *out) {
    for (size_t i = 0; i + 1 < n; i += 2) {
        unsigned v;
        if (sscanf(h + i, "%2x", &v) != 1) return -1;
        out[i / 2] = (char)v;
    }
    return (int)(n / 2);
}

static void test_structure(const kvs_llama *m) {
    const kvs_gguf *g = kvs_llama_file(m);
    int hist[32] = {0};
    for (int i = 0; i < kvs_gguf_n_tensors(g); i++) hist[kvs_gguf_tensor_at(g, i)->type & 31]++;
    CHECK(kvs_gguf_n_tensors(g) == 272 && hist[KVS_GGML_Q4_1] == 210 && hist[KVS_GGML_Q8_0] == 1 && hist[KVS_GGML_F32] == 61,
          "tensor histogram: %d tensors, Q4_1 %d, Q8_0 %d, F32 %d", kvs_gguf_n_tensors(g), hist[3], hist[8], hist[0]);
    const kvs_llama_hparams *hp = kvs_llama_params(m);
    CHECK(hp->n_vocab == 49152 && hp->n_embd == 576 && hp->n_layer == 30 && hp->n_head == 9 && hp->n_head_kv == 3 &&
              hp->head_dim == 64 && hp->n_ff == 1536 && hp->rope_base == 100000.0f && fabsf(hp->rms_eps - 1e-5f) < 1e-9f,
          "hyper-parameters");
    const kvs_gguf_tensor *t = kvs_gguf_find_tensor(g, "blk.0.attn_k.weight");
    CHECK(t && t->ne[0] == 576 && t->ne[1] == 192 && t->bytes == 69120, "attn_k shape and bytes");
    CHECK(!kvs_gguf_find_tensor(g, "output.weight"), "tied embeddings");
}

static void test_tokenizer(const kvs_tokenizer *tk, const char *fixtures) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer.tsv", fixtures);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s", path);
    if (!f) return;
    static char line[65536], text[32768];
    int cases = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        const int n = unhex(line, (size_t)(tab - line), text);
        int32_t want[4096];
        int nw = 0;
        for (char *p = tab + 1; *p && *p != '\n' && nw < 4096;) {
            char *end;
            want[nw++] = (int32_t)strtol(p, &end, 10);
            if (end == p) break;
            p = end;
        }
        if (tab[1] == '\n' || tab[1] == 0) nw = 0;
        int32_t *ids = NULL;
        int ng = 0;
        CHECK_OK(kvs_tokenize(tk, text, (size_t)n, &ids, &ng));
        cases++;
        if (ng != nw || (nw && memcmp(ids, want, sizeof(int32_t) * nw))) {
            bad++;
            fprintf(stderr, "  tokenizer mismatch on \"%.*s\": got", n, text);
            for (int i = 0; i < ng; i++) fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, ", want");
            for (int i = 0; i < nw; i++) fprintf(stderr, " %d", want[i]);
            fprintf(stderr, "\n");
        }
        /* decode round trip: the bytes come back */
        char back[65536];
        size_t bl = 0;
        for (int i = 0; i < ng; i++) bl += kvs_token_bytes(tk, ids[i], back + bl, sizeof back - bl);
        CHECK(bl == (size_t)n && !memcmp(back, text, (size_t)n), "decode of \"%.*s\" differs", n, text);
        free(ids);
    }
    fclose(f);
    printf("tokenizer: %d fixture strings, %d mismatches\n", cases, bad);
    CHECK(cases >= 7 && bad == 0, "%d of %d fixture strings tokenized differently", bad, cases);
}

/* logits of the last 8 positions: one forward of 48 tokens (no past) vs token-by-token through
 * the fp32 cache */
static void test_cached_equals_full(kvs_llama *m, const kvs_tokenizer *tk) {
    const char *text = "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in "
                       "my purse, and nothing particular to interest me on shore, I thought";
    int32_t *ids;
    int n;
    CHECK_OK(kvs_tokenize(tk, text, strlen(text), &ids, &n));
    if (n > 48) n = 48;
    const int V = kvs_llama_params(m)->n_vocab;
    float *full = malloc(sizeof(float) * 8 * V), *step = malloc(sizeof(float) * V);
    kvs_config cc = kvs_llama_cache_config(m, 64);
    kvs_cache *c = NULL;
    CHECK_OK(kvs_cache_create(&cc, &c));
    CHECK_OK(kvs_llama_forward(m, c, ids, n, 0, n - 8, full));
    kvs_cache_reset(c);
    double worst = 0, scale = 0;
    for (int i = 0; i < n; i++) {
        CHECK_OK(kvs_llama_forward(m, c, ids + i, 1, i, 0, step));
        if (i >= n - 8)
            for (int v = 0; v < V; v++) {
                worst = fmax(worst, fabs(step[v] - full[(size_t)(i - (n - 8)) * V + v]));
                scale = fmax(scale, fabs(full[(size_t)(i - (n - 8)) * V + v]));
            }
    }
    printf("cached token-by-token vs full recompute: max |logit diff| %.3g (max |logit| %.3g)\n", worst, scale);
    CHECK(worst <= 1e-3 * scale, "cached logits differ by %g", worst);
    kvs_cache_free(c);
    free(full);
    free(step);
    free(ids);
}

/* Every sweep config runs end to end on the first 256 tokens of the text; its PPL, KL and bits per
 * element must match tests/expected/metrics.csv (bits exactly, PPL within 0.5 %, KL within 20 %):
 * a number that moves must be explained and the file updated with it. */
static void test_configs(kvs_llama *m, const kvs_tokenizer *tk, const char *text_path, const char *fixtures) {
    FILE *f = fopen(text_path, "rb");
    CHECK(f != NULL, "cannot open %s", text_path);
    if (!f) return;
    static char buf[8192];
    const size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    int32_t *ids;
    int n;
    CHECK_OK(kvs_tokenize(tk, buf, len, &ids, &n));
    const int ctx = 256;
    CHECK(n >= ctx, "text too short");
    char path[1024];
    snprintf(path, sizeof path, "%s/../expected/metrics.csv", fixtures);
    FILE *ex = fopen(path, "r");
    CHECK(ex != NULL, "cannot open %s", path);
    if (!ex) {
        free(ids);
        return;
    }
    const kvs_llama_hparams *hp = kvs_llama_params(m);
    const int V = hp->n_vocab;
    float *ref = malloc(sizeof(float) * (ctx / 2 - 1) * V);
    char line[512];
    int rows = 0;
    while (fgets(line, sizeof line, ex)) {
        char cfg[256];
        double want_bits, want_ppl, want_kl;
        if (line[0] == '#' || sscanf(line, "%255[^;];%lf;%lf;%lf", cfg, &want_bits, &want_ppl, &want_kl) != 4) continue;
        kvs_config cc = kvs_llama_cache_config(m, ctx);
        kvs_cache *c = NULL;
        CHECK_OK(kvs_config_parse(&cc, cfg));
        CHECK_OK(kvs_cache_create(&cc, &c));
        kvs_ppl_acc a = {0, 0, 0, 0};
        if (c) CHECK_OK(kvs_ppl_chunk(m, c, ids, ctx, 64, -1, rows == 0 ? ref : NULL, rows == 0 ? NULL : ref, &a));
        kvs_config c8 = kvs_llama_cache_config(m, 8192);
        size_t b8 = 0;
        CHECK_OK(kvs_config_parse(&c8, cfg));
        CHECK_OK(kvs_cache_bytes_for(&c8, 8192, &b8));
        const double bits = 8.0 * (double)b8 / (8192.0 * hp->n_layer * hp->n_head_kv * hp->head_dim * 2);
        const double p = kvs_ppl_value(&a), kl = a.count ? a.kl / a.count : 0.0;
        printf("%s;%.4f;%.4f;%.6f\n", cfg, bits, p, kl);
        CHECK(fabs(bits - want_bits) < 1e-4, "%s: bits per element %.4f, expected %.4f", cfg, bits, want_bits);
        CHECK(fabs(p / want_ppl - 1) < 5e-3, "%s: PPL %.4f, expected %.4f", cfg, p, want_ppl);
        CHECK(fabs(kl - want_kl) <= 0.2 * want_kl + 1e-4, "%s: KL %.6f, expected %.6f", cfg, kl, want_kl);
        kvs_cache_free(c);
        rows++;
    }
    fclose(ex);
    CHECK(rows >= 9, "only %d rows in %s", rows, path);
    free(ref);
    free(ids);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: test_model MODEL FIXTURES_DIR TEXT\n");
        return 2;
    }
    kvs_llama *m = NULL;
    CHECK_OK(kvs_llama_load(argv[1], &m));
    if (!m) return test_done("test_model");
    kvs_tokenizer *tk = NULL;
    CHECK_OK(kvs_tokenizer_load(kvs_llama_file(m), &tk));
    test_structure(m);
    if (tk) {
        test_tokenizer(tk, argv[2]);
        test_cached_equals_full(m, tk);
        test_configs(m, tk, argv[3], argv[2]);
    }
    kvs_tokenizer_free(tk);
    kvs_llama_free(m);
    return test_done("test_model");
}
