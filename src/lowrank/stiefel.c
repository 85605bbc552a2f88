/* Stiefel-manifold descent (stiefel.h): Riemannian gradient, QR retraction, Armijo backtracking. */
#include "stiefel.h"

#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

kvs_status kvs_lr_qf(double *A, int d, int r) {
    if (!A || r < 1 || d < r || d > 1024) return kvs_report(KVS_ERR_ARG, "stiefel: qf of a %d x %d matrix (need d >= r >= 1)", d, r);
    for (size_t i = 0; i < (size_t)d * r; i++)
        if (!isfinite(A[i])) return kvs_report(KVS_ERR_NONFINITE, "stiefel: NaN or Inf in the matrix to orthonormalize");
    double tau[1024], sign[1024];
    if (LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, d, r, A, r, tau)) return kvs_report(KVS_ERR_INTERNAL, "stiefel: dgeqrf failed");
    for (int i = 0; i < r; i++) {
        /* R's diagonal: a zero means the columns were dependent, and no unique Q exists */
        if (!(fabs(A[(size_t)i * r + i]) > 1e-300)) return kvs_report(KVS_ERR_INTERNAL, "stiefel: rank-deficient matrix (column %d)", i);
        sign[i] = A[(size_t)i * r + i] > 0 ? 1.0 : -1.0;
    }
    if (LAPACKE_dorgqr(LAPACK_ROW_MAJOR, d, r, r, A, r, tau)) return kvs_report(KVS_ERR_INTERNAL, "stiefel: dorgqr failed");
    for (int i = 0; i < d; i++)
        for (int j = 0; j < r; j++) A[(size_t)i * r + j] *= sign[j];
    return KVS_OK;
}

void kvs_lr_tangent(const double *P, const double *G, double *xi, int m, int d, int r) {
    double *S = malloc(sizeof(double) * r * r);
    if (!S) { /* callers size r <= d <= 1024; fall back to the Grassmann form, exact for f(P P^T) */
        memcpy(xi, G, sizeof(double) * m * d * r);
        return;
    }
    for (int b = 0; b < m; b++) {
        const double *Pb = P + (size_t)b * d * r, *Gb = G + (size_t)b * d * r;
        double *xb = xi + (size_t)b * d * r;
        for (int i = 0; i < r; i++) /* S = P^T G */
            for (int j = 0; j < r; j++) {
                double s = 0;
                for (int t = 0; t < d; t++) s += Pb[(size_t)t * r + i] * Gb[(size_t)t * r + j];
                S[i * r + j] = s;
            }
        for (int i = 0; i < r; i++) /* symmetric part */
            for (int j = i + 1; j < r; j++) S[i * r + j] = S[j * r + i] = 0.5 * (S[i * r + j] + S[j * r + i]);
        for (int t = 0; t < d; t++)
            for (int j = 0; j < r; j++) {
                double s = 0;
                for (int i = 0; i < r; i++) s += Pb[(size_t)t * r + i] * S[i * r + j];
                xb[(size_t)t * r + j] = Gb[(size_t)t * r + j] - s;
            }
    }
    free(S);
}

kvs_lr_descent_opts kvs_lr_descent_defaults(void) {
    kvs_lr_descent_opts o = {40, 10, 1e-4, 5, 1e-4};
    return o;
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

int kvs_lr_armijo_step(kvs_lr_objective f, void *user, double *P, double *G, double *fP, double *eta, int m,
                       int d, int r, const kvs_lr_descent_opts *o, double *work, int *evals) {
    const size_t n = (size_t)m * d * r;
    double *xi = work, *Pn = work + n, *Gn = work + 2 * n;
    kvs_lr_tangent(P, G, xi, m, d, r);
    const double g2 = dot(xi, xi, n);
    if (!(g2 > 0)) return g2 == 0 ? 0 : -1;
    double e = *eta;
    for (int h = 0; h <= o->max_halvings; h++, e *= 0.5) {
        for (size_t i = 0; i < n; i++) Pn[i] = P[i] - e * xi[i];
        for (int b = 0; b < m; b++)
            if (kvs_lr_qf(Pn + (size_t)b * d * r, d, r) != KVS_OK) return -1;
        const double fn = f(user, Pn, NULL);
        ++*evals;
        if (isnan(fn)) return -1;
        if (fn <= *fP - o->c1 * e * g2) {
            const double fg = f(user, Pn, Gn); /* the gradient at the accepted point */
            ++*evals;
            if (isnan(fg)) return -1;
            memcpy(P, Pn, n * sizeof(double));
            memcpy(G, Gn, n * sizeof(double));
            *fP = fg, *eta = e;
            return 1;
        }
    }
    return 0;
}

kvs_status kvs_lr_descend(kvs_lr_objective f, void *user, double *P, int m, int d, int r,
                          const kvs_lr_descent_opts *o, kvs_lr_descent_report *rep) {
    if (!f || !P || !o || !rep || m < 1 || r < 1 || d < r || o->max_steps < 0 || o->max_halvings < 0 || o->window < 1)
        return kvs_report(KVS_ERR_ARG, "stiefel: bad descent arguments (m %d, d %d, r %d)", m, d, r);
    memset(rep, 0, sizeof *rep);
    const size_t n = (size_t)m * d * r;
    double *G = malloc(sizeof(double) * n), *work = malloc(sizeof(double) * 3 * n);
    double *hist = malloc(sizeof(double) * (o->window + 1)), *Pold = malloc(sizeof(double) * 2 * n), *xold = Pold + n;
    kvs_status s = KVS_OK;
    if (!G || !work || !hist || !Pold) {
        s = kvs_report(KVS_ERR_NOMEM, "stiefel: out of memory");
        goto done;
    }
    double fP = f(user, P, G);
    rep->evals = 1;
    if (!isfinite(fP)) {
        s = kvs_report(KVS_ERR_NONFINITE, "stiefel: the objective is not finite at the start");
        goto done;
    }
    rep->f0 = fP;
    kvs_lr_tangent(P, G, work, m, d, r);
    const double gn = sqrt(dot(work, work, n));
    double eta = gn > 0 ? 0.5 / gn : 0; /* the first trial turns the basis by about half a radian */
    hist[0] = fP;
    for (int k = 0; k < o->max_steps && gn > 0; k++) {
        memcpy(Pold, P, n * sizeof(double));
        kvs_lr_tangent(P, G, xold, m, d, r);
        const int ok = kvs_lr_armijo_step(f, user, P, G, &fP, &eta, m, d, r, o, work, &rep->evals);
        if (ok < 0) {
            s = kvs_report(KVS_ERR_NONFINITE, "stiefel: the objective or the retraction failed at step %d", k);
            goto done;
        }
        if (!ok) break;
        rep->steps++;
        /* the next first trial: Barzilai-Borwein's <s, s> / |<s, y>| from the last move s and the
         * change y of the Riemannian gradient (vectors compared in the ambient space, as Wen and
         * Yin's feasible method does); Armijo still guards it. Steepest descent with a doubling
         * trial crawled on the tests' saddle-shaped problems (300 steps short of converging). */
        kvs_lr_tangent(P, G, work, m, d, r);
        double ss = 0, sy = 0;
        for (size_t i = 0; i < n; i++) {
            const double si = P[i] - Pold[i], yi = work[i] - xold[i];
            ss += si * si, sy += si * yi;
        }
        const double bb = ss / fabs(sy);
        eta = isfinite(bb) && bb > 0 ? (bb > 1e3 * eta ? 1e3 * eta : bb) : 2 * eta;
        hist[rep->steps % (o->window + 1)] = fP;
        if (rep->steps >= o->window) {
            const double before = hist[(rep->steps - o->window) % (o->window + 1)];
            if (before - fP < o->tol * before) {
                rep->converged = 1;
                break;
            }
        }
    }
    kvs_lr_tangent(P, G, work, m, d, r);
    rep->grad_norm = sqrt(dot(work, work, n));
    rep->f = fP;
done:
    free(G), free(work), free(hist), free(Pold);
    return s;
}
