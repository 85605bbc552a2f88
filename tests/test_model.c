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

/* The first ctx tokens of the text, tokenized. */
static int32_t *text_tokens(const kvs_tokenizer *tk, const char *text_path, int ctx) {
    FILE *f = fopen(text_path, "rb");
    CHECK(f != NULL, "cannot open %s", text_path);
    if (!f) return NULL;
    static char buf[16384];
    const size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    int32_t *ids = NULL;
    int n = 0;
    CHECK_OK(kvs_tokenize(tk, buf, len, &ids, &n));
    CHECK(n >= ctx, "text too short: %d tokens", n);
    if (n < ctx) {
        free(ids);
        return NULL;
    }
    return ids;
}

enum { METRIC_CTX = 512 };

/* One chunk of the text through a cache config: PPL, KL against ref (if given), and the
 * log-probabilities of every scored row (if logp is given). */
static kvs_ppl_acc run_chunk(kvs_llama *m, const int32_t *ids, const char *cfg, int ctx, int batch, float *logp,
                             const float *ref) {
    kvs_config cc = kvs_llama_cache_config(m, ctx);
    kvs_cache *c = NULL;
    kvs_ppl_acc a = {0, 0, 0, 0};
    CHECK_OK(kvs_config_parse(&cc, cfg));
    CHECK_OK(kvs_cache_create(&cc, &c));
    if (c) CHECK_OK(kvs_ppl_chunk(m, c, ids, ctx, batch, -1, logp, ref, &a));
    kvs_cache_free(c);
    return a;
}

/* Every config of tests/expected/metrics.csv on the first 512 tokens of the text (256 scored):
 * bits per element exactly, PPL and KL (against an fp32 reference run) within the row's own
 * tolerances, so any number that moves must be explained and the file updated with it. Then what
 * the methods claim, in the order they claim it. */
static void test_configs(kvs_llama *m, const kvs_tokenizer *tk, const char *text_path, const char *fixtures) {
    int32_t *ids = text_tokens(tk, text_path, METRIC_CTX);
    char path[1024];
    snprintf(path, sizeof path, "%s/../expected/metrics.csv", fixtures);
    FILE *ex = fopen(path, "r");
    CHECK(ex != NULL, "cannot open %s", path);
    if (!ex || !ids) {
        if (ex) fclose(ex);
        free(ids);
        return;
    }
    const kvs_llama_hparams *hp = kvs_llama_params(m);
    const size_t rows = METRIC_CTX / 2 - 1;
    float *ref = malloc(sizeof(float) * rows * hp->n_vocab);
    const kvs_ppl_acc base = run_chunk(m, ids, "fp32", METRIC_CTX, 128, ref, NULL);
    char line[512];
    int n = 0;
    double kl_of[4] = {-1, -1, -1, -1}; /* kivi-int2, oscar-int2, oscar-int2 + jensen, fp32 */
    while (fgets(line, sizeof line, ex)) {
        char cfg[256];
        double want_bits, want_ppl, tol_ppl, want_kl, tol_kl;
        if (line[0] == '#' ||
            sscanf(line, "%255[^;];%lf;%lf;%lf;%lf;%lf", cfg, &want_bits, &want_ppl, &tol_ppl, &want_kl, &tol_kl) != 6)
            continue;
        const kvs_ppl_acc a = run_chunk(m, ids, cfg, METRIC_CTX, 128, NULL, ref);
        kvs_config c8 = kvs_llama_cache_config(m, 8192);
        size_t b8 = 0;
        CHECK_OK(kvs_config_parse(&c8, cfg));
        CHECK_OK(kvs_cache_bytes_for(&c8, 8192, &b8));
        const double bits = 8.0 * (double)b8 / (8192.0 * hp->n_layer * hp->n_head_kv * hp->head_dim * 2);
        const double p = kvs_ppl_value(&a), kl = a.count ? a.kl / a.count : 0.0;
        printf("%-40s bits %.4f  PPL %.4f (want %.4f +- %.2g%%)  KL %.4e (want %.4e +- %.2g%%)\n", cfg, bits, p, want_ppl,
               100 * tol_ppl, kl, want_kl, 100 * tol_kl);
        CHECK(fabs(bits - want_bits) < 1e-4, "%s: bits per element %.4f, expected %.4f", cfg, bits, want_bits);
        CHECK(fabs(p / want_ppl - 1) <= tol_ppl, "%s: PPL %.4f, expected %.4f within %g", cfg, p, want_ppl, tol_ppl);
        CHECK(fabs(kl - want_kl) <= tol_kl * want_kl, "%s: KL %.6f, expected %.6f within %g", cfg, kl, want_kl, tol_kl);
        if (!strcmp(cfg, "fp32")) {
            /* the same config twice: the whole forward pass is deterministic */
            CHECK(kl == 0.0 && a.nll == base.nll, "fp32 twice: KL %g, NLL %.17g vs %.17g", kl, a.nll, base.nll);
            kl_of[3] = kl;
        } else {
            CHECK(kl > 0.0, "%s: a lossy cache with KL %g", cfg, kl);
        }
        if (!strcmp(cfg, "kivi-int2")) kl_of[0] = kl;
        if (!strcmp(cfg, "oscar-int2")) kl_of[1] = kl;
        if (!strcmp(cfg, "oscar-int2,jensen=taylor")) kl_of[2] = kl;
        n++;
    }
    fclose(ex);
    CHECK(n >= 10 && kl_of[3] == 0.0, "only %d rows in %s, or no fp32 row", n, path);
    /* KIVI (docs/methods/baselines.md) < OScaR (oscar.md) < OScaR + Jensen (jensen.md) */
    CHECK(kl_of[0] > kl_of[1] && kl_of[1] > kl_of[2] && kl_of[2] > 0,
          "KL order: kivi-int2 %g, oscar-int2 %g, oscar-int2+jensen %g", kl_of[0], kl_of[1], kl_of[2]);
    free(ref);
    free(ids);
}

/* Decode-faithful evaluation: with batch-invariant weight products, feeding a chunk 96 tokens
 * at a time gives exactly the per-token NLL of feeding it one token at a time, so every scored
 * position saw the cache as decoding would have left it. (With the default products, batch 1
 * uses gemv and batch 96 gemm: they round differently, and a quantizing cache can turn a
 * last-bit difference into a different code: the README reports how far that moves PPL.) */
static void test_batch_invariance(kvs_llama *m, const kvs_tokenizer *tk, const char *text_path) {
    enum { CTX = 192 };
    int32_t *ids = text_tokens(tk, text_path, CTX);
    if (!ids) return;
    const int V = kvs_llama_params(m)->n_vocab, rows = CTX / 2 - 1;
    float *a = malloc(sizeof(float) * rows * V), *b = malloc(sizeof(float) * rows * V);
    static const char *cfgs[] = {"q4_0", "oscar-int2,jensen=taylor,sinks=4,window=32"};
    kvs_llama_set_batch_invariant(m, 1);
    for (size_t ci = 0; ci < sizeof cfgs / sizeof *cfgs; ci++) {
        const kvs_ppl_acc pa = run_chunk(m, ids, cfgs[ci], CTX, 96, a, NULL);
        const kvs_ppl_acc pb = run_chunk(m, ids, cfgs[ci], CTX, 1, b, NULL);
        size_t where = 0;
        const double worst = max_abs_diff(a, b, (size_t)rows * V, &where);
        printf("%-44s batch 96 vs 1: PPL %.6f vs %.6f, max |log p diff| %g\n", cfgs[ci], kvs_ppl_value(&pa),
               kvs_ppl_value(&pb), worst);
        CHECK(worst == 0.0 && pa.nll == pb.nll, "%s: batch 96 and batch 1 differ (log p by %g at %zu)", cfgs[ci], worst, where);
    }
    kvs_llama_set_batch_invariant(m, 0);
    free(a);
    free(b);
    free(ids);
}

/* HeatKV end to end on the real model: calibrate on a slice of the book the other tests never
 * score, check the file names this model, then evict with it: decode-faithful (batch 96 and batch 1
 * give the same bits in batch-invariant mode), memory really smaller, KL finite and above 0. */
static kvs_ppl_acc run_chunk_cal(kvs_llama *m, const int32_t *ids, const char *cfg, const kvs_calib *cal, int ctx, int batch,
                                 float *logp, const float *ref, size_t *bytes) {
    kvs_config cc = kvs_llama_cache_config(m, ctx);
    cc.calib = cal;
    kvs_cache *c = NULL;
    kvs_ppl_acc a = {0, 0, 0, 0};
    CHECK_OK(kvs_config_parse(&cc, cfg));
    CHECK_OK(kvs_cache_create(&cc, &c));
    if (c) CHECK_OK(kvs_ppl_chunk(m, c, ids, ctx, batch, -1, logp, ref, &a));
    if (bytes) *bytes = kvs_cache_bytes(c);
    kvs_cache_free(c);
    return a;
}

static void test_heatkv(kvs_llama *m, const kvs_tokenizer *tk, const char *text_path) {
    enum { CAL_CTX = 384, CTX = 512 };
    const kvs_llama_hparams *hp = kvs_llama_params(m);
    FILE *f = fopen(text_path, "rb");
    static char buf[16384];
    size_t len = 0;
    if (f && fseek(f, 600000, SEEK_SET) == 0) len = fread(buf, 1, sizeof buf, f); /* the book's second half */
    if (f) fclose(f);
    int32_t *cal_ids = NULL, *ids = text_tokens(tk, text_path, CTX);
    int n = 0;
    CHECK_OK(kvs_tokenize(tk, buf, len, &cal_ids, &n));
    CHECK(n >= CAL_CTX, "calibration slice: %d tokens", n);
    kvs_heat_stats *st = NULL;
    kvs_calib *cal = NULL;
    kvs_cache *c = NULL;
    kvs_config cc = kvs_llama_cache_config(m, CAL_CTX);
    CHECK_OK(kvs_heat_stats_new(hp->n_layer, hp->n_head, hp->n_head_kv, hp->head_dim, CAL_CTX, 32, 4, 32, &st));
    CHECK_OK(kvs_cache_create(&cc, &c));
    if (!st || !c || !ids || n < CAL_CTX) goto out;
    kvs_heat_stats_begin(st);
    kvs_llama_set_observer(m, kvs_heat_observe, st);
    for (int p = 0; p < CAL_CTX; p += 128) CHECK_OK(kvs_llama_forward(m, c, cal_ids + p, 128, p, 128, NULL));
    kvs_llama_set_observer(m, NULL, NULL);
    CHECK_OK(kvs_heat_stats_finish(st, "test", kvs_llama_identity(m), &cal));
    if (!cal) goto out;
    uint64_t h;
    kvs_calib_model(cal, &h);
    CHECK(h == kvs_llama_identity(m), "calibration identity");

    const int V = hp->n_vocab, rows = CTX / 2 - 1;
    float *ref = malloc(sizeof(float) * rows * V), *b = malloc(sizeof(float) * rows * V);
    size_t full = 0, pruned = 0;
    run_chunk_cal(m, ids, "fp32,sinks=4,window=32", NULL, CTX, 128, ref, NULL, &full);
    static const char *cfgs[] = {"fp32,sinks=4,window=32,evict=uniform,budget=0.5",
                                 "fp32,sinks=4,window=32,heatkv=block,budget=0.5",
                                 "fp32,sinks=4,window=32,heatkv=prop,budget=0.5",
                                 "oscar-int2,jensen=taylor,sinks=4,window=32,heatkv=head,budget=0.5"};
    for (size_t i = 0; i < sizeof cfgs / sizeof *cfgs; i++) {
        const kvs_ppl_acc a = run_chunk_cal(m, ids, cfgs[i], cal, CTX, 128, NULL, ref, &pruned);
        const double kl = a.kl / (double)a.count;
        printf("%-66s PPL %.4f, KL %.5f, %zu bytes (fp32 %zu)\n", cfgs[i], kvs_ppl_value(&a), kl, pruned, full);
        CHECK(isfinite(kl) && kl > 0.0 && kl < 1.0, "%s: KL %g", cfgs[i], kl);
        CHECK(pruned < full * 6 / 10, "%s: %zu bytes, fp32 cache %zu", cfgs[i], pruned, full);
    }
    /* decode-faithful under eviction: blocks dropped inside a chunk hide from the right queries */
    static const char *inv[] = {"oscar-int2,jensen=taylor,sinks=4,window=32,heatkv=block,budget=0.5",
                                "q4_0,sinks=4,heatkv=prop,budget=0.4"};
    kvs_llama_set_batch_invariant(m, 1);
    for (size_t i = 0; i < sizeof inv / sizeof *inv; i++) {
        enum { IC = 192 };
        const kvs_ppl_acc pa = run_chunk_cal(m, ids, inv[i], cal, IC, 96, ref, NULL, NULL);
        const kvs_ppl_acc pb = run_chunk_cal(m, ids, inv[i], cal, IC, 1, b, NULL, NULL);
        const double worst = max_abs_diff(ref, b, (size_t)(IC / 2 - 1) * V, NULL);
        printf("%-66s batch 96 vs 1: max |log p diff| %g\n", inv[i], worst);
        CHECK(worst == 0.0 && pa.nll == pb.nll, "%s: batch 96 and batch 1 differ by %g", inv[i], worst);
    }
    kvs_llama_set_batch_invariant(m, 0);
    free(ref);
    free(b);
out:
    kvs_cache_free(c);
    kvs_calib_free(cal);
    kvs_heat_stats_free(st);
    free(cal_ids);
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
        test_batch_invariance(m, tk, argv[3]);
        test_heatkv(m, tk, argv[3]);
    }
    kvs_tokenizer_free(tk);
    kvs_llama_free(m);
    return test_done("test_model");
}
