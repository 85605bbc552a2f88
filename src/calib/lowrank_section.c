/* Section LRNK of the calibration container: StiefAttention's low-rank bases and error-rank
 * profiles (layout in docs/calibration.md). Payload:
 *   u32 n_sets, n_ranks, 2 x reserved
 *   u32 ranks[n_ranks], padded to 8;  f64 profile[2][L][n_ranks]
 *   per set: u32 basis, reserved, rank_k[L], rank_v[L], padded to 8; then f32 keys (per layer
 *   d x rank_k), f32 values (per layer H x d x rank_v), padded to 8. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/status.h"
#include "bytes.h"
#include "calib.h"

enum { LRNK_HEAD = 16 };

static void set_free(kvs_calib_bases *b) {
    free(b->rank_k), free(b->rank_v), free(b->koff), free(b->voff), free(b->keys), free(b->values);
    memset(b, 0, sizeof *b);
}

void kvs__lrnk_free(kvs_calib_lowrank *lr) {
    for (int i = 0; i < KVS_CALIB_MAX_SETS; i++) set_free(&lr->set[i]);
    free(lr->ranks), free(lr->profile);
    memset(lr, 0, sizeof *lr);
}

static size_t set_bytes(const kvs_calib *c, const kvs_calib_bases *b) {
    const size_t L = (size_t)c->n_layers;
    return pad8(8 + 8 * L) + pad8(4 * (b->koff[L] + b->voff[L]));
}

size_t kvs__lrnk_payload(const kvs_calib *c) {
    const kvs_calib_lowrank *lr = &c->lrnk;
    if (!lr->n_sets && !lr->n_ranks) return 0;
    size_t n = LRNK_HEAD + pad8(4 * (size_t)lr->n_ranks) + 16 * (size_t)c->n_layers * lr->n_ranks;
    for (int i = 0; i < lr->n_sets; i++) n += set_bytes(c, &lr->set[i]);
    return n;
}

void kvs__lrnk_write(const kvs_calib *c, uint8_t *p) {
    const kvs_calib_lowrank *lr = &c->lrnk;
    const size_t L = (size_t)c->n_layers;
    put32(p, (uint32_t)lr->n_sets), put32(p + 4, (uint32_t)lr->n_ranks);
    p += LRNK_HEAD;
    for (int i = 0; i < lr->n_ranks; i++) put32(p + 4 * i, (uint32_t)lr->ranks[i]);
    p += pad8(4 * (size_t)lr->n_ranks);
    for (size_t i = 0; i < 2 * L * lr->n_ranks; i++, p += 8) putf64(p, lr->profile[i]);
    for (int k = 0; k < lr->n_sets; k++) {
        const kvs_calib_bases *b = &lr->set[k];
        put32(p, (uint32_t)b->basis);
        for (size_t l = 0; l < L; l++) put32(p + 8 + 4 * l, (uint32_t)b->rank_k[l]), put32(p + 8 + 4 * (L + l), (uint32_t)b->rank_v[l]);
        p += pad8(8 + 8 * L);
        for (size_t i = 0; i < b->koff[L]; i++, p += 4) putf32(p, b->keys[i]);
        for (size_t i = 0; i < b->voff[L]; i++, p += 4) putf32(p, b->values[i]);
        p += pad8(4 * (b->koff[L] + b->voff[L])) - 4 * (b->koff[L] + b->voff[L]);
    }
}

/* worst |P^T P - I| of a [d][r] basis, or INFINITY when an entry is not finite */
static double orth_err(const float *P, int d, int r) {
    double worst = 0;
    for (int i = 0; i < d * r; i++)
        if (!isfinite(P[i])) return INFINITY;
    for (int a = 0; a < r; a++)
        for (int b = a; b < r; b++) {
            double s = 0;
            for (int t = 0; t < d; t++) s += (double)P[t * r + a] * P[t * r + b];
            s = fabs(s - (a == b));
            worst = s > worst ? s : worst;
        }
    return worst;
}

/* A set from ranks (copied) with offsets and zeroed bases; checks ranks. */
static kvs_status set_alloc(const kvs_calib *c, int basis, const int *rk, const int *rv, kvs_calib_bases *b) {
    const int L = c->n_layers, d = c->head_dim, H = c->n_kv_heads;
    memset(b, 0, sizeof *b);
    for (int l = 0; l < L; l++)
        if (rk[l] < 1 || rk[l] > d || rv[l] < 1 || rv[l] > d)
            return kvs_report(KVS_ERR_ARG, "calib: layer %d ranks %d/%d outside 1..%d", l, rk[l], rv[l], d);
    b->basis = basis;
    b->rank_k = malloc(sizeof(int) * L), b->rank_v = malloc(sizeof(int) * L);
    b->koff = malloc(sizeof(size_t) * (L + 1)), b->voff = malloc(sizeof(size_t) * (L + 1));
    if (!b->rank_k || !b->rank_v || !b->koff || !b->voff) goto nomem;
    b->koff[0] = b->voff[0] = 0;
    for (int l = 0; l < L; l++) {
        b->rank_k[l] = rk[l], b->rank_v[l] = rv[l];
        b->koff[l + 1] = b->koff[l] + (size_t)d * rk[l];
        b->voff[l + 1] = b->voff[l] + (size_t)H * d * rv[l];
    }
    b->keys = calloc(b->koff[L], sizeof(float)), b->values = calloc(b->voff[L], sizeof(float));
    if (!b->keys || !b->values) goto nomem;
    return KVS_OK;
nomem:
    set_free(b);
    return kvs_report(KVS_ERR_NOMEM, "calib: out of memory for bases");
}

/* every basis of a filled set orthonormal; *where names the first that is not */
static int set_orthonormal(const kvs_calib *c, const kvs_calib_bases *b, char *where, size_t n) {
    const int L = c->n_layers, d = c->head_dim, H = c->n_kv_heads;
    for (int l = 0; l < L; l++) {
        if (!(orth_err(b->keys + b->koff[l], d, b->rank_k[l]) <= 1e-4)) {
            snprintf(where, n, "layer %d keys", l);
            return 0;
        }
        for (int h = 0; h < H; h++)
            if (!(orth_err(b->values + b->voff[l] + (size_t)h * d * b->rank_v[l], d, b->rank_v[l]) <= 1e-4)) {
                snprintf(where, n, "layer %d values of KV head %d", l, h);
                return 0;
            }
    }
    return 1;
}

/* put a filled set into the calibration, replacing one of the same kind */
static void set_put(kvs_calib *c, kvs_calib_bases *b) {
    kvs_calib_lowrank *lr = &c->lrnk;
    int at = lr->n_sets;
    for (int i = 0; i < lr->n_sets; i++)
        if (lr->set[i].basis == b->basis) at = i;
    if (at < lr->n_sets) set_free(&lr->set[at]);
    else lr->n_sets++;
    lr->set[at] = *b;
}

kvs_status kvs_calib_set_bases(kvs_calib *cal, kvs_basis basis, const int *rank_k, const int *rank_v, const float *const *keys,
                               const float *const *values) {
    if (!cal || !rank_k || !rank_v || !keys || !values) return kvs_report(KVS_ERR_ARG, "calib: NULL argument");
    if ((int)basis < 0 || (int)basis >= KVS_CALIB_MAX_SETS) return kvs_report(KVS_ERR_ARG, "calib: unknown basis kind %d", (int)basis);
    const int L = cal->n_layers;
    for (int l = 0; l < L; l++)
        if (!keys[l] || !values[l]) return kvs_report(KVS_ERR_ARG, "calib: layer %d has no bases", l);
    kvs_calib_bases b;
    kvs_status s = set_alloc(cal, basis, rank_k, rank_v, &b);
    if (s) return s;
    for (int l = 0; l < L; l++) {
        memcpy(b.keys + b.koff[l], keys[l], sizeof(float) * (b.koff[l + 1] - b.koff[l]));
        memcpy(b.values + b.voff[l], values[l], sizeof(float) * (b.voff[l + 1] - b.voff[l]));
    }
    for (size_t i = 0; i < b.koff[L]; i++)
        if (!isfinite(b.keys[i])) s = KVS_ERR_NONFINITE;
    for (size_t i = 0; i < b.voff[L]; i++)
        if (!isfinite(b.values[i])) s = KVS_ERR_NONFINITE;
    char where[64];
    if (s) s = kvs_report(KVS_ERR_NONFINITE, "calib: NaN or Inf in a basis");
    else if (!set_orthonormal(cal, &b, where, sizeof where)) s = kvs_report(KVS_ERR_FORMAT, "calib: the %s basis is not orthonormal", where);
    if (s) {
        set_free(&b);
        return s;
    }
    set_put(cal, &b);
    return KVS_OK;
}

kvs_status kvs_calib_set_profiles(kvs_calib *cal, int n_ranks, const int *ranks, const double *err) {
    if (!cal || !ranks || !err) return kvs_report(KVS_ERR_ARG, "calib: NULL argument");
    if (n_ranks < 1 || n_ranks > cal->head_dim) return kvs_report(KVS_ERR_ARG, "calib: %d profile ranks", n_ranks);
    for (int i = 0; i < n_ranks; i++)
        if (ranks[i] < 1 || ranks[i] > cal->head_dim || (i && ranks[i] <= ranks[i - 1]))
            return kvs_report(KVS_ERR_ARG, "calib: profile rank %d = %d not ascending in 1..%d", i, ranks[i], cal->head_dim);
    const size_t n = 2 * (size_t)cal->n_layers * n_ranks;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(err[i]) || err[i] < 0) return kvs_report(KVS_ERR_NONFINITE, "calib: profile error %zu is %g", i, err[i]);
    int *r = malloc(sizeof(int) * n_ranks);
    double *e = malloc(sizeof(double) * n);
    if (!r || !e) {
        free(r), free(e);
        return kvs_report(KVS_ERR_NOMEM, "calib: out of memory");
    }
    memcpy(r, ranks, sizeof(int) * n_ranks);
    memcpy(e, err, sizeof(double) * n);
    free(cal->lrnk.ranks), free(cal->lrnk.profile);
    cal->lrnk.ranks = r, cal->lrnk.profile = e, cal->lrnk.n_ranks = n_ranks;
    return KVS_OK;
}

#define LFAIL(cls, ...)                                                                                                \
    do {                                                                                                               \
        if (err) *err = cls;                                                                                           \
        return kvs_report(KVS_ERR_FORMAT, __VA_ARGS__);                                                                \
    } while (0)

kvs_status kvs__lrnk_parse(kvs_calib *c, const uint8_t *p, uint64_t pay, kvs_calib_error *err) {
    kvs_calib_lowrank *lr = &c->lrnk;
    const int L = c->n_layers, d = c->head_dim;
    if (lr->n_sets || lr->n_ranks) LFAIL(KVS_CALIB_BAD_SECTION, "calib: section LRNK given twice");
    if (pay < LRNK_HEAD) LFAIL(KVS_CALIB_BAD_SECTION, "calib: LRNK section of %llu bytes", (unsigned long long)pay);
    const uint32_t n_sets = get32(p), n_ranks = get32(p + 4);
    if (n_sets > KVS_CALIB_MAX_SETS || n_ranks > (uint32_t)d || (!n_sets && !n_ranks))
        LFAIL(KVS_CALIB_BAD_SHAPE, "calib: LRNK with %u basis sets and %u profile ranks", n_sets, n_ranks);
    const uint8_t *end = p + pay;
    p += LRNK_HEAD;
    const size_t prof = pad8(4 * (size_t)n_ranks) + 16 * (size_t)L * n_ranks;
    if ((size_t)(end - p) < prof) LFAIL(KVS_CALIB_BAD_SECTION, "calib: LRNK section too short for its profiles");
    if (n_ranks) {
        int *r = malloc(sizeof(int) * n_ranks);
        double *e = malloc(sizeof(double) * 2 * L * n_ranks);
        if (!r || !e) {
            free(r), free(e);
            return kvs_report(KVS_ERR_NOMEM, "calib: out of memory");
        }
        for (uint32_t i = 0; i < n_ranks; i++) r[i] = get32(p + 4 * i) > (uint32_t)d ? 0 : (int)get32(p + 4 * i);
        const uint8_t *q = p + pad8(4 * (size_t)n_ranks);
        for (size_t i = 0; i < 2 * (size_t)L * n_ranks; i++) e[i] = getf64(q + 8 * i);
        lr->ranks = r, lr->profile = e, lr->n_ranks = (int)n_ranks;
        for (uint32_t i = 0; i < n_ranks; i++)
            if (r[i] < 1 || (i && r[i] <= r[i - 1])) LFAIL(KVS_CALIB_BAD_SHAPE, "calib: LRNK profile rank %u not ascending in 1..%d", i, d);
        for (size_t i = 0; i < 2 * (size_t)L * n_ranks; i++)
            if (!(e[i] >= 0) || !isfinite(e[i])) LFAIL(KVS_CALIB_BAD_VALUE, "calib: LRNK profile error %zu is %g", i, e[i]);
    }
    p += prof;
    for (uint32_t k = 0; k < n_sets; k++) {
        const size_t head = pad8(8 + 8 * (size_t)L);
        if ((size_t)(end - p) < head) LFAIL(KVS_CALIB_BAD_SECTION, "calib: LRNK basis set %u runs past the section", k);
        const uint32_t basis = get32(p);
        if (basis >= KVS_CALIB_MAX_SETS) LFAIL(KVS_CALIB_BAD_SHAPE, "calib: LRNK basis set %u of unknown kind %u", k, basis);
        for (uint32_t i = 0; i < k; i++)
            if (lr->set[i].basis == (int)basis) LFAIL(KVS_CALIB_BAD_SECTION, "calib: LRNK basis kind %u given twice", basis);
        int *rk = malloc(sizeof(int) * L), *rv = malloc(sizeof(int) * L);
        if (!rk || !rv) {
            free(rk), free(rv);
            return kvs_report(KVS_ERR_NOMEM, "calib: out of memory");
        }
        for (int l = 0; l < L; l++) {
            const uint32_t a = get32(p + 8 + 4 * (size_t)l), b = get32(p + 8 + 4 * ((size_t)L + l));
            rk[l] = a > (uint32_t)d ? 0 : (int)a, rv[l] = b > (uint32_t)d ? 0 : (int)b;
        }
        kvs_calib_bases b;
        kvs_status s = set_alloc(c, (int)basis, rk, rv, &b);
        free(rk), free(rv);
        if (s == KVS_ERR_ARG) LFAIL(KVS_CALIB_BAD_SHAPE, "calib: LRNK basis set %u has ranks outside 1..%d", k, d);
        if (s) return s;
        p += head;
        const size_t nf = b.koff[L] + b.voff[L];
        if ((size_t)(end - p) < pad8(4 * nf)) {
            set_free(&b);
            LFAIL(KVS_CALIB_BAD_SECTION, "calib: LRNK basis set %u runs past the section", k);
        }
        for (size_t i = 0; i < b.koff[L]; i++) b.keys[i] = getf32(p + 4 * i);
        for (size_t i = 0; i < b.voff[L]; i++) b.values[i] = getf32(p + 4 * (b.koff[L] + i));
        p += pad8(4 * nf);
        lr->set[lr->n_sets++] = b; /* owned by c from here, freed with it on failure */
        char where[64];
        if (!set_orthonormal(c, &lr->set[lr->n_sets - 1], where, sizeof where))
            LFAIL(KVS_CALIB_BAD_VALUE, "calib: LRNK %s basis of set %u is not orthonormal (or not finite)", where, k);
    }
    if (p != end) LFAIL(KVS_CALIB_BAD_SECTION, "calib: LRNK section has %zu bytes after its last basis set", (size_t)(end - p));
    return KVS_OK;
}

const float *kvs__calib_basis(const kvs_calib *c, int basis, int layer, int kind, int head, int *rank) {
    if (!c || layer < 0 || layer >= c->n_layers || head < 0 || head >= c->n_kv_heads) return NULL;
    for (int i = 0; i < c->lrnk.n_sets; i++) {
        const kvs_calib_bases *b = &c->lrnk.set[i];
        if (b->basis != basis) continue;
        if (kind == 0) {
            if (rank) *rank = b->rank_k[layer];
            return b->keys + b->koff[layer];
        }
        if (rank) *rank = b->rank_v[layer];
        return b->values + b->voff[layer] + (size_t)head * c->head_dim * b->rank_v[layer];
    }
    return NULL;
}
