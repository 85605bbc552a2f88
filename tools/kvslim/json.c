#include "json.h"

#include <math.h>

void json_begin(json_w *j, FILE *f, char open) {
    j->f = f;
    j->first = 1;
    fputc(open, f);
}

void json_end(json_w *j, char close) {
    fputc(close, j->f);
    j->first = 0;
}

void json_key(json_w *j, const char *key) {
    if (!j->first) fputc(',', j->f);
    j->first = 0;
    if (key) fprintf(j->f, "\"%s\":", key);
}

void json_str(json_w *j, const char *key, const char *v) {
    json_key(j, key);
    fputc('"', j->f);
    for (const char *p = v; *p; p++) {
        if (*p == '"' || *p == '\\') fputc('\\', j->f);
        if ((unsigned char)*p < 0x20) fprintf(j->f, "\\u%04x", (unsigned char)*p);
        else fputc(*p, j->f);
    }
    fputc('"', j->f);
}

void json_num(json_w *j, const char *key, double v) {
    json_key(j, key);
    if (isfinite(v)) fprintf(j->f, "%.6g", v);
    else fputs("null", j->f);
}

void json_open(json_w *j, const char *key, char open) {
    json_key(j, key);
    fputc(open, j->f);
    j->first = 1;
}
