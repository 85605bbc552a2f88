/* A minimal JSON writer for the CLI's --json outputs (objects of numbers and strings). */
#ifndef KVS_TOOLS_JSON_H
#define KVS_TOOLS_JSON_H
#include <stdio.h>

typedef struct {
    FILE *f;
    int first; /* no comma before the next member */
} json_w;

void json_begin(json_w *j, FILE *f, char open);
void json_end(json_w *j, char close);
void json_key(json_w *j, const char *key); /* inside objects; NULL inside arrays */
void json_str(json_w *j, const char *key, const char *v);
void json_num(json_w *j, const char *key, double v);
void json_open(json_w *j, const char *key, char open); /* nested object/array */
#endif
