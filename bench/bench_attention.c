/* kvslim bench attention: single-query decode attention over a 30-layer SmolLM2-shaped cache at
 * several lengths, for the baselines and the kvslim methods. Per config and length: tokens per
 * second of one decode step over all layers, cache bytes, effective GB/s of cache bytes read,
 * the speed ratio to fp32 at the same length and the fraction of the read bandwidth measured in
 * this same run (the roofline). Each kernel is checked against the scalar reference first. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tools/kvslim/args.h"
#include "../tools/kvslim/cli.h"
#include "../tools/kvslim/json.h"
#include "bench.h"
#include "kvslim.h"

/* the first config is the one the others' speed is compared with */
static const char *k_default_configs = "fp32;q8_0;q4_0;kivi-int2;oscar-int4;oscar-int2+jensen:oscar-int2,jensen=taylor";

typedef struct {
    const char *name;
    int tokens;
    double tok_s, bytes, gbs, ratio, roof, bits, check;
} bench_row;

static unsigned long long g_rng = 12345;
static float frand(void) { /* cheap normal-ish noise: sum of uniforms */
    float s = 0;
    for (int i = 0; i < 4; i++) {
        g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
        s += (float)(g_rng >> 40) / (float)(1 << 24);
    }
    return (s - 2.0f) * 1.7f;
}

/* A filled cache of one config at one length, and its check against the reference. */
static kvs_cache *prepare(const cli_named *bc, int tokens, int threads, const float *k, const float *v, const float *q,
                          bench_row *row) {
    kvs_config cfg = kvs_config_default();
    if (cli_config(NULL, "--configs", bc->cfg, &cfg)) return NULL; /* calib=PATH loaded there (shapes checked, no model) */
    cfg.max_tokens = tokens + 1;
    cfg.n_threads = threads;
    kvs_cache *c = NULL;
    if (kvs_cache_create(&cfg, &c) != KVS_OK) {
        fprintf(stderr, "bench: %s\n", kvs_last_error());
        return NULL;
    }
    const int L = cfg.n_layers, H = cfg.n_kv_heads, NH = cfg.n_heads, d = cfg.head_dim;
    for (int l = 0; l < L; l++)
        for (int t = 0; t < tokens; t += 4096) {
            const int n = tokens - t < 4096 ? tokens - t : 4096;
            if (kvs_cache_append(c, l, n, k + (size_t)t * H * d, v + (size_t)t * H * d) != KVS_OK) {
                fprintf(stderr, "bench: %s\n", kvs_last_error());
                kvs_cache_free(c);
                return NULL;
            }
        }
    const float *k1 = k + (size_t)tokens * H * d, *v1 = v + (size_t)tokens * H * d;
    float *out = malloc(sizeof(float) * NH * d), *ref = malloc(sizeof(float) * NH * d);
    /* validate the fast kernel against the reference on layer 0 before timing */
    const char *fast = kvs_kernels();
    row->check = 0.0;
    if (out && ref && strcmp(fast, "ref") != 0) {
        if (kvs_set_kernels("ref") == KVS_OK && kvs_attend(c, 0, 1, q, k1, v1, ref) == KVS_OK &&
            kvs_set_kernels(fast) == KVS_OK && kvs_attend(c, 0, 1, q, k1, v1, out) == KVS_OK)
            for (int i = 0; i < NH * d; i++) row->check = fmax(row->check, fabs((double)out[i] - ref[i]));
    }
    free(out);
    free(ref);
    row->name = bc->name;
    row->tokens = tokens;
    row->bytes = (double)kvs_cache_bytes(c);
    row->bits = kvs_cache_bits_per_element(c);
    row->tok_s = 0.0;
    return c;
}

/* One decode step over all layers; seconds. */
static double time_step(kvs_cache *c, const float *q, const float *k1, const float *v1, float *out) {
    const int L = kvs_cache_config(c)->n_layers;
    const double t0 = bench_now();
    for (int l = 0; l < L; l++)
        if (kvs_attend(c, l, 1, q, k1, v1, out) != KVS_OK) {
            fprintf(stderr, "bench: %s\n", kvs_last_error());
            return 1e30;
        }
    return bench_now() - t0;
}

int bench_attention_main(int argc, char **argv) {
    cli_ints tokens = {4, {1024, 4096, 16384, 65536}};
    int reps = 5, threads = 0, json = 0;
    const char *kernels = "auto", *list = k_default_configs;
    const cli_opt opts[] = {
        {"--tokens", "N,N,...", OPT_INTS, &tokens, 1, 1 << 22, "cache lengths"},
        {"--reps", "N", OPT_INT, &reps, 1, 1000000, "timed steps per config and length (best is kept)"},
        {"--threads", "N", OPT_INT, &threads, 0, 1024, "threads, 0 = all"},
        {"--kernels", "NAME", OPT_STR, &kernels, 0, 0, "auto, ref or avx2"},
        {"--configs", "LIST", OPT_STR, &list, 0, 0, "'name:config;config;...', at most 16; the first is the speed reference"},
        {"--json", NULL, OPT_FLAG, &json, 0, 0, "JSON on stdout instead of the table"},
    };
    const cli_cmd cmd = {"bench attention",
                         "Single-query decode attention over a 30-layer SmolLM2-shaped cache for each config and\n"
                         "length, against the read bandwidth measured in the same run (the roofline).",
                         NULL, NULL, 0, opts, CLI_COUNT(opts)};
    const int rc = cli_parse(&cmd, argc, argv);
    if (rc != CLI_RUN) return rc;
    if (kvs_set_kernels(kernels) != KVS_OK) return cli_usage_error("--kernels: %s", kvs_last_error());
    cli_named k_cfgs[16];
    const int ncfg = cli_parse_configs(list, k_cfgs, 16);
    if (ncfg < 1) return cli_usage_error("--configs: '%s' is not a list of 1 to 16 'name:config' or 'config' items", list);
    for (int i = 0; i < ncfg; i++) { /* every config checked before the slow part */
        kvs_config c = kvs_config_default();
        const int rc2 = cli_config(NULL, "--configs", k_cfgs[i].cfg, &c);
        if (rc2) return rc2;
    }
    const int *lens = tokens.v;
    const int nlens = tokens.n;
    int maxlen = 0;
    for (int i = 0; i < nlens; i++) maxlen = lens[i] > maxlen ? lens[i] : maxlen;
    const kvs_config dc = kvs_config_default();
    const size_t row = (size_t)dc.n_kv_heads * dc.head_dim;
    float *k = malloc(sizeof(float) * (maxlen + 1) * row), *v = malloc(sizeof(float) * (maxlen + 1) * row);
    float *q = malloc(sizeof(float) * dc.n_heads * dc.head_dim);
    if (!k || !v || !q) {
        fprintf(stderr, "bench: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)(maxlen + 1) * row; i++) {
        k[i] = frand() + ((i % 64) == 5 ? 3.0f : 0.0f); /* one outlier channel, as real keys have */
        v[i] = frand();
    }
    for (int i = 0; i < dc.n_heads * dc.head_dim; i++) q[i] = 0.5f * frand();
    const double bw = bench_read_bandwidth(threads, 1.0);
    bench_row *rows = calloc((size_t)ncfg * nlens, sizeof *rows);
    /* per length: all configs filled at once, then timed round-robin (best of reps), so that the
     * shared machine's slow spells hit every config alike and the ratios stay comparable */
    kvs_cache *caches[16] = {0};
    float *out = malloc(sizeof(float) * dc.n_heads * dc.head_dim);
    for (int li = 0; li < nlens; li++) {
        const float *k1 = k + (size_t)lens[li] * row, *v1 = v + (size_t)lens[li] * row;
        for (int ci = 0; ci < ncfg; ci++)
            if (!(caches[ci] = prepare(&k_cfgs[ci], lens[li], threads, k, v, q, &rows[li * ncfg + ci]))) return 1;
        double best[16];
        for (int ci = 0; ci < ncfg; ci++) best[ci] = 1e30;
        for (int r = 0; r < reps; r++)
            for (int ci = 0; ci < ncfg; ci++) {
                const double dt = time_step(caches[ci], q, k1, v1, out);
                best[ci] = dt < best[ci] ? dt : best[ci];
            }
        for (int ci = 0; ci < ncfg; ci++) {
            bench_row *r = &rows[li * ncfg + ci];
            r->tok_s = 1.0 / best[ci];
            r->gbs = r->bytes / best[ci] / 1e9;
            r->ratio = r->tok_s / rows[li * ncfg].tok_s;
            r->roof = r->gbs * 1e9 / bw;
            if (!json) fprintf(stderr, "  %-18s %6d tokens: %9.1f steps/s\n", r->name, r->tokens, r->tok_s);
            kvs_cache_free(caches[ci]);
            caches[ci] = NULL;
        }
    }
    free(out);
    if (json) {
        json_w j;
        json_begin(&j, stdout, '{');
        json_str(&j, "kernels", kvs_kernels());
        json_num(&j, "read_bandwidth_gbs", bw / 1e9);
        json_num(&j, "layers", dc.n_layers);
        json_open(&j, "rows", '[');
        for (int i = 0; i < ncfg * nlens; i++) {
            const bench_row *r = &rows[i];
            json_open(&j, NULL, '{');
            json_str(&j, "config", r->name);
            json_num(&j, "tokens", r->tokens);
            json_num(&j, "steps_per_s", r->tok_s);
            json_num(&j, "cache_bytes", r->bytes);
            json_num(&j, "bits_per_element", r->bits);
            json_num(&j, "gbs", r->gbs);
            json_num(&j, "ratio_vs_first", r->ratio); /* speed against the first config (fp32 by default) */
            json_num(&j, "roofline_fraction", r->roof);
            json_num(&j, "max_diff_vs_ref", r->check);
            json_end(&j, '}');
        }
        json_end(&j, ']');
        json_end(&j, '}');
        printf("\n");
    } else {
        printf("decode attention, %d layers x %d KV heads x %d, %d query heads; kernels %s; read bandwidth %.2f GB/s\n",
               dc.n_layers, dc.n_kv_heads, dc.head_dim, dc.n_heads, kvs_kernels(), bw / 1e9);
        printf("| config | tokens | bits/elem | cache MB | steps/s | GB/s | vs %s | of roofline | max diff vs ref |\n", k_cfgs[0].name);
        printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (int i = 0; i < ncfg * nlens; i++) {
            const bench_row *r = &rows[i];
            printf("| %s | %d | %.3f | %.1f | %.1f | %.2f | %.2fx | %.0f%% | %.1e |\n", r->name, r->tokens, r->bits,
                   r->bytes / 1e6, r->tok_s, r->gbs, r->ratio, 100 * r->roof, r->check);
        }
    }
    free(rows);
    free(k);
    free(v);
    free(q);
    return 0;
}
