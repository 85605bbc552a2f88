/* kvslim: the command-line tool over the public API. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"
#include "kvslim.h"

static int usage(void) {
    fprintf(stderr,
            "kvslim %d.%d.%d — compressed KV cache with fused attention\n"
            "usage:\n"
            "  kvslim sweep [--ctx 1024] [--chunks 8 | --full] [--configs 'name:cfg;cfg;...'] [--out PREFIX]\n"
            "  kvslim ppl [--model M] [--text FILE] [--ctx 512] [--batch 128] [--chunks K] [--cache CONFIG] [--json OUT]\n"
            "  kvslim generate --prompt TEXT [--cache CONFIG] [-n 64] [--temp 0]\n"
            "  kvslim bench attention [--tokens 1024,4096,16384,65536] [--reps N] [--threads N]\n"
            "                         [--kernels auto|ref|avx2] [--json]\n"
            "  kvslim bench bandwidth [--threads N]\n"
            "  kvslim info CONFIG [--tokens N]   canonical config, bytes and bits per element at N tokens\n"
            "  kvslim version\n",
            KVSLIM_VERSION_MAJOR, KVSLIM_VERSION_MINOR, KVSLIM_VERSION_PATCH);
    return 2;
}

static int cmd_info(int argc, char **argv) {
    if (argc < 1) return usage();
    long long tokens = 8192;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc) tokens = atoll(argv[++i]);
        else return usage();
    kvs_config cfg = kvs_config_default();
    if (kvs_config_parse(&cfg, argv[0]) != KVS_OK) {
        fprintf(stderr, "kvslim: %s\n", kvs_last_error());
        return 2;
    }
    if (tokens < 1 || tokens > (1 << 28)) {
        fprintf(stderr, "kvslim: --tokens must be in [1, 2^28]\n");
        return 2;
    }
    if (tokens > cfg.max_tokens) cfg.max_tokens = (int)tokens;
    size_t bytes = 0;
    if (kvs_cache_bytes_for(&cfg, tokens, &bytes) != KVS_OK) {
        fprintf(stderr, "kvslim: %s\n", kvs_last_error());
        return 1;
    }
    char buf[256];
    kvs_config_format(&cfg, buf, sizeof buf);
    const double elems = (double)tokens * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 2;
    printf("config: %s\nshapes: %d layers, %d heads, %d KV heads, head_dim %d\n", buf, cfg.n_layers, cfg.n_heads,
           cfg.n_kv_heads, cfg.head_dim);
    printf("at %lld tokens: %zu bytes, %.4f bits per element (fp32 would be %.0f bytes)\n", tokens, bytes,
           8.0 * (double)bytes / elems, elems * 4);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    if (!strcmp(argv[1], "bench") && argc >= 3) {
        if (!strcmp(argv[2], "attention")) return bench_attention_main(argc - 3, argv + 3);
        if (!strcmp(argv[2], "bandwidth")) return bench_bandwidth_main(argc - 3, argv + 3);
        return usage();
    }
    if (!strcmp(argv[1], "info")) return cmd_info(argc - 2, argv + 2);
    if (!strcmp(argv[1], "sweep")) return cmd_sweep(argc - 2, argv + 2);
    if (!strcmp(argv[1], "ppl")) return cmd_ppl(argc - 2, argv + 2);
    if (!strcmp(argv[1], "generate")) return cmd_generate(argc - 2, argv + 2);
    if (!strcmp(argv[1], "version")) {
        printf("kvslim %d.%d.%d (kernels: %s)\n", KVSLIM_VERSION_MAJOR, KVSLIM_VERSION_MINOR, KVSLIM_VERSION_PATCH,
               kvs_kernels());
        return 0;
    }
    return usage();
}
