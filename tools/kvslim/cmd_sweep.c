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
    char name[64], cfg[192];
    kvs_cache *cache;
    kvs_ppl_acc acc;
    double secs, bits, bytes8k, decode_tps;
} sweep_row;

/* "name:config;name:config;..." -- a bare config is its own name */
static const char *k_default_configs =
    "fp32;fp16;q8_0;q4_0;kivi-int4;kivi-int2;oscar-int4;oscar-int2;oscar-int2+jensen:oscar-int2,jensen=taylor";

static int parse_list(const char *list, sweep_row *rows, int max) {
    int n = 0;
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ';');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || len >= 190 || n == max) return -1;
        sweep_row *r = &rows[n++];
        memset(r, 0, sizeof *r);
        const char *colon = memchr(p, ':', len);
        const size_t nl = colon ? (size_t)(colon - p) : (len < 63 ? len : 63);
        if (nl == 0 || nl > 63) return -1;
        memcpy(r->name, p, nl);
        memcpy(r->cfg, colon ? colon + 1 : p, colon ? len - nl - 1 : len);
        p = e ? e + 1 : p + len;
    }
    return n;
}

static void write_svg(const char *path, const sweep_row *rows, int n, double ppl_fp32) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "kvslim sweep: cannot write '%s'\n", path);
        return;
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
    for (int i = 0; i < n; i++) {
        const double x = X(rows[i].bits), y = Y(kvs_ppl_value(&rows[i].acc));
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/><text x=\"%.1f\" y=\"%.1f\">%s</text>\n", x, y,
                strstr(rows[i].name, "oscar") ? "#d62728" : "#333", x + 6, y - 6 - 12 * (i % 2), rows[i].name);
    }
    fprintf(f, "</svg>\n");
#undef X
#undef Y
    fclose(f);
}

int cmd_sweep(int argc, char **argv) {
    const char *model = CLI_DEFAULT_MODEL, *text = CLI_DEFAULT_TEXT, *list = k_default_configs, *out = "sweep";
    int n_ctx = 1024, n_batch = 128, chunks = 8, full = 0, decode_steps = 32;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--model") && v) model = argv[++i];
        else if (!strcmp(a, "--text") && v) text = argv[++i];
        else if (!strcmp(a, "--configs") && v) list = argv[++i];
        else if (!strcmp(a, "--ctx") && v) n_ctx = atoi(argv[++i]);
        else if (!strcmp(a, "--batch") && v) n_batch = atoi(argv[++i]);
        else if (!strcmp(a, "--chunks") && v) chunks = atoi(argv[++i]);
        else if (!strcmp(a, "--decode") && v) decode_steps = atoi(argv[++i]);
        else if (!strcmp(a, "--out") && v) out = argv[++i];
        else if (!strcmp(a, "--full")) full = 1;
        else {
            fprintf(stderr, "usage: kvslim sweep [--model M] [--text FILE] [--ctx 1024] [--batch 128] [--chunks 8 | --full]\n"
                            "                    [--configs 'name:cfg;cfg;...'] [--decode 32] [--out PREFIX]\n");
            return 2;
        }
    }
    if (n_ctx < 8 || n_ctx > (1 << 16) || n_batch < 1 || chunks < 1 || decode_steps < 0 || decode_steps > 4096) {
        fprintf(stderr, "kvslim sweep: --ctx in [8, 65536], --batch >= 1, --chunks >= 1, --decode in [0, 4096]\n");
        return 2;
    }
    sweep_row rows[32];
    const int n_cfg = parse_list(list, rows, 32);
    if (n_cfg < 1) {
        fprintf(stderr, "kvslim sweep: bad --configs list\n");
        return 2;
    }
    kvs_llama *m;
    kvs_tokenizer *tk;
    if (cli_load(model, &m, &tk)) return 1;
    const kvs_llama_hparams *hp = kvs_llama_params(m);
    size_t len;
    char *buf = cli_read_file(text, &len);
    int32_t *ids = NULL;
    int n = 0, rc = 1;
    float *ref = NULL;
    if (!buf || kvs_tokenize(tk, buf, len, &ids, &n) != KVS_OK) {
        fprintf(stderr, "kvslim sweep: cannot read or tokenize '%s' (%s)\n", text, kvs_last_error());
        goto out;
    }
    int n_chunk = n / n_ctx;
    if (!full && chunks < n_chunk) n_chunk = chunks;
    if (n_chunk < 1) {
        fprintf(stderr, "kvslim sweep: %d tokens is less than one chunk of %d\n", n, n_ctx);
        goto out;
    }
    for (int c = 0; c < n_cfg; c++) {
        if (!(rows[c].cache = cli_cache(m, rows[c].cfg, n_ctx + decode_steps))) goto out;
        kvs_config kc = kvs_llama_cache_config(m, 8192);
        size_t b8;
        if (kvs_config_parse(&kc, rows[c].cfg) != KVS_OK || kvs_cache_bytes_for(&kc, 8192, &b8) != KVS_OK) goto out;
        rows[c].bytes8k = (double)b8;
        rows[c].bits = 8.0 * (double)b8 / (8192.0 * hp->n_layer * hp->n_head_kv * hp->head_dim * 2);
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
            if (kvs_ppl_chunk(m, rows[c].cache, ids + (size_t)ch * n_ctx, n_ctx, n_batch, bos, c == 0 ? ref : NULL,
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
    float *lg = malloc(sizeof(float) * hp->n_vocab);
    for (int c = 0; lg && c < n_cfg && decode_steps > 0; c++) {
        kvs_cache_reset(rows[c].cache);
        if (kvs_llama_forward(m, rows[c].cache, ids, n_ctx, 0, n_ctx - 1, lg) != KVS_OK) break;
        const double ts = bench_now();
        for (int s = 0; s < decode_steps; s++) {
            int32_t tok = ids[n_ctx + s < n ? n_ctx + s : s];
            if (kvs_llama_forward(m, rows[c].cache, &tok, 1, n_ctx + s, 0, lg) != KVS_OK) break;
        }
        rows[c].decode_tps = decode_steps / (bench_now() - ts);
    }
    free(lg);
    const double p0 = kvs_ppl_value(&rows[0].acc);
    printf("\nkvslim sweep: SmolLM2-135M-Instruct Q4_1, %s, ctx %d (second half scored), %d chunks, %ld scored tokens\n",
           text, n_ctx, n_chunk, rows[0].acc.count);
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
        json_str(&j, "text", text);
        json_num(&j, "ctx", n_ctx);
        json_num(&j, "batch", n_batch);
        json_num(&j, "chunks", n_chunk);
        json_num(&j, "scored_tokens", (double)rows[0].acc.count);
        json_open(&j, "rows", '[');
        for (int c = 0; c < n_cfg; c++) {
            const double p = kvs_ppl_value(&rows[c].acc);
            json_open(&j, NULL, '{');
            json_str(&j, "name", rows[c].name);
            json_str(&j, "config", rows[c].cfg);
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
        fclose(f);
        fprintf(stderr, "wrote %s\n", path);
    } else {
        fprintf(stderr, "kvslim sweep: cannot write '%s'\n", path);
    }
    snprintf(path, sizeof path, "%s.svg", out);
    write_svg(path, rows, n_cfg, p0);
    fprintf(stderr, "wrote %s (%.0f s in all)\n", path, bench_now() - t0);
    rc = 0;
out:
    for (int c = 0; c < n_cfg; c++) kvs_cache_free(rows[c].cache);
    free(ref);
    free(ids);
    free(buf);
    kvs_tokenizer_free(tk);
    kvs_llama_free(m);
    return rc;
}
