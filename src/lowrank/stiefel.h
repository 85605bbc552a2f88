/* Optimization on the Stiefel manifold St(d, r) = {P in R^(d x r): P^T P = I_r} for StiefAttention's
 * bases (docs/methods/stiefel.md; spec section 3.4): the Riemannian gradient of the embedded metric,
 * the QR retraction with a positive diagonal, and Armijo steepest descent. A point is m blocks (one
 * basis per KV head for values, m = 1 for a layer's shared key basis), each [d][r] row-major, so the
 * product manifold St(d, r)^m moves as one. Everything is double: the gradient check of the
 * calibration objective (tests/test_lowrank.c) needs fp64, and d <= 128 keeps it cheap. */
#ifndef KVS_LOWRANK_STIEFEL_H
#define KVS_LOWRANK_STIEFEL_H
#include "kvslim.h"

/* f(P) and, when G is not NULL, its Euclidean gradient dF/dP, both [m][d][r]. Returns NaN on a
 * failure the caller reports itself (the descent then stops with KVS_ERR_NONFINITE). */
typedef double (*kvs_lr_objective)(void *user, const double *P, double *G);

/* A [d][r] <- Q of its thin QR factorization with diag(R) > 0 (the canonical one), d >= r >= 1.
 * @return KVS_OK, KVS_ERR_ARG (shapes), KVS_ERR_NONFINITE, KVS_ERR_INTERNAL (rank deficient). */
kvs_status kvs_lr_qf(double *A, int d, int r);

/* xi = G - P sym(P^T G) per block: the Riemannian gradient (embedded metric) at P, tangent there. */
void kvs_lr_tangent(const double *P, const double *G, double *xi, int m, int d, int r);

typedef struct {
    int max_steps;    /* accepted steps at most */
    int max_halvings; /* Armijo halvings per step before giving up (spec: 10) */
    double tol;       /* stop when f fell by less than tol * f over the last `window` steps */
    int window;
    double c1;        /* Armijo constant (spec: 1e-4) */
} kvs_lr_descent_opts;

kvs_lr_descent_opts kvs_lr_descent_defaults(void);

typedef struct {
    int steps, evals, halvings;
    double f0, f;     /* at the start and at the end: f <= f0 always (monotone) */
    double grad_norm; /* ||xi||_F at the last point */
    int converged;    /* 1: stopped by tol; 0: step cap or no Armijo step found */
} kvs_lr_descent_report;

/* One Armijo step from P (f(P) = *fP, Euclidean gradient G at P given): tries eta, eta/2, ...;
 * on success P, *fP and G move to the new point and *eta is the accepted step. Returns 1 on a step,
 * 0 when no step decreased f enough (P unchanged), -1 on an error (reported). `work` holds
 * 3 m d r doubles. */
int kvs_lr_armijo_step(kvs_lr_objective f, void *user, double *P, double *G, double *fP, double *eta, int m,
                       int d, int r, const kvs_lr_descent_opts *o, double *work, int *evals);

/* Steepest descent on St(d, r)^m from P (orthonormal on entry) with QR retraction and Armijo
 * backtracking: f never increases, so the result is never worse than the start on the objective's
 * data. @return KVS_OK, KVS_ERR_ARG, KVS_ERR_NOMEM, KVS_ERR_NONFINITE. */
kvs_status kvs_lr_descend(kvs_lr_objective f, void *user, double *P, int m, int d, int r,
                          const kvs_lr_descent_opts *o, kvs_lr_descent_report *rep);
#endif
