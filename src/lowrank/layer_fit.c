/* One decoder layer's forward and backward for StiefAttention calibration (layer_fit.h).
 * Shapes: N = S * T tokens; Q [N][Hq][d], K and V [N][Hkv][d]; attention runs per sequence and
 * query head over a T x T score block that the backward pass recomputes (keeping all of them
 * would cost S * Hq * T^2 doubles). */
#include "layer_fit.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct kvs_lr_fit {
    kvs_lr_layer w;
    int S, T, N, g;
    double scale, yy; /* 1/sqrt(d); ||Y||_F^2 */
    double *X, *Q, *K, *V, *Y, *cs; /* cs [T][d/2][2]: cos, sin */
    /* work of one forward + backward */
    double *Kt, *Vt, *Kr, *O, *Z, *r2, *h2, *gate, *up, *act, *Yh;
    double *dY, *dZ, *dO, *dKr, *dVt, *dact, *dh2, *A, *dA;
};

static void mm(int ta, int tb, int M, int N, int K, double alpha, const double *A, int lda, const double *B, int ldb,
               double beta, double *C, int ldc) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B,
                ldb, beta, C, ldc);
}

/* x [N][heads][d] rotated in place by +angle (dir = 1) or -angle (dir = -1, the transpose) */
static void rope(const kvs_lr_fit *f, double *x, int heads, int dir) {
    const int d = f->w.d;
    for (int i = 0; i < f->N; i++) {
        const double *cs = f->cs + (size_t)(i % f->T) * d;
        for (int h = 0; h < heads; h++)
            for (int p = 0; p < d / 2; p++) {
                double *v = x + ((size_t)i * heads + h) * d + 2 * p;
                const double c = cs[2 * p], s = dir * cs[2 * p + 1], a = v[0], b = v[1];
                v[0] = a * c - b * s;
                v[1] = a * s + b * c;
            }
    }
}

/* y = x / sqrt(mean(x^2) + eps) * w per row; r [n] keeps the factor for the backward pass */
static void rmsnorm(const double *x, const double *w, double *y, double *r, int n, int D, double eps) {
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (int j = 0; j < D; j++) ss += x[(size_t)i * D + j] * x[(size_t)i * D + j];
        const double ri = 1.0 / sqrt(ss / D + eps);
        if (r) r[i] = ri;
        for (int j = 0; j < D; j++) y[(size_t)i * D + j] = x[(size_t)i * D + j] * ri * w[j];
    }
}

static double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }

/* A [T][T] = causal softmax(Q_j K_h^T * scale) of sequence s, query head j */
static void probs(const kvs_lr_fit *f, const double *Kr, int s, int j, double *A) {
    const int T = f->T, d = f->w.d, Hq = f->w.Hq, Hkv = f->w.Hkv, h = j / f->g;
    const double *q = f->Q + ((size_t)s * T * Hq + j) * d, *k = Kr + ((size_t)s * T * Hkv + h) * d;
    mm(0, 1, T, T, d, f->scale, q, Hq * d, k, Hkv * d, 0.0, A, T);
    for (int t = 0; t < T; t++) {
        double *a = A + (size_t)t * T, mx = a[0], z = 0;
        for (int u = 1; u <= t; u++) mx = a[u] > mx ? a[u] : mx;
        for (int u = 0; u <= t; u++) z += (a[u] = exp(a[u] - mx));
        for (int u = 0; u <= t; u++) a[u] /= z;
        for (int u = t + 1; u < T; u++) a[u] = 0;
    }
}

/* the layer from X with keys Kt and values Vt (pre-RoPE) into f->Yh, keeping what backward needs */
static void forward(kvs_lr_fit *f, const double *Kt, const double *Vt) {
    const kvs_lr_layer *w = &f->w;
    const int N = f->N, T = f->T, D = w->D, d = w->d, Hq = w->Hq, Hkv = w->Hkv, F = w->F;
    memcpy(f->Kr, Kt, sizeof(double) * N * Hkv * d);
    rope(f, f->Kr, Hkv, 1);
    for (int s = 0; s < f->S; s++)
        for (int j = 0; j < Hq; j++) {
            probs(f, f->Kr, s, j, f->A);
            mm(0, 0, T, d, T, 1.0, f->A, T, Vt + ((size_t)s * T * Hkv + j / f->g) * d, Hkv * d, 0.0,
               f->O + ((size_t)s * T * Hq + j) * d, Hq * d);
        }
    memcpy(f->Z, f->X, sizeof(double) * N * D);
    mm(0, 1, N, D, Hq * d, 1.0, f->O, Hq * d, w->wo, Hq * d, 1.0, f->Z, D);
    rmsnorm(f->Z, w->ffn_norm, f->h2, f->r2, N, D, w->eps);
    mm(0, 1, N, F, D, 1.0, f->h2, D, w->w_gate, D, 0.0, f->gate, F);
    mm(0, 1, N, F, D, 1.0, f->h2, D, w->w_up, D, 0.0, f->up, F);
    for (size_t i = 0; i < (size_t)N * F; i++) f->act[i] = f->gate[i] * sigm(f->gate[i]) * f->up[i];
    memcpy(f->Yh, f->Z, sizeof(double) * N * D);
    mm(0, 1, N, D, F, 1.0, f->act, F, w->w_down, F, 1.0, f->Yh, D);
}

/* from dY = dF/dYh to dKt (in f->dKr, RoPE undone) and dVt, for the last forward's Kt and Vt */
static void backward(kvs_lr_fit *f, const double *Vt) {
    const kvs_lr_layer *w = &f->w;
    const int N = f->N, T = f->T, D = w->D, d = w->d, Hq = w->Hq, Hkv = w->Hkv, F = w->F;
    mm(0, 0, N, F, D, 1.0, f->dY, D, w->w_down, F, 0.0, f->dact, F); /* dact = dY W_down */
    for (size_t i = 0; i < (size_t)N * F; i++) { /* through SiLU(gate) * up: dgate into dact, dup into act */
        const double sg = sigm(f->gate[i]), da = f->dact[i];
        f->dact[i] = da * f->up[i] * sg * (1.0 + f->gate[i] * (1.0 - sg));
        f->act[i] = da * f->gate[i] * sg;
    }
    mm(0, 0, N, D, F, 1.0, f->dact, F, w->w_gate, D, 0.0, f->dh2, D);
    mm(0, 0, N, D, F, 1.0, f->act, F, w->w_up, D, 1.0, f->dh2, D);
    memcpy(f->dZ, f->dY, sizeof(double) * N * D); /* the residual, then RMSNorm's backward */
    for (int i = 0; i < N; i++) {
        const double *z = f->Z + (size_t)i * D, *dy = f->dh2 + (size_t)i * D, r = f->r2[i];
        double dot = 0;
        for (int k = 0; k < D; k++) dot += z[k] * w->ffn_norm[k] * dy[k];
        for (int k = 0; k < D; k++) f->dZ[(size_t)i * D + k] += r * w->ffn_norm[k] * dy[k] - z[k] * r * r * r / D * dot;
    }
    mm(0, 0, N, Hq * d, D, 1.0, f->dZ, D, w->wo, Hq * d, 0.0, f->dO, Hq * d);
    memset(f->dKr, 0, sizeof(double) * N * Hkv * d);
    memset(f->dVt, 0, sizeof(double) * N * Hkv * d);
    for (int s = 0; s < f->S; s++)
        for (int j = 0; j < Hq; j++) {
            const size_t qo = ((size_t)s * T * Hq + j) * d, ko = ((size_t)s * T * Hkv + j / f->g) * d;
            probs(f, f->Kr, s, j, f->A);
            mm(0, 1, T, T, d, 1.0, f->dO + qo, Hq * d, Vt + ko, Hkv * d, 0.0, f->dA, T); /* dA = dO_j Vt^T */
            mm(1, 0, T, d, T, 1.0, f->A, T, f->dO + qo, Hq * d, 1.0, f->dVt + ko, Hkv * d); /* dVt += A^T dO_j */
            for (int t = 0; t < T; t++) { /* dS = A (dA - rowsum(dA A)) */
                double *a = f->A + (size_t)t * T, *da = f->dA + (size_t)t * T, rs = 0;
                for (int u = 0; u <= t; u++) rs += a[u] * da[u];
                for (int u = 0; u < T; u++) da[u] = u <= t ? a[u] * (da[u] - rs) : 0.0;
            }
            mm(1, 0, T, d, T, f->scale, f->dA, T, f->Q + qo, Hq * d, 1.0, f->dKr + ko, Hkv * d); /* dKr += dS^T Q_j */
        }
    rope(f, f->dKr, Hkv, -1);
}

void kvs_lr_fit_free(kvs_lr_fit *f) {
    if (!f) return;
    double *bufs[] = {f->X, f->Q, f->K, f->V, f->Y, f->cs, f->Kt, f->Vt, f->Kr, f->O, f->Z, f->r2, f->h2, f->gate,
                      f->up, f->act, f->Yh, f->dY, f->dZ, f->dO, f->dKr, f->dVt, f->dact, f->dh2, f->A, f->dA};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
    free(f);
}

kvs_status kvs_lr_fit_new(const kvs_lr_layer *w, const double *X, int S, int T, kvs_lr_fit **out) {
    if (out) *out = NULL;
    if (!w || !X || !out || S < 1 || T < 1 || w->D < 1 || w->Hq < 1 || w->Hkv < 1 || w->Hq % w->Hkv || w->d < 2 ||
        w->d % 2 || w->F < 1 || !(w->eps > 0) || !(w->rope_base > 1) || !w->attn_norm || !w->ffn_norm || !w->wq ||
        !w->wk || !w->wv || !w->wo || !w->w_gate || !w->w_up || !w->w_down)
        return kvs_report(KVS_ERR_ARG, "layer fit: bad layer shapes or weights");
    if ((double)S * T > (1 << 24) || (double)T * T > (1 << 26) || (double)w->D * w->F > (1 << 26) || w->d > 1024)
        return kvs_report(KVS_ERR_ARG, "layer fit: %d sequences of %d tokens too large", S, T);
    kvs_lr_fit *f = calloc(1, sizeof *f);
    if (!f) return kvs_report(KVS_ERR_NOMEM, "layer fit: out of memory");
    f->w = *w, f->S = S, f->T = T, f->N = S * T, f->g = w->Hq / w->Hkv, f->scale = 1.0 / sqrt((double)w->d);
    const size_t N = f->N, D = w->D, d = w->d, HQ = (size_t)w->Hq * d, HK = (size_t)w->Hkv * d, F = w->F, TT = (size_t)T * T;
    const size_t sizes[] = {N * D, N * HQ, N * HK, N * HK, N * D, (size_t)T * d, N * HK, N * HK, N * HK, N * HQ, N * D,
                            N, N * D, N * F, N * F, N * F, N * D, N * D, N * D, N * HQ, N * HK, N * HK, N * F, N * D,
                            TT, TT};
    double **bufs[] = {&f->X, &f->Q, &f->K, &f->V, &f->Y, &f->cs, &f->Kt, &f->Vt, &f->Kr, &f->O, &f->Z, &f->r2, &f->h2,
                       &f->gate, &f->up, &f->act, &f->Yh, &f->dY, &f->dZ, &f->dO, &f->dKr, &f->dVt, &f->dact, &f->dh2,
                       &f->A, &f->dA};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (!(*bufs[i] = malloc(sizeof(double) * sizes[i]))) {
            kvs_lr_fit_free(f);
            return kvs_report(KVS_ERR_NOMEM, "layer fit: out of memory for %d x %d tokens", S, T);
        }
    for (size_t i = 0; i < N * D; i++)
        if (!isfinite(X[i])) {
            kvs_lr_fit_free(f);
            return kvs_report(KVS_ERR_NONFINITE, "layer fit: NaN or Inf in the layer inputs (token %zu)", i / D);
        }
    memcpy(f->X, X, sizeof(double) * N * D);
    for (int t = 0; t < T; t++)
        for (size_t p = 0; p < d / 2; p++) {
            const double th = t * pow(w->rope_base, -2.0 * p / d);
            f->cs[(size_t)t * d + 2 * p] = cos(th), f->cs[(size_t)t * d + 2 * p + 1] = sin(th);
        }
    double *u = f->h2; /* the attention input, RMSNorm1(X), then the projections */
    rmsnorm(f->X, w->attn_norm, u, NULL, (int)N, (int)D, w->eps);
    mm(0, 1, (int)N, (int)HQ, (int)D, 1.0, u, (int)D, w->wq, (int)D, 0.0, f->Q, (int)HQ);
    mm(0, 1, (int)N, (int)HK, (int)D, 1.0, u, (int)D, w->wk, (int)D, 0.0, f->K, (int)HK);
    mm(0, 1, (int)N, (int)HK, (int)D, 1.0, u, (int)D, w->wv, (int)D, 0.0, f->V, (int)HK);
    rope(f, f->Q, w->Hq, 1);
    forward(f, f->K, f->V);
    memcpy(f->Y, f->Yh, sizeof(double) * N * D);
    f->yy = 0;
    for (size_t i = 0; i < N * D; i++) f->yy += f->Y[i] * f->Y[i];
    if (!isfinite(f->yy) || !(f->yy > 0)) {
        kvs_lr_fit_free(f);
        return kvs_report(KVS_ERR_NONFINITE, "layer fit: the exact layer output is zero, NaN or Inf");
    }
    *out = f;
    return KVS_OK;
}

int kvs_lr_fit_tokens(const kvs_lr_fit *f) { return f->N; }
const double *kvs_lr_fit_kv(const kvs_lr_fit *f, int which) { return which == KVS_LR_VALUES ? f->V : f->K; }
const double *kvs_lr_fit_output(const kvs_lr_fit *f) { return f->Y; }

kvs_status kvs_lr_fit_forward(kvs_lr_fit *f, const double *Kt, const double *Vt, double *Yh) {
    if (!f || !Yh) return kvs_report(KVS_ERR_ARG, "layer fit: NULL argument");
    forward(f, Kt ? Kt : f->K, Vt ? Vt : f->V);
    memcpy(Yh, f->Yh, sizeof(double) * f->N * f->w.D);
    return KVS_OK;
}

/* Xt = X P P^T over rows of d (stride ld) for one block P [d][r]; C [rows][r] is scratch */
static void project(const double *X, double *Xt, int rows, int ld, const double *P, int d, int r, double *C) {
    mm(0, 0, rows, r, d, 1.0, X, ld, P, r, 0.0, C, r);
    mm(0, 1, rows, d, r, 1.0, C, r, P, r, 0.0, Xt, ld);
}

/* G = (X^T dX + dX^T X) P for rows of d (stride ld): dF/dP of F(X P P^T) given dX = dF/d(X P P^T) */
static void basis_grad(const double *X, const double *dX, int rows, int ld, const double *P, int d, int r, double *G,
                       double *M) {
    mm(1, 0, d, d, rows, 1.0, X, ld, dX, ld, 0.0, M, d);
    for (int i = 0; i < d; i++)
        for (int j = i; j < d; j++) M[(size_t)i * d + j] = M[(size_t)j * d + i] = M[(size_t)i * d + j] + M[(size_t)j * d + i];
    mm(0, 0, d, r, d, 1.0, M, d, P, r, 0.0, G, r);
}

double kvs_lr_fit_objective(kvs_lr_fit *f, int which, const double *P, int r, double *G) {
    const int N = f->N, d = f->w.d, Hkv = f->w.Hkv, D = f->w.D;
    if (r < 1 || r > d || (which != KVS_LR_KEYS && which != KVS_LR_VALUES)) {
        kvs_report(KVS_ERR_ARG, "layer fit: rank %d outside 1..%d", r, d);
        return NAN;
    }
    /* the coefficient scratch: N Hkv r doubles fit in dO (N Hq d) since r <= d, Hkv <= Hq; the
     * d x d symmetric product fits in A (T^2) only when d <= T, so dact (N F) takes it otherwise */
    double *C = f->dO, *M = (size_t)d * d <= (size_t)f->T * f->T ? f->A : f->dact;
    if (which == KVS_LR_KEYS) { /* one basis for every KV head: K as [N Hkv][d] */
        project(f->K, f->Kt, N * Hkv, d, P, d, r, C);
        forward(f, f->Kt, f->V);
    } else {
        for (int h = 0; h < Hkv; h++) project(f->V + (size_t)h * d, f->Vt + (size_t)h * d, N, Hkv * d, P + (size_t)h * d * r, d, r, C);
        forward(f, f->K, f->Vt);
    }
    double e = 0;
    for (size_t i = 0; i < (size_t)N * D; i++) {
        const double x = f->Yh[i] - f->Y[i];
        e += x * x;
        f->dY[i] = 2.0 * x / f->yy;
    }
    if (!isfinite(e)) {
        kvs_report(KVS_ERR_NONFINITE, "layer fit: the projected layer output is not finite");
        return NAN;
    }
    if (G) {
        backward(f, which == KVS_LR_KEYS ? f->V : f->Vt);
        if (which == KVS_LR_KEYS) basis_grad(f->K, f->dKr, N * Hkv, d, P, d, r, G, M);
        else
            for (int h = 0; h < Hkv; h++)
                basis_grad(f->V + (size_t)h * d, f->dVt + (size_t)h * d, N, Hkv * d, P + (size_t)h * d * r, d, r,
                           G + (size_t)h * d * r, M);
    }
    return e / f->yy;
}

double kvs_lr_fit_cosine(const kvs_lr_fit *f) {
    const int D = f->w.D;
    double sum = 0;
    for (int i = 0; i < f->N; i++) {
        const double *y = f->Y + (size_t)i * D, *h = f->Yh + (size_t)i * D;
        double yy = 0, hh = 0, yh = 0;
        for (int k = 0; k < D; k++) yy += y[k] * y[k], hh += h[k] * h[k], yh += y[k] * h[k];
        sum += yy > 0 && hh > 0 ? yh / sqrt(yy * hh) : (yy == hh);
    }
    return sum / f->N;
}

double kvs_lr_fit_f(void *problem, const double *P, double *G) {
    const kvs_lr_problem *p = problem;
    return kvs_lr_fit_objective(p->fit, p->which, P, p->r, G);
}
