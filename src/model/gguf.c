/* GGUF reader: header, metadata of every value type, tensor infos, alignment, data offsets,
 * memory-mapped; every length, count, shape and offset is checked before it is used. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model.h"

struct kvs_gguf {
    const uint8_t *base;
    size_t size;
    int mapped;
    uint32_t version, alignment;
    int n_kv, n_tensors;
    kvs_gguf_kv *kv;
    kvs_gguf_tensor *tensors;
    size_t data_start;
};

const char *kvs_gguf_error_str(kvs_gguf_error e) {
    static const char *names[] = {"ok", "i/o error", "bad magic", "unsupported version", "truncated file",
                                  "count too large for the file", "bad metadata value type", "duplicate key",
                                  "duplicate tensor name", "bad alignment", "bad tensor shape",
                                  "unknown tensor type", "tensor data out of range or overlapping", "bad name"};
    return (unsigned)e < sizeof names / sizeof *names ? names[e] : "unknown gguf error";
}

typedef struct {
    const uint8_t *p;
    size_t size, off;
    kvs_gguf_error err;
} cursor;

static int take(cursor *c, void *dst, size_t n) {
    if (n > c->size - c->off) {
        c->err = KVS_GGUF_TRUNCATED;
        return 0;
    }
    if (dst) memcpy(dst, c->p + c->off, n);
    c->off += n;
    return 1;
}

static int take_str(cursor *c, const uint8_t **s, uint64_t *len) {
    if (!take(c, len, 8)) return 0;
    if (*len > c->size - c->off) {
        c->err = KVS_GGUF_TRUNCATED;
        return 0;
    }
    *s = c->p + c->off;
    c->off += (size_t)*len;
    return 1;
}

static size_t scalar_size(uint32_t t) {
    switch (t) {
    case KVS_GGUF_TYPE_U8: case KVS_GGUF_TYPE_I8: case KVS_GGUF_TYPE_BOOL: return 1;
    case KVS_GGUF_TYPE_U16: case KVS_GGUF_TYPE_I16: return 2;
    case KVS_GGUF_TYPE_U32: case KVS_GGUF_TYPE_I32: case KVS_GGUF_TYPE_F32: return 4;
    case KVS_GGUF_TYPE_U64: case KVS_GGUF_TYPE_I64: case KVS_GGUF_TYPE_F64: return 8;
    default: return 0;
    }
}

/* Skip one value of type t (not an array) with checks. */
static int skip_value(cursor *c, uint32_t t) {
    if (t == KVS_GGUF_TYPE_STRING) {
        const uint8_t *s;
        uint64_t len;
        return take_str(c, &s, &len);
    }
    size_t n = scalar_size(t);
    if (!n) {
        c->err = KVS_GGUF_BAD_VALUE_TYPE;
        return 0;
    }
    if (t == KVS_GGUF_TYPE_BOOL && c->off < c->size && c->p[c->off] > 1) {
        c->err = KVS_GGUF_BAD_VALUE_TYPE;
        return 0;
    }
    return take(c, NULL, n);
}

int kvs_ggml_block_size(uint32_t type) {
    switch (type) {
    case KVS_GGML_F32: case KVS_GGML_F16: return 1;
    case KVS_GGML_Q4_0: case KVS_GGML_Q4_1: case KVS_GGML_Q5_0: case KVS_GGML_Q5_1: case KVS_GGML_Q8_0: return 32;
    case KVS_GGML_Q4_K: case KVS_GGML_Q6_K: return 256;
    default: return 0;
    }
}

size_t kvs_ggml_block_bytes(uint32_t type) {
    switch (type) {
    case KVS_GGML_F32: return 4;
    case KVS_GGML_F16: return 2;
    case KVS_GGML_Q4_0: return 18;
    case KVS_GGML_Q4_1: return 20;
    case KVS_GGML_Q5_0: return 22;
    case KVS_GGML_Q5_1: return 24;
    case KVS_GGML_Q8_0: return 34;
    case KVS_GGML_Q4_K: return 144;
    case KVS_GGML_Q6_K: return 210;
    default: return 0;
    }
}

const char *kvs_ggml_type_name(uint32_t type) {
    switch (type) {
    case KVS_GGML_F32: return "F32";
    case KVS_GGML_F16: return "F16";
    case KVS_GGML_Q4_0: return "Q4_0";
    case KVS_GGML_Q4_1: return "Q4_1";
    case KVS_GGML_Q5_0: return "Q5_0";
    case KVS_GGML_Q5_1: return "Q5_1";
    case KVS_GGML_Q8_0: return "Q8_0";
    case KVS_GGML_Q4_K: return "Q4_K";
    case KVS_GGML_Q6_K: return "Q6_K";
    default: return "?";
    }
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* A name that appears twice among names[n] (sorted in place), or NULL: O(n log n), so a file with
 * millions of tiny tensors cannot make the check quadratic. */
static const char *find_duplicate(const char **names, size_t n) {
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(names[i - 1], names[i])) return names[i];
    return NULL;
}
static int cmp_toff(const void *a, const void *b) {
    const kvs_gguf_tensor *x = *(const kvs_gguf_tensor *const *)a, *y = *(const kvs_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static kvs_status fail(kvs_gguf_error *err, kvs_gguf_error e, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (err) *err = e;
    return kvs_report(e == KVS_GGUF_IO ? KVS_ERR_IO : (e == KVS_GGUF_BAD_VERSION || e == KVS_GGUF_BAD_TENSOR_TYPE)
                                                        ? KVS_ERR_UNSUPPORTED
                                                        : KVS_ERR_FORMAT,
                    "gguf: %s: %s", kvs_gguf_error_str(e), msg);
}

static kvs_status parse(kvs_gguf *g, kvs_gguf_error *err) {
    cursor c = {g->base, g->size, 0, KVS_GGUF_OK};
    uint32_t magic;
    uint64_t n_tensors, n_kv;
    if (!take(&c, &magic, 4)) return fail(err, KVS_GGUF_TRUNCATED, "file of %zu bytes has no header", g->size);
    if (magic != 0x46554747u) return fail(err, KVS_GGUF_BAD_MAGIC, "magic 0x%08x at offset 0, want 'GGUF'", magic);
    if (!take(&c, &g->version, 4) || !take(&c, &n_tensors, 8) || !take(&c, &n_kv, 8))
        return fail(err, KVS_GGUF_TRUNCATED, "header ends at offset %zu", c.off);
    if (g->version != 2 && g->version != 3)
        return fail(err, KVS_GGUF_BAD_VERSION, "version %u (supported: 2, 3%s)", g->version,
                    (g->version & 0xffff) == 0 ? "; looks byte-swapped" : "");
    const size_t rest = g->size - c.off;
    if (n_kv > rest / 13) return fail(err, KVS_GGUF_BAD_COUNT, "%llu metadata keys in %zu bytes", (unsigned long long)n_kv, rest);
    if (n_tensors > rest / 32)
        return fail(err, KVS_GGUF_BAD_COUNT, "%llu tensors in %zu bytes", (unsigned long long)n_tensors, rest);
    g->n_kv = (int)n_kv;
    g->n_tensors = (int)n_tensors;
    g->kv = calloc(n_kv ? n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) return kvs_report(KVS_ERR_NOMEM, "gguf: out of memory");
    g->alignment = 32;
    for (uint64_t i = 0; i < n_kv; i++) {
        kvs_gguf_kv *kv = &g->kv[i];
        const uint8_t *key;
        uint64_t klen;
        const size_t at = c.off;
        if (!take_str(&c, &key, &klen)) return fail(err, c.err, "key %llu at offset %zu", (unsigned long long)i, at);
        if (klen == 0 || klen > 65535) return fail(err, KVS_GGUF_BAD_NAME, "key %llu at offset %zu has length %llu",
                                                  (unsigned long long)i, at, (unsigned long long)klen);
        if (!(kv->key = malloc(klen + 1))) return kvs_report(KVS_ERR_NOMEM, "gguf: out of memory");
        memcpy(kv->key, key, klen);
        kv->key[klen] = 0;
        if (!take(&c, &kv->type, 4)) return fail(err, c.err, "type of key '%s'", kv->key);
        kv->val = c.p + c.off;
        kv->count = 1;
        if (kv->type == KVS_GGUF_TYPE_ARRAY) {
            if (!take(&c, &kv->arr_type, 4) || !take(&c, &kv->count, 8)) return fail(err, c.err, "array header of '%s'", kv->key);
            kv->val = c.p + c.off;
            if (kv->arr_type == KVS_GGUF_TYPE_ARRAY)
                return fail(err, KVS_GGUF_BAD_VALUE_TYPE, "nested array in '%s'", kv->key);
            if (kv->arr_type == KVS_GGUF_TYPE_STRING) {
                if (kv->count > (c.size - c.off) / 8)
                    return fail(err, KVS_GGUF_TRUNCATED, "array '%s' of %llu strings", kv->key, (unsigned long long)kv->count);
                for (uint64_t e = 0; e < kv->count; e++)
                    if (!skip_value(&c, KVS_GGUF_TYPE_STRING)) return fail(err, c.err, "element %llu of '%s'", (unsigned long long)e, kv->key);
            } else {
                const size_t es = scalar_size(kv->arr_type);
                if (!es) return fail(err, KVS_GGUF_BAD_VALUE_TYPE, "array '%s' of type %u", kv->key, kv->arr_type);
                if (kv->count > (c.size - c.off) / es)
                    return fail(err, KVS_GGUF_TRUNCATED, "array '%s' of %llu elements", kv->key, (unsigned long long)kv->count);
                if (kv->arr_type == KVS_GGUF_TYPE_BOOL)
                    for (uint64_t e = 0; e < kv->count; e++)
                        if (c.p[c.off + e] > 1) return fail(err, KVS_GGUF_BAD_VALUE_TYPE, "bool %u in '%s'", c.p[c.off + e], kv->key);
                c.off += (size_t)(kv->count * es);
            }
        } else if (!skip_value(&c, kv->type)) {
            return fail(err, c.err, "value of '%s' (type %u)", kv->key, kv->type);
        }
    }
    if (n_kv > 1) {
        const char **names = malloc(n_kv * sizeof *names);
        if (!names) return kvs_report(KVS_ERR_NOMEM, "gguf: out of memory");
        for (uint64_t i = 0; i < n_kv; i++) names[i] = g->kv[i].key;
        const char *dup = find_duplicate(names, n_kv);
        free(names);
        if (dup) return fail(err, KVS_GGUF_DUPLICATE_KEY, "key '%.80s' appears twice", dup);
    }
    const kvs_gguf_kv *al = kvs_gguf_find(g, "general.alignment");
    if (al) {
        uint32_t a;
        if (al->type != KVS_GGUF_TYPE_U32) return fail(err, KVS_GGUF_BAD_ALIGNMENT, "general.alignment has type %u", al->type);
        memcpy(&a, al->val, 4);
        if (a == 0 || (a & (a - 1))) return fail(err, KVS_GGUF_BAD_ALIGNMENT, "general.alignment = %u is not a power of two", a);
        g->alignment = a;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        kvs_gguf_tensor *t = &g->tensors[i];
        const uint8_t *name;
        uint64_t nlen;
        uint32_t nd;
        const size_t at = c.off;
        if (!take_str(&c, &name, &nlen)) return fail(err, c.err, "tensor %llu at offset %zu", (unsigned long long)i, at);
        if (nlen == 0 || nlen >= 64) return fail(err, KVS_GGUF_BAD_NAME, "tensor %llu name length %llu", (unsigned long long)i, (unsigned long long)nlen);
        memcpy(t->name, name, nlen);
        t->name[nlen] = 0;
        if (!take(&c, &nd, 4)) return fail(err, c.err, "dims of tensor '%s'", t->name);
        if (nd < 1 || nd > 4) return fail(err, KVS_GGUF_BAD_SHAPE, "tensor '%s' has %u dims", t->name, nd);
        t->n_dims = (int)nd;
        uint64_t elems = 1;
        for (int d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t ne;
            if (!take(&c, &ne, 8)) return fail(err, c.err, "shape of tensor '%s'", t->name);
            if (ne == 0 || ne > ((uint64_t)1 << 62) / elems)
                return fail(err, KVS_GGUF_BAD_SHAPE, "tensor '%s' dim %u = %llu", t->name, d, (unsigned long long)ne);
            t->ne[d] = (int64_t)ne;
            elems *= ne;
        }
        if (!take(&c, &t->type, 4) || !take(&c, &t->offset, 8)) return fail(err, c.err, "type/offset of tensor '%s'", t->name);
        const int bs = kvs_ggml_block_size(t->type);
        if (!bs) return fail(err, KVS_GGUF_BAD_TENSOR_TYPE, "tensor '%s' has ggml type %u", t->name, t->type);
        if (t->ne[0] % bs)
            return fail(err, KVS_GGUF_BAD_SHAPE, "tensor '%s': row of %lld is not whole %s blocks", t->name,
                        (long long)t->ne[0], kvs_ggml_type_name(t->type));
        const uint64_t blocks = elems / (uint64_t)bs;
        if (blocks > (uint64_t)SIZE_MAX / kvs_ggml_block_bytes(t->type))
            return fail(err, KVS_GGUF_BAD_SHAPE, "tensor '%s' size overflows", t->name);
        t->bytes = (size_t)(blocks * kvs_ggml_block_bytes(t->type));
    }
    g->data_start = (c.off + g->alignment - 1) / g->alignment * g->alignment;
    if (g->data_start > g->size && n_tensors > 0)
        return fail(err, KVS_GGUF_TRUNCATED, "data section at %zu past the end (%zu bytes)", g->data_start, g->size);
    for (uint64_t i = 0; i < n_tensors; i++) {
        kvs_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment)
            return fail(err, KVS_GGUF_BAD_ALIGNMENT, "tensor '%s' offset %llu not a multiple of %u", t->name,
                        (unsigned long long)t->offset, g->alignment);
        if (t->offset > g->size - g->data_start || t->bytes > g->size - g->data_start - t->offset)
            return fail(err, KVS_GGUF_BAD_OFFSET, "tensor '%s' [%llu, +%zu) past the end of the data (%zu bytes)", t->name,
                        (unsigned long long)t->offset, t->bytes, g->size - g->data_start);
        t->data = g->base + g->data_start + t->offset;
    }
    if (n_tensors > 1) {
        const char **names = malloc(n_tensors * sizeof *names);
        kvs_gguf_tensor **idx = malloc(n_tensors * sizeof *idx);
        if (!names || !idx) {
            free(names);
            free(idx);
            return kvs_report(KVS_ERR_NOMEM, "gguf: out of memory");
        }
        for (uint64_t i = 0; i < n_tensors; i++) names[i] = g->tensors[i].name;
        const char *dup = find_duplicate(names, n_tensors);
        free(names);
        if (dup) {
            free(idx);
            return fail(err, KVS_GGUF_DUPLICATE_TENSOR, "tensor '%s' appears twice", dup);
        }
        for (uint64_t i = 0; i < n_tensors; i++) idx[i] = &g->tensors[i];
        qsort(idx, n_tensors, sizeof *idx, cmp_toff);
        for (uint64_t i = 1; i < n_tensors; i++)
            if (idx[i - 1]->offset + idx[i - 1]->bytes > idx[i]->offset) {
                char a[64], b[64];
                memcpy(a, idx[i - 1]->name, 64);
                memcpy(b, idx[i]->name, 64);
                free(idx);
                return fail(err, KVS_GGUF_BAD_OFFSET, "tensors '%s' and '%s' overlap", a, b);
            }
        free(idx);
    }
    if (err) *err = KVS_GGUF_OK;
    return KVS_OK;
}

kvs_status kvs_gguf_open_mem(const uint8_t *data, size_t size, kvs_gguf **out, kvs_gguf_error *err) {
    if (!out || (!data && size)) return kvs_report(KVS_ERR_ARG, "gguf: NULL argument");
    *out = NULL;
    kvs_gguf *g = calloc(1, sizeof *g);
    if (!g) return kvs_report(KVS_ERR_NOMEM, "gguf: out of memory");
    g->base = data;
    g->size = size;
    kvs_status s = parse(g, err);
    if (s) {
        kvs_gguf_close(g);
        return s;
    }
    *out = g;
    return KVS_OK;
}

kvs_status kvs_gguf_open(const char *path, kvs_gguf **out, kvs_gguf_error *err) {
    if (!path || !out) return kvs_report(KVS_ERR_ARG, "gguf: NULL argument");
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return fail(err, KVS_GGUF_IO, "cannot open '%s'", path);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(err, KVS_GGUF_IO, "'%s' is not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return fail(err, KVS_GGUF_TRUNCATED, "'%s' is empty", path);
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return fail(err, KVS_GGUF_IO, "cannot map '%s'", path);
    kvs_status s = kvs_gguf_open_mem(m, (size_t)st.st_size, out, err);
    if (s) {
        munmap(m, (size_t)st.st_size);
        return s;
    }
    (*out)->mapped = 1;
    return KVS_OK;
}

void kvs_gguf_close(kvs_gguf *g) {
    if (!g) return;
    for (int i = 0; g->kv && i < g->n_kv; i++) free(g->kv[i].key);
    free(g->kv);
    free(g->tensors);
    if (g->mapped) munmap((void *)g->base, g->size);
    free(g);
}

int kvs_gguf_n_kv(const kvs_gguf *g) { return g->n_kv; }
const kvs_gguf_kv *kvs_gguf_kv_at(const kvs_gguf *g, int i) { return i >= 0 && i < g->n_kv ? &g->kv[i] : NULL; }
int kvs_gguf_n_tensors(const kvs_gguf *g) { return g->n_tensors; }
const kvs_gguf_tensor *kvs_gguf_tensor_at(const kvs_gguf *g, int i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const kvs_gguf_kv *kvs_gguf_find(const kvs_gguf *g, const char *key) {
    for (int i = 0; i < g->n_kv; i++)
        if (g->kv[i].key && !strcmp(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const kvs_gguf_tensor *kvs_gguf_find_tensor(const kvs_gguf *g, const char *name) {
    for (int i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

kvs_status kvs_gguf_get_int(const kvs_gguf *g, const char *key, int64_t *out) {
    const kvs_gguf_kv *kv = kvs_gguf_find(g, key);
    if (!kv) return kvs_report(KVS_ERR_FORMAT, "gguf: key '%s' missing", key);
    const uint8_t *v = kv->val;
    switch (kv->type) {
    case KVS_GGUF_TYPE_U8: *out = v[0]; return KVS_OK;
    case KVS_GGUF_TYPE_I8: *out = (int8_t)v[0]; return KVS_OK;
    case KVS_GGUF_TYPE_U16: { uint16_t x; memcpy(&x, v, 2); *out = x; return KVS_OK; }
    case KVS_GGUF_TYPE_I16: { int16_t x; memcpy(&x, v, 2); *out = x; return KVS_OK; }
    case KVS_GGUF_TYPE_U32: { uint32_t x; memcpy(&x, v, 4); *out = x; return KVS_OK; }
    case KVS_GGUF_TYPE_I32: { int32_t x; memcpy(&x, v, 4); *out = x; return KVS_OK; }
    case KVS_GGUF_TYPE_I64: { int64_t x; memcpy(&x, v, 8); *out = x; return KVS_OK; }
    case KVS_GGUF_TYPE_U64: {
        uint64_t x;
        memcpy(&x, v, 8);
        if (x > (uint64_t)INT64_MAX) return kvs_report(KVS_ERR_FORMAT, "gguf: key '%s' = %llu too large", key, (unsigned long long)x);
        *out = (int64_t)x;
        return KVS_OK;
    }
    case KVS_GGUF_TYPE_BOOL: *out = v[0]; return KVS_OK;
    default: return kvs_report(KVS_ERR_FORMAT, "gguf: key '%s' has type %u, want an integer", key, kv->type);
    }
}

kvs_status kvs_gguf_get_f32(const kvs_gguf *g, const char *key, float *out) {
    const kvs_gguf_kv *kv = kvs_gguf_find(g, key);
    if (!kv) return kvs_report(KVS_ERR_FORMAT, "gguf: key '%s' missing", key);
    if (kv->type == KVS_GGUF_TYPE_F32) {
        memcpy(out, kv->val, 4);
        return KVS_OK;
    }
    if (kv->type == KVS_GGUF_TYPE_F64) {
        double d;
        memcpy(&d, kv->val, 8);
        *out = (float)d;
        return KVS_OK;
    }
    return kvs_report(KVS_ERR_FORMAT, "gguf: key '%s' has type %u, want f32", key, kv->type);
}

kvs_status kvs_gguf_get_str(const kvs_gguf *g, const char *key, const char **s, size_t *len) {
    const kvs_gguf_kv *kv = kvs_gguf_find(g, key);
    if (!kv) return kvs_report(KVS_ERR_FORMAT, "gguf: key '%s' missing", key);
    if (kv->type != KVS_GGUF_TYPE_STRING) return kvs_report(KVS_ERR_FORMAT, "gguf: key '%s' is not a string", key);
    uint64_t n;
    memcpy(&n, kv->val, 8);
    *s = (const char *)kv->val + 8;
    *len = (size_t)n;
    return KVS_OK;
}

kvs_status kvs_gguf_get_str_array(const kvs_gguf *g, const char *key, uint64_t *n, const char ***s, uint32_t **len) {
    const kvs_gguf_kv *kv = kvs_gguf_find(g, key);
    if (!kv) return kvs_report(KVS_ERR_FORMAT, "gguf: key '%s' missing", key);
    if (kv->type != KVS_GGUF_TYPE_ARRAY || kv->arr_type != KVS_GGUF_TYPE_STRING)
        return kvs_report(KVS_ERR_FORMAT, "gguf: key '%s' is not a string array", key);
    const char **ss = malloc((kv->count ? kv->count : 1) * sizeof *ss);
    uint32_t *ll = malloc((kv->count ? kv->count : 1) * sizeof *ll);
    if (!ss || !ll) {
        free(ss);
        free(ll);
        return kvs_report(KVS_ERR_NOMEM, "gguf: out of memory");
    }
    const uint8_t *p = kv->val; /* validated by parse */
    for (uint64_t i = 0; i < kv->count; i++) {
        uint64_t l;
        memcpy(&l, p, 8);
        ss[i] = (const char *)p + 8;
        ll[i] = l > UINT32_MAX ? UINT32_MAX : (uint32_t)l;
        p += 8 + l;
    }
    *n = kv->count;
    *s = ss;
    *len = ll;
    return KVS_OK;
}

kvs_status kvs_gguf_get_array(const kvs_gguf *g, const char *key, uint32_t *type, uint64_t *n, const uint8_t **data) {
    const kvs_gguf_kv *kv = kvs_gguf_find(g, key);
    if (!kv) return kvs_report(KVS_ERR_FORMAT, "gguf: key '%s' missing", key);
    if (kv->type != KVS_GGUF_TYPE_ARRAY || kv->arr_type == KVS_GGUF_TYPE_STRING)
        return kvs_report(KVS_ERR_FORMAT, "gguf: key '%s' is not a numeric array", key);
    *type = kv->arr_type;
    *n = kv->count;
    *data = kv->val;
    return KVS_OK;
}
