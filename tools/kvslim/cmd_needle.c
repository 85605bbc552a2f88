/* kvslim needle: pass-key retrieval (Mohtashami & Jaggi's test) through a cache config. A random
 * five-digit key is hidden at a depth of a filler text of L tokens; the model is asked for it and
 * answers greedily. Perplexity averages over every token and hides what eviction breaks: a fact
 * that only one far block holds. The prompt is prefilled in chunks, decode-faithfully (kvs_attend),
 * so a cell measures the cache as real decoding would leave it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"
#include "json.h"

static const char *k_filler = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
static const char *k_intro = "There is an important piece of information hidden inside a lot of irrelevant text. Find it "
                             "and memorize it. I will quiz you about it.";
static const char *k_question = " What is the pass key? The pass key is";

typedef struct {
    int32_t *ids;
    int n;
} toks;

static int tok(const kvs_tokenizer *tk, const char *s, toks *t) {
    return kvs_tokenize(tk, s, strlen(s), &t->ids, &t->n) != KVS_OK;
}

/* intro | filler x a | needle | filler x b | question, a + b chosen so that the total is <= len and
 * a / (a + b) is the depth */
static int32_t *build(const toks *intro, const toks *fill, const toks *needle, const toks *q, int len, double depth, int *n) {
    const int room = len - intro->n - needle->n - q->n, reps = room / fill->n;
    if (reps < 1) return NULL;
    const int a = (int)lround(depth * reps), b = reps - a;
    int32_t *ids = malloc((size_t)len * sizeof *ids);
    if (!ids) return NULL;
    int k = 0;
#define PUT(t)                                                                                                         \
    do {                                                                                                               \
        memcpy(ids + k, (t)->ids, (size_t)(t)->n * sizeof *ids);                                                       \
        k += (t)->n;                                                                                                   \
    } while (0)
    PUT(intro);
    for (int i = 0; i < a; i++) PUT(fill);
    PUT(needle);
    for (int i = 0; i < b; i++) PUT(fill);
    PUT(q);
#undef PUT
    *n = k;
    return ids;
}

/* green (1) to red (0) */
static void heat_color(double v, char *buf) {
    const int r = (int)lround(255 * (1 - v) + 40 * v), g = (int)lround(60 * (1 - v) + 170 * v), b = (int)lround(60 * (1 - v) + 80 * v);
    sprintf(buf, "#%02x%02x%02x", r, g, b);
}

int cmd_needle(int argc, char **argv) {
    const char *model = CLI_DEFAULT_MODEL, *list = "fp32", *out = "needle";
    cli_ints lengths = {3, {2048, 4096, 8192}}, depths = {5, {10, 30, 50, 70, 90}};
    int trials = 1, n_batch = 128, seed = 1, force = 0;
    const cli_opt opts[] = {
        {"--model", "FILE", OPT_STR, &model, 0, 0, "GGUF model, Llama architecture"},
        {"--configs", "LIST", OPT_STR, &list, 0, 0, "'name:config;config;...', cache configs, at most 16"},
        {"--lengths", "N,N", OPT_INTS, &lengths, 64, 1 << 20, "prompt lengths in tokens"},
        {"--depths", "P,P", OPT_INTS, &depths, 0, 100, "depths of the key, percent of the filler before it"},
        {"--trials", "K", OPT_INT, &trials, 1, 1000, "keys per (length, depth)"},
        {"--seed", "S", OPT_INT, &seed, 0, 1 << 30, "seed of the keys"},
        {"--batch", "N", OPT_INT, &n_batch, 1, 1 << 16, "prompt tokens per forward call"},
        {"--out", "PREFIX", OPT_STR, &out, 0, 0, "writes PREFIX.json and PREFIX.svg"},
        {"--force", NULL, OPT_FLAG, &force, 0, 0, "allow lengths beyond the model's trained context"},
    };
    const cli_cmd cmd = {"needle",
                         "Pass-key retrieval: a random five-digit key hidden at each depth of a filler text of each\n"
                         "length, asked for at the end, answered greedily, through each cache config. Prints the\n"
                         "accuracy per (length, depth), writes it as JSON and as a heat map (SVG).",
                         NULL, NULL, 0, opts, CLI_COUNT(opts)};
    int rc = cli_parse(&cmd, argc, argv), n_train;
    if (rc != CLI_RUN) return rc;
    cli_named cf[16];
    const int n_cfg = cli_parse_configs(list, cf, 16);
    if (n_cfg < 1) return cli_usage_error("--configs: '%s' is not a list of 1 to 16 'name:config' or 'config' items", list);
    int max_len = 0;
    for (int i = 0; i < lengths.n; i++) max_len = lengths.v[i] > max_len ? lengths.v[i] : max_len;
    if ((rc = cli_trained_ctx(model, &n_train)) || (rc = cli_check_ctx(n_train, max_len + 8, force, "--lengths + answer")))
        return rc;
    kvs_llama *m;
    kvs_tokenizer *tk;
    if (cli_load(model, &m, &tk)) return CLI_EXIT_RUNTIME;
    const int V = kvs_llama_params(m)->n_vocab;
    toks intro = {0}, fill = {0}, q = {0};
    float *lg = malloc(sizeof(float) * V);
    int *hit = calloc((size_t)n_cfg * lengths.n * depths.n, sizeof(int));
    /* what the model said, per (config, length, depth, trial): a miss reads differently when the
     * answer is the key with one digit wrong, another number of the prompt, or no number at all */
    const size_t n_ans = (size_t)n_cfg * lengths.n * depths.n * trials;
    char(*said)[24] = calloc(n_ans, sizeof *said);
    int *keys = calloc((size_t)lengths.n * depths.n * trials, sizeof(int));
    rc = CLI_EXIT_RUNTIME;
    if (!lg || !hit || !said || !keys || tok(tk, k_intro, &intro) || tok(tk, k_filler, &fill) || tok(tk, k_question, &q)) {
        fprintf(stderr, "kvslim needle: %s\n", kvs_last_error());
        goto out;
    }
    for (int c = 0; c < n_cfg; c++) { /* every config checked before the slow part */
        kvs_cache *probe = NULL;
        if ((rc = cli_cache(m, "--configs", cf[c].cfg, max_len + 8, &probe))) goto out;
        kvs_cache_free(probe);
    }
    rc = CLI_EXIT_RUNTIME;
    uint64_t rng = 0x9E3779B97F4A7C15ull * (uint64_t)(seed + 1);
    const long total = (long)n_cfg * lengths.n * depths.n * trials;
    long done = 0;
    const double t0 = bench_now();
    for (int li = 0; li < lengths.n; li++)
        for (int di = 0; di < depths.n; di++)
            for (int tr = 0; tr < trials; tr++) {
                rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
                const int key = 10000 + (int)(rng % 90000);
                keys[((size_t)li * depths.n + di) * trials + tr] = key;
                char needle_text[160], want[16];
                snprintf(needle_text, sizeof needle_text, " The pass key is %d. Remember it. %d is the pass key.", key, key);
                snprintf(want, sizeof want, "%d", key);
                toks needle = {0};
                int n = 0;
                int32_t *ids = NULL;
                if (tok(tk, needle_text, &needle) ||
                    !(ids = build(&intro, &fill, &needle, &q, lengths.v[li], depths.v[di] / 100.0, &n))) {
                    free(needle.ids);
                    fprintf(stderr, "kvslim needle: length %d too short for the prompt\n", lengths.v[li]);
                    rc = CLI_EXIT_USAGE;
                    goto out;
                }
                free(needle.ids);
                for (int c = 0; c < n_cfg; c++) {
                    kvs_cache *cache = NULL;
                    if (cli_cache(m, "--configs", cf[c].cfg, lengths.v[li] + 8, &cache)) {
                        free(ids);
                        goto out;
                    }
                    char answer[128] = "";
                    size_t al = 0;
                    kvs_status st = KVS_OK;
                    for (int p = 0; p < n && !st; p += n_batch) {
                        const int nb = n - p < n_batch ? n - p : n_batch;
                        st = kvs_llama_forward(m, cache, ids + p, nb, p, p + nb == n ? nb - 1 : nb, p + nb == n ? lg : NULL);
                    }
                    for (int s = 0; s < 8 && !st; s++) { /* greedy: the digits come one token each */
                        int32_t best = 0;
                        for (int v = 1; v < V; v++) best = lg[v] > lg[best] ? v : best;
                        al += kvs_token_bytes(tk, best, answer + al, sizeof answer - 1 - al);
                        if (al >= sizeof answer - 1) al = sizeof answer - 1;
                        answer[al] = 0;
                        st = kvs_llama_forward(m, cache, &best, 1, n + s, 0, lg);
                    }
                    kvs_cache_free(cache);
                    if (st) {
                        fprintf(stderr, "\nkvslim needle: %s: %s\n", cf[c].name, kvs_last_error());
                        free(ids);
                        goto out;
                    }
                    hit[((size_t)c * lengths.n + li) * depths.n + di] += strstr(answer, want) != NULL;
                    char *dst = said[(((size_t)c * lengths.n + li) * depths.n + di) * trials + tr];
                    for (size_t b = 0; b < 23 && answer[b]; b++) /* JSON-safe: printable ASCII only */
                        dst[b] = answer[b] >= 0x20 && answer[b] < 0x7f ? answer[b] : '?';
                    char what[96];
                    snprintf(what, sizeof what, "%d@%d%% %.30s", lengths.v[li], depths.v[di], cf[c].name);
                    cli_progress(what, ++done, total, t0);
                }
                free(ids);
            }
    printf("\nkvslim needle: pass-key accuracy over %d trial(s) per cell (rows: config @ length; columns: depth %%)\n", trials);
    printf("| config | length |");
    for (int di = 0; di < depths.n; di++) printf(" %d%% |", depths.v[di]);
    printf(" mean |\n|---|---:|");
    for (int di = 0; di <= depths.n; di++) printf("---:|");
    printf("\n");
    for (int c = 0; c < n_cfg; c++)
        for (int li = 0; li < lengths.n; li++) {
            double sum = 0.0;
            printf("| %s | %d |", cf[c].name, lengths.v[li]);
            for (int di = 0; di < depths.n; di++) {
                const double a = (double)hit[((size_t)c * lengths.n + li) * depths.n + di] / trials;
                sum += a;
                printf(" %.2f |", a);
            }
            printf(" %.2f |\n", sum / depths.n);
        }
    char path[1024];
    snprintf(path, sizeof path, "%s.json", out);
    FILE *f = fopen(path, "w");
    if (f) {
        json_w j;
        json_begin(&j, f, '{');
        json_str(&j, "model", model);
        json_num(&j, "trials", trials);
        json_num(&j, "seed", seed);
        json_open(&j, "rows", '[');
        for (int c = 0; c < n_cfg; c++)
            for (int li = 0; li < lengths.n; li++)
                for (int di = 0; di < depths.n; di++) {
                    json_open(&j, NULL, '{');
                    json_str(&j, "name", cf[c].name);
                    json_str(&j, "config", cf[c].cfg);
                    json_num(&j, "length", lengths.v[li]);
                    json_num(&j, "depth_pct", depths.v[di]);
                    json_num(&j, "accuracy", (double)hit[((size_t)c * lengths.n + li) * depths.n + di] / trials);
                    json_open(&j, "keys", '[');
                    for (int tr = 0; tr < trials; tr++) json_num(&j, NULL, keys[((size_t)li * depths.n + di) * trials + tr]);
                    json_end(&j, ']');
                    json_open(&j, "answers", '[');
                    for (int tr = 0; tr < trials; tr++)
                        json_str(&j, NULL, said[(((size_t)c * lengths.n + li) * depths.n + di) * trials + tr]);
                    json_end(&j, ']');
                    json_end(&j, '}');
                }
        json_end(&j, ']');
        json_end(&j, '}');
        fputc('\n', f);
    }
    int ok = f && !fclose(f);
    snprintf(path, sizeof path, "%s.svg", out);
    FILE *s = fopen(path, "w");
    if (s) { /* one panel per config: lengths down, depths across */
        const int cw = 44, ch = 26, left = 70, top = 40, gap = 36, panel = depths.n * cw;
        const int width = left + n_cfg * (panel + gap) > 660 ? left + n_cfg * (panel + gap) : 660;
        fprintf(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n",
                width, top + lengths.n * ch + 30);
        fprintf(s, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
        fprintf(s, "<text x=\"%d\" y=\"18\" font-size=\"14\">Pass-key accuracy (%%): rows prompt length, columns depth of the key; %d trial(s) per cell</text>\n",
                left, trials);
        for (int c = 0; c < n_cfg; c++) {
            const int x0 = left + c * (panel + gap);
            fprintf(s, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", x0 + panel / 2, top - 6, cf[c].name);
            for (int li = 0; li < lengths.n; li++) {
                if (c == 0) fprintf(s, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%d</text>\n", left - 6, top + li * ch + 17, lengths.v[li]);
                for (int di = 0; di < depths.n; di++) {
                    const double a = (double)hit[((size_t)c * lengths.n + li) * depths.n + di] / trials;
                    char col[8];
                    heat_color(a, col);
                    fprintf(s, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\" stroke=\"white\"/>"
                               "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"white\">%.0f</text>\n",
                            x0 + di * cw, top + li * ch, cw, ch, col, x0 + di * cw + cw / 2, top + li * ch + 17, 100 * a);
                }
            }
            for (int di = 0; di < depths.n; di++)
                fprintf(s, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%d%%</text>\n", x0 + di * cw + cw / 2,
                        top + lengths.n * ch + 16, depths.v[di]);
        }
        fprintf(s, "</svg>\n");
        ok = !fclose(s) && ok;
    } else {
        ok = 0;
    }
    if (ok) fprintf(stderr, "wrote %s.json and %s.svg (%.0f s)\n", out, out, bench_now() - t0);
    else fprintf(stderr, "kvslim needle: cannot write %s.json or %s.svg\n", out, out);
    rc = ok ? CLI_EXIT_OK : CLI_EXIT_RUNTIME;
out:
    free(intro.ids), free(fill.ids), free(q.ids);
    free(lg);
    free(hit), free(said), free(keys);
    kvs_tokenizer_free(tk);
    kvs_llama_free(m);
    return rc;
}
