/* StiefAttention calibration math (src/lowrank): the spec's oracles 1-9 and 14
 * (docs/methods/stiefel.md; ../shared/methods/stiefel-lowrank.md section 8) on a tiny random
 * Llama layer in fp64: D 16, 4 query heads over 2 KV heads of 8, MLP 24, 2 sequences of 12 tokens. */
#include <string.h>

#include "lowrank/layer_fit.h"
#include "lowrank/pca.h"
#include "calib/rank_alloc.h"
#include "lowrank/stiefel.h"
#include "test_util.h"

enum { D = 16, HQ = 4, HKV = 2, HD = 8, FF = 24, S = 2, T = 12, N = S * T };

typedef struct {
    double an[D], fn[D], wq[HQ * HD * D], wk[HKV * HD * D], wv[HKV * HD * D], wo[D * HQ * HD];
    double wg[FF * D], wu[FF * D], wd[D * FF], X[N * D];
    kvs_lr_layer w;
} tiny;

static void fill(rng_t *r, double *x, int n, double sd) {
    for (int i = 0; i < n; i++) x[i] = sd * rng_normal(r);
}

static void tiny_init(tiny *t, uint64_t seed) {
    rng_t r = {seed};
    for (int i = 0; i < D; i++) t->an[i] = 1.0 + 0.2 * rng_normal(&r), t->fn[i] = 1.0 + 0.2 * rng_normal(&r);
    fill(&r, t->wq, HQ * HD * D, 0.5), fill(&r, t->wk, HKV * HD * D, 0.5), fill(&r, t->wv, HKV * HD * D, 0.5);
    fill(&r, t->wo, D * HQ * HD, 0.3), fill(&r, t->wg, FF * D, 0.3), fill(&r, t->wu, FF * D, 0.3);
    fill(&r, t->wd, D * FF, 0.3), fill(&r, t->X, N * D, 1.0);
    kvs_lr_layer w = {D, HQ, HKV, HD, FF, 1e-5, 10000.0, t->an, t->fn, t->wq, t->wk, t->wv, t->wo, t->wg, t->wu, t->wd};
    t->w = w;
}

static void random_basis(rng_t *r, double *P, int m, int d, int rk) {
    for (int b = 0; b < m; b++) {
        fill(r, P + (size_t)b * d * rk, d * rk, 1.0);
        kvs_lr_qf(P + (size_t)b * d * rk, d, rk);
    }
}

static double orth_err(const double *P, int m, int d, int r) {
    double worst = 0;
    for (int b = 0; b < m; b++)
        for (int i = 0; i < r; i++)
            for (int j = 0; j < r; j++) {
                double s = 0;
                for (int t = 0; t < d; t++) s += P[((size_t)b * d + t) * r + i] * P[((size_t)b * d + t) * r + j];
                s -= i == j;
                worst = fabs(s) > worst ? fabs(s) : worst;
            }
    return worst;
}

/* the SVD proxy ||K - K P P^T||_F^2 over rows of d, and its gradient -2 (K^T E P + E^T K P) */
typedef struct {
    const double *K;
    int rows, d, r;
} proxy_obj;

static double proxy_f(void *u, const double *P, double *G) {
    const proxy_obj *o = u;
    const int d = o->d, r = o->r;
    double f = 0, *E = malloc(sizeof(double) * o->rows * d);
    for (int i = 0; i < o->rows; i++)
        for (int j = 0; j < d; j++) {
            double x = 0;
            for (int a = 0; a < r; a++) {
                double c = 0;
                for (int t = 0; t < d; t++) c += o->K[(size_t)i * d + t] * P[t * r + a];
                x += c * P[j * r + a];
            }
            E[(size_t)i * d + j] = o->K[(size_t)i * d + j] - x;
            f += E[(size_t)i * d + j] * E[(size_t)i * d + j];
        }
    if (G) {
        double M[64 * 64];
        for (int a = 0; a < d; a++) /* M = K^T E + E^T K */
            for (int b = 0; b < d; b++) {
                double s = 0;
                for (int i = 0; i < o->rows; i++) s += o->K[(size_t)i * d + a] * E[(size_t)i * d + b] + E[(size_t)i * d + a] * o->K[(size_t)i * d + b];
                M[a * d + b] = s;
            }
        for (int a = 0; a < d; a++)
            for (int c = 0; c < r; c++) {
                double s = 0;
                for (int b = 0; b < d; b++) s += M[a * d + b] * P[b * r + c];
                G[a * r + c] = -2.0 * s;
            }
    }
    free(E);
    return f;
}

static void test_qf_and_tangent(void) {
    rng_t r = {11};
    double A[HD * 4], A0[HD * 4], P[HD * 4], G[HD * 4], xi[HD * 4];
    fill(&r, A, HD * 4, 1.0);
    memcpy(A0, A, sizeof A);
    CHECK_OK(kvs_lr_qf(A, HD, 4));
    CHECK(orth_err(A, 1, HD, 4) < 1e-12, "qf not orthonormal: %g", orth_err(A, 1, HD, 4));
    int upper = 1; /* R = Q^T A0 is upper triangular with a positive diagonal */
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double s = 0;
            for (int t = 0; t < HD; t++) s += A[t * 4 + i] * A0[t * 4 + j];
            if (i > j && fabs(s) > 1e-12) upper = 0;
            if (i == j && !(s > 0)) upper = 0;
        }
    CHECK(upper, "qf's R is not upper triangular with a positive diagonal");
    random_basis(&r, P, 1, HD, 4);
    fill(&r, G, HD * 4, 1.0);
    kvs_lr_tangent(P, G, xi, 1, HD, 4);
    double worst = 0; /* oracle 2: sym(P^T xi) = 0 */
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double a = 0, b = 0;
            for (int t = 0; t < HD; t++) a += P[t * 4 + i] * xi[t * 4 + j], b += P[t * 4 + j] * xi[t * 4 + i];
            worst = fabs(0.5 * (a + b)) > worst ? fabs(0.5 * (a + b)) : worst;
        }
    CHECK(worst < 1e-12, "oracle 2: the Riemannian gradient is not tangent (%g)", worst);
}

/* oracles 3 and 4, and the raw backward pass: for keys (m = 1) and values (m = HKV) */
static void test_gradients(kvs_lr_fit *fit) {
    rng_t r = {12};
    for (int which = 0; which < 2; which++) {
        const int m = which == KVS_LR_KEYS ? 1 : HKV, rk = 3, n = m * HD * rk;
        double P[HKV * HD * 3], G[HKV * HD * 3], Dl[HKV * HD * 3], Pp[HKV * HD * 3], Pm[HKV * HD * 3], xi[HKV * HD * 3];
        random_basis(&r, P, m, HD, rk);
        const double f0 = kvs_lr_fit_objective(fit, which, P, rk, G);
        CHECK(f0 > 0 && isfinite(f0), "objective %g", f0);
        /* the Euclidean gradient along any direction (P off the manifold: f is K P P^T for any P) */
        fill(&r, Dl, n, 1.0);
        const double eps = 1e-6;
        for (int i = 0; i < n; i++) Pp[i] = P[i] + eps * Dl[i], Pm[i] = P[i] - eps * Dl[i];
        double fd = (kvs_lr_fit_objective(fit, which, Pp, rk, NULL) - kvs_lr_fit_objective(fit, which, Pm, rk, NULL)) / (2 * eps), an = 0;
        for (int i = 0; i < n; i++) an += G[i] * Dl[i];
        CHECK(fabs(fd - an) <= 1e-6 * fabs(an) + 1e-12, "%s: Euclidean gradient %.10g vs finite difference %.10g", which ? "values" : "keys", an, fd);
        /* oracle 3: along a tangent direction through the retraction */
        kvs_lr_tangent(P, Dl, xi, m, HD, rk);
        for (int i = 0; i < n; i++) Pp[i] = P[i] + eps * xi[i], Pm[i] = P[i] - eps * xi[i];
        for (int b = 0; b < m; b++) kvs_lr_qf(Pp + b * HD * rk, HD, rk), kvs_lr_qf(Pm + b * HD * rk, HD, rk);
        fd = (kvs_lr_fit_objective(fit, which, Pp, rk, NULL) - kvs_lr_fit_objective(fit, which, Pm, rk, NULL)) / (2 * eps);
        double rg[HKV * HD * 3];
        kvs_lr_tangent(P, G, rg, m, HD, rk);
        an = 0;
        for (int i = 0; i < n; i++) an += rg[i] * xi[i];
        CHECK(fabs(fd - an) <= 1e-5 * fabs(an), "oracle 3 (%s): <xi, D> %.10g vs retracted difference %.10g", which ? "values" : "keys", an, fd);
        /* oracle 4: only the span matters */
        double Om[9], PO[HKV * HD * 3];
        fill(&r, Om, 9, 1.0);
        kvs_lr_qf(Om, 3, 3);
        for (int b = 0; b < m; b++)
            for (int t = 0; t < HD; t++)
                for (int j = 0; j < rk; j++) {
                    double s = 0;
                    for (int k = 0; k < rk; k++) s += P[(b * HD + t) * rk + k] * Om[k * 3 + j];
                    PO[(b * HD + t) * rk + j] = s;
                }
        const double f1 = kvs_lr_fit_objective(fit, which, PO, rk, NULL);
        CHECK(fabs(f1 - f0) <= 1e-10 * f0, "oracle 4 (%s): f(P Omega) %.15g vs f(P) %.15g", which ? "values" : "keys", f1, f0);
    }
}

/* oracle 5: r = d with any orthogonal P is exact */
static void test_full_rank(kvs_lr_fit *fit) {
    rng_t r = {13};
    double P[HKV * HD * HD], Y[N * D];
    for (int which = 0; which < 2; which++) {
        const int m = which == KVS_LR_KEYS ? 1 : HKV;
        random_basis(&r, P, m, HD, HD);
        const double f = kvs_lr_fit_objective(fit, which, P, HD, NULL);
        CHECK(f < 1e-24, "oracle 5 (%s): full rank is not exact, f = %g", which ? "values" : "keys", f);
        CHECK(fabs(kvs_lr_fit_cosine(fit) - 1.0) < 1e-12, "full rank: cosine %.15g", kvs_lr_fit_cosine(fit));
        kvs_lr_fit_objective(fit, which, P, 2, NULL); /* the first two columns: lossy */
        CHECK(kvs_lr_fit_cosine(fit) < 1.0 - 1e-6, "rank 2: cosine %.15g", kvs_lr_fit_cosine(fit));
    }
    CHECK_OK(kvs_lr_fit_forward(fit, NULL, NULL, Y));
    double worst = 0;
    for (int i = 0; i < N * D; i++) worst = fabs(Y[i] - kvs_lr_fit_output(fit)[i]) > worst ? fabs(Y[i] - kvs_lr_fit_output(fit)[i]) : worst;
    CHECK(worst == 0, "the exact forward is not repeatable: %g", worst);
}

/* oracles 1 and 6: 200 Armijo steps on the layer objective stay orthonormal and never increase f */
static void test_monotone(kvs_lr_fit *fit) {
    rng_t r = {14};
    const int m = HKV, rk = 3, n = m * HD * rk;
    double P[HKV * HD * 3], G[HKV * HD * 3], work[3 * HKV * HD * 3];
    random_basis(&r, P, m, HD, rk);
    kvs_lr_problem o = {fit, KVS_LR_VALUES, rk};
    double f = kvs_lr_fit_f(&o, P, G), eta = 0.05, worst_orth = 0;
    const double f0 = f;
    int increases = 0, steps = 0, evals = 0;
    kvs_lr_descent_opts opts = kvs_lr_descent_defaults();
    for (int k = 0; k < 200; k++) {
        const double before = f;
        const int ok = kvs_lr_armijo_step(kvs_lr_fit_f, &o, P, G, &f, &eta, m, HD, rk, &opts, work, &evals);
        if (ok < 0) break;
        steps += ok;
        increases += f > before;
        const double e = orth_err(P, m, HD, rk);
        worst_orth = e > worst_orth ? e : worst_orth;
        eta *= 2;
    }
    (void)n;
    CHECK(steps >= 50, "only %d Armijo steps accepted", steps);
    CHECK(increases == 0, "oracle 6: f increased %d times", increases);
    CHECK(f < f0, "oracle 6: f %g not below its start %g", f, f0);
    CHECK(worst_orth < 1e-12, "oracle 1: P^T P - I reached %g", worst_orth);
}

/* oracles 7 and 8: PCA minimises the proxy (descent from a random start reaches it; its value is
 * the discarded eigenvalue mass); learned from PCA is never worse on the layer objective */
static void test_pca(kvs_lr_fit *fit) {
    const double *K = kvs_lr_fit_kv(fit, KVS_LR_KEYS);
    double C[HD * HD] = {0}, eig[HD], P[HD * 3], Pr[HD * 3];
    CHECK_OK(kvs_lr_gram_add(C, K, N * HKV, HD, HD));
    CHECK_OK(kvs_lr_pca(C, HD, 3, P, eig));
    int sorted = 1;
    for (int i = 1; i < HD; i++) sorted &= eig[i] <= eig[i - 1];
    CHECK(sorted, "eigenvalues not descending");
    for (int c = 0; c < 3; c++) { /* canonical sign */
        int big = 0;
        for (int i = 1; i < HD; i++) big = fabs(P[i * 3 + c]) > fabs(P[big * 3 + c]) ? i : big;
        CHECK(P[big * 3 + c] > 0, "column %d's largest entry is negative", c);
    }
    proxy_obj po = {K, N * HKV, HD, 3};
    const double fp = proxy_f(&po, P, NULL), discarded = eig[3] + eig[4] + eig[5] + eig[6] + eig[7];
    CHECK(fabs(fp - discarded) <= 1e-9 * fp, "oracle 7: PCA proxy error %.12g vs discarded eigenvalues %.12g", fp, discarded);
    rng_t r = {15};
    random_basis(&r, Pr, 1, HD, 3);
    kvs_lr_descent_opts o = kvs_lr_descent_defaults();
    o.max_steps = 3000, o.tol = 1e-13, o.window = 20;
    kvs_lr_descent_report rep;
    CHECK_OK(kvs_lr_descend(proxy_f, &po, Pr, 1, HD, 3, &o, &rep));
    CHECK(fabs(rep.f - fp) <= 1e-4 * fp, "oracle 7: descent on the proxy reached %.10g, PCA %.10g (%d steps)", rep.f, fp, rep.steps);
    /* oracle 8 */
    kvs_lr_problem lo = {fit, KVS_LR_KEYS, 3};
    const double f_pca = kvs_lr_fit_f(&lo, P, NULL);
    o = kvs_lr_descent_defaults();
    CHECK_OK(kvs_lr_descend(kvs_lr_fit_f, &lo, P, 1, HD, 3, &o, &rep));
    CHECK(rep.f <= f_pca && rep.f0 == f_pca, "oracle 8: learned %g vs PCA %g", rep.f, f_pca);
    CHECK(fabs(kvs_lr_fit_f(&lo, P, NULL) - rep.f) <= 1e-12 * rep.f, "the reported f is not the returned basis's");
    /* EigenAttention's rank rule: sqrt-eigenvalue shares 0.5, 0.3, 0.2 -> 1 below 0.6, 2 below 0.9 */
    const double ev[3] = {0.25, 0.09, 0.04};
    CHECK(kvs_lr_eigen_rank(ev, 3, 0.6) == 1 && kvs_lr_eigen_rank(ev, 3, 0.9) == 2 && kvs_lr_eigen_rank(ev, 3, 1.01) == 3,
          "eigen rank rule: %d %d %d", kvs_lr_eigen_rank(ev, 3, 0.6), kvs_lr_eigen_rank(ev, 3, 0.9), kvs_lr_eigen_rank(ev, 3, 1.01));
}

/* oracle 9: keys carry a loud RoPE pair (0, 1) that no query reads and four useful channels
 * (2..5; 6 and 7 are zero). At rank 4 PCA keeps the loud pair and half the useful channels; the
 * layer objective's optimum keeps the four useful ones, which is exact since scores never read
 * the loud pair */
static void test_strict_win(void) {
    tiny t;
    tiny_init(&t, 21);
    for (int j = 0; j < HQ; j++)
        for (int c = 0; c < 2; c++) memset(t.wq + ((size_t)j * HD + c) * D, 0, sizeof(double) * D);
    for (int h = 0; h < HKV; h++)
        for (int c = 0; c < 2; c++)
            for (int i = 0; i < D; i++) t.wk[((size_t)h * HD + c) * D + i] *= 8.0;
    for (int h = 0; h < HKV; h++) memset(t.wk + ((size_t)h * HD + 6) * D, 0, sizeof(double) * 2 * D);
    kvs_lr_fit *fit;
    CHECK_OK(kvs_lr_fit_new(&t.w, t.X, S, T, &fit));
    if (!fit) return;
    double C[HD * HD] = {0}, eig[HD], P[HD * 4];
    kvs_lr_gram_add(C, kvs_lr_fit_kv(fit, KVS_LR_KEYS), N * HKV, HD, HD);
    CHECK_OK(kvs_lr_pca(C, HD, 4, P, eig));
    double loud = 0; /* how much of the loud pair PCA keeps: ||P[0:2, :]||_F^2 of 2 */
    for (int c = 0; c < 2; c++)
        for (int j = 0; j < 4; j++) loud += P[c * 4 + j] * P[c * 4 + j];
    CHECK(loud > 1.9, "the fixture's loud pair is not in PCA's top 4 (%g of 2)", loud);
    kvs_lr_problem lo = {fit, KVS_LR_KEYS, 4};
    const double f_pca = kvs_lr_fit_f(&lo, P, NULL);
    kvs_lr_descent_opts o = kvs_lr_descent_defaults();
    o.max_steps = 3000, o.tol = 1e-9;
    kvs_lr_descent_report rep;
    CHECK_OK(kvs_lr_descend(kvs_lr_fit_f, &lo, P, 1, HD, 4, &o, &rep));
    /* from PCA the way out is a saddle (turning a kept loud direction toward a useful one mixes
     * the loud channel into the scores, to first order), so restarts from random bases as well */
    double best = rep.f;
    rng_t r = {22};
    printf("strict win: PCA %.4g -> learned from PCA %.4g in %d steps", f_pca, rep.f, rep.steps);
    for (int k = 0; k < 4; k++) {
        random_basis(&r, P, 1, HD, 4);
        CHECK_OK(kvs_lr_descend(kvs_lr_fit_f, &lo, P, 1, HD, 4, &o, &rep));
        printf(", random start %.4g in %d", rep.f, rep.steps);
        best = rep.f < best ? rep.f : best;
    }
    printf("\n");
    CHECK(best < 0.5 * f_pca, "oracle 9: learned %g not below half of PCA's %g", best, f_pca);
    kvs_lr_fit_free(fit);
}

/* oracle 14: bad ranks and non-finite data are named errors */
static void test_bad_input(tiny *t) {
    double A[HD * HD], C[HD * HD] = {0}, eig[HD], X[HD];
    for (int i = 0; i < HD * HD; i++) A[i] = i == 0 ? NAN : 1.0;
    CHECK(kvs_lr_qf(A, HD, 0) == KVS_ERR_ARG, "qf r = 0");
    CHECK(kvs_lr_qf(A, 4, HD) == KVS_ERR_ARG, "qf r > d");
    CHECK(kvs_lr_qf(A, HD, 4) == KVS_ERR_NONFINITE, "qf NaN");
    for (int i = 0; i < HD * 4; i++) A[i] = 1.0; /* rank 1 */
    CHECK(kvs_lr_qf(A, HD, 4) == KVS_ERR_INTERNAL, "qf of dependent columns");
    for (int i = 0; i < HD; i++) C[i * HD + i] = 1.0;
    CHECK(kvs_lr_pca(C, HD, 0, A, eig) == KVS_ERR_ARG, "pca r = 0");
    CHECK(kvs_lr_pca(C, HD, HD + 1, A, eig) == KVS_ERR_ARG, "pca r > d");
    C[1] = INFINITY;
    CHECK(kvs_lr_pca(C, HD, 2, A, eig) == KVS_ERR_NONFINITE, "pca Inf");
    for (int i = 0; i < HD; i++) X[i] = i == 3 ? NAN : 0.5;
    C[1] = 0;
    CHECK(kvs_lr_gram_add(C, X, 1, HD, HD) == KVS_ERR_NONFINITE && C[0] == 1.0, "gram NaN");
    double Xb[N * D];
    memcpy(Xb, t->X, sizeof Xb);
    Xb[5 * D + 2] = NAN;
    kvs_lr_fit *fit = (kvs_lr_fit *)1;
    CHECK(kvs_lr_fit_new(&t->w, Xb, S, T, &fit) == KVS_ERR_NONFINITE && fit == NULL, "fit NaN input");
    CHECK(kvs_lr_fit_new(&t->w, t->X, 0, T, &fit) == KVS_ERR_ARG, "fit S = 0");
    kvs_lr_layer w = t->w;
    w.Hq = 3; /* not a multiple of Hkv */
    CHECK(kvs_lr_fit_new(&w, t->X, S, T, &fit) == KVS_ERR_ARG, "fit bad heads");
    CHECK_OK(kvs_lr_fit_new(&t->w, t->X, S, T, &fit));
    if (fit) {
        double P[HD * HD] = {0};
        CHECK(isnan(kvs_lr_fit_objective(fit, KVS_LR_KEYS, P, 0, NULL)), "objective r = 0");
        CHECK(isnan(kvs_lr_fit_objective(fit, KVS_LR_KEYS, P, HD + 1, NULL)), "objective r > d");
        kvs_lr_descent_opts o = kvs_lr_descent_defaults();
        kvs_lr_descent_report rep;
        kvs_lr_problem lo = {fit, KVS_LR_KEYS, 0};
        CHECK(kvs_lr_descend(kvs_lr_fit_f, &lo, P, 1, HD, 0, &o, &rep) == KVS_ERR_ARG, "descend r = 0");
        lo.r = 2;
        for (int i = 0; i < HD * 2; i++) P[i] = NAN;
        CHECK(kvs_lr_descend(kvs_lr_fit_f, &lo, P, 1, HD, 2, &o, &rep) == KVS_ERR_NONFINITE, "descend from NaN");
        kvs_lr_fit_free(fit);
    }
}

static double total_err(const kvs_lr_option *const *opt, const int *choice, int L, long *bytes) {
    double e = 0;
    *bytes = 0;
    for (int l = 0; l < L; l++) e += opt[l][choice[l]].err, *bytes += opt[l][choice[l]].bytes;
    return e;
}

/* oracle 12: within budget; greedy equals the exact knapsack where the profiles are convex with
 * equal byte steps (where marginal analysis is exact); a larger budget never raises the error;
 * identical profiles give equal ranks; dominated options are never picked; infeasible is an error */
static void test_allocator(void) {
    enum { LL = 5, NO = 7 };
    rng_t r = {31};
    kvs_lr_option o[LL][NO];
    const kvs_lr_option *opt[LL];
    int n[LL], ch[LL], ex[LL];
    for (int l = 0; l < LL; l++) {
        const double a = 0.5 + rng_uniform(&r), b = 0.2 + 0.6 * rng_uniform(&r);
        for (int i = 0; i < NO; i++) o[l][i].bytes = 10L * (i + 1), o[l][i].err = a * exp(-b * (i + 1));
        opt[l] = o[l], n[l] = NO;
    }
    double prev = INFINITY;
    int all_equal = 1, monotone = 1, within = 1;
    for (long budget = 10L * LL; budget <= 10L * LL * NO; budget += 10) {
        long gb, eb;
        CHECK_OK(kvs_lr_allocate(opt, n, LL, budget, ch));
        CHECK_OK(kvs_lr_allocate_exact(opt, n, LL, budget, ex));
        const double ge = total_err(opt, ch, LL, &gb), ee = total_err(opt, ex, LL, &eb);
        all_equal &= fabs(ge - ee) <= 1e-12 * ee;
        within &= gb <= budget && eb <= budget;
        monotone &= ge <= prev + 1e-15;
        prev = ge;
    }
    CHECK(all_equal, "greedy differs from the exact knapsack on convex equal-step profiles");
    CHECK(within, "an allocation exceeds its budget");
    CHECK(monotone, "a larger budget raised the greedy error");
    for (int l = 1; l < LL; l++) memcpy(o[l], o[0], sizeof o[0]); /* identical profiles */
    CHECK_OK(kvs_lr_allocate(opt, n, LL, 10L * LL * 4, ch));
    int uniform = 1;
    for (int l = 0; l < LL; l++) uniform &= ch[l] == 3;
    CHECK(uniform, "identical profiles: ranks %d %d %d %d %d, not all option 3", ch[0], ch[1], ch[2], ch[3], ch[4]);
    o[2][5].err = 10.0; /* dominated: more bytes than option 4 and far more error */
    CHECK_OK(kvs_lr_allocate(opt, n, LL, 10L * LL * NO, ch));
    CHECK(ch[2] != 5, "a dominated option was picked");
    CHECK(kvs_lr_allocate(opt, n, LL, 10L * LL - 1, ch) == KVS_ERR_CAPACITY, "budget below the minimum");
    CHECK(kvs_lr_allocate_exact(opt, n, LL, 10L * LL - 1, ch) == KVS_ERR_CAPACITY, "exact: budget below the minimum");
    o[1][0].err = NAN;
    CHECK(kvs_lr_allocate(opt, n, LL, 1000, ch) == KVS_ERR_ARG, "NaN error");
    o[1][0].err = 1.0, o[1][0].bytes = 0;
    CHECK(kvs_lr_allocate(opt, n, LL, 1000, ch) == KVS_ERR_ARG, "zero bytes");
    n[1] = 0;
    CHECK(kvs_lr_allocate(opt, n, LL, 1000, ch) == KVS_ERR_ARG, "a layer without options");
}

int main(void) {
    static tiny t;
    tiny_init(&t, 7);
    kvs_lr_fit *fit = NULL;
    CHECK_OK(kvs_lr_fit_new(&t.w, t.X, S, T, &fit));
    test_qf_and_tangent();
    if (fit) {
        test_gradients(fit);
        test_full_rank(fit);
        test_monotone(fit);
        test_pca(fit);
        kvs_lr_fit_free(fit);
    }
    test_strict_win();
    test_bad_input(&t);
    test_allocator();
    return test_done("test_lowrank");
}
