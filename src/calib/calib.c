/* The calibration container: build, derive rankings, serialize, parse with a named error per
 * corruption class. Byte layout in docs/calibration.md; everything little-endian, read with
 * memcpy-free byte assembly so that no alignment or endianness assumption is made. */
#include "calib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/status.h"
#include "bytes.h"

static const char MAGIC[8] = {'K', 'V', 'S', 'C', 'A', 'L', 'I', 'B'};
enum { HEADER = 120, SECTION_HEAD = 16, HEAT_HEAD = 32, RETR_HEAD = 8 };

static uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void heat_free(kvs_calib_heat *h) {
    free(h->mass);
    free(h->nq);
    free(h->scas);
    free(h->far);
    free(h->order);
    free(h->horder);
    memset(h, 0, sizeof *h);
}

void kvs_calib_free(kvs_calib *cal) {
    if (!cal) return;
    heat_free(&cal->heat);
    free(cal->retr.echo);
    free(cal->retr.induction);
    kvs__lrnk_free(&cal->lrnk);
    free(cal);
}

const char *kvs_calib_model(const kvs_calib *cal, uint64_t *model_hash) {
    if (model_hash) *model_hash = cal ? cal->model_hash : 0;
    return cal ? cal->model : "";
}

static int shapes_ok(int L, int NH, int H, int d) {
    return L >= 1 && L <= 4096 && H >= 1 && H <= 1024 && NH >= H && NH % H == 0 && NH / H <= 256 && d >= 16 &&
           d <= 1024 && (size_t)L * H <= 65535;
}

static int heat_dims_ok(int block, int sinks, int window, int ctx, int nb) {
    return block >= 8 && block <= (1 << 20) && block % 8 == 0 && sinks >= 0 && sinks <= (1 << 20) && window >= 0 &&
           window <= (1 << 28) && ctx >= 1 && ctx <= (1 << 28) && nb >= 1 && nb <= KVS_CALIB_MAX_BLOCKS &&
           (long long)nb * block + sinks <= ctx;
}

static kvs_status heat_alloc(kvs_calib *c, int block, int sinks, int window, int ctx, int nb) {
    kvs_calib_heat *h = &c->heat;
    const size_t L = (size_t)c->n_layers, H = (size_t)c->n_kv_heads, U = L * H, n = (size_t)nb;
    h->block = block, h->sinks = sinks, h->window = window, h->ctx = ctx, h->n_blocks = nb;
    h->mass = calloc(2 * U * n * n, sizeof(double));
    h->nq = calloc(n * n, sizeof(uint32_t));
    h->scas = calloc(2 * U * n, sizeof(double));
    h->far = calloc(2 * U, sizeof(double));
    h->order = calloc(2 * n * U, sizeof(uint16_t));
    h->horder = calloc(2 * U, sizeof(uint16_t));
    if (!h->mass || !h->nq || !h->scas || !h->far || !h->order || !h->horder) {
        heat_free(h);
        return kvs_report(KVS_ERR_NOMEM, "calib: out of memory for %d blocks", nb);
    }
    c->has_heat = 1;
    return KVS_OK;
}

kvs_status kvs__calib_new(int n_layers, int n_heads, int n_kv_heads, int head_dim, int block, int sinks, int window,
                          int ctx, int n_blocks, kvs_calib **out) {
    *out = NULL;
    if (!shapes_ok(n_layers, n_heads, n_kv_heads, head_dim) || !heat_dims_ok(block, sinks, window, ctx, n_blocks))
        return kvs_report(KVS_ERR_ARG, "calib: bad shapes (layers %d, heads %d/%d, dim %d, block %d, %d blocks, ctx %d)",
                          n_layers, n_heads, n_kv_heads, head_dim, block, n_blocks, ctx);
    kvs_calib *c = calloc(1, sizeof *c);
    if (!c) return kvs_report(KVS_ERR_NOMEM, "calib: out of memory");
    c->n_layers = n_layers, c->n_heads = n_heads, c->n_kv_heads = n_kv_heads, c->head_dim = head_dim;
    kvs_status s = heat_alloc(c, block, sinks, window, ctx, n_blocks);
    if (s) {
        free(c);
        return s;
    }
    *out = c;
    return KVS_OK;
}

kvs_status kvs_calib_create(const char *model, uint64_t model_hash, int n_layers, int n_heads, int n_kv_heads, int head_dim,
                            kvs_calib **out) {
    if (!out) return kvs_report(KVS_ERR_ARG, "calib: NULL argument");
    *out = NULL;
    if (!shapes_ok(n_layers, n_heads, n_kv_heads, head_dim))
        return kvs_report(KVS_ERR_ARG, "calib: bad shapes (layers %d, heads %d/%d, dim %d)", n_layers, n_heads, n_kv_heads, head_dim);
    kvs_calib *c = calloc(1, sizeof *c);
    if (!c) return kvs_report(KVS_ERR_NOMEM, "calib: out of memory");
    c->n_layers = n_layers, c->n_heads = n_heads, c->n_kv_heads = n_kv_heads, c->head_dim = head_dim;
    if (model) strncpy(c->model, model, sizeof c->model - 1);
    c->model_hash = model_hash;
    *out = c;
    return KVS_OK;
}

/* ---- rankings ------------------------------------------------------------------------------ */

static const double *g_key; /* qsort has no context argument; derive runs single-threaded */
static int g_H;
static int by_score(const void *a, const void *b) {
    const int u = *(const uint16_t *)a, v = *(const uint16_t *)b;
    if (g_key[u] != g_key[v]) return g_key[u] < g_key[v] ? -1 : 1;
    if (u % g_H != v % g_H) return u % g_H - v % g_H; /* ties: head index, then layer */
    return u / g_H - v / g_H;
}

static void rank(const double *key, int U, int H, uint16_t *order) {
    for (int u = 0; u < U; u++) order[u] = (uint16_t)u;
    g_key = key;
    g_H = H;
    qsort(order, (size_t)U, sizeof *order, by_score);
}

/* Into scas/far/order of a separate buffer set, so that the loader can compare with the file's. */
static void derive_into(const kvs_calib *c, double *scas, double *far, uint16_t *order, uint16_t *horder) {
    const kvs_calib_heat *h = &c->heat;
    const int L = c->n_layers, H = c->n_kv_heads, U = L * H, nb = h->n_blocks;
    double *key = malloc((size_t)U * sizeof(double));
    for (int a = 0; a < 2; a++) {
        for (int l = 0; l < L; l++)
            for (int g = 0; g < H; g++) {
                const size_t u = (size_t)l * H + g;
                double fsum = 0.0;
                int fn = 0;
                for (int t = 0; t < nb; t++) { /* far mass: every source block query block t may see */
                    double m = 0.0;
                    int any = 0;
                    for (int s = 0; s < nb; s++)
                        if (h->nq[(size_t)t * nb + s]) m += *kvs__heat_mass(c, a, l, g, t, s), any = 1;
                    if (any) fsum += m, fn++;
                }
                far[(size_t)a * U + u] = fn ? fsum / fn : 0.0;
                for (int s = 0; s < nb; s++) { /* S-CAS: equal weight per query block */
                    double sum = 0.0;
                    int n = 0;
                    for (int t = 0; t < nb; t++)
                        if (h->nq[(size_t)t * nb + s]) sum += *kvs__heat_mass(c, a, l, g, t, s), n++;
                    scas[((size_t)a * U + u) * nb + s] = n ? sum / n : 0.0;
                }
            }
        if (!key) continue;
        for (int s = 0; s < nb; s++) {
            for (int u = 0; u < U; u++) key[u] = scas[((size_t)a * U + u) * nb + s];
            rank(key, U, H, order + ((size_t)a * nb + s) * U);
        }
        rank(far + (size_t)a * U, U, H, horder + (size_t)a * U);
    }
    free(key);
}

void kvs__calib_derive(kvs_calib *c) {
    if (c && c->has_heat) derive_into(c, c->heat.scas, c->heat.far, c->heat.order, c->heat.horder);
}

/* ---- bytes --------------------------------------------------------------------------------- */

/* HEAT payload: header, mass, nq, scas, far, order, horder (each array padded to 8 bytes). */
static size_t heat_payload(int L, int H, int nb) {
    const size_t U = (size_t)L * H, n = (size_t)nb;
    const size_t order_bytes = (2 * n * U * 2 + 7) / 8 * 8, horder_bytes = (2 * U * 2 + 7) / 8 * 8;
    return HEAT_HEAD + 2 * U * n * n * 8 + (n * n * 4 + 7) / 8 * 8 + 2 * U * n * 8 + 2 * U * 8 + order_bytes + horder_bytes;
}

/* RETR payload: period, texts, echo, induction. */
static size_t retr_payload(int L, int H) { return RETR_HEAD + 4 * (size_t)L * H * 8; }

kvs_status kvs__calib_serialize(const kvs_calib *c, uint8_t **data, size_t *size) {
    if (!c || !data || !size) return kvs_report(KVS_ERR_ARG, "calib: NULL argument");
    const kvs_calib_heat *h = &c->heat;
    const int L = c->n_layers, H = c->n_kv_heads, nb = h->n_blocks;
    const size_t U = (size_t)L * H, n = (size_t)nb;
    const size_t pay = c->has_heat ? heat_payload(L, H, nb) : 0, rpay = c->has_retr ? retr_payload(L, H) : 0;
    const size_t lpay = kvs__lrnk_payload(c);
    const size_t total = HEADER + (c->has_heat ? SECTION_HEAD + pay : 0) + (c->has_retr ? SECTION_HEAD + rpay : 0) +
                         (lpay ? SECTION_HEAD + lpay : 0) + 8;
    uint8_t *b = calloc(1, total);
    if (!b) return kvs_report(KVS_ERR_NOMEM, "calib: out of memory");
    memcpy(b, MAGIC, 8);
    put32(b + 8, KVS_CALIB_VERSION);
    put64(b + 16, total);
    put32(b + 24, (uint32_t)L), put32(b + 28, (uint32_t)c->n_heads), put32(b + 32, (uint32_t)H);
    put32(b + 36, (uint32_t)c->head_dim);
    memcpy(b + 40, c->model, strnlen(c->model, 63));
    put64(b + 104, c->model_hash);
    put32(b + 112, (uint32_t)(!!c->has_heat + !!c->has_retr + !!lpay));
    if (c->has_heat) {
        uint8_t *p = b + HEADER;
        memcpy(p, "HEAT", 4);
        put64(p + 8, pay);
        p += SECTION_HEAD;
        const int hd[6] = {h->block, h->sinks, h->window, h->ctx, h->n_blocks, h->n_texts};
        for (int i = 0; i < 6; i++) put32(p + 4 * i, (uint32_t)hd[i]);
        p += HEAT_HEAD;
        for (size_t i = 0; i < 2 * U * n * n; i++, p += 8) putf64(p, h->mass[i]);
        for (size_t i = 0; i < n * n; i++) put32(p + 4 * i, h->nq[i]);
        p += (n * n * 4 + 7) / 8 * 8;
        for (size_t i = 0; i < 2 * U * n; i++, p += 8) putf64(p, h->scas[i]);
        for (size_t i = 0; i < 2 * U; i++, p += 8) putf64(p, h->far[i]);
        for (size_t i = 0; i < 2 * n * U; i++) p[2 * i] = (uint8_t)h->order[i], p[2 * i + 1] = (uint8_t)(h->order[i] >> 8);
        p += (2 * n * U * 2 + 7) / 8 * 8;
        for (size_t i = 0; i < 2 * U; i++) p[2 * i] = (uint8_t)h->horder[i], p[2 * i + 1] = (uint8_t)(h->horder[i] >> 8);
    }
    if (c->has_retr) {
        uint8_t *p = b + HEADER + (c->has_heat ? SECTION_HEAD + pay : 0);
        memcpy(p, "RETR", 4);
        put64(p + 8, rpay);
        p += SECTION_HEAD;
        put32(p, (uint32_t)c->retr.period), put32(p + 4, (uint32_t)c->retr.n_texts);
        p += RETR_HEAD;
        for (size_t i = 0; i < 2 * U; i++, p += 8) putf64(p, c->retr.echo[i]);
        for (size_t i = 0; i < 2 * U; i++, p += 8) putf64(p, c->retr.induction[i]);
    }
    if (lpay) {
        uint8_t *p = b + total - 8 - lpay - SECTION_HEAD;
        memcpy(p, "LRNK", 4);
        put64(p + 8, lpay);
        kvs__lrnk_write(c, p + SECTION_HEAD);
    }
    put64(b + total - 8, fnv1a(b, total - 8));
    *data = b;
    *size = total;
    return KVS_OK;
}

kvs_status kvs__calib_save(const kvs_calib *c, const char *path) {
    uint8_t *b;
    size_t n;
    kvs_status s = kvs__calib_serialize(c, &b, &n);
    if (s) return s;
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(b);
        return kvs_report(KVS_ERR_IO, "calib: cannot create '%s'", path);
    }
    const int ok = fwrite(b, 1, n, f) == n;
    free(b);
    if (fclose(f) != 0 || !ok) return kvs_report(KVS_ERR_IO, "calib: cannot write '%s'", path);
    return KVS_OK;
}

/* ---- parse --------------------------------------------------------------------------------- */

#define FAIL(cls, code, ...)                                                                                           \
    do {                                                                                                               \
        if (err) *err = cls;                                                                                           \
        kvs_calib_free(c);                                                                                             \
        return kvs_report(code, __VA_ARGS__);                                                                          \
    } while (0)

static int is_perm(const uint16_t *o, int U) {
    unsigned char seen[65536 / 8];
    memset(seen, 0, (size_t)(U + 7) / 8);
    for (int i = 0; i < U; i++) {
        if (o[i] >= U || (seen[o[i] / 8] >> (o[i] % 8) & 1)) return 0;
        seen[o[i] / 8] |= (unsigned char)(1u << (o[i] % 8));
    }
    return 1;
}

/* Echo and induction masses are probabilities, and the max over query heads is at least their mean. */
static int retr_values_ok(const double *echo, const double *ind, size_t U, size_t *bad) {
    for (size_t u = 0; u < 2 * U; u++) {
        const double e = echo[u], x = ind[u];
        if (!(e >= 0.0 && e <= 1.0 && x >= 0.0 && x <= 1.0 && (u >= U || e + x <= 1.0 + 1e-9)) || /* max: other heads */
            (u >= U && (e < echo[u - U] - 1e-12 || x < ind[u - U] - 1e-12))) {
            *bad = u;
            return 0;
        }
    }
    return 1;
}

static kvs_status retr_set(kvs_calib *c, int period, int texts, const double *echo, const double *ind) {
    const size_t U = (size_t)c->n_layers * c->n_kv_heads;
    double *e = malloc(2 * U * sizeof(double)), *x = malloc(2 * U * sizeof(double));
    if (!e || !x) {
        free(e), free(x);
        return kvs_report(KVS_ERR_NOMEM, "calib: out of memory");
    }
    memcpy(e, echo, 2 * U * sizeof(double));
    memcpy(x, ind, 2 * U * sizeof(double));
    free(c->retr.echo), free(c->retr.induction);
    c->retr = (kvs_calib_retr){period, texts, e, x};
    c->has_retr = 1;
    return KVS_OK;
}

static kvs_status parse_retr(kvs_calib *c, const uint8_t *p, uint64_t pay, kvs_calib_error *err) {
    const size_t U = (size_t)c->n_layers * c->n_kv_heads;
#define RFAIL(cls, ...)                                                                                                \
    do {                                                                                                               \
        if (err) *err = cls;                                                                                           \
        return kvs_report(KVS_ERR_FORMAT, __VA_ARGS__);                                                                \
    } while (0)
    if (c->has_retr) RFAIL(KVS_CALIB_BAD_SECTION, "calib: section RETR given twice");
    if (pay != retr_payload(c->n_layers, c->n_kv_heads))
        RFAIL(KVS_CALIB_BAD_SECTION, "calib: RETR section of %llu bytes, %zu expected", (unsigned long long)pay,
              retr_payload(c->n_layers, c->n_kv_heads));
    const uint32_t period = get32(p), texts = get32(p + 4);
    if (period < 1 || period > (1u << 20) || texts < 1 || texts > (1u << 20))
        RFAIL(KVS_CALIB_BAD_SHAPE, "calib: bad RETR dimensions (period %u, texts %u)", period, texts);
    double *e = malloc(2 * U * sizeof(double)), *x = malloc(2 * U * sizeof(double));
    if (!e || !x) {
        free(e), free(x);
        return kvs_report(KVS_ERR_NOMEM, "calib: out of memory");
    }
    p += RETR_HEAD;
    for (size_t i = 0; i < 2 * U; i++, p += 8) e[i] = getf64(p);
    for (size_t i = 0; i < 2 * U; i++, p += 8) x[i] = getf64(p);
    size_t bad = 0;
    const int ok = retr_values_ok(e, x, U, &bad);
    kvs_status s = KVS_OK;
    if (ok) s = retr_set(c, (int)period, (int)texts, e, x);
    free(e), free(x);
    if (!ok) RFAIL(KVS_CALIB_BAD_VALUE, "calib: retrieval mass out of range, or max below mean, at agg %zu unit %zu", bad / U, bad % U);
    return s;
#undef RFAIL
}

kvs_status kvs_calib_set_retrieval(kvs_calib *cal, int period, int n_texts, const double *echo, const double *induction) {
    if (!cal || !echo || !induction) return kvs_report(KVS_ERR_ARG, "calib: NULL argument");
    if (period < 1 || period > (1 << 20) || n_texts < 1 || n_texts > (1 << 20))
        return kvs_report(KVS_ERR_ARG, "calib: retrieval period %d or texts %d out of range", period, n_texts);
    size_t bad = 0;
    if (!retr_values_ok(echo, induction, (size_t)cal->n_layers * cal->n_kv_heads, &bad))
        return kvs_report(KVS_ERR_FORMAT, "calib: retrieval mass out of range, or max below mean, at index %zu", bad);
    return retr_set(cal, period, n_texts, echo, induction);
}

kvs_status kvs__calib_parse(const uint8_t *b, size_t size, kvs_calib **out, kvs_calib_error *err) {
    kvs_calib *c = NULL;
    if (err) *err = KVS_CALIB_OK;
    if (!out) return kvs_report(KVS_ERR_ARG, "calib: NULL argument");
    *out = NULL;
    if (!b && size) return kvs_report(KVS_ERR_ARG, "calib: NULL data");
    if (size < 8 || memcmp(b, MAGIC, 8) != 0) FAIL(KVS_CALIB_BAD_MAGIC, KVS_ERR_FORMAT, "calib: bad magic (not a kvslim calibration file)");
    if (size < HEADER + 8) FAIL(KVS_CALIB_TRUNCATED, KVS_ERR_FORMAT, "calib: truncated header (%zu bytes)", size);
    const uint32_t version = get32(b + 8);
    if (version != KVS_CALIB_VERSION)
        FAIL(KVS_CALIB_BAD_VERSION, KVS_ERR_UNSUPPORTED, "calib: version %u unsupported (this build reads %d)", version,
             KVS_CALIB_VERSION);
    const uint64_t total = get64(b + 16);
    if (total > size) FAIL(KVS_CALIB_TRUNCATED, KVS_ERR_FORMAT, "calib: truncated: header says %llu bytes, file has %zu",
                           (unsigned long long)total, size);
    if (total < size) FAIL(KVS_CALIB_BAD_SIZE, KVS_ERR_FORMAT, "calib: %zu bytes, header says %llu (trailing data)", size,
                           (unsigned long long)total);
    if (get64(b + size - 8) != fnv1a(b, size - 8)) FAIL(KVS_CALIB_BAD_CHECKSUM, KVS_ERR_FORMAT, "calib: checksum mismatch (corrupt file)");
    const uint32_t L = get32(b + 24), NH = get32(b + 28), H = get32(b + 32), d = get32(b + 36);
    if (L > 4096 || NH > 262144 || H > 1024 || d > 1024 || !shapes_ok((int)L, (int)NH, (int)H, (int)d))
        FAIL(KVS_CALIB_BAD_SHAPE, KVS_ERR_FORMAT, "calib: bad model shapes (layers %u, heads %u, KV heads %u, head_dim %u)", L, NH, H, d);
    if (!(c = calloc(1, sizeof *c))) return kvs_report(KVS_ERR_NOMEM, "calib: out of memory");
    c->n_layers = (int)L, c->n_heads = (int)NH, c->n_kv_heads = (int)H, c->head_dim = (int)d;
    memcpy(c->model, b + 40, 63);
    c->model[63] = 0;
    c->model_hash = get64(b + 104);
    const uint32_t nsec = get32(b + 112);
    const uint8_t *heat_at = NULL, *retr_at = NULL, *lrnk_at = NULL; /* the known sections (headers included) in the input */
    size_t off = HEADER;
    const size_t end = size - 8;
    for (uint32_t k = 0; k < nsec; k++) {
        if (end - off < SECTION_HEAD) FAIL(KVS_CALIB_TRUNCATED, KVS_ERR_FORMAT, "calib: section %u header runs past the end", k);
        const uint8_t *sh = b + off;
        const uint64_t pay = get64(sh + 8);
        off += SECTION_HEAD;
        if (pay > end - off) FAIL(KVS_CALIB_TRUNCATED, KVS_ERR_FORMAT, "calib: section %u (%.4s) of %llu bytes runs past the end",
                                  k, (const char *)sh, (unsigned long long)pay);
        const uint8_t *p = b + off;
        off += (size_t)pay;
        if (!memcmp(sh, "RETR", 4)) {
            kvs_status rs = parse_retr(c, p, pay, err);
            if (rs) {
                kvs_calib_free(c);
                return rs;
            }
            retr_at = sh;
            continue;
        }
        if (!memcmp(sh, "LRNK", 4)) {
            kvs_status ls = kvs__lrnk_parse(c, p, pay, err);
            if (ls) {
                kvs_calib_free(c);
                return ls;
            }
            lrnk_at = sh;
            continue;
        }
        if (memcmp(sh, "HEAT", 4) != 0) continue; /* a later method's section: not ours to read */
        if (c->has_heat) FAIL(KVS_CALIB_BAD_SECTION, KVS_ERR_FORMAT, "calib: section HEAT given twice");
        heat_at = sh;
        if (pay < HEAT_HEAD) FAIL(KVS_CALIB_BAD_SECTION, KVS_ERR_FORMAT, "calib: HEAT section of %llu bytes", (unsigned long long)pay);
        int hd[6];
        for (int i = 0; i < 6; i++) hd[i] = get32(p + 4 * i) > (1u << 30) ? -1 : (int)get32(p + 4 * i);
        if (!heat_dims_ok(hd[0], hd[1], hd[2], hd[3], hd[4]) || hd[5] < 1)
            FAIL(KVS_CALIB_BAD_SHAPE, KVS_ERR_FORMAT, "calib: bad HEAT dimensions (block %d, sinks %d, window %d, ctx %d, %d blocks, %d texts)",
                 hd[0], hd[1], hd[2], hd[3], hd[4], hd[5]);
        if (pay != heat_payload((int)L, (int)H, hd[4]))
            FAIL(KVS_CALIB_BAD_SECTION, KVS_ERR_FORMAT, "calib: HEAT section of %llu bytes, %zu expected for %d blocks",
                 (unsigned long long)pay, heat_payload((int)L, (int)H, hd[4]), hd[4]);
        if (heat_alloc(c, hd[0], hd[1], hd[2], hd[3], hd[4])) {
            kvs_calib_free(c);
            return KVS_ERR_NOMEM;
        }
        kvs_calib_heat *h = &c->heat;
        h->n_texts = hd[5];
        const size_t U = (size_t)L * H, n = (size_t)hd[4];
        p += HEAT_HEAD;
        for (size_t i = 0; i < 2 * U * n * n; i++, p += 8) h->mass[i] = getf64(p);
        for (size_t i = 0; i < n * n; i++) h->nq[i] = get32(p + 4 * i);
        p += (n * n * 4 + 7) / 8 * 8;
        for (size_t i = 0; i < 2 * U * n; i++, p += 8) h->scas[i] = getf64(p);
        for (size_t i = 0; i < 2 * U; i++, p += 8) h->far[i] = getf64(p);
        for (size_t i = 0; i < 2 * n * U; i++) h->order[i] = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
        p += (2 * n * U * 2 + 7) / 8 * 8;
        for (size_t i = 0; i < 2 * U; i++) h->horder[i] = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
        /* statistics: a mass is a probability; no eligible query means no mass */
        for (int a = 0; a < 2; a++)
            for (size_t u = 0; u < U; u++)
                for (size_t t = 0; t < n; t++)
                    for (size_t s = 0; s < n; s++) {
                        const double m = h->mass[(((size_t)a * U + u) * n + t) * n + s];
                        if (!(m >= 0.0 && m <= 1.0 + 1e-9) || (h->nq[t * n + s] == 0 && m != 0.0))
                            FAIL(KVS_CALIB_BAD_VALUE, KVS_ERR_FORMAT, "calib: mass %g out of range at agg %d, unit %zu, blocks (%zu, %zu)",
                                 m, a, u, t, s);
                    }
        for (size_t i = 0; i < 2 * n; i++)
            if (!is_perm(h->order + i * U, (int)U))
                FAIL(KVS_CALIB_BAD_RANKING, KVS_ERR_FORMAT, "calib: ranking %zu of source block %zu is not a permutation of %zu units", i,
                     i % n, U);
        for (int a = 0; a < 2; a++)
            if (!is_perm(h->horder + (size_t)a * U, (int)U))
                FAIL(KVS_CALIB_BAD_RANKING, KVS_ERR_FORMAT, "calib: head ranking %d is not a permutation of %zu units", a, U);
        /* the stored rankings must be the ones the statistics give (same rule, same ties) */
        double *scas = malloc(2 * U * n * sizeof(double)), *far = malloc(2 * U * sizeof(double));
        uint16_t *order = malloc(2 * n * U * sizeof(uint16_t)), *horder = malloc(2 * U * sizeof(uint16_t));
        if (!scas || !far || !order || !horder) {
            free(scas), free(far), free(order), free(horder);
            kvs_calib_free(c);
            return kvs_report(KVS_ERR_NOMEM, "calib: out of memory");
        }
        derive_into(c, scas, far, order, horder);
        const int same = !memcmp(scas, h->scas, 2 * U * n * sizeof(double)) && !memcmp(far, h->far, 2 * U * sizeof(double)) &&
                         !memcmp(order, h->order, 2 * n * U * sizeof(uint16_t)) && !memcmp(horder, h->horder, 2 * U * sizeof(uint16_t));
        free(scas), free(far), free(order), free(horder);
        if (!same) FAIL(KVS_CALIB_BAD_RANKING, KVS_ERR_FORMAT, "calib: stored rankings or scores disagree with the statistics");
    }
    if (off != end) FAIL(KVS_CALIB_BAD_SECTION, KVS_ERR_FORMAT, "calib: %zu bytes after the last section", end - off);
    /* canonical bytes: reserved fields, padding and the name's tail are zero, so that one
     * calibration has one file (what the writer gives back must be what was read) */
    uint8_t *w = NULL;
    size_t wn = 0;
    if (kvs__calib_serialize(c, &w, &wn)) {
        kvs_calib_free(c);
        return KVS_ERR_NOMEM;
    }
    int canon = !memcmp(w, b, 16) && !memcmp(w + 24, b + 24, 112 - 24) && !memcmp(w + 116, b + 116, 4);
    const size_t heat_len = c->has_heat ? SECTION_HEAD + heat_payload(c->n_layers, c->n_kv_heads, c->heat.n_blocks) : 0;
    if (canon && heat_at) canon = !memcmp(w + HEADER, heat_at, heat_len);
    const size_t retr_len = c->has_retr ? SECTION_HEAD + retr_payload(c->n_layers, c->n_kv_heads) : 0;
    if (canon && retr_at) canon = !memcmp(w + HEADER + heat_len, retr_at, retr_len);
    if (canon && lrnk_at) canon = !memcmp(w + HEADER + heat_len + retr_len, lrnk_at, SECTION_HEAD + kvs__lrnk_payload(c));
    free(w);
    if (!canon) FAIL(KVS_CALIB_BAD_SECTION, KVS_ERR_FORMAT, "calib: reserved bytes or padding not zero (not a file this format writes)");
    *out = c;
    return KVS_OK;
}

kvs_status kvs_calib_load_mem(const void *data, size_t size, kvs_calib **out) {
    return kvs__calib_parse(data, size, out, NULL);
}

kvs_status kvs_calib_load(const char *path, kvs_calib **out) {
    if (!path || !out) return kvs_report(KVS_ERR_ARG, "calib: NULL argument");
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return kvs_report(KVS_ERR_IO, "calib: cannot open '%s'", path);
    uint8_t *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            if (cap > ((size_t)1 << 32)) { /* 4 GiB: no calibration is that large */
                free(b);
                fclose(f);
                return kvs_report(KVS_ERR_FORMAT, "calib: '%s' is larger than 4 GiB", path);
            }
            cap = cap ? cap * 2 : 1 << 16;
            uint8_t *nb = realloc(b, cap);
            if (!nb) {
                free(b);
                fclose(f);
                return kvs_report(KVS_ERR_NOMEM, "calib: out of memory reading '%s'", path);
            }
            b = nb;
        }
        const size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    const int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(b);
        return kvs_report(KVS_ERR_IO, "calib: cannot read '%s'", path);
    }
    kvs_status s = kvs__calib_parse(b, n, out, NULL);
    free(b);
    return s;
}

kvs_status kvs_calib_heat_new(const kvs_calib_heat_desc *dsc, const double *mass, const uint32_t *nq, kvs_calib **out) {
    if (!dsc || !mass || !nq || !out) return kvs_report(KVS_ERR_ARG, "calib: NULL argument");
    *out = NULL;
    kvs_calib *c = NULL;
    kvs_status s = kvs__calib_new(dsc->n_layers, dsc->n_heads, dsc->n_kv_heads, dsc->head_dim, dsc->block, dsc->sinks,
                                  dsc->window, dsc->ctx, dsc->n_blocks, &c);
    if (s) return s;
    if (dsc->n_texts < 1) {
        kvs_calib_free(c);
        return kvs_report(KVS_ERR_ARG, "calib: n_texts = %d", dsc->n_texts);
    }
    if (dsc->model) strncpy(c->model, dsc->model, sizeof c->model - 1);
    c->model_hash = dsc->model_hash;
    c->heat.n_texts = dsc->n_texts;
    const size_t nb = (size_t)dsc->n_blocks;
    memcpy(c->heat.mass, mass, 2 * (size_t)dsc->n_layers * dsc->n_kv_heads * nb * nb * sizeof(double));
    memcpy(c->heat.nq, nq, nb * nb * sizeof(uint32_t));
    kvs__calib_derive(c);
    /* through the loader's checks, so that what is saved is what loads */
    uint8_t *b = NULL;
    size_t n = 0;
    s = kvs__calib_serialize(c, &b, &n);
    kvs_calib_free(c);
    if (s) return s;
    s = kvs__calib_parse(b, n, out, NULL);
    free(b);
    return s;
}

kvs_status kvs_calib_save(const kvs_calib *cal, const char *path) {
    if (!cal || !path) return kvs_report(KVS_ERR_ARG, "calib: NULL argument");
    return kvs__calib_save(cal, path);
}
