/* kvslim ppl and kvslim generate: the model engine over one cache config. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench.h"
#include "cli.h"
#include "json.h"

int cli_ensure_model(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0) return 0;
    if (strcmp(path, CLI_DEFAULT_MODEL) != 0) {
        fprintf(stderr, "kvslim: model '%s' not found\n", path);
        return 1;
    }
    fprintf(stderr, "kvslim: fetching the default model with scripts/fetch-model\n");
    return system("\"" KVS_SOURCE_DIR "/scripts/fetch-model\"") != 0;
}

char *cli_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "kvslim: cannot open '%s'\n", path);
        return NULL;
    }
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += r;
        if (n == cap) {
            char *p = cap < ((size_t)1 << 31) ? realloc(buf, 2 * cap + 1) : NULL;
            if (!p) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = p;
            cap *= 2;
        }
    }
    const int err = ferror(f);
    fclose(f);
    if (!buf || err) {
        free(buf);
        fprintf(stderr, "kvslim: cannot read '%s'\n", path);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

int cli_load(const char *path, kvs_llama **m, kvs_tokenizer **t) {
    if (cli_ensure_model(path)) return 1;
    if (kvs_llama_load(path, m) != KVS_OK) {
        fprintf(stderr, "kvslim: %s\n", kvs_last_error());
        return 1;
    }
    if (kvs_tokenizer_load(kvs_llama_file(*m), t) != KVS_OK) {
        fprintf(stderr, "kvslim: %s\n", kvs_last_error());
        kvs_llama_free(*m);
        return 1;
    }
    return 0;
}

/* Calibrations named by calib=PATH, loaded once per path and kept until exit. */
static struct {
    char path[512];
    kvs_calib *cal;
} g_calibs[8];
static int g_n_calibs;
static void free_calibs(void) {
    for (int i = 0; i < g_n_calibs; i++) kvs_calib_free(g_calibs[i].cal);
    g_n_calibs = 0;
}

static int load_calib(const kvs_llama *m, const char *opt, const char *path, const kvs_calib **out) {
    for (int i = 0; i < g_n_calibs; i++)
        if (!strcmp(g_calibs[i].path, path)) return *out = g_calibs[i].cal, 0;
    if (g_n_calibs == 8 || strlen(path) >= sizeof g_calibs[0].path) return cli_usage_error("%s: too many calib= files", opt);
    kvs_calib *c = NULL;
    const kvs_status st = kvs_calib_load(path, &c);
    if (st) {
        fprintf(stderr, "kvslim: calib=%s: %s\n", path, kvs_last_error());
        return st == KVS_ERR_IO ? CLI_EXIT_RUNTIME : CLI_EXIT_USAGE;
    }
    if (m) { /* a calibration describes one model: refuse another's */
        static uint64_t id;
        static const kvs_llama *id_of;
        if (id_of != m) id = kvs_llama_identity(m), id_of = m;
        uint64_t h;
        const char *name = kvs_calib_model(c, &h);
        if (h != id) {
            kvs_calib_free(c);
            return cli_usage_error("%s: calib=%s was measured on another model ('%s', weights hash %016llx; this one "
                                   "hashes to %016llx): run kvslim calibrate on this model",
                                   opt, path, name, (unsigned long long)h, (unsigned long long)id);
        }
    }
    if (!g_n_calibs) atexit(free_calibs);
    strcpy(g_calibs[g_n_calibs].path, path);
    g_calibs[g_n_calibs++].cal = c;
    *out = c;
    return 0;
}

int cli_parse_configs(const char *list, cli_named *out, int max) {
    int n = 0;
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ';');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || len >= sizeof out->cfg || n == max) return -1;
        cli_named *r = &out[n++];
        memset(r, 0, sizeof *r);
        const char *colon = memchr(p, ':', len);
        const size_t nl = colon ? (size_t)(colon - p) : len;
        if (nl == 0 || nl >= sizeof r->name) return -1;
        memcpy(r->name, p, nl);
        memcpy(r->cfg, colon ? colon + 1 : p, colon ? len - nl - 1 : len);
        p = e ? e + 1 : p + len;
    }
    return n;
}

int cli_config(const kvs_llama *m, const char *opt, const char *text, kvs_config *c) {
    char buf[1024], rest[1024];
    if (strlen(text) >= sizeof buf) return cli_usage_error("%s: config of %zu bytes is too long", opt, strlen(text));
    strcpy(buf, text);
    rest[0] = 0;
    const char *calib = NULL;
    for (char *item = buf, *next; item; item = next) { /* take calib=PATH out; the library never opens files */
        next = strchr(item, ',');
        if (next) *next++ = 0;
        while (*item == ' ') item++;
        if (!strncmp(item, "calib=", 6)) {
            if (calib) return cli_usage_error("%s: '%s': calib= given twice", opt, text);
            calib = item + 6;
            if (!*calib) return cli_usage_error("%s: '%s': calib= needs a file", opt, text);
            continue;
        }
        if (rest[0]) strcat(rest, ",");
        strcat(rest, item);
    }
    if (calib) {
        const int rc = load_calib(m, opt, calib, &c->calib);
        if (rc) return rc;
    }
    if (kvs_config_parse(c, rest) != KVS_OK) return cli_usage_error("%s: '%s': %s", opt, text, kvs_last_error());
    return 0;
}

int cli_cache(const kvs_llama *m, const char *opt, const char *cfg, int max_tokens, kvs_cache **out) {
    kvs_config c = kvs_llama_cache_config(m, max_tokens);
    *out = NULL;
    /* checked against the model's shapes, hence here and not at parse time */
    const int rc = cli_config(m, opt, cfg, &c);
    if (rc) return rc;
    if (kvs_cache_create(&c, out) != KVS_OK) {
        fprintf(stderr, "kvslim: cache '%s': %s\n", cfg, kvs_last_error());
        return CLI_EXIT_RUNTIME;
    }
    return 0;
}

int cli_trained_ctx(const char *path, int *n_train) {
    *n_train = 0;
    if (cli_ensure_model(path)) return CLI_EXIT_RUNTIME;
    kvs_gguf *g;
    if (kvs_gguf_open(path, &g, NULL) != KVS_OK) {
        fprintf(stderr, "kvslim: %s\n", kvs_last_error());
        return CLI_EXIT_RUNTIME;
    }
    int64_t v;
    if (kvs_gguf_get_int(g, "llama.context_length", &v) == KVS_OK && v > 0 && v <= INT_MAX) *n_train = (int)v;
    kvs_gguf_close(g);
    return 0;
}

int cli_check_ctx(int n_train, long need, int force, const char *what) {
    if (n_train <= 0 || need <= n_train) return 0;
    if (!force)
        return cli_usage_error("%s: %ld tokens is beyond the model's trained context: it was trained for %d tokens "
                               "(add --force to run anyway)", what, need, n_train);
    fprintf(stderr, "kvslim: warning: %s: %ld tokens is beyond the model's trained context: it was trained for %d tokens\n",
            what, need, n_train);
    return 0;
}

const char *cli_basename(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

int cli_model_name(const kvs_llama *m, const char *path, char *buf, size_t cap) {
    const char *s;
    size_t len;
    const int named = kvs_gguf_get_str(kvs_llama_file(m), "general.name", &s, &len) == KVS_OK && len > 0;
    if (!named) {
        s = cli_basename(path);
        len = strlen(s);
    }
    if (len >= cap) len = cap - 1;
    /* the name comes from the file: no control characters into a terminal or a JSON string */
    for (size_t i = 0; i < len; i++) buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    buf[len] = 0;
    return named;
}

void cli_progress(const char *what, long done, long total, double t0) {
    const int width = 30, fill = total > 0 ? (int)(width * done / total) : width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    const double el = bench_now() - t0, eta = done > 0 ? el * (double)(total - done) / (double)done : 0.0;
    fprintf(stderr, "\r%-28.28s [%s] %ld/%ld  %.0fs elapsed, ~%.0fs left ", what, bar, done, total, el, eta);
    if (done >= total) fputc('\n', stderr);
}

int cmd_ppl(int argc, char **argv) {
    const char *model = CLI_DEFAULT_MODEL, *text = CLI_DEFAULT_TEXT, *cfg = "fp32", *json = NULL;
    int n_ctx = 512, n_batch = 128, chunks = 0, force = 0;
    const cli_opt opts[] = {
        {"--model", "FILE", OPT_STR, &model, 0, 0, "GGUF model, Llama architecture"},
        {"--text", "FILE", OPT_STR, &text, 0, 0, "UTF-8 text to score"},
        {"--cache", "CONFIG", OPT_STR, &cfg, 0, 0, "cache config, see README \"Config grammar\""},
        {"--ctx", "N", OPT_INT, &n_ctx, 8, 1 << 20, "tokens per chunk, its second half scored"},
        {"--batch", "N", OPT_INT, &n_batch, 1, 1 << 20, "tokens per forward call"},
        {"--chunks", "K", OPT_INT, &chunks, 0, 1 << 30, "chunks to score, 0 = the whole text"},
        {"--json", "FILE", OPT_STR, &json, 0, 0, "also write the result as JSON"},
        {"--force", NULL, OPT_FLAG, &force, 0, 0, "allow --ctx beyond the model's trained context"},
    };
    const cli_cmd cmd = {"ppl",
                         "Perplexity of one cache config over a text, as llama.cpp's llama-perplexity computes it\n"
                         "(non-overlapping chunks of --ctx tokens, the second half of each scored); progress on stderr.",
                         NULL, NULL, 0, opts, CLI_COUNT(opts)};
    int rc = cli_parse(&cmd, argc, argv), n_train;
    if (rc != CLI_RUN) return rc;
    if ((rc = cli_trained_ctx(model, &n_train)) || (rc = cli_check_ctx(n_train, n_ctx, force, "--ctx"))) return rc;
    kvs_llama *m;
    kvs_tokenizer *tk;
    if (cli_load(model, &m, &tk)) return CLI_EXIT_RUNTIME;
    size_t len;
    char *buf = NULL, name[128];
    int32_t *ids = NULL;
    int n = 0;
    kvs_cache *cache = NULL;
    cli_model_name(m, model, name, sizeof name);
    if ((rc = cli_cache(m, "--cache", cfg, n_ctx, &cache))) goto out; /* a bad --cache before the slow part */
    rc = CLI_EXIT_RUNTIME;
    if (!(buf = cli_read_file(text, &len))) goto out;
    if (kvs_tokenize(tk, buf, len, &ids, &n) != KVS_OK) {
        fprintf(stderr, "kvslim: %s\n", kvs_last_error());
        goto out;
    }
    int n_chunk = n / n_ctx;
    if (chunks > 0 && chunks < n_chunk) n_chunk = chunks;
    if (n_chunk < 1) {
        fprintf(stderr, "kvslim ppl: %d tokens in '%s' is less than one chunk of %d\n", n, text, n_ctx);
        goto out;
    }
    fprintf(stderr, "kvslim ppl: %d tokens, %d chunks of %d, batch %d, cache %s\n", n, n_chunk, n_ctx, n_batch, cfg);
    kvs_ppl_acc acc = {0, 0, 0, 0};
    const double t0 = bench_now();
    const int bos = kvs_tokenizer_add_bos(tk) ? kvs_tokenizer_bos(tk) : -1;
    for (int c = 0; c < n_chunk; c++) {
        if (kvs_ppl_chunk(m, cache, ids + (size_t)c * n_ctx, n_ctx, n_batch, bos, NULL, NULL, &acc) != KVS_OK) {
            fprintf(stderr, "\nkvslim: %s\n", kvs_last_error());
            goto out;
        }
        char what[64];
        snprintf(what, sizeof what, "ppl %.4f", kvs_ppl_value(&acc));
        cli_progress(what, c + 1, n_chunk, t0);
    }
    const double secs = bench_now() - t0;
    printf("cache %s: PPL = %.4f +/- %.4f over %ld tokens (%d chunks of %d), %.1f tokens/s\n", cfg, kvs_ppl_value(&acc),
           kvs_ppl_error(&acc), acc.count, n_chunk, n_ctx, (double)n_chunk * n_ctx / secs);
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            fprintf(stderr, "kvslim: cannot write '%s'\n", json);
            goto out;
        }
        json_w j;
        json_begin(&j, f, '{');
        json_str(&j, "model", model);
        json_str(&j, "model_name", name);
        json_str(&j, "model_file", cli_basename(model));
        json_str(&j, "cache", cfg);
        json_str(&j, "text", text);
        json_num(&j, "ctx", n_ctx);
        json_num(&j, "batch", n_batch);
        json_num(&j, "chunks", n_chunk);
        json_num(&j, "scored_tokens", (double)acc.count);
        json_num(&j, "ppl", kvs_ppl_value(&acc));
        json_num(&j, "ppl_err", kvs_ppl_error(&acc));
        json_num(&j, "tokens_per_s", (double)n_chunk * n_ctx / secs);
        json_end(&j, '}');
        fputc('\n', f);
        fclose(f);
    }
    rc = CLI_EXIT_OK;
out:
    kvs_cache_free(cache);
    free(ids);
    free(buf);
    kvs_tokenizer_free(tk);
    kvs_llama_free(m);
    return rc;
}

/* xorshift for sampling */
static double uniform(unsigned long long *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (double)(*s >> 11) / 9007199254740992.0;
}

static int sample(const float *lg, int V, float temp, unsigned long long *rng) {
    int best = 0;
    for (int v = 1; v < V; v++) best = lg[v] > lg[best] ? v : best;
    if (temp <= 0.0f) return best;
    double sum = 0.0;
    for (int v = 0; v < V; v++) sum += exp((lg[v] - lg[best]) / temp);
    double r = uniform(rng) * sum;
    for (int v = 0; v < V; v++) {
        r -= exp((lg[v] - lg[best]) / temp);
        if (r <= 0) return v;
    }
    return best;
}

int cmd_generate(int argc, char **argv) {
    const char *model = CLI_DEFAULT_MODEL, *prompt = NULL, *cfg = "fp32";
    int n_gen = 64, seed = 42, force = 0;
    double temp = 0.0;
    const cli_opt opts[] = {
        {"--prompt", "TEXT", OPT_STR, &prompt, 0, 0, "text to continue (required)"},
        {"--model", "FILE", OPT_STR, &model, 0, 0, "GGUF model, Llama architecture"},
        {"--cache", "CONFIG", OPT_STR, &cfg, 0, 0, "cache config, see README \"Config grammar\""},
        {"-n", "N", OPT_INT, &n_gen, 1, 100000, "tokens to generate"},
        {"--temp", "T", OPT_NUM, &temp, 0, 100, "sampling temperature, 0 = greedy"},
        {"--seed", "S", OPT_INT, &seed, 1, INT_MAX, "sampling seed"},
        {"--force", NULL, OPT_FLAG, &force, 0, 0, "allow prompt + N beyond the model's trained context"},
    };
    const cli_cmd cmd = {"generate",
                         "Continue a prompt with one cache config: streams the text to stdout, tokens/s on stderr.",
                         NULL, NULL, 0, opts, CLI_COUNT(opts)};
    int rc = cli_parse(&cmd, argc, argv);
    if (rc != CLI_RUN) return rc;
    if (!prompt) return cli_usage_error("--prompt is required");
    unsigned long long rng = (unsigned long long)seed; /* xorshift state: nonzero, as --seed >= 1 */
    kvs_llama *m;
    kvs_tokenizer *tk;
    if (cli_load(model, &m, &tk)) return CLI_EXIT_RUNTIME;
    int32_t *ids = NULL;
    int n = 0;
    kvs_cache *cache = NULL;
    rc = CLI_EXIT_RUNTIME;
    const int V = kvs_llama_params(m)->n_vocab;
    float *lg = malloc(sizeof(float) * V);
    if (!lg || kvs_tokenize(tk, prompt, strlen(prompt), &ids, &n) != KVS_OK || n < 1) {
        fprintf(stderr, "kvslim generate: cannot tokenize the prompt (%s)\n", kvs_last_error());
        goto out;
    }
    /* the prompt's length is known only now, so the trained context is checked after the load */
    if ((rc = cli_check_ctx(kvs_llama_params(m)->n_ctx_train, (long)n + n_gen, force, "prompt + -n")) ||
        (rc = cli_cache(m, "--cache", cfg, n + n_gen, &cache)))
        goto out;
    rc = CLI_EXIT_RUNTIME;
    const double t0 = bench_now();
    if (kvs_llama_forward(m, cache, ids, n, 0, n - 1, lg) != KVS_OK) {
        fprintf(stderr, "kvslim: %s\n", kvs_last_error());
        goto out;
    }
    const double t1 = bench_now();
    fwrite(prompt, 1, strlen(prompt), stdout);
    int made = 0;
    for (; made < n_gen; made++) {
        int32_t next = sample(lg, V, (float)temp, &rng);
        if (next == kvs_tokenizer_eos(tk)) break;
        char piece[256];
        const size_t pl = kvs_token_bytes(tk, next, piece, sizeof piece);
        fwrite(piece, 1, pl < sizeof piece ? pl : sizeof piece, stdout);
        fflush(stdout);
        if (made + 1 == n_gen) {
            made++;
            break;
        }
        if (kvs_llama_forward(m, cache, &next, 1, n + made, 0, lg) != KVS_OK) {
            fprintf(stderr, "\nkvslim: %s\n", kvs_last_error());
            goto out;
        }
    }
    const double t2 = bench_now();
    printf("\n");
    fprintf(stderr, "prompt: %d tokens, %.1f tokens/s; generated %d tokens, %.1f tokens/s; cache %s, %.3f bits/element\n",
            n, n / (t1 - t0), made, made > 1 ? (made - 1) / (t2 - t1) : 0.0, cfg, kvs_cache_bits_per_element(cache));
    rc = CLI_EXIT_OK;
out:
    kvs_cache_free(cache);
    free(ids);
    free(lg);
    kvs_tokenizer_free(tk);
    kvs_llama_free(m);
    return rc;
}
