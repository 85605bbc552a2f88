/* Rank allocation (rank_alloc.h). */
#include "rank_alloc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static kvs_status check(const kvs_lr_option *const *opt, const int *n, int L, long budget, int *choice, long *min_total) {
    if (!opt || !n || !choice || L < 1) return kvs_report(KVS_ERR_ARG, "rank allocation: no layers");
    long total = 0;
    for (int l = 0; l < L; l++) {
        if (!opt[l] || n[l] < 1) return kvs_report(KVS_ERR_ARG, "rank allocation: layer %d has no options", l);
        long cheapest = 0;
        for (int i = 0; i < n[l]; i++) {
            const kvs_lr_option *o = &opt[l][i];
            if (o->bytes <= 0 || !isfinite(o->err) || o->err < 0)
                return kvs_report(KVS_ERR_ARG, "rank allocation: layer %d option %d has bytes %ld, error %g", l, i, o->bytes, o->err);
            cheapest = i == 0 || o->bytes < cheapest ? o->bytes : cheapest;
        }
        total += cheapest;
    }
    *min_total = total;
    if (budget < total)
        return kvs_report(KVS_ERR_CAPACITY, "rank allocation: budget %ld bytes is below %ld, the cheapest option of every layer", budget, total);
    return KVS_OK;
}

/* indices of layer l's lower convex hull, by descending bytes (most expensive first) */
static int hull(const kvs_lr_option *o, int n, int *idx) {
    int *ord = malloc(sizeof(int) * n), k = 0;
    if (!ord) return -1;
    for (int i = 0; i < n; i++) ord[i] = i;
    for (int i = 1; i < n; i++) /* by bytes descending, then error ascending (insertion sort: n is small) */
        for (int j = i; j > 0; j--) {
            const kvs_lr_option *a = &o[ord[j - 1]], *b = &o[ord[j]];
            if (a->bytes < b->bytes || (a->bytes == b->bytes && a->err > b->err)) {
                const int t = ord[j];
                ord[j] = ord[j - 1], ord[j - 1] = t;
            } else break;
        }
    for (int i = 0; i < n; i++) {
        const kvs_lr_option *p = &o[ord[i]];
        if (k && o[idx[k - 1]].bytes == p->bytes) continue; /* same bytes, larger error */
        if (k && p->err <= o[idx[k - 1]].err) { /* cheaper and no worse: the last one is dominated */
            while (k && p->err <= o[idx[k - 1]].err) k--;
        }
        /* convexity going cheaper: the error slope per byte saved must not decrease */
        while (k >= 2) {
            const kvs_lr_option *a = &o[idx[k - 2]], *b = &o[idx[k - 1]];
            const double s1 = (b->err - a->err) / (double)(a->bytes - b->bytes), s2 = (p->err - b->err) / (double)(b->bytes - p->bytes);
            if (s2 <= s1) k--;
            else break;
        }
        idx[k++] = ord[i];
    }
    free(ord);
    return k;
}

kvs_status kvs_lr_allocate(const kvs_lr_option *const *opt, const int *n, int L, long budget, int *choice) {
    long min_total;
    kvs_status s = check(opt, n, L, budget, choice, &min_total);
    if (s) return s;
    int total_n = 0;
    for (int l = 0; l < L; l++) total_n += n[l];
    int *h = malloc(sizeof(int) * total_n), *hn = malloc(sizeof(int) * L), *at = calloc((size_t)L, sizeof(int)), *base = malloc(sizeof(int) * L);
    if (!h || !hn || !at || !base) {
        s = kvs_report(KVS_ERR_NOMEM, "rank allocation: out of memory");
        goto done;
    }
    long bytes = 0;
    for (int l = 0, off = 0; l < L; off += n[l], l++) {
        base[l] = off;
        if ((hn[l] = hull(opt[l], n[l], h + off)) < 1) {
            s = kvs_report(KVS_ERR_NOMEM, "rank allocation: out of memory");
            goto done;
        }
        bytes += opt[l][h[off]].bytes;
    }
    while (bytes > budget) {
        int best = -1;
        double best_slope = 0;
        for (int l = 0; l < L; l++) {
            if (at[l] + 1 >= hn[l]) continue;
            const kvs_lr_option *a = &opt[l][h[base[l] + at[l]]], *b = &opt[l][h[base[l] + at[l] + 1]];
            const double slope = (b->err - a->err) / (double)(a->bytes - b->bytes);
            if (best < 0 || slope < best_slope) best = l, best_slope = slope;
        }
        if (best < 0) break; /* cannot happen: the cheapest points fit (checked) */
        bytes -= opt[best][h[base[best] + at[best]]].bytes - opt[best][h[base[best] + at[best] + 1]].bytes;
        at[best]++;
    }
    for (int l = 0; l < L; l++) choice[l] = h[base[l] + at[l]];
done:
    free(h), free(hn), free(at), free(base);
    return s;
}

kvs_status kvs_lr_allocate_exact(const kvs_lr_option *const *opt, const int *n, int L, long budget, int *choice) {
    long min_total;
    kvs_status s = check(opt, n, L, budget, choice, &min_total);
    if (s) return s;
    if (budget > (1L << 22)) return kvs_report(KVS_ERR_ARG, "rank allocation: budget %ld too large for the exact solver", budget);
    const size_t B = (size_t)budget + 1;
    /* best[l][b]: least error of layers 0..l with exactly b bytes; pick[l][b]: the option taken */
    double *best = malloc(sizeof(double) * L * B);
    int *pick = malloc(sizeof(int) * L * B);
    if (!best || !pick) {
        free(best), free(pick);
        return kvs_report(KVS_ERR_NOMEM, "rank allocation: out of memory");
    }
    for (size_t i = 0; i < (size_t)L * B; i++) best[i] = INFINITY, pick[i] = -1;
    for (int l = 0; l < L; l++)
        for (int i = 0; i < n[l]; i++) {
            const long c = opt[l][i].bytes;
            for (size_t b = (size_t)c; b < B; b++) {
                const double prev = l ? best[(size_t)(l - 1) * B + b - c] : (b == (size_t)c ? 0.0 : INFINITY);
                const double v = prev + opt[l][i].err;
                if (v < best[(size_t)l * B + b]) best[(size_t)l * B + b] = v, pick[(size_t)l * B + b] = i;
            }
        }
    size_t bb = 0;
    for (size_t b = 1; b < B; b++)
        if (best[(size_t)(L - 1) * B + b] < best[(size_t)(L - 1) * B + bb]) bb = b;
    for (int l = L - 1; l >= 0; l--) {
        choice[l] = pick[(size_t)l * B + bb];
        bb -= (size_t)opt[l][choice[l]].bytes;
    }
    free(best), free(pick);
    return KVS_OK;
}
