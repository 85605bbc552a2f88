/* kvslim sweep: the main job. Perplexity, KL divergence against the fp32 cache, bits per element,
 * KV bytes at 8K context and decode speed for a list of cache configs on the bundled model and
 * text, evaluated in lockstep chunk by chunk (the fp32 run of a chunk is the KL reference of the
 * others). Prints a table, writes it as JSON and draws the Pareto picture (SVG). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench.h"
#include "cli.h"
#include "json.h"

typedef struct {
    char name[64], cfg[512];
    kvs_cache *cache;
    kvs_ppl_acc acc;
    double secs, bits, bytes8k, decode_tps;
    int folded; /* --fold: W_o folded with this low-rank cache's value bases (kvs_llama_fold) */
} sweep_row;

/* q4_0 twice: as llama.cpp with LLAMA_ATTN_ROT_DISABLE=1, and as its default (Hadamard rotation) */
static const char *k_default_configs =
    "fp32;fp16;q8_0;q4_0;q4_0+rot:q4_0,rotate=hadamard;kivi-int4;kivi-int2;oscar-int4;oscar-int2;"
    "oscar-int2+jensen:oscar-int2,jensen=taylor;oscar-int2+jensen+sinks4:oscar-int2,jensen=taylor,sinks=4";

/* 0, or CLI_EXIT_RUNTIME when the file cannot be written */
static int write_svg(const char *path, const sweep_row *rows, int n, double ppl_fp32) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "kvslim sweep: cannot write '%s'\n", path);
        return CLI_EXIT_RUNTIME;
    }
    const double W = 760, H = 480, L = 80, R = 30, T = 50, B = 60;
    double x0 = log2(2.0), x1 = log2(40.0), y0 = 1e30, y1 = -1e30;
    for (int i = 0; i < n; i++) {
        const double p = kvs_ppl_value(&rows[i].acc);
        y0 = fmin(y0, p);
        y1 = fmax(y1, p);
    }
    const double pad = (y1 - y0) * 0.1 + 1e-3;
    y0 -= pad;
    y1 += pad;
#define X(v) (L + (log2(v) - x0) / (x1 - x0) * (W - L - R))
#define Y(v) (H - B - ((v) - y0) / (y1 - y0) * (H - T - B))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"25\" font-size=\"15\">Perplexity vs bits per cached element (all metadata, 8K context)</text>\n", L);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, H - B, W - R, H - B);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, T, L, H - B);
    const double ticks[] = {2, 3, 4, 6, 8, 16, 32};
    for (int i = 0; i < 7; i++)
        fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%g</text><line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#ddd\"/>\n",
                X(ticks[i]), H - B + 18, ticks[i], X(ticks[i]), T, X(ticks[i]), H - B);
    for (int i = 0; i <= 5; i++) {
        const double v = y0 + (y1 - y0) * i / 5;
        fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text><line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#eee\"/>\n",
                L - 6, Y(v) + 4, v, L, Y(v), W - R, Y(v));
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">bits per element (log scale)</text>\n", (L + W - R) / 2, H - 15);
    fprintf(f, "<text x=\"18\" y=\"%.0f\" transform=\"rotate(-90 18 %.0f)\" text-anchor=\"middle\">perplexity</text>\n", (T + H - B) / 2, (T + H - B) / 2);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>\n", L, Y(ppl_fp32), W - R, Y(ppl_fp32));
    /* Pareto front: no other config has fewer bits and lower perplexity */
    int order[64], m = 0;
    for (int i = 0; i < n; i++) {
        int dominated = 0;
        for (int j = 0; j < n; j++)
            if (j != i && rows[j].bits <= rows[i].bits && kvs_ppl_value(&rows[j].acc) < kvs_ppl_value(&rows[i].acc)) dominated = 1;
        if (!dominated) order[m++] = i;
    }
    for (int a = 0; a < m; a++)
        for (int b = a + 1; b < m; b++)
            if (rows[order[b]].bits < rows[order[a]].bits) {
                const int t = order[a];
                order[a] = order[b];
                order[b] = t;
            }
    fprintf(f, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"");
    for (int a = 0; a < m; a++) fprintf(f, "%.1f,%.1f ", X(rows[order[a]].bits), Y(kvs_ppl_value(&rows[order[a]].acc)));
    fprintf(f, "\"/>\n");
    /* labels: right of the point, else left, moved up or down until they clear the labels placed
     * before them (boxes of ~6.6 px per character, 12 px high) */
    double box[64][4];
    int placed = 0;
    for (int i = 0; i < n; i++) {
        const double x = X(rows[i].bits), y = Y(kvs_ppl_value(&rows[i].acc)), w = 6.6 * (double)strlen(rows[i].name);
        double lx = x + 6, ly = y - 6;
        for (int t = 0; t < 24; t++) {
            const double dy = (t / 2 % 2 ? 1 : -1) * 13.0 * (t / 4), cx = t % 2 ? x - 6 - w : x + 6, cy = y - 6 + dy;
            int clash = 0;
            for (int b = 0; b < placed && !clash; b++)
                clash = cx < box[b][2] && box[b][0] < cx + w && cy - 11 < box[b][3] && box[b][1] < cy + 1;
            if (!clash) {
                lx = cx;
                ly = cy;
                break;
            }
        }
        if (placed < 64) {
            box[placed][0] = lx, box[placed][1] = ly - 11, box[placed][2] = lx + w, box[placed][3] = ly + 1;
            placed++;
        }
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/><text x=\"%.1f\" y=\"%.1f\">%s</text>\n", x, y,
                strstr(rows[i].name, "oscar") ? "#d62728" : "#333", lx, ly, rows[i].name);
    }
    fprintf(f, "</svg>\n");
#undef X
#undef Y
    return fclose(f) ? CLI_EXIT_RUNTIME : 0;
}

int cmd_sweep(int argc, char **argv) {
    const char *model = CLI_DEFAULT_MODEL, *text = CLI_DEFAULT_TEXT, *list = k_default_configs, *out = "sweep";
    int n_ctx = 1024, n_batch = 128, chunks = 8, full = 0, decode_steps = 32, force = 0, start = 0, fold = 0;
    const cli_opt opts[] = {
        {"--model", "FILE", OPT_STR, &model, 0, 0, "GGUF model, Llama architecture"},
        {"--text", "FILE", OPT_STR, &text, 0, 0, "UTF-8 text to score"},
        {"--ctx", "N", OPT_INT, &n_ctx, 8, 1 << 16, "tokens per chunk, its second half scored"},
        {"--batch", "N", OPT_INT, &n_batch, 1, 1 << 16, "tokens per forward call"},
        {"--chunks", "K", OPT_INT, &chunks, 1, 1 << 30, "chunks to score"},
        {"--full", NULL, OPT_FLAG, &full, 0, 0, "score the whole text (hours) instead of --chunks"},
        {"--start", "TOKEN", OPT_INT, &start, 0, 1 << 30,
         "first token of the first chunk (e.g. the calibration half of the text, to choose a variant)"},
        {"--configs", "LIST", OPT_STR, &list, 0, 0,
         "'name:config;config;...', at most 32, the first is the KL reference"},
        {"--decode", "N", OPT_INT, &decode_steps, 0, 4096, "decode steps timed per config, 0 = none"},
        {"--out", "PREFIX", OPT_STR, &out, 0, 0, "writes PREFIX.json and PREFIX.svg"},
        {"--force", NULL, OPT_FLAG, &force, 0, 0, "allow --ctx + --decode beyond the model's trained context"},
        {"--fold", NULL, OPT_FLAG, &fold, 0, 0, "fold W_o with the value bases of each low-rank config that allows it\n"
                                                "(window=0, sinks=0, self=cache; docs/methods/stiefel.md)"},
    };
    const cli_cmd cmd = {"sweep",
                         "The main job: perplexity, KL divergence against the first config, bits per element, KV\n"
                         "memory at 8K and decode speed of a list of cache configs, chunk by chunk in lockstep.\n"
                         "Prints a table, writes it as JSON and draws perplexity against bits per element (SVG).",
                         NULL, NULL, 0, opts, CLI_COUNT(opts)};
    int rc = cli_parse(&cmd, argc, argv), n_train;
    if (rc != CLI_RUN) return rc;
    sweep_row rows[32];
    cli_named named[32];
    const int n_cfg = cli_parse_configs(list, named, 32);
    for (int c = 0; c < n_cfg; c++) {
        memset(&rows[c], 0, sizeof rows[c]);
        memcpy(rows[c].name, named[c].name, sizeof rows[c].name);
        memcpy(rows[c].cfg, named[c].cfg, sizeof rows[c].cfg);
    }
    if (n_cfg < 1)
        return cli_usage_error("--configs: '%s' is not a list of 1 to 32 'name:config' or 'config' items "
                               "separated by ';' (names under 64 bytes, configs under 512)", list);
    /* decoding continues past the chunk: those positions count too */
    if ((rc = cli_trained_ctx(model, &n_train)) ||
        (rc = cli_check_ctx(n_train, (long)n_ctx + decode_steps, force, "--ctx + --decode")))
        return rc;
    kvs_llama *m;
    kvs_tokenizer *tk;
    if (cli_load(model, &m, &tk)) return CLI_EXIT_RUNTIME;
    const kvs_llama_hparams *hp = kvs_llama_params(m);
    size_t len;
    char *buf = NULL;
    int32_t *ids = NULL;
    int n = 0;
    float *ref = NULL, *lg = NULL;
    char name[128], label[320];
    const char *file = cli_basename(model);
    if (cli_model_name(m, model, name, sizeof name)) snprintf(label, sizeof label, "%s (%s)", name, file);
    else snprintf(label, sizeof label, "%s", file);
    /* the caches first: a config that is bad for this model fails before the slow part */
    for (int c = 0; c < n_cfg; c++) {
        if ((rc = cli_cache(m, "--configs", rows[c].cfg, n_ctx + decode_steps, &rows[c].cache))) goto out;
        rc = CLI_EXIT_RUNTIME;
        if (fold) { /* the configs whose every attended token is stored as coefficients */
            rows[c].folded = kvs_llama_fold(m, rows[c].cache) == KVS_OK;
            if (kvs_llama_fold(m, NULL) != KVS_OK) goto out;
            if (rows[c].folded) fprintf(stderr, "kvslim sweep: %s: W_o folded with its value bases\n", rows[c].name);
        }
        kvs_config kc = kvs_llama_cache_config(m, 8192); /* a budget then counts 8192 slots per head */
        size_t b8;
        if (cli_config(m, "--configs", rows[c].cfg, &kc) || kvs_cache_bytes_for(&kc, 8192, &b8) != KVS_OK) {
            fprintf(stderr, "kvslim sweep: %s: %s\n", rows[c].name, kvs_last_error());
            goto out;
        }
        rows[c].bytes8k = (double)b8;
        rows[c].bits = 8.0 * (double)b8 / (8192.0 * hp->n_layer * hp->n_head_kv * hp->head_dim * 2);
    }
    if (!(buf = cli_read_file(text, &len)) || kvs_tokenize(tk, buf, len, &ids, &n) != KVS_OK) {
        fprintf(stderr, "kvslim sweep: cannot read or tokenize '%s' (%s)\n", text, kvs_last_error());
        goto out;
    }
    if (start >= n) {
        fprintf(stderr, "kvslim sweep: --start %d is past the text's %d tokens\n", start, n);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    int n_chunk = (n - start) / n_ctx;
    if (!full && chunks < n_chunk) n_chunk = chunks;
    if (n_chunk < 1) {
        fprintf(stderr, "kvslim sweep: %d tokens is less than one chunk of %d\n", n, n_ctx);
        goto out;
    }
    const size_t scored = (size_t)(n_ctx / 2 - 1);
    ref = malloc(scored * (size_t)hp->n_vocab * sizeof(float));
    if (!ref) {
        fprintf(stderr, "kvslim sweep: out of memory for the reference distributions\n");
        goto out;
    }
    fprintf(stderr, "kvslim sweep: %s, %d tokens of %s; %d chunks of %d (batch %d), %d configs; KL against '%s'\n", model, n,
            text, n_chunk, n_ctx, n_batch, n_cfg, rows[0].name);
    const int bos = kvs_tokenizer_add_bos(tk) ? kvs_tokenizer_bos(tk) : -1;
    const double t0 = bench_now();
    for (int ch = 0; ch < n_chunk; ch++)
        for (int c = 0; c < n_cfg; c++) {
            const double ts = bench_now();
            if (fold && kvs_llama_fold(m, rows[c].folded ? rows[c].cache : NULL) != KVS_OK) {
                fprintf(stderr, "\nkvslim sweep: %s: %s\n", rows[c].name, kvs_last_error());
                goto out;
            }
            if (kvs_ppl_chunk(m, rows[c].cache, ids + start + (size_t)ch * n_ctx, n_ctx, n_batch, bos, c == 0 ? ref : NULL,
                              c == 0 ? NULL : ref, &rows[c].acc) != KVS_OK) {
                fprintf(stderr, "\nkvslim sweep: %s: %s\n", rows[c].name, kvs_last_error());
                goto out;
            }
            rows[c].secs += bench_now() - ts;
            char what[96];
            snprintf(what, sizeof what, "chunk %d/%d %.40s", ch + 1, n_chunk, rows[c].name);
            cli_progress(what, (long)ch * n_cfg + c + 1, (long)n_chunk * n_cfg, t0);
        }
    /* decode speed: after the first chunk's context, one token at a time */
    if (!(lg = malloc(sizeof(float) * hp->n_vocab))) {
        fprintf(stderr, "kvslim sweep: out of memory for the logits\n");
        goto out;
    }
    for (int c = 0; c < n_cfg && decode_steps > 0; c++) {
        kvs_cache_reset(rows[c].cache);
        if (fold && kvs_llama_fold(m, rows[c].folded ? rows[c].cache : NULL) != KVS_OK) {
            fprintf(stderr, "kvslim sweep: %s: %s\n", rows[c].name, kvs_last_error());
            goto out;
        }
        if (kvs_llama_forward(m, rows[c].cache, ids, n_ctx, 0, n_ctx - 1, lg) != KVS_OK) {
            fprintf(stderr, "kvslim sweep: decode %s: %s\n", rows[c].name, kvs_last_error());
            goto out;
        }
        const double ts = bench_now();
        for (int s = 0; s < decode_steps; s++) {
            int32_t tok = ids[n_ctx + s < n ? n_ctx + s : s];
            if (kvs_llama_forward(m, rows[c].cache, &tok, 1, n_ctx + s, 0, lg) != KVS_OK) {
                fprintf(stderr, "kvslim sweep: decode %s: %s\n", rows[c].name, kvs_last_error());
                goto out;
            }
        }
        rows[c].decode_tps = decode_steps / (bench_now() - ts);
    }
    const double p0 = kvs_ppl_value(&rows[0].acc);
    printf("\nkvslim sweep: %s, %s from token %d, ctx %d (second half scored), %d chunks, %ld scored tokens\n", label, text,
           start, n_ctx, n_chunk, rows[0].acc.count);
    printf("| config | bits/elem | KV MiB @8K | PPL | vs %s | mean KL | decode tok/s |\n", rows[0].name);
    printf("|---|---:|---:|---:|---:|---:|---:|\n");
    for (int c = 0; c < n_cfg; c++) {
        const double p = kvs_ppl_value(&rows[c].acc);
        printf("| %s | %.3f | %.1f | %.4f ± %.4f | %+.2f%% | %.5f | %.1f |\n", rows[c].name, rows[c].bits,
               rows[c].bytes8k / 1048576.0, p, kvs_ppl_error(&rows[c].acc), 100.0 * (p / p0 - 1.0),
               c == 0 ? 0.0 : rows[c].acc.kl / (double)rows[c].acc.count, rows[c].decode_tps);
    }
    char path[1024];
    snprintf(path, sizeof path, "%s.json", out);
    FILE *f = fopen(path, "w");
    if (f) {
        json_w j;
        json_begin(&j, f, '{');
        json_str(&j, "model", model);
        json_str(&j, "model_name", name);
        json_str(&j, "model_file", file);
        json_str(&j, "text", text);
        json_num(&j, "ctx", n_ctx);
        json_num(&j, "start_token", start);
        json_num(&j, "batch", n_batch);
        json_num(&j, "chunks", n_chunk);
        json_num(&j, "scored_tokens", (double)rows[0].acc.count);
        json_open(&j, "rows", '[');
        for (int c = 0; c < n_cfg; c++) {
            const double p = kvs_ppl_value(&rows[c].acc);
            json_open(&j, NULL, '{');
            json_str(&j, "name", rows[c].name);
            json_str(&j, "config", rows[c].cfg);
            if (rows[c].folded) json_num(&j, "folded_wo", 1);
            json_num(&j, "bits_per_element", rows[c].bits);
            json_num(&j, "kv_bytes_8k", rows[c].bytes8k);
            json_num(&j, "ppl", p);
            json_num(&j, "ppl_err", kvs_ppl_error(&rows[c].acc));
            json_num(&j, "ppl_change_pct", 100.0 * (p / p0 - 1.0));
            json_num(&j, "mean_kl", c == 0 ? 0.0 : rows[c].acc.kl / (double)rows[c].acc.count);
            json_num(&j, "decode_tokens_per_s", rows[c].decode_tps);
            json_num(&j, "prefill_tokens_per_s", (double)n_chunk * n_ctx / rows[c].secs);
            json_end(&j, '}');
        }
        json_end(&j, ']');
        json_end(&j, '}');
        fputc('\n', f);
    }
    /* the table is printed either way; a file that could not be written is still a failed run */
    int wrote = f && !fclose(f);
    if (wrote) fprintf(stderr, "wrote %s\n", path);
    else fprintf(stderr, "kvslim sweep: cannot write '%s'\n", path);
    snprintf(path, sizeof path, "%s.svg", out);
    if (write_svg(path, rows, n_cfg, p0) == 0) fprintf(stderr, "wrote %s (%.0f s in all)\n", path, bench_now() - t0);
    else wrote = 0;
    rc = wrote ? CLI_EXIT_OK : CLI_EXIT_RUNTIME;
out:
    for (int c = 0; c < n_cfg; c++) kvs_cache_free(rows[c].cache);
    free(lg);
    free(ref);
    free(ids);
    free(buf);
    kvs_tokenizer_free(tk);
    kvs_llama_free(m);
    return rc;
}
