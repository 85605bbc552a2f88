/* kvslim bench decode: end-to-end decode speed of the model engine after a prefill of the given
 * depth, per cache config, split into the time of the weight products, of the attention (kvs_attend
 * and the cache append) and of the rest, from the engine's own clocks (kvs_llama_timing). Each
 * decode step is a real one-token forward with its logits (the output layer included), fed the
 * book's next token so every config sees the same tokens; the prefill goes through the same
 * forward in chunks of --batch tokens and is timed too. The configs of one depth take turns step
 * by step (run_depth), so their ratios are measured under the same machine state. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tools/kvslim/args.h"
#include "../tools/kvslim/cli.h"
#include "../tools/kvslim/json.h"
#include "bench.h"
#include "kvslim.h"

static const char *k_default_configs = "fp32;q4_0;oscar-int2+jensen:oscar-int2,jensen=taylor";

typedef struct {
    const char *name;
    int depth, steps;
    double prefill_tok_s, tok_s, ms, weights_ms, attention_ms, other_ms, cache_bytes;
} decode_row;

/* Prefill `depth` tokens into one cache per config, then `steps` one-token forwards each; fills
 * rows[0..ncfg). The configs take turns, chunk by chunk in the prefill and step by step in the
 * decode, so a slow spell of this shared machine falls on every config alike and the ratios of one
 * run stay comparable. 0 or an exit code. */
static int run_depth(kvs_llama *m, const cli_named *cfgs, int ncfg, const int32_t *ids, int depth, int steps, int batch,
                     decode_row *rows) {
    kvs_cache *c[16] = {0};
    double pre_s[16] = {0};
    kvs_llama_timing sum[16];
    memset(sum, 0, sizeof sum);
    int rc = 0, ci = 0;
    for (ci = 0; ci < ncfg && !rc; ci++) rc = cli_cache(m, "--cache", cfgs[ci].cfg, depth + steps + 1, &c[ci]);
    const int V = kvs_llama_params(m)->n_vocab;
    float *lg = malloc(sizeof(float) * V);
    if (rc || !lg) {
        rc = rc ? rc : CLI_EXIT_RUNTIME;
        goto out;
    }
    rc = CLI_EXIT_RUNTIME;
    for (int p = 0; p < depth; p += batch) {
        const int n = depth - p < batch ? depth - p : batch;
        for (ci = 0; ci < ncfg; ci++) {
            const double t0 = bench_now();
            if (kvs_llama_forward(m, c[ci], ids + p, n, p, n - 1, p + n == depth ? lg : NULL) != KVS_OK) goto fail;
            pre_s[ci] += bench_now() - t0;
        }
    }
    for (int s = 0; s < steps; s++)
        for (ci = 0; ci < ncfg; ci++) {
            kvs_llama_timing tm;
            kvs_llama_timing_reset(m);
            if (kvs_llama_forward(m, c[ci], ids + depth + s, 1, depth + s, 0, lg) != KVS_OK) goto fail;
            kvs_llama_timing_get(m, &tm);
            sum[ci].weights_s += tm.weights_s;
            sum[ci].attention_s += tm.attention_s;
            sum[ci].total_s += tm.total_s;
        }
    for (ci = 0; ci < ncfg; ci++) {
        decode_row *r = &rows[ci];
        r->name = cfgs[ci].name;
        r->depth = depth;
        r->steps = steps;
        r->prefill_tok_s = depth ? depth / pre_s[ci] : 0.0;
        r->tok_s = steps / sum[ci].total_s;
        r->ms = 1e3 * sum[ci].total_s / steps;
        r->weights_ms = 1e3 * sum[ci].weights_s / steps;
        r->attention_ms = 1e3 * sum[ci].attention_s / steps;
        r->other_ms = r->ms - r->weights_ms - r->attention_ms;
        r->cache_bytes = (double)kvs_cache_bytes(c[ci]);
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "bench decode: %s: %s\n", cfgs[ci].name, kvs_last_error());
out:
    free(lg);
    for (int i = 0; i < ncfg; i++) kvs_cache_free(c[i]);
    return rc;
}

int bench_decode_main(int argc, char **argv) {
    cli_ints depths = {3, {1024, 4096, 8192}};
    int steps = 32, batch = 256, json = 0, force = 0;
    const char *model = CLI_DEFAULT_MODEL, *text = CLI_DEFAULT_TEXT, *list = k_default_configs;
    const cli_opt opts[] = {
        {"--depth", "N,N,...", OPT_INTS, &depths, 0, 1 << 20, "tokens in the cache before the timed steps (0: none)"},
        {"--cache", "LIST", OPT_STR, &list, 0, 0, "'name:config;config;...', at most 16 cache configs"},
        {"--steps", "N", OPT_INT, &steps, 1, 4096, "decode steps timed per config and depth"},
        {"--batch", "N", OPT_INT, &batch, 1, 65536, "tokens per forward call in the prefill"},
        {"--model", "FILE", OPT_STR, &model, 0, 0, "GGUF model, Llama architecture"},
        {"--text", "FILE", OPT_STR, &text, 0, 0, "UTF-8 text whose tokens are fed"},
        {"--json", NULL, OPT_FLAG, &json, 0, 0, "JSON on stdout instead of the table"},
        {"--force", NULL, OPT_FLAG, &force, 0, 0, "allow depth + steps beyond the model's trained context"},
    };
    const cli_cmd cmd = {"bench decode",
                         "End-to-end decode speed after a prefill of each depth, per cache config: tokens/s and each\n"
                         "step's time in the weight products, the attention (attend + append) and the rest. The\n"
                         "configs of a depth hold their caches together and take turns step by step.",
                         NULL, NULL, 0, opts, CLI_COUNT(opts)};
    int rc = cli_parse(&cmd, argc, argv);
    if (rc != CLI_RUN) return rc;
    cli_named cfgs[16];
    const int ncfg = cli_parse_configs(list, cfgs, 16);
    if (ncfg < 1) return cli_usage_error("--cache: '%s' is not a list of 1 to 16 'name:config' or 'config' items", list);
    int maxd = 0, n_train = 0;
    for (int i = 0; i < depths.n; i++) maxd = depths.v[i] > maxd ? depths.v[i] : maxd;
    if ((rc = cli_trained_ctx(model, &n_train)) || (rc = cli_check_ctx(n_train, (long)maxd + steps, force, "--depth + --steps")))
        return rc;
    kvs_llama *m;
    kvs_tokenizer *tk;
    if (cli_load(model, &m, &tk)) return CLI_EXIT_RUNTIME;
    for (int i = 0; i < ncfg; i++) { /* every config checked before the slow part */
        kvs_config c = kvs_llama_cache_config(m, maxd + steps + 1);
        if ((rc = cli_config(m, "--cache", cfgs[i].cfg, &c))) goto done;
    }
    size_t len = 0;
    char *buf = cli_read_file(text, &len);
    int32_t *ids = NULL;
    int n = 0;
    rc = CLI_EXIT_RUNTIME;
    if (!buf) goto done;
    if (kvs_tokenize(tk, buf, len, &ids, &n) != KVS_OK || n < maxd + steps) {
        fprintf(stderr, "bench decode: %s has %d tokens, need %d (%s)\n", text, n, maxd + steps, kvs_last_error());
        free(buf);
        goto done;
    }
    free(buf);
    decode_row *rows = calloc((size_t)ncfg * depths.n, sizeof *rows);
    if (!rows) goto done_ids;
    const double t_all = bench_now();
    for (int di = 0; di < depths.n; di++) {
        cli_progress("bench decode", di, depths.n, t_all);
        if ((rc = run_depth(m, cfgs, ncfg, ids, depths.v[di], steps, batch, &rows[di * ncfg]))) goto done_rows;
    }
    cli_progress("bench decode", depths.n, depths.n, t_all);
    fprintf(stderr, "\n");
    const double wbytes = (double)kvs_llama_weight_bytes(m);
    if (json) {
        json_w j;
        json_begin(&j, stdout, '{');
        json_str(&j, "model", cli_basename(model));
        json_num(&j, "weight_bytes", wbytes);
        json_num(&j, "steps", steps);
        json_open(&j, "rows", '[');
        for (int i = 0; i < ncfg * depths.n; i++) {
            const decode_row *r = &rows[i];
            json_open(&j, NULL, '{');
            json_str(&j, "config", r->name);
            json_num(&j, "depth", r->depth);
            json_num(&j, "prefill_tokens_per_s", r->prefill_tok_s);
            json_num(&j, "decode_tokens_per_s", r->tok_s);
            json_num(&j, "ms_per_token", r->ms);
            json_num(&j, "weights_ms", r->weights_ms);
            json_num(&j, "attention_ms", r->attention_ms);
            json_num(&j, "other_ms", r->other_ms);
            json_num(&j, "weights_gbs", wbytes / (r->weights_ms * 1e-3) / 1e9); /* the weight bytes each step streams */
            json_num(&j, "cache_bytes", r->cache_bytes);
            json_end(&j, '}');
        }
        json_end(&j, ']');
        json_end(&j, '}');
        printf("\n");
    } else {
        printf("decode, %s, weights %.1f MB per step, %d steps per row\n", cli_basename(model), wbytes / 1e6, steps);
        printf("| config | depth | prefill tok/s | decode tok/s | ms/token | weights ms | attention ms | other ms | "
               "(w+a)/total | cache MB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (int i = 0; i < ncfg * depths.n; i++) {
            const decode_row *r = &rows[i];
            printf("| %s | %d | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %.0f%% | %.1f |\n", r->name, r->depth, r->prefill_tok_s,
                   r->tok_s, r->ms, r->weights_ms, r->attention_ms, r->other_ms,
                   100.0 * (r->weights_ms + r->attention_ms) / r->ms, r->cache_bytes / 1e6);
        }
    }
    rc = 0;
done_rows:
    free(rows);
done_ids:
    free(ids);
done:
    kvs_tokenizer_free(tk);
    kvs_llama_free(m);
    return rc;
}
