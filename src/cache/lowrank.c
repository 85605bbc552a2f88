/* The low-rank part of a config, its per-layer ranks and the cache's copy of its bases (lowrank.h). */
#include "lowrank.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../calib/calib.h"
#include "../calib/rank_alloc.h"
#include "../common/status.h"
#include "../methods/methods.h"
#include "../quant/formats.h"

static const char *const g_names[] = {"pca", "learned", "eigen"}; /* kvs_basis order */

static int blocked(kvs_type t) { return t == KVS_TYPE_Q8_0 || t == KVS_TYPE_Q4_0; }
static long gcd(long a, long b) {
    while (b) {
        const long t = a % b;
        a = b, b = t;
    }
    return a;
}
static int affine(kvs_type t) { return t >= KVS_TYPE_INT2 && t <= KVS_TYPE_INT8; }

/* ranks from the error-rank profiles under c->rank_budget: one allocator item per (layer, keys or
 * values); options are the profile ranks (and head_dim, error 0) that the row type can store; the
 * least summed profile error whose coefficient rows fit the budget */
static kvs_status allocate(const kvs_config *c, int *rk, int *rv) {
    const kvs_calib_lowrank *lr = &c->calib->lrnk;
    const int L = c->n_layers, d = c->head_dim, n_opt = lr->n_ranks + 1;
    if (!lr->n_ranks) return kvs_report(KVS_ERR_CONFIG, "config: stiefel=auto:%g needs the calibration's error-rank profiles "
                                        "(kvslim calibrate stiefel --out writes them)", (double)c->rank_budget);
    kvs_lr_option *opt = malloc(sizeof *opt * (size_t)2 * L * n_opt);
    const kvs_lr_option **rows = malloc(sizeof *rows * (size_t)2 * L);
    int *n = malloc(sizeof(int) * (size_t)2 * L), *ch = malloc(sizeof(int) * (size_t)2 * L), *rank = malloc(sizeof(int) * (size_t)2 * L * n_opt);
    kvs_status st = KVS_OK;
    if (!opt || !rows || !n || !ch || !rank) {
        st = kvs_report(KVS_ERR_NOMEM, "config: out of memory for the rank allocator");
        goto done;
    }
    long budget = 0;
    for (int item = 0; item < 2 * L; item++) {
        const int kind = item % 2, l = item / 2;
        const kvs_type t = kind ? c->v_type : c->k_type;
        kvs_lr_option *o = opt + (size_t)item * n_opt;
        int *r = rank + (size_t)item * n_opt, k = 0;
        for (int i = 0; i <= lr->n_ranks; i++) {
            const int q = i < lr->n_ranks ? lr->ranks[i] : d;
            if (i == lr->n_ranks && lr->n_ranks && lr->ranks[lr->n_ranks - 1] == d) continue; /* already there */
            if ((blocked(t) && q % 32) || (c->rotate && (q & (q - 1))) || (kind && affine(t) && q % c->group) ||
                (!kind && affine(t) && q % 8))
                continue;
            o[k].bytes = (long)(kind ? kvs_vgroup_bytes(t, q, c->group) : kvs_kgroup_bytes(t, q, c->group)); /* G tokens */
            o[k].err = i < lr->n_ranks ? lr->profile[((size_t)kind * L + l) * lr->n_ranks + i] : 0.0;
            r[k++] = q;
        }
        rows[item] = o, n[item] = k;
        budget += (long)(kind ? kvs_vgroup_bytes(t, d, c->group) : kvs_kgroup_bytes(t, d, c->group));
    }
    budget = (long)((double)budget * c->rank_budget + 1e-6);
    /* costs in units of their greatest common divisor (fp16 rows of ranks 8, 16, ..: 512 bytes a
     * group), so that the exact knapsack below is small: 60 items x 8 options x 240 units for
     * SmolLM2 at CR 0.5 */
    long unit = 0;
    for (int item = 0; item < 2 * L; item++)
        for (int i = 0; i < n[item]; i++) unit = gcd(unit, opt[(size_t)item * n_opt + i].bytes);
    for (int item = 0; unit > 1 && item < 2 * L; item++)
        for (int i = 0; i < n[item]; i++) opt[(size_t)item * n_opt + i].bytes /= unit;
    budget /= unit > 1 ? unit : 1;
    /* the exact knapsack while it is small: the greedy hull walk stops at the first point under the
     * budget and can leave much of it unused when a hull step is long (a layer going from full rank
     * to 8 at once) */
    st = budget <= (1L << 22) ? kvs_lr_allocate_exact(rows, n, 2 * L, budget, ch) : kvs_lr_allocate(rows, n, 2 * L, budget, ch);
    if (st) {
        char why[256]; /* the allocator's message, copied: the report below rewrites that buffer */
        snprintf(why, sizeof why, "%s", kvs_last_error());
        st = kvs_report(KVS_ERR_CONFIG, "config: stiefel=auto:%g: no ranks fit (%s)", (double)c->rank_budget, why);
        goto done;
    }
    for (int l = 0; l < L; l++) rk[l] = rank[(size_t)(2 * l) * n_opt + ch[2 * l]], rv[l] = rank[(size_t)(2 * l + 1) * n_opt + ch[2 * l + 1]];
done:
    free(opt), free(rows), free(n), free(ch), free(rank);
    return st;
}

kvs_status kvs__lowrank_ranks(const kvs_config *c, int *rk, int *rv) {
#define BAD(...) return kvs_report(KVS_ERR_CONFIG, __VA_ARGS__)
    const int L = c->n_layers, d = c->head_dim, automatic = c->rank_k == KVS_RANK_AUTO;
    const char *name = g_names[c->basis];
    if (automatic != (c->rank_v == KVS_RANK_AUTO)) BAD("config: stiefel=auto sets both ranks (got %d/%d)", c->rank_k, c->rank_v);
    if (!automatic && (c->rank_k < 1 || c->rank_v < 1 || c->rank_k > d || c->rank_v > d))
        BAD("config: stiefel=%d/%d: ranks must be in 1..head_dim=%d", c->rank_k, c->rank_v, d);
    if (!automatic && c->rank_budget > 0.0f) BAD("config: a rank budget (%g) needs stiefel=auto", (double)c->rank_budget);
    const kvs_calib *cal = c->calib;
    if (!cal || !cal->lrnk.n_sets) BAD("config: stiefel= needs a calibration with low-rank bases (kvslim calibrate stiefel --out)");
    if (cal->n_layers != L || cal->n_kv_heads != c->n_kv_heads || cal->head_dim != d)
        BAD("config: the calibration's bases are for %d layers x %d KV heads of %d, the cache has %d x %d of %d", cal->n_layers,
            cal->n_kv_heads, cal->head_dim, L, c->n_kv_heads, d);
    int sk = 0, sv = 0;
    if (!kvs__calib_basis(cal, c->basis, 0, 0, 0, &sk)) BAD("config: the calibration has no %s bases (basis=)", name);
    if (automatic && c->rank_budget > 0.0f) {
        if (c->basis == KVS_BASIS_EIGEN)
            BAD("config: basis=eigen brings EigenAttention's own ranks: write stiefel=auto without a budget");
        kvs_status st = allocate(c, rk, rv);
        if (st) return st;
    } else if (automatic) {
        if (c->basis == KVS_BASIS_PCA)
            BAD("config: stiefel=auto with basis=pca needs a budget (stiefel=auto:CR, or budget=CR without eviction): the PCA set is whole");
        for (int l = 0; l < L; l++) kvs__calib_basis(cal, c->basis, l, 0, 0, &rk[l]), kvs__calib_basis(cal, c->basis, l, 1, 0, &rv[l]);
    } else
        for (int l = 0; l < L; l++) rk[l] = c->rank_k, rv[l] = c->rank_v;
    for (int l = 0; l < L; l++) {
        kvs__calib_basis(cal, c->basis, l, 0, 0, &sk), kvs__calib_basis(cal, c->basis, l, 1, 0, &sv);
        const int exact = c->basis == KVS_BASIS_LEARNED;
        if (exact ? (rk[l] != sk || rv[l] != sv) : (rk[l] > sk || rv[l] > sv))
            BAD("config: stiefel=%s: layer %d needs ranks %d/%d, its %s bases have %d/%d%s", automatic ? "auto" : "RK/RV", l, rk[l], rv[l],
                name, sk, sv, exact ? " (learned bases are fitted at their ranks: kvslim calibrate stiefel --budget gives a set for a budget)" : "");
        if ((blocked(c->k_type) && rk[l] % 32) || (blocked(c->v_type) && rv[l] % 32))
            BAD("config: layer %d's ranks %d/%d: q8_0/q4_0 coefficient rows need ranks that are multiples of 32", l, rk[l], rv[l]);
        if (affine(c->k_type) && rk[l] % 8) /* a paired code chunk holds 8/b whole coefficients: no partial chunk */
            BAD("config: layer %d's key rank %d: affine key coefficients need a rank that is a multiple of 8", l, rk[l]);
        if (affine(c->v_type) && rv[l] % c->group)
            BAD("config: layer %d's value rank %d: affine value coefficients come in groups of group=%d", l, rv[l], c->group);
        if (c->rotate && ((rk[l] & (rk[l] - 1)) || (rv[l] & (rv[l] - 1))))
            BAD("config: layer %d's ranks %d/%d: rotate=hadamard turns the coefficient space, which needs power-of-two ranks", l, rk[l], rv[l]);
    }
#undef BAD
    return KVS_OK;
}

kvs_status kvs__lowrank_validate(const kvs_config *c) {
#define BAD(...) return kvs_report(KVS_ERR_CONFIG, __VA_ARGS__)
    if (!c->rank_k && !c->rank_v) {
        if (c->rank_budget > 0.0f) BAD("config: a rank budget (%g) needs stiefel=auto", (double)c->rank_budget);
        return KVS_OK;
    }
    if (c->rope != KVS_ROPE_ADJACENT)
        BAD("config: stiefel= needs rope=adjacent (the key basis acts before RoPE, so the cache applies it)");
    /* every type stores coefficients: per-token rows, or affine INTb (keys per coefficient over G tokens) */
    if (c->scale != KVS_SCALE_NONE)
        BAD("config: stiefel= does not combine with scale= (OScaR's norm is over full-width keys)");
    if (c->jensen != KVS_JENSEN_OFF && (c->k_type == KVS_TYPE_FP32 || c->k_type == KVS_TYPE_FP16))
        BAD("config: jensen= corrects quantized keys; fp32/fp16 key coefficients have no rounding noise to correct");
#undef BAD
    int *r = malloc(sizeof(int) * 2 * (size_t)c->n_layers);
    if (!r) return kvs_report(KVS_ERR_NOMEM, "config: out of memory for %d layers' ranks", c->n_layers);
    const kvs_status st = kvs__lowrank_ranks(c, r, r + c->n_layers);
    free(r);
    return st;
}

size_t kvs__lowrank_floats(const kvs_config *c, const int *rk, const int *rv) {
    size_t n = 0;
    for (int l = 0; l < c->n_layers; l++) n += (size_t)rk[l] + (size_t)c->n_kv_heads * rv[l];
    return n * (size_t)c->head_dim;
}

void kvs__lowrank_fill(const kvs_config *c, const int *rk, const int *rv, float *at, float **pkt, float **pv) {
    const int d = c->head_dim, H = c->n_kv_heads, rot = c->rotate == KVS_ROTATE_HADAMARD;
    for (int l = 0; l < c->n_layers; l++) {
        int sk = 0, sv = 0;
        const float *P = kvs__calib_basis(c->calib, c->basis, l, 0, 0, &sk);
        pkt[l] = at;
        for (int t = 0; t < d; t++) {
            float row[1024]; /* channel t of the first rk columns, times H when rotating */
            memcpy(row, P + (size_t)t * sk, sizeof(float) * rk[l]);
            if (rot) kvs_fwht(row, rk[l]);
            for (int j = 0; j < rk[l]; j++) at[(size_t)j * d + t] = row[j];
        }
        at += (size_t)rk[l] * d;
        pv[l] = at;
        for (int h = 0; h < H; h++) { /* the first rv columns of a [d][sv] basis */
            const float *V = kvs__calib_basis(c->calib, c->basis, l, 1, h, &sv);
            for (int t = 0; t < d; t++, at += rv[l]) {
                memcpy(at, V + (size_t)t * sv, sizeof(float) * rv[l]);
                if (rot) kvs_fwht(at, rv[l]);
            }
        }
    }
}
