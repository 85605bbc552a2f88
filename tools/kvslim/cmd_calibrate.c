/* kvslim calibrate heatkv: run the uncompressed model over calibration text and store, per (layer,
 * KV head, block of older tokens), the attention mass later queries put there (docs/methods/heatkv.md).
 * The text is taken from the second half of the book by default, so that it never overlaps the
 * chunks that ppl and sweep score (they start at its first token). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"

int cmd_calibrate(int argc, char **argv) {
    const char *model = CLI_DEFAULT_MODEL, *text = CLI_DEFAULT_TEXT, *out = NULL;
    int n_ctx = 8192, block = 256, sinks = 4, window = 128, texts = 1, n_batch = 256, start = -1, force = 0;
    int probe_texts = 2, period = 1024;
    const cli_opt opts[] = {
        {"--model", "FILE", OPT_STR, &model, 0, 0, "GGUF model, Llama architecture"},
        {"--text", "FILE", OPT_STR, &text, 0, 0, "UTF-8 calibration text"},
        {"--out", "FILE", OPT_STR, &out, 0, 0, "calibration file to write (required)"},
        {"--ctx", "N", OPT_INT, &n_ctx, 64, 1 << 20, "tokens per calibration text"},
        {"--texts", "K", OPT_INT, &texts, 1, 1024, "consecutive texts of --ctx tokens averaged"},
        {"--start", "TOKEN", OPT_INT, &start, -1, 1 << 30, "first token used; -1 = the middle of the text"},
        {"--block", "N", OPT_INT, &block, 8, 1 << 16, "tokens per source block (a multiple of the cache group)"},
        {"--sinks", "N", OPT_INT, &sinks, 0, 1 << 16, "first positions left out of the blocks (always kept)"},
        {"--window", "N", OPT_INT, &window, 0, 1 << 20, "newest positions of a query left out (always kept)"},
        {"--batch", "N", OPT_INT, &n_batch, 1, 1 << 16, "tokens per forward call"},
        {"--force", NULL, OPT_FLAG, &force, 0, 0, "allow --ctx beyond the model's trained context"},
        {"--probe-texts", "K", OPT_INT, &probe_texts, 0, 64, "random-token sequences read twice to find retrieval heads"},
        {"--period", "N", OPT_INT, &period, 16, 1 << 16, "tokens per copy in those sequences"},
    };
    const cli_cmd cmd = {"calibrate heatkv",
                         "Per-head attention statistics for heatkv= cache budgets: runs the model with an fp32 cache\n"
                         "over --texts texts of --ctx tokens and writes, per (layer, KV head, source block), the\n"
                         "attention mass that later queries put on that block (mean and max over the query heads);\n"
                         "then reads --probe-texts random-token sequences twice and stores each head's echo and\n"
                         "induction mass (retrieval heads, for keep=).",
                         NULL, NULL, 0, opts, CLI_COUNT(opts)};
    int rc = cli_parse(&cmd, argc, argv), n_train;
    if (rc != CLI_RUN) return rc;
    if (!out) return cli_usage_error("--out FILE is required");
    if (block % 8) return cli_usage_error("--block: %d is not a multiple of 8", block);
    if (n_ctx < sinks + window + 2 * block)
        return cli_usage_error("--ctx %d leaves less than two blocks of %d after --sinks %d and --window %d", n_ctx, block,
                               sinks, window);
    if ((rc = cli_trained_ctx(model, &n_train)) || (rc = cli_check_ctx(n_train, n_ctx, force, "--ctx"))) return rc;
    kvs_llama *m;
    kvs_tokenizer *tk;
    if (cli_load(model, &m, &tk)) return CLI_EXIT_RUNTIME;
    const kvs_llama_hparams *hp = kvs_llama_params(m);
    rc = CLI_EXIT_RUNTIME;
    size_t len;
    char *buf = NULL;
    int32_t *ids = NULL;
    int n = 0;
    kvs_cache *cache = NULL;
    kvs_heat_stats *st = NULL;
    kvs_retrieval_stats *rs = NULL;
    double *retr_echo = NULL, *retr_ind = NULL;
    kvs_calib *cal = NULL;
    if (!(buf = cli_read_file(text, &len)) || kvs_tokenize(tk, buf, len, &ids, &n) != KVS_OK) {
        fprintf(stderr, "kvslim calibrate: cannot read or tokenize '%s' (%s)\n", text, kvs_last_error());
        goto out;
    }
    if (start < 0) start = n / 2;
    if ((long long)start + (long long)texts * n_ctx > n) {
        fprintf(stderr, "kvslim calibrate: tokens %d .. %lld needed, '%s' has %d\n", start, (long long)start + (long long)texts * n_ctx,
                text, n);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    const int probe_ctx = probe_texts > 0 ? 1 + 2 * period : 0; /* the retrieval probe's sequences */
    kvs_config cfg = kvs_llama_cache_config(m, n_ctx > probe_ctx ? n_ctx : probe_ctx);
    if (kvs_cache_create(&cfg, &cache) != KVS_OK ||
        kvs_heat_stats_new(hp->n_layer, hp->n_head, hp->n_head_kv, hp->head_dim, n_ctx, block, sinks, window, &st) != KVS_OK) {
        fprintf(stderr, "kvslim calibrate: %s\n", kvs_last_error());
        goto out;
    }
    fprintf(stderr, "kvslim calibrate heatkv: %s, tokens %d .. %d of %s (%d texts of %d), blocks of %d after %d sinks, "
            "window %d\n", cli_basename(model), start, start + texts * n_ctx, text, texts, n_ctx, block, sinks, window);
    kvs_llama_set_observer(m, kvs_heat_observe, st);
    const double t0 = bench_now();
    for (int x = 0; x < texts; x++) {
        kvs_heat_stats_begin(st);
        kvs_cache_reset(cache);
        const int32_t *tok = ids + start + (size_t)x * n_ctx;
        for (int p = 0; p < n_ctx; p += n_batch) {
            const int nb = n_ctx - p < n_batch ? n_ctx - p : n_batch;
            if (kvs_llama_forward(m, cache, tok + p, nb, p, nb, NULL) != KVS_OK || kvs_heat_stats_error(st) != KVS_OK) {
                fprintf(stderr, "\nkvslim calibrate: %s\n", kvs_last_error());
                goto out;
            }
            cli_progress("calibrate heatkv", (long)x * n_ctx + p + nb, (long)texts * n_ctx, t0);
        }
    }
    kvs_llama_set_observer(m, NULL, NULL);
    if (probe_texts > 0) { /* retrieval heads: random tokens read twice (retrieval_stats.c) */
        if (kvs_retrieval_stats_new(hp->n_layer, hp->n_head, hp->n_head_kv, hp->head_dim, period, &rs) != KVS_OK) goto fail;
        const int rctx = kvs_retrieval_stats_ctx(rs), nv = kvs_tokenizer_n_vocab(tk);
        int32_t *seq = malloc((size_t)rctx * sizeof *seq);
        if (!seq) {
            fprintf(stderr, "kvslim calibrate: out of memory\n");
            goto out;
        }
        const int lo = nv > 2000 ? 1000 : nv / 2; /* ordinary tokens: skip the low ids, where the specials are */
        uint64_t lcg = 0x2545F4914F6CDD1Dull;
        kvs_llama_set_observer(m, kvs_retrieval_observe, rs);
        for (int x = 0; x < probe_texts; x++) {
            kvs_retrieval_stats_begin(rs);
            kvs_cache_reset(cache);
            seq[0] = kvs_tokenizer_bos(tk) >= 0 ? kvs_tokenizer_bos(tk) : 0;
            for (int i = 1; i <= period; i++) {
                lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
                seq[i] = seq[period + i] = (int32_t)(lo + (lcg >> 33) % (uint64_t)(nv - lo));
            }
            for (int p = 0; p < rctx; p += n_batch) {
                const int nb = rctx - p < n_batch ? rctx - p : n_batch;
                if (kvs_llama_forward(m, cache, seq + p, nb, p, nb, NULL) != KVS_OK || kvs_retrieval_stats_error(rs) != KVS_OK) {
                    free(seq);
                    goto fail;
                }
                cli_progress("calibrate retrieval", (long)x * rctx + p + nb, (long)probe_texts * rctx, t0);
            }
        }
        free(seq);
        kvs_llama_set_observer(m, NULL, NULL);
        const int U = hp->n_layer * hp->n_head_kv;
        double *echo = malloc(2 * (size_t)U * sizeof(double)), *ind = malloc(2 * (size_t)U * sizeof(double));
        if (!echo || !ind) {
            free(echo), free(ind);
            fprintf(stderr, "kvslim calibrate: out of memory\n");
            goto out;
        }
        kvs_retrieval_stats_scores(rs, echo, ind);
        retr_echo = echo, retr_ind = ind;
    }
    char name[128];
    cli_model_name(m, model, name, sizeof name);
    if (kvs_heat_stats_finish(st, name, kvs_llama_identity(m), &cal) != KVS_OK ||
        (retr_ind && kvs_calib_set_retrieval(cal, period, probe_texts, retr_echo, retr_ind) != KVS_OK) ||
        kvs_calib_save(cal, out) != KVS_OK) {
        fprintf(stderr, "kvslim calibrate: %s\n", kvs_last_error());
        goto out;
    }
    if (retr_ind) { /* the heads keep= protects first */
        const int U = hp->n_layer * hp->n_head_kv;
        char *seen = calloc((size_t)U, 1);
        printf("retrieval heads in keep= order (echo + induction mass, mean over query heads):");
        for (int k = 0; seen && k < 12 && k < U; k++) {
            int best = -1;
            for (int u = 0; u < U; u++)
                if (!seen[u] && (best < 0 || retr_echo[u] + retr_ind[u] > retr_echo[best] + retr_ind[best])) best = u;
            seen[best] = 1;
            printf(" L%d.%d %.3f", best / hp->n_head_kv, best % hp->n_head_kv, retr_echo[best] + retr_ind[best]);
        }
        printf("\n");
        free(seen);
    }
    printf("wrote %s: %d layers x %d KV heads, %d source blocks of %d, %d text(s) of %d tokens, %.0f s\n", out, hp->n_layer,
           hp->n_head_kv, (n_ctx - sinks) / block, block, texts, n_ctx, bench_now() - t0);
    rc = CLI_EXIT_OK;
    goto out;
fail:
    fprintf(stderr, "\nkvslim calibrate: %s\n", kvs_last_error());
out:
    kvs_retrieval_stats_free(rs);
    free(retr_echo), free(retr_ind);
    kvs_calib_free(cal);
    kvs_heat_stats_free(st);
    kvs_cache_free(cache);
    free(ids);
    free(buf);
    kvs_tokenizer_free(tk);
    kvs_llama_free(m);
    return rc;
}
