/* kvs_config: defaults, the one-string grammar (see kvslim.h), validation, canonical format. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cache/evict.h"
#include "../cache/lowrank.h"
#include "../common/status.h"


kvs_config kvs_config_default(void) {
    kvs_config c;
    memset(&c, 0, sizeof c);
    c.n_layers = 30;
    c.n_heads = 9;
    c.n_kv_heads = 3;
    c.head_dim = 64;
    c.max_tokens = 8192;
    c.k_type = KVS_TYPE_FP32;
    c.v_type = KVS_TYPE_FP32;
    c.group = 32;
    c.window = 0;
    c.sinks = 0;
    c.rotate = KVS_ROTATE_NONE;
    c.scale = KVS_SCALE_NONE;
    c.jensen = KVS_JENSEN_OFF;
    c.lambda = 1.0f;
    c.tau = 0.0f;
    c.n_threads = 0;
    c.evict = KVS_EVICT_NONE;
    c.budget = 1.0f;
    c.agg = KVS_AGG_MEAN;
    c.seed = 1;
    c.calib = NULL;
    c.rope = KVS_ROPE_NONE;
    c.rope_base = 10000.0f;
    c.rank_k = c.rank_v = 0;
    c.basis = KVS_BASIS_LEARNED;
    c.rank_budget = 0.0f;
    return c;
}

static const char *const g_type_names[KVS_TYPE_COUNT] = {"fp32", "fp16", "q8_0", "q4_0",
                                                         "int2", "int3", "int4", "int8"};
static const char *const g_rotate_names[] = {"none", "hadamard"};
static const char *const g_scale_names[] = {"none", "token"};
static const char *const g_jensen_names[] = {"off", "taylor", "exact"};
static const char *const g_self_names[] = {"exact", "cache"};
/* evict= takes none/uniform/random, heatkv= the calibrated variants (same enum) */
static const char *const g_evict_names[] = {"none", "uniform", "random"};
static const char *const g_heatkv_names[] = {"block", "head", "prop", "greedy"};
static const char *const g_agg_names[] = {"mean", "max"};
static const char *const g_rope_names[] = {"none", "adjacent"};
static const char *const g_basis_names[] = {"pca", "learned", "eigen"}; /* kvs_basis order */
#define N_NAMES(a) ((int)(sizeof(a) / sizeof *(a)))

/* A hand-filled kvs_config may hold any int in an enum field: never index past a table. */
static const char *name_of(const char *const *names, int n, int i) { return i >= 0 && i < n ? names[i] : "?"; }

/* Presets: a name expands to a full compression setting (shapes are left alone). */
static void preset(kvs_config *c, kvs_type k, kvs_type v, int window, kvs_rotate r, kvs_scale s, kvs_self self) {
    c->k_type = k;
    c->v_type = v;
    c->group = 32;
    c->window = window;
    c->sinks = 0;
    c->rotate = r;
    c->scale = s;
    c->jensen = KVS_JENSEN_OFF;
    c->lambda = 1.0f;
    c->self = self;
}

/* fp16, q8_0, q4_0 are llama.cpp's KV types and behave as llama.cpp does: every token stored at
 * once, the current one attended through its stored form (self=cache). */
static int apply_preset(kvs_config *c, const char *name, size_t len) {
#define IS(s) (len == strlen(s) && memcmp(name, s, len) == 0)
    if (IS("fp32")) preset(c, KVS_TYPE_FP32, KVS_TYPE_FP32, 0, KVS_ROTATE_NONE, KVS_SCALE_NONE, KVS_SELF_EXACT);
    else if (IS("fp16")) preset(c, KVS_TYPE_FP16, KVS_TYPE_FP16, 0, KVS_ROTATE_NONE, KVS_SCALE_NONE, KVS_SELF_CACHE);
    else if (IS("q8_0")) preset(c, KVS_TYPE_Q8_0, KVS_TYPE_Q8_0, 0, KVS_ROTATE_NONE, KVS_SCALE_NONE, KVS_SELF_CACHE);
    else if (IS("q4_0")) preset(c, KVS_TYPE_Q4_0, KVS_TYPE_Q4_0, 0, KVS_ROTATE_NONE, KVS_SCALE_NONE, KVS_SELF_CACHE);
    else if (IS("kivi-int2")) preset(c, KVS_TYPE_INT2, KVS_TYPE_INT2, 128, KVS_ROTATE_NONE, KVS_SCALE_NONE, KVS_SELF_EXACT);
    else if (IS("kivi-int4")) preset(c, KVS_TYPE_INT4, KVS_TYPE_INT4, 128, KVS_ROTATE_NONE, KVS_SCALE_NONE, KVS_SELF_EXACT);
    else if (IS("oscar-int2")) preset(c, KVS_TYPE_INT2, KVS_TYPE_INT2, 128, KVS_ROTATE_HADAMARD, KVS_SCALE_TOKEN, KVS_SELF_EXACT);
    else if (IS("oscar-int4")) preset(c, KVS_TYPE_INT4, KVS_TYPE_INT4, 128, KVS_ROTATE_HADAMARD, KVS_SCALE_TOKEN, KVS_SELF_EXACT);
    else return 0;
    return 1;
#undef IS
}

static int lookup(const char *const *names, int n, const char *v, size_t len) {
    for (int i = 0; i < n; i++)
        if (strlen(names[i]) == len && memcmp(names[i], v, len) == 0) return i;
    return -1;
}

/* The value as a NUL-terminated string in buf[32]; 0 if empty or too long to be a number. */
static int value_text(const char *v, size_t len, char *buf) {
    if (len == 0 || len >= 32) return 0;
    memcpy(buf, v, len);
    buf[len] = 0;
    errno = 0;
    return 1;
}

static int parse_int(const char *v, size_t len, long lo, long hi, int *out) {
    char buf[32], *end;
    if (!value_text(v, len, buf)) return 0;
    long x = strtol(buf, &end, 10);
    if (errno || *end || x < lo || x > hi) return 0;
    *out = (int)x;
    return 1;
}

static int parse_float(const char *v, size_t len, float lo, float hi, float *out) {
    char buf[32], *end;
    if (!value_text(v, len, buf)) return 0;
    float x = strtof(buf, &end);
    if (errno || *end || !isfinite(x) || x < lo || x > hi) return 0;
    *out = x;
    return 1;
}

/* One key=value item; returns 1 ok, 0 bad value, -1 unknown key. */
static int apply_kv(kvs_config *c, const char *k, size_t kl, const char *v, size_t vl) {
#define KEY(s) (kl == strlen(s) && memcmp(k, s, kl) == 0)
    int i;
    if (KEY("k") || KEY("v")) {
        if ((i = lookup(g_type_names, N_NAMES(g_type_names), v, vl)) < 0) return 0;
        *(KEY("k") ? &c->k_type : &c->v_type) = (kvs_type)i;
        return 1;
    }
    if (KEY("rotate")) {
        if ((i = lookup(g_rotate_names, N_NAMES(g_rotate_names), v, vl)) < 0) return 0;
        c->rotate = (kvs_rotate)i;
        return 1;
    }
    if (KEY("scale")) {
        if ((i = lookup(g_scale_names, N_NAMES(g_scale_names), v, vl)) < 0) return 0;
        c->scale = (kvs_scale)i;
        return 1;
    }
    if (KEY("jensen")) {
        if ((i = lookup(g_jensen_names, N_NAMES(g_jensen_names), v, vl)) < 0) return 0;
        c->jensen = (kvs_jensen)i;
        return 1;
    }
    if (KEY("self")) {
        if ((i = lookup(g_self_names, N_NAMES(g_self_names), v, vl)) < 0) return 0;
        c->self = (kvs_self)i;
        return 1;
    }
    if (KEY("evict")) {
        if ((i = lookup(g_evict_names, N_NAMES(g_evict_names), v, vl)) < 0) return 0;
        c->evict = (kvs_evict)i;
        return 1;
    }
    if (KEY("heatkv")) {
        if ((i = lookup(g_heatkv_names, N_NAMES(g_heatkv_names), v, vl)) < 0) return 0;
        c->evict = (kvs_evict)(KVS_EVICT_HEATKV_BLOCK + i);
        return 1;
    }
    if (KEY("agg")) {
        if ((i = lookup(g_agg_names, N_NAMES(g_agg_names), v, vl)) < 0) return 0;
        c->agg = (kvs_agg)i;
        return 1;
    }
    if (KEY("rope")) {
        if ((i = lookup(g_rope_names, N_NAMES(g_rope_names), v, vl)) < 0) return 0;
        c->rope = (kvs_rope)i;
        return 1;
    }
    if (KEY("rope_base")) return parse_float(v, vl, 1.0001f, 1e9f, &c->rope_base);
    if (KEY("stiefel")) { /* RK/RV, auto or auto:CR */
        if (vl >= 4 && memcmp(v, "auto", 4) == 0) {
            c->rank_k = c->rank_v = KVS_RANK_AUTO;
            c->rank_budget = 0.0f;
            return vl == 4 || (v[4] == ':' && parse_float(v + 5, vl - 5, 1e-6f, 1.0f, &c->rank_budget));
        }
        c->rank_budget = 0.0f;
        const char *slash = memchr(v, '/', vl);
        if (!slash) return 0;
        const size_t a = (size_t)(slash - v);
        return parse_int(v, a, 0, 1 << 20, &c->rank_k) && parse_int(slash + 1, vl - a - 1, 0, 1 << 20, &c->rank_v);
    }
    if (KEY("basis")) {
        if ((i = lookup(g_basis_names, N_NAMES(g_basis_names), v, vl)) < 0) return 0;
        c->basis = (kvs_basis)i;
        return 1;
    }
    if (KEY("budget")) return parse_float(v, vl, 1e-9f, 1.0f, &c->budget);
    if (KEY("seed")) {
        int x;
        if (!parse_int(v, vl, 0, 2147483647L, &x)) return 0;
        c->seed = (unsigned)x;
        return 1;
    }
    if (KEY("keep")) return parse_int(v, vl, 0, 65535, &c->keep);
    if (KEY("lambda")) return parse_float(v, vl, 0.0f, 100.0f, &c->lambda);
    if (KEY("tau")) return parse_float(v, vl, 0.0f, 1e6f, &c->tau);
    if (KEY("group")) return parse_int(v, vl, 1, 1 << 20, &c->group);
    if (KEY("window")) return parse_int(v, vl, 0, 1 << 28, &c->window);
    if (KEY("sinks")) return parse_int(v, vl, 0, 1 << 28, &c->sinks);
    if (KEY("layers")) return parse_int(v, vl, 1, 1 << 20, &c->n_layers);
    if (KEY("heads")) return parse_int(v, vl, 1, 1 << 20, &c->n_heads);
    if (KEY("kv_heads")) return parse_int(v, vl, 1, 1 << 20, &c->n_kv_heads);
    if (KEY("head_dim")) return parse_int(v, vl, 1, 1 << 20, &c->head_dim);
    if (KEY("max_tokens")) return parse_int(v, vl, 1, 1 << 30, &c->max_tokens);
    if (KEY("threads")) return parse_int(v, vl, 0, 1024, &c->n_threads);
    return -1;
#undef KEY
}

kvs_status kvs_config_parse(kvs_config *cfg, const char *text) {
    if (!cfg || !text) return kvs_report(KVS_ERR_ARG, "kvs_config_parse: NULL argument");
    kvs_config c = *cfg;
    const char *p = text;
    int budget_given = 0;
    for (;;) {
        while (*p == ' ' || *p == '\t') p++;
        const char *item = p;
        while (*p && *p != ',') p++;
        const char *end = p;
        while (end > item && (end[-1] == ' ' || end[-1] == '\t')) end--;
        size_t off = (size_t)(item - text), len = (size_t)(end - item);
        if (len == 0) {
            if (*p == 0 && item == text) break; /* empty string: no change */
            return kvs_report(KVS_ERR_CONFIG, "config: empty item at offset %zu", off);
        }
        const char *eq = memchr(item, '=', len);
        if (!eq) {
            if (!apply_preset(&c, item, len))
                return kvs_report(KVS_ERR_CONFIG, "config: unknown preset or key without value '%.*s' at offset %zu",
                                (int)len, item, off);
        } else {
            size_t kl = (size_t)(eq - item), vl = len - kl - 1;
            if (kl == 5 && memcmp(item, "calib", 5) == 0)
                return kvs_report(KVS_ERR_CONFIG, "config: calib= at offset %zu names a file; the library takes a loaded "
                                  "calibration in cfg.calib (kvs_calib_load; the kvslim tool reads calib=PATH)", off);
            budget_given |= kl == 6 && memcmp(item, "budget", 6) == 0;
            int r = apply_kv(&c, item, kl, eq + 1, vl);
            if (r < 0)
                return kvs_report(KVS_ERR_CONFIG, "config: unknown key '%.*s' at offset %zu", (int)kl, item, off);
            if (r == 0)
                return kvs_report(KVS_ERR_CONFIG, "config: bad value '%.*s' for key '%.*s' at offset %zu",
                                (int)vl, eq + 1, (int)kl, item, off + kl + 1);
        }
        if (*p == 0) break;
        p++; /* skip ',' */
    }
    /* stiefel=auto,budget=CR: without eviction the budget is the rank allocator's (with heatkv= or
     * evict= it stays theirs, and auto:CR names the rank budget) */
    if (budget_given && c.rank_k == KVS_RANK_AUTO && c.rank_budget == 0.0f && c.evict == KVS_EVICT_NONE) {
        c.rank_budget = c.budget;
        c.budget = 1.0f;
    }
    kvs_status s = kvs_config_validate(&c);
    if (s != KVS_OK) return s;
    *cfg = c;
    return KVS_OK;
}

kvs_status kvs_config_validate(const kvs_config *c) {
    if (!c) return kvs_report(KVS_ERR_ARG, "config: NULL");
#define BAD(...) return kvs_report(KVS_ERR_CONFIG, __VA_ARGS__)
    if (c->n_layers < 1 || c->n_layers > 4096) BAD("config: layers=%d out of range [1, 4096]", c->n_layers);
    if (c->n_kv_heads < 1 || c->n_kv_heads > 1024) BAD("config: kv_heads=%d out of range [1, 1024]", c->n_kv_heads);
    if (c->n_heads < 1 || c->n_heads % c->n_kv_heads || c->n_heads / c->n_kv_heads > 256)
        BAD("config: heads=%d must be a positive multiple of kv_heads=%d, at most 256 per KV head", c->n_heads,
            c->n_kv_heads);
    if (c->head_dim < 16 || c->head_dim > 1024 || c->head_dim % 16)
        BAD("config: head_dim=%d must be a multiple of 16 in [16, 1024]", c->head_dim);
    if (c->max_tokens < 1 || c->max_tokens > (1 << 28))
        BAD("config: max_tokens=%d out of range [1, 2^28]", c->max_tokens);
    if ((int)c->k_type < 0 || c->k_type >= KVS_TYPE_COUNT) BAD("config: k type %d unknown", (int)c->k_type);
    if ((int)c->v_type < 0 || c->v_type >= KVS_TYPE_COUNT) BAD("config: v type %d unknown", (int)c->v_type);
    if (c->group < 8 || c->group > 256 || c->group % 8)
        BAD("config: group=%d must be a multiple of 8 in [8, 256]", c->group);
    if (c->head_dim % c->group && c->v_type >= KVS_TYPE_INT2)
        BAD("config: head_dim=%d is not a multiple of group=%d (value channel groups)", c->head_dim, c->group);
    if ((c->k_type == KVS_TYPE_Q8_0 || c->k_type == KVS_TYPE_Q4_0 || c->v_type == KVS_TYPE_Q8_0 ||
         c->v_type == KVS_TYPE_Q4_0) && c->head_dim % 32)
        BAD("config: head_dim=%d is not a multiple of 32, required by q8_0/q4_0", c->head_dim);
    /* keys quantized per channel leave the window G at a time, per-token keys one at a time */
    const int per_channel_keys = c->k_type >= KVS_TYPE_INT2 && c->k_type <= KVS_TYPE_INT8;
    if (c->window < 0 || (per_channel_keys && c->window % c->group))
        BAD("config: window=%d must be a non-negative multiple of group=%d (keys quantized per channel)", c->window, c->group);
    if (c->sinks < 0 || c->sinks > (1 << 20)) BAD("config: sinks=%d out of range [0, 2^20]", c->sinks);
    if (c->rotate != KVS_ROTATE_NONE && c->rotate != KVS_ROTATE_HADAMARD) BAD("config: rotate %d unknown", (int)c->rotate);
    if (c->rotate == KVS_ROTATE_HADAMARD && (c->head_dim & (c->head_dim - 1)))
        BAD("config: rotate=hadamard needs a power-of-two head_dim, got %d", c->head_dim);
    if (c->scale != KVS_SCALE_NONE && c->scale != KVS_SCALE_TOKEN) BAD("config: scale %d unknown", (int)c->scale);
    if ((int)c->jensen < 0 || c->jensen > KVS_JENSEN_EXACT) BAD("config: jensen %d unknown", (int)c->jensen);
    if (c->self != KVS_SELF_EXACT && c->self != KVS_SELF_CACHE) BAD("config: self %d unknown", (int)c->self);
    if (!(c->lambda >= 0.0f && c->lambda <= 100.0f)) BAD("config: lambda=%g out of range [0, 100]", (double)c->lambda);
    if (!(c->tau >= 0.0f && c->tau <= 1e6f)) BAD("config: tau=%g out of range [0, 1e6]", (double)c->tau);
    if (c->n_threads < 0 || c->n_threads > 1024) BAD("config: threads=%d out of range [0, 1024]", c->n_threads);
    if (c->rope != KVS_ROPE_NONE && c->rope != KVS_ROPE_ADJACENT) BAD("config: rope %d unknown", (int)c->rope);
    if (!(c->rope_base > 1.0f && c->rope_base <= 1e9f)) BAD("config: rope_base=%g out of range (1, 1e9]", (double)c->rope_base);
    if (c->basis != KVS_BASIS_PCA && c->basis != KVS_BASIS_LEARNED && c->basis != KVS_BASIS_EIGEN)
        BAD("config: basis %d unknown (pca, learned, eigen)", (int)c->basis);
    if (!(c->rank_budget >= 0.0f && c->rank_budget <= 1.0f)) BAD("config: rank budget %g out of range [0, 1]", (double)c->rank_budget);
    const kvs_status lr = kvs__lowrank_validate(c);
    if (lr) return lr;
#undef BAD
    return kvs__evict_validate(c);
}

kvs_status kvs_config_ranks(const kvs_config *c, int *rank_k, int *rank_v) {
    if (!c || !rank_k || !rank_v) return kvs_report(KVS_ERR_ARG, "kvs_config_ranks: NULL argument");
    const kvs_status st = kvs_config_validate(c);
    if (st) return st;
    if (c->rank_k || c->rank_v) return kvs__lowrank_ranks(c, rank_k, rank_v);
    for (int l = 0; l < c->n_layers; l++) rank_k[l] = rank_v[l] = 0;
    return KVS_OK;
}

/* The shortest decimal that parses back to the same float ("0.2", not "0.200000003"). */
static const char *short_float(float x, char out[32]) {
    for (int p = 6; p < 9; p++) {
        snprintf(out, 32, "%.*g", p, (double)x);
        if (strtof(out, NULL) == x) return out;
    }
    snprintf(out, 32, "%.9g", (double)x);
    return out;
}

size_t kvs_config_format(const kvs_config *c, char *buf, size_t cap) {
    char tmp[384], f32[32];
    int n = 0;
    if (c)
        n = snprintf(tmp, sizeof tmp, "k=%s,v=%s,group=%d,window=%d,sinks=%d,rotate=%s,scale=%s,jensen=%s,lambda=%s,self=%s",
                     name_of(g_type_names, N_NAMES(g_type_names), (int)c->k_type),
                     name_of(g_type_names, N_NAMES(g_type_names), (int)c->v_type), c->group, c->window, c->sinks,
                     name_of(g_rotate_names, N_NAMES(g_rotate_names), (int)c->rotate),
                     name_of(g_scale_names, N_NAMES(g_scale_names), (int)c->scale),
                     name_of(g_jensen_names, N_NAMES(g_jensen_names), (int)c->jensen), short_float(c->lambda, f32),
                     name_of(g_self_names, N_NAMES(g_self_names), (int)c->self));
    /* eviction fields when they are not the defaults, so that the string parses back to the same config */
    if (c && n > 0 && n < (int)sizeof tmp) {
        const int e = (int)c->evict, heat = e >= KVS_EVICT_HEATKV_BLOCK;
        int m = 0;
        if (e != KVS_EVICT_NONE)
            m = snprintf(tmp + n, sizeof tmp - (size_t)n, ",%s=%s", heat ? "heatkv" : "evict",
                         heat ? name_of(g_heatkv_names, N_NAMES(g_heatkv_names), e - KVS_EVICT_HEATKV_BLOCK)
                              : name_of(g_evict_names, N_NAMES(g_evict_names), e));
        if (m > 0) n += m;
        if (n < (int)sizeof tmp && (e != KVS_EVICT_NONE || c->budget != 1.0f) &&
            (m = snprintf(tmp + n, sizeof tmp - (size_t)n, ",budget=%s", short_float(c->budget, f32))) > 0)
            n += m;
        if (n < (int)sizeof tmp && c->agg != KVS_AGG_MEAN &&
            (m = snprintf(tmp + n, sizeof tmp - (size_t)n, ",agg=%s", name_of(g_agg_names, N_NAMES(g_agg_names), (int)c->agg))) > 0)
            n += m;
        if (n < (int)sizeof tmp && c->seed != 1 && (m = snprintf(tmp + n, sizeof tmp - (size_t)n, ",seed=%u", c->seed)) > 0) n += m;
        if (n < (int)sizeof tmp && c->keep && (m = snprintf(tmp + n, sizeof tmp - (size_t)n, ",keep=%d", c->keep)) > 0) n += m;
        if (n < (int)sizeof tmp && c->rope != KVS_ROPE_NONE &&
            (m = snprintf(tmp + n, sizeof tmp - (size_t)n, ",rope=%s,rope_base=%s", name_of(g_rope_names, N_NAMES(g_rope_names), (int)c->rope),
                          short_float(c->rope_base, f32))) > 0)
            n += m;
        char ranks[48];
        if (c->rank_k == KVS_RANK_AUTO && c->rank_budget > 0.0f) snprintf(ranks, sizeof ranks, "auto:%s", short_float(c->rank_budget, f32));
        else if (c->rank_k == KVS_RANK_AUTO) snprintf(ranks, sizeof ranks, "auto");
        else snprintf(ranks, sizeof ranks, "%d/%d", c->rank_k, c->rank_v);
        if (n < (int)sizeof tmp && (c->rank_k || c->rank_v) &&
            (m = snprintf(tmp + n, sizeof tmp - (size_t)n, ",stiefel=%s,basis=%s", ranks,
                          name_of(g_basis_names, N_NAMES(g_basis_names), (int)c->basis))) > 0)
            n += m;
    }
    if (n < 0) n = 0;
    if (n >= (int)sizeof tmp) n = (int)sizeof tmp - 1; /* cannot happen with these fields; never copy past tmp */
    if (buf && cap) {
        size_t m = (size_t)n < cap - 1 ? (size_t)n : cap - 1;
        memcpy(buf, tmp, m);
        buf[m] = 0;
    }
    return (size_t)n;
}
