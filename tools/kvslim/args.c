/* Strict command-line parsing: every value is checked whole (atoi would read "abc" as 0 and "12x"
 * as 12, and a typo would silently change what runs), and every error names the option. */
#include "args.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const cli_cmd *g_cmd; /* the command being parsed, named in errors */

int cli_usage_error(const char *fmt, ...) {
    const char *name = g_cmd ? g_cmd->name : "";
    fprintf(stderr, "kvslim%s%s: ", *name ? " " : "", name);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\ntry 'kvslim%s%s --help'\n", *name ? " " : "", name);
    return CLI_EXIT_USAGE;
}

void cli_print_exit_codes(FILE *f) {
    fprintf(f, "exit status: 0 success; 1 runtime error (model or file unreadable, out of memory, a library\n"
               "error); 2 usage error (unknown command or option, missing or bad value, --ctx beyond the\n"
               "model's trained context without --force).\n");
}

/* strtol/strtod skip leading blanks; " 12" is refused like "12x", as a value mistyped */
static int starts_blank(const char *s) { return isspace((unsigned char)s[0]); }

int arg_int(const char *opt, const char *text, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    const long v = strtol(text, &end, 10);
    if (end == text || *end || starts_blank(text)) return cli_usage_error("%s: '%s' is not an integer", opt, text);
    if (errno == ERANGE || v < lo || v > hi) return cli_usage_error("%s: %s is out of range [%ld, %ld]", opt, text, lo, hi);
    *out = (int)v; /* callers keep [lo, hi] inside int */
    return 0;
}

int arg_num(const char *opt, const char *text, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    const double v = strtod(text, &end);
    if (end == text || *end || starts_blank(text)) return cli_usage_error("%s: '%s' is not a number", opt, text);
    if (errno == ERANGE) return cli_usage_error("%s: %s is out of range [%g, %g]", opt, text, lo, hi);
    if (!isfinite(v)) return cli_usage_error("%s: '%s' is not a finite number", opt, text);
    if (v < lo || v > hi) return cli_usage_error("%s: %s is out of range [%g, %g]", opt, text, lo, hi);
    *out = v;
    return 0;
}

int arg_ints(const char *opt, const char *text, long lo, long hi, cli_ints *out) {
    cli_ints r = {0, {0}};
    for (const char *p = text;;) {
        const char *comma = strchr(p, ',');
        const size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[64];
        if (r.n == CLI_INTS_MAX) return cli_usage_error("%s: '%s' has more than %d values", opt, text, CLI_INTS_MAX);
        if (len >= sizeof item) return cli_usage_error("%s: '%.*s' is not an integer", opt, (int)len, p);
        memcpy(item, p, len);
        item[len] = 0; /* an empty item ("1024,,4096") is rejected by arg_int like any non-number */
        if (arg_int(opt, item, lo, hi, &r.v[r.n++])) return CLI_EXIT_USAGE;
        if (!comma) break;
        p = comma + 1;
    }
    *out = r;
    return 0;
}

static const cli_opt *find_opt(const cli_cmd *c, const char *arg) {
    for (int i = 0; i < c->n_opts; i++)
        if (!strcmp(c->opts[i].name, arg)) return &c->opts[i];
    return NULL;
}

static int is_help(const char *a) { return !strcmp(a, "-h") || !strcmp(a, "--help"); }

static void print_opt(const cli_opt *o) {
    char lhs[64];
    snprintf(lhs, sizeof lhs, "%s%s%s", o->name, o->meta ? " " : "", o->meta ? o->meta : "");
    printf("  %-18s %s", lhs, o->help);
    switch (o->kind) {
    case OPT_INT: printf(", in [%.0f, %.0f] (default %d)", o->lo, o->hi, *(const int *)o->var); break;
    case OPT_NUM: printf(", in [%g, %g] (default %g)", o->lo, o->hi, *(const double *)o->var); break;
    case OPT_STR:
        if (*(const char *const *)o->var) printf(" (default %s)", *(const char *const *)o->var);
        break;
    case OPT_INTS: {
        const cli_ints *l = o->var;
        printf(", each in [%.0f, %.0f], at most %d values (default ", o->lo, o->hi, CLI_INTS_MAX);
        for (int k = 0; k < l->n; k++) printf("%s%d", k ? "," : "", l->v[k]);
        printf(")");
        break;
    }
    case OPT_FLAG: break;
    }
    printf("\n");
}

static void print_help(const cli_cmd *c) {
    printf("usage: kvslim %s%s%s [options]\n%s\n\noptions:\n", c->name, c->pos_meta ? " " : "",
           c->pos_meta ? c->pos_meta : "", c->about);
    for (int i = 0; i < c->n_opts; i++) print_opt(&c->opts[i]);
    printf("  %-18s %s\n\n", "-h, --help", "print this help and exit");
    cli_print_exit_codes(stdout);
}

int cli_parse(const cli_cmd *c, int argc, char **argv) {
    g_cmd = c;
    /* help first, wherever it is, so that the defaults shown are untouched by earlier options */
    for (int i = 0; i < argc; i++) {
        if (is_help(argv[i])) {
            print_help(c);
            return CLI_EXIT_OK;
        }
        const cli_opt *o = find_opt(c, argv[i]);
        if (o && o->kind != OPT_FLAG) i++; /* skip its value: "--prompt -h" is a prompt */
    }
    int n_pos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const cli_opt *o = find_opt(c, a);
        if (!o) {
            if (a[0] == '-' && a[1]) return cli_usage_error("unknown option '%s'", a);
            if (n_pos == c->n_pos) return cli_usage_error("unexpected argument '%s'", a);
            c->pos[n_pos++] = a;
            continue;
        }
        if (o->kind == OPT_FLAG) {
            *(int *)o->var = 1;
            continue;
        }
        if (i + 1 == argc) return cli_usage_error("%s needs a value (%s)", o->name, o->meta);
        const char *v = argv[++i]; /* taken even if it starts with '-': "--ctx -1" is a bad --ctx */
        int rc = 0;
        switch (o->kind) {
        case OPT_STR:
            if (!*v) return cli_usage_error("%s: empty value", o->name);
            *(const char **)o->var = v;
            break;
        case OPT_INT: rc = arg_int(o->name, v, (long)o->lo, (long)o->hi, o->var); break;
        case OPT_NUM: rc = arg_num(o->name, v, o->lo, o->hi, o->var); break;
        case OPT_INTS: rc = arg_ints(o->name, v, (long)o->lo, (long)o->hi, o->var); break;
        case OPT_FLAG: break;
        }
        if (rc) return rc;
    }
    if (n_pos < c->n_pos) return cli_usage_error("missing %s", c->pos_meta);
    return CLI_RUN;
}
