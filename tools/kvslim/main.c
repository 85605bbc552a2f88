/* kvslim: the command-line tool over the public API. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"
#include "kvslim.h"

static int cmd_info(int argc, char **argv) {
    const char *text = NULL;
    int tokens = 8192;
    const cli_opt opts[] = {
        {"--tokens", "N", OPT_INT, &tokens, 1, 1 << 28, "cache length the bytes are counted at"},
    };
    const cli_cmd cmd = {"info",
                         "Canonical form of a cache CONFIG (README, \"Config grammar\") and its bytes and bits per\n"
                         "element at N tokens, on SmolLM2-135M's shapes unless the config sets layers=, heads=, ...",
                         "CONFIG", &text, 1, opts, CLI_COUNT(opts)};
    const int rc = cli_parse(&cmd, argc, argv);
    if (rc != CLI_RUN) return rc;
    kvs_config cfg = kvs_config_default();
    cfg.max_tokens = tokens; /* the cache is sized for N tokens: a budget= counts N slots per head */
    const int rc2 = cli_config(NULL, "CONFIG", text, &cfg);
    if (rc2) return rc2;
    if (tokens > cfg.max_tokens) cfg.max_tokens = tokens;
    size_t bytes = 0;
    if (kvs_cache_bytes_for(&cfg, tokens, &bytes) != KVS_OK) {
        fprintf(stderr, "kvslim info: %s\n", kvs_last_error());
        return CLI_EXIT_RUNTIME;
    }
    char buf[256];
    kvs_config_format(&cfg, buf, sizeof buf);
    const double elems = (double)tokens * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 2;
    printf("config: %s\nshapes: %d layers, %d heads, %d KV heads, head_dim %d\n", buf, cfg.n_layers, cfg.n_heads,
           cfg.n_kv_heads, cfg.head_dim);
    printf("at %d tokens: %zu bytes, %.4f bits per element (fp32 would be %.0f bytes)\n", tokens, bytes,
           8.0 * (double)bytes / elems, elems * 4);
    if (cfg.rank_k) { /* low rank: what each layer stores */
        int *r = malloc(sizeof(int) * 2 * (size_t)cfg.n_layers);
        if (!r || kvs_config_ranks(&cfg, r, r + cfg.n_layers) != KVS_OK) {
            free(r);
            fprintf(stderr, "kvslim info: %s\n", kvs_last_error());
            return CLI_EXIT_RUNTIME;
        }
        long sum = 0;
        printf("ranks K/V per layer:");
        for (int l = 0; l < cfg.n_layers; l++) printf(" %d/%d", r[l], r[cfg.n_layers + l]), sum += r[l] + r[cfg.n_layers + l];
        printf("\ncoefficients per token: %ld of %d (CR %.4f)\n", sum * cfg.n_kv_heads, 2 * cfg.head_dim * cfg.n_layers * cfg.n_kv_heads,
               (double)sum / (2.0 * cfg.head_dim * cfg.n_layers));
        free(r);
    }
    return CLI_EXIT_OK;
}

static int cmd_version(int argc, char **argv) {
    const cli_cmd cmd = {"version", "Version and the attention kernels in use.", NULL, NULL, 0, NULL, 0};
    const int rc = cli_parse(&cmd, argc, argv);
    if (rc != CLI_RUN) return rc;
    printf("kvslim %d.%d.%d (kernels: %s)\n", KVSLIM_VERSION_MAJOR, KVSLIM_VERSION_MINOR, KVSLIM_VERSION_PATCH,
           kvs_kernels());
    return CLI_EXIT_OK;
}

typedef struct {
    const char *name, *about;
    int (*run)(int argc, char **argv);
} command;

static const command k_commands[] = {
    {"sweep", "the main job: perplexity, KL, memory and decode speed of a list of cache configs", cmd_sweep},
    {"ppl", "perplexity of one cache config over a text", cmd_ppl},
    {"generate", "continue a prompt with one cache config", cmd_generate},
    {"info", "canonical form, bytes and bits per element of a cache config", cmd_info},
    {"needle", "pass-key retrieval at several lengths and depths through cache configs", cmd_needle},
    {"calibrate heatkv", "measure per-head attention statistics for heatkv= budgets (a calibration file)", cmd_calibrate},
    {"calibrate stiefel", "fit StiefAttention's low-rank K/V bases per layer, learned vs PCA on held-out text", cmd_calibrate_stiefel},
    {"bench attention", "decode attention speed per cache config and length, against the roofline",
     bench_attention_main},
    {"bench bandwidth", "streaming read bandwidth of this machine", bench_bandwidth_main},
    {"bench decode", "end-to-end decode speed after a prefill, split into weights, attention and the rest",
     bench_decode_main},
    {"version", "version and the attention kernels in use", cmd_version},
};

static void print_commands(void) {
    printf("kvslim %d.%d.%d — compressed KV cache with fused attention\n\n"
           "usage: kvslim COMMAND [options]\n"
           "       kvslim COMMAND --help    (or kvslim help COMMAND) for a command's options and defaults\n\n"
           "commands:\n",
           KVSLIM_VERSION_MAJOR, KVSLIM_VERSION_MINOR, KVSLIM_VERSION_PATCH);
    for (int i = 0; i < CLI_COUNT(k_commands); i++) printf("  %-17s %s\n", k_commands[i].name, k_commands[i].about);
    printf("  %-17s %s\n\n", "help [COMMAND]", "this list, or a command's options");
    cli_print_exit_codes(stdout);
}

static int is_help(const char *a) { return !strcmp(a, "-h") || !strcmp(a, "--help"); }

static int dispatch(int argc, char **argv) {
    if (argc < 2) return cli_usage_error("missing command");
    if (is_help(argv[1])) {
        print_commands();
        return CLI_EXIT_OK;
    }
    if (!strcmp(argv[1], "help")) {
        if (argc == 2) {
            print_commands();
            return CLI_EXIT_OK;
        }
        /* "kvslim help bench attention" is "kvslim bench attention --help" */
        char *again[4] = {argv[0], argv[2], "--help", "--help"};
        if (argc > 3) again[2] = argv[3];
        return dispatch(argc > 3 ? 4 : 3, again);
    }
    /* "bench" and "calibrate" take the benchmark's or the method's name as a second word */
    const int words = !strcmp(argv[1], "bench") || !strcmp(argv[1], "calibrate") ? 2 : 1;
    if (argc < 1 + words)
        return cli_usage_error(words == 2 && argv[1][0] == 'b' ? "bench: missing benchmark name (attention, bandwidth or decode)"
                                                                : "calibrate: missing method name (heatkv, stiefel)");
    if (words == 2 && is_help(argv[2])) {
        print_commands();
        return CLI_EXIT_OK;
    }
    char name[64];
    snprintf(name, sizeof name, "%s%s%s", argv[1], words == 2 ? " " : "", words == 2 ? argv[2] : "");
    for (int i = 0; i < CLI_COUNT(k_commands); i++)
        if (!strcmp(k_commands[i].name, name)) return k_commands[i].run(argc - 1 - words, argv + 1 + words);
    return cli_usage_error("unknown command '%s'", name);
}

int main(int argc, char **argv) { return dispatch(argc, argv); }
