/* Strict command-line parsing shared by every kvslim command. A command declares its options in a
 * table (name, type, inclusive range, help line; the default is whatever the variable holds), and
 * cli_parse fills the variables or prints one line naming the bad option and value plus a hint. */
#ifndef KVS_TOOLS_ARGS_H
#define KVS_TOOLS_ARGS_H
#include <stdio.h>

/* Exit codes of every command (printed by `kvslim --help` and each command's --help). */
enum { CLI_EXIT_OK = 0, CLI_EXIT_RUNTIME = 1, CLI_EXIT_USAGE = 2 };
/* cli_parse's answer when the command should go on (0 and 2 are exit codes: help shown, bad input). */
enum { CLI_RUN = -1 };

typedef enum {
    OPT_FLAG, /* int *: set to 1, takes no value */
    OPT_STR,  /* const char **: any non-empty text */
    OPT_INT,  /* int *: decimal integer in [lo, hi] */
    OPT_NUM,  /* double *: finite number in [lo, hi] */
    OPT_INTS  /* cli_ints *: comma list of integers, each in [lo, hi] */
} cli_kind;

#define CLI_INTS_MAX 8
typedef struct {
    int n, v[CLI_INTS_MAX];
} cli_ints;

typedef struct {
    const char *name; /* "--ctx", "-n" */
    const char *meta; /* value placeholder in the help ("N", "FILE"); NULL for flags */
    cli_kind kind;
    void *var;
    double lo, hi; /* inclusive range of numeric values (exact for ints up to 2^53) */
    const char *help;
} cli_opt;

#define CLI_COUNT(a) ((int)(sizeof(a) / sizeof *(a)))

typedef struct {
    const char *name;    /* "ppl", "bench attention": used in messages and the hint */
    const char *about;   /* one line for the help */
    const char *pos_meta;/* required positional arguments in the synopsis ("CONFIG"), or NULL */
    const char **pos;    /* where they go; n_pos of them, no more and no fewer */
    int n_pos;
    const cli_opt *opts;
    int n_opts;
} cli_cmd;

/* Parse argv (after the command name). -h/--help anywhere in option position prints the help to
 * stdout (defaults as the variables hold them before parsing) and returns 0; a bad argument
 * prints the error and returns 2; otherwise CLI_RUN. Makes c the command named in later errors. */
int cli_parse(const cli_cmd *c, int argc, char **argv);
/* "kvslim CMD: <message>" and "try 'kvslim CMD --help'" on stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
/* The exit-code paragraph of the help texts. */
void cli_print_exit_codes(FILE *f);

/* The value checks behind cli_parse, for values that arrive some other way: 0 and *out set, or
 * CLI_EXIT_USAGE after printing e.g. "--chunks: 'abc' is not an integer". */
int arg_int(const char *opt, const char *text, long lo, long hi, int *out);
int arg_num(const char *opt, const char *text, double lo, double hi, double *out);
int arg_ints(const char *opt, const char *text, long lo, long hi, cli_ints *out);
#endif
