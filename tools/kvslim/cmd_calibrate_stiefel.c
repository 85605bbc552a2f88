/* kvslim calibrate stiefel: StiefAttention's bases for every layer (docs/methods/stiefel.md). The
 * uncompressed model reads calibration sequences; each layer's inputs are kept; per layer the PCA
 * bases (keys: one per layer, values: one per KV head) start a Stiefel descent on the decoder-layer
 * output error (src/lowrank), and both are scored on held-out sequences: relative output error and
 * token cosine, per layer, as a table, JSON and SVG. The text comes from the book's second half,
 * after the slices that HeatKV's calibration and selection read, so it overlaps neither them nor
 * the scored chunks. Storing the bases in the calibration container comes with the low-rank cache. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"
#include "json.h"
#include "lowrank/layer_fit.h"
#include "lowrank/pca.h"
#include "lowrank/stiefel.h"

typedef struct {
    int L, D, T, seqs, seq; /* seq: the sequence being read */
    float *X;               /* [L][seqs][T][D] */
} inputs;

static void keep_input(void *user, int layer, int n, int pos0, const float *x) {
    inputs *in = user;
    if (pos0 + n > in->T) return;
    memcpy(in->X + (((size_t)layer * in->seqs + in->seq) * in->T + pos0) * in->D, x, sizeof(float) * n * in->D);
}

enum { MAX_PROFILE = 64 };

/* per layer and kind: held-out relative error and cosine of PCA and of learned at the fitted rank,
 * training f, the held-out error of PCA at each profile rank, and the bases ([m][d][d] PCA, whole,
 * so any rank is a prefix; [m][d][r] learned; m = 1 for keys, KV heads for values) */
typedef struct {
    double err[2], cos[2], f_train[2], prof[MAX_PROFILE];
    double kl[MAX_PROFILE]; /* the model's output KL with only this layer's keys (values) at each profile rank */
    int steps, eigen_rank; /* EigenAttention's rule on the eigenvalues (values: the largest over heads) */
    int rank;              /* the fitted rank */
    float *pca, *learned;  /* [m][d][d] each (learned: [m][d][rank] in it) */
} result;

/* what a pass over a layer does: PCA and the profiles, the descent at res->rank, or both */
enum { PASS_PROFILE = 1, PASS_FIT = 2, PASS_BOTH = 3 };

/* the first q columns of each block of P [m][d][d] into Q [m][d][q] */
static void truncate_basis(const double *P, double *Q, int m, int d, int q) {
    for (int b = 0; b < m; b++)
        for (int t = 0; t < d; t++)
            for (int j = 0; j < q; j++) Q[((size_t)b * d + t) * q + j] = P[((size_t)b * d + t) * d + j];
}

static double *to_double(const float *w, size_t n) {
    double *d = malloc(sizeof(double) * n);
    if (d)
        for (size_t i = 0; i < n; i++) d[i] = w[i];
    return d;
}

/* PCA then descent for one kind (keys: one basis from every KV head's rows; values: one per head);
 * both bases scored on the held-out sequences, PCA also at every profile rank */
static kvs_status fit_kind(kvs_lr_fit *train, kvs_lr_fit *held, int which, int Hkv, int d, int steps, const int *pr,
                           int n_pr, double tau, int pass, result *res) {
    const int m = which == KVS_LR_KEYS ? 1 : Hkv, N = kvs_lr_fit_tokens(train), r = res->rank;
    double *Pf = malloc(sizeof(double) * m * d * d), *P = malloc(sizeof(double) * m * d * d);
    double *C = malloc(sizeof(double) * d * d), *eig = malloc(sizeof(double) * d);
    kvs_status s = KVS_OK;
    if (!Pf || !P || !C || !eig) {
        s = kvs_report(KVS_ERR_NOMEM, "calibrate stiefel: out of memory");
        goto done;
    }
    const double *X = kvs_lr_fit_kv(train, which);
    if (!(pass & PASS_PROFILE)) { /* the PCA bases of the profile pass */
        for (size_t i = 0; i < (size_t)m * d * d; i++) Pf[i] = res->pca[i];
        goto fit;
    }
    for (int b = 0; b < m && !s; b++) {
        memset(C, 0, sizeof(double) * d * d);
        for (int h = 0; h < Hkv && !s; h++)
            if (which == KVS_LR_KEYS || h == b) s = kvs_lr_gram_add(C, X + (size_t)h * d, N, d, Hkv * d);
        if (!s) s = kvs_lr_pca(C, d, d, Pf + (size_t)b * d * d, eig);
        const int er = s ? 0 : kvs_lr_eigen_rank(eig, d, tau);
        res->eigen_rank = b == 0 || er > res->eigen_rank ? er : res->eigen_rank;
    }
    if (s) goto done;
    for (int i = 0; i < n_pr; i++) { /* the error-rank profile: PCA prefixes, held out */
        truncate_basis(Pf, P, m, d, pr[i]);
        kvs_lr_problem oh = {held, which, pr[i]};
        res->prof[i] = sqrt(kvs_lr_fit_f(&oh, P, NULL));
        if (!isfinite(res->prof[i])) {
            s = kvs_report(KVS_ERR_NONFINITE, "calibrate stiefel: a profile error is not finite");
            goto done;
        }
    }
    for (size_t i = 0; i < (size_t)m * d * d; i++) res->pca[i] = (float)Pf[i];
    if (!(pass & PASS_FIT)) goto done;
fit:
    truncate_basis(Pf, P, m, d, r);
    kvs_lr_problem ot = {train, which, r}, oh = {held, which, r};
    res->f_train[0] = kvs_lr_fit_f(&ot, P, NULL);
    res->err[0] = sqrt(kvs_lr_fit_f(&oh, P, NULL));
    res->cos[0] = kvs_lr_fit_cosine(held);
    kvs_lr_descent_opts o = kvs_lr_descent_defaults();
    o.max_steps = r < d ? steps : 0; /* full rank: every basis spans everything, nothing to learn */
    kvs_lr_descent_report rep;
    if ((s = kvs_lr_descend(kvs_lr_fit_f, &ot, P, m, d, r, &o, &rep))) goto done;
    res->f_train[1] = rep.f, res->steps = rep.steps;
    res->err[1] = sqrt(kvs_lr_fit_f(&oh, P, NULL));
    res->cos[1] = kvs_lr_fit_cosine(held);
    if (!isfinite(res->err[0] + res->err[1] + res->f_train[0])) {
        s = kvs_report(KVS_ERR_NONFINITE, "calibrate stiefel: a layer error is not finite");
        goto done;
    }
    for (size_t i = 0; i < (size_t)m * d * r; i++) res->learned[i] = (float)P[i];
done:
    free(Pf), free(P), free(C), free(eig);
    return s;
}

/* one layer: its weights in double, the training and held-out problems, keys and values */
static kvs_status fit_layer(const kvs_llama *m, int l, const float *X, int seqs, int held, int T, int steps, const int *pr,
                            int n_pr, double tau, int pass, result res[2]) {
    const kvs_llama_hparams *hp = kvs_llama_params(m);
    const int D = hp->n_embd, d = hp->head_dim, Hq = hp->n_head, Hkv = hp->n_head_kv, F = hp->n_ff;
    kvs_llama_layer_weights lw;
    kvs_status s = kvs_llama_layer(m, l, &lw);
    if (s) return s;
    const size_t ns[9] = {D, (size_t)Hq * d * D, (size_t)Hkv * d * D, (size_t)Hkv * d * D, (size_t)D * Hq * d, D,
                          (size_t)F * D, (size_t)F * D, (size_t)D * F};
    const float *src[9] = {lw.attn_norm, lw.wq, lw.wk, lw.wv, lw.wo, lw.ffn_norm, lw.w_gate, lw.w_up, lw.w_down};
    double *w[9] = {0}, *Xd = to_double(X, (size_t)(seqs + held) * T * D);
    kvs_lr_fit *tr[2] = {NULL, NULL}, *ho[2] = {NULL, NULL}; /* per kind: a fit is one thread's work space */
    int ok = Xd != NULL;
    for (int i = 0; i < 9; i++) ok &= (w[i] = to_double(src[i], ns[i])) != NULL;
    kvs_llama_layer_free(&lw); /* the fp32 copies: the fit works in double */
    if (!ok) {
        s = kvs_report(KVS_ERR_NOMEM, "calibrate stiefel: out of memory for layer %d", l);
        goto done;
    }
    const kvs_lr_layer L = {D, Hq, Hkv, d, F, hp->rms_eps, hp->rope_base, w[0], w[5], w[1], w[2], w[3], w[4], w[6], w[7], w[8]};
    for (int k = 0; k < 2; k++)
        if ((s = kvs_lr_fit_new(&L, Xd, seqs, T, &tr[k])) || (s = kvs_lr_fit_new(&L, Xd + (size_t)seqs * T * D, held, T, &ho[k])))
            goto done;
    kvs_status ks[2];
    /* keys and values are independent problems: one per core (OpenBLAS itself runs one thread) */
#ifdef _OPENMP
#pragma omp parallel for num_threads(2) schedule(static)
#endif
    for (int which = 0; which < 2; which++) ks[which] = fit_kind(tr[which], ho[which], which, Hkv, d, steps, pr, n_pr, tau, pass, &res[which]);
    s = ks[0] ? ks[0] : ks[1];
done:
    for (int k = 0; k < 2; k++) kvs_lr_fit_free(tr[k]), kvs_lr_fit_free(ho[k]);
    for (int i = 0; i < 9; i++) free(w[i]);
    free(Xd);
    return s;
}

static void write_svg(const char *path, const result *res, int L, const char *ranks) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    const int W = 720, H = 300, x0 = 60, y0 = 40, pw = W - x0 - 20, ph = H - y0 - 50;
    double top = 0;
    for (int i = 0; i < 2 * L; i++) top = res[i].err[0] > top ? res[i].err[0] : top;
    top = top > 0 ? top * 1.1 : 1;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"%d\" y=\"20\" font-size=\"14\">Held-out relative "
               "decoder-layer output error at %s, per layer</text>\n", x0, ranks);
    const char *col[2][2] = {{"#9ecae1", "#08519c"}, {"#fdae6b", "#a63603"}}; /* [keys, values][PCA, learned] */
    const char *name[2][2] = {{"keys PCA", "keys learned"}, {"values PCA", "values learned"}};
    for (int k = 0; k < 2; k++)
        for (int b = 0; b < 2; b++) {
            fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col[k][b]);
            for (int l = 0; l < L; l++)
                fprintf(f, "%.1f,%.1f ", x0 + (L > 1 ? (double)l / (L - 1) : 0) * pw, y0 + ph * (1 - res[2 * l + k].err[b] / top));
            fprintf(f, "\"/>\n<text x=\"%d\" y=\"%d\" fill=\"%s\">%s</text>\n", x0 + 10 + (2 * k + b) * 130, H - 12, col[k][b], name[k][b]);
        }
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", x0, y0 + ph, x0 + pw, y0 + ph);
    fprintf(f, "<text x=\"%d\" y=\"%d\">layer 0</text><text x=\"%d\" y=\"%d\" text-anchor=\"end\">layer %d</text>\n", x0, y0 + ph + 14,
            x0 + pw, y0 + ph + 14, L - 1);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.3f</text><text x=\"%d\" y=\"%d\" text-anchor=\"end\">0</text>\n", x0 - 4,
            y0 + 4, top, x0 - 4, y0 + ph);
    fprintf(f, "</svg>\n");
    fclose(f);
}

/* ---- sensitivity profiles: what one layer's truncation does to the model's output ---------------- */

typedef struct {
    int layer, kind, r, d, Hkv;
    const float *P; /* the layer's PCA bases, whole: keys [d][d], values [Hkv][d][d] */
} proj_filter;

/* x <- P_r P_rᵀ x, P [d][d] of which the first r columns */
static void project_row(const float *P, int d, int r, float *x) {
    float c[1024];
    for (int j = 0; j < r; j++) {
        float a = 0.0f;
        for (int t = 0; t < d; t++) a += P[(size_t)t * d + j] * x[t];
        c[j] = a;
    }
    for (int t = 0; t < d; t++) {
        float a = 0.0f;
        for (int j = 0; j < r; j++) a += P[(size_t)t * d + j] * c[j];
        x[t] = a;
    }
}

static void project_layer(void *user, int layer, int n, int pos0, float *k, float *v) {
    (void)pos0;
    const proj_filter *f = user;
    if (layer != f->layer) return;
    float *x = f->kind ? v : k;
    for (int i = 0; i < n; i++)
        for (int h = 0; h < f->Hkv; h++)
            project_row(f->P + (f->kind ? (size_t)h * f->d * f->d : 0), f->d, f->r, x + ((size_t)i * f->Hkv + h) * f->d);
}

static void log_softmax(float *x, int V) {
    float mx = x[0];
    for (int i = 1; i < V; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0;
    for (int i = 0; i < V; i++) sum += exp((double)x[i] - mx);
    const float lz = mx + (float)log(sum);
    for (int i = 0; i < V; i++) x[i] -= lz;
}

/* Per (layer, keys or values, profile rank): the mean KL of the model's next-token distribution
 * from the uncompressed one, over the second halves of `nseq` held-out sequences, with only that
 * layer's keys (values) projected on the first r PCA directions (every other layer exact). The
 * layer-output error ranks layers badly for the allocator: it is relative to the residual stream,
 * which carries different weight at each depth (measured: allocating on it lost to uniform ranks);
 * the summed KL is the first-order estimate of what the allocation does to the output. */
static kvs_status kl_profiles(kvs_llama *m, const int32_t *seq0, int T, int nseq, const int *pr, int n_pr, int L, result *res) {
    const kvs_llama_hparams *hp = kvs_llama_params(m);
    const int V = hp->n_vocab, half = T / 2, nl = T - half;
    float *ref = malloc(sizeof(float) * (size_t)nseq * nl * V), *run = malloc(sizeof(float) * (size_t)nl * V);
    kvs_config cfg = kvs_llama_cache_config(m, T);
    kvs_cache *cache = NULL;
    kvs_status s = KVS_OK;
    if (!ref || !run) s = kvs_report(KVS_ERR_NOMEM, "calibrate stiefel: out of memory for %d x %d logits", nseq * nl, V);
    if (!s) s = kvs_cache_create(&cfg, &cache);
    for (int q = 0; !s && q < nseq; q++) {
        kvs_cache_reset(cache);
        float *lg = ref + (size_t)q * nl * V;
        if (!(s = kvs_llama_forward(m, cache, seq0 + (size_t)q * T, T, 0, half, lg)))
            for (int i = 0; i < nl; i++) log_softmax(lg + (size_t)i * V, V);
    }
    const double t0 = bench_now();
    const long total = (long)L * 2 * n_pr;
    for (int l = 0; !s && l < L; l++)
        for (int kind = 0; !s && kind < 2; kind++)
            for (int i = 0; !s && i < n_pr; i++) {
                proj_filter f = {l, kind, pr[i], hp->head_dim, hp->n_head_kv, res[2 * l + kind].pca};
                double kl = 0;
                kvs_llama_set_kv_filter(m, project_layer, &f);
                for (int q = 0; !s && q < nseq; q++) {
                    kvs_cache_reset(cache);
                    if ((s = kvs_llama_forward(m, cache, seq0 + (size_t)q * T, T, 0, half, run))) break;
                    for (int x = 0; x < nl; x++) {
                        float *lr = run + (size_t)x * V;
                        const float *lp = ref + ((size_t)q * nl + x) * V;
                        log_softmax(lr, V);
                        for (int y = 0; y < V; y++) kl += exp((double)lp[y]) * ((double)lp[y] - lr[y]);
                    }
                }
                kvs_llama_set_kv_filter(m, NULL, NULL);
                res[2 * l + kind].kl[i] = kl > 0 ? kl / ((double)nseq * nl) : 0.0; /* rounding can give -1e-9 */
                cli_progress("calibrate stiefel: sensitivity", ((long)l * 2 + kind) * n_pr + i + 1, total, t0);
            }
    kvs_llama_set_kv_filter(m, NULL, NULL);
    kvs_cache_free(cache);
    free(ref), free(run);
    return s;
}

/* The profiles as the file stores them, err[2][L][n]: keys then values, the sensitivity profiles */
static void profiles_of(const result *res, int L, int n, double *err) {
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < n; i++) err[((size_t)k * L + l) * n + i] = res[2 * l + k].kl[i];
}

/* The ranks stiefel=auto:CR will pick from this calibration: the library's own allocation, run on
 * the PCA set and the profiles just measured, so that the learned set fitted at them is the one
 * the cache accepts (fp16 coefficient rows: every rank is allowed, costs proportional to it). */
static kvs_status allocate_ranks(const kvs_llama *m, result *res, int L, const cli_ints *pr, double budget) {
    const kvs_llama_hparams *hp = kvs_llama_params(m);
    kvs_calib *cal = NULL;
    int *rd = malloc(sizeof(int) * L), *rk = malloc(sizeof(int) * L), *rv = malloc(sizeof(int) * L);
    const float **kp = malloc(sizeof(float *) * L), **vp = malloc(sizeof(float *) * L);
    double *err = malloc(sizeof(double) * 2 * L * pr->n);
    kvs_status s = KVS_OK;
    if (!rd || !rk || !rv || !kp || !vp || !err) s = kvs_report(KVS_ERR_NOMEM, "calibrate stiefel: out of memory");
    for (int l = 0; !s && l < L; l++) {
        rd[l] = hp->head_dim, kp[l] = res[2 * l].pca, vp[l] = res[2 * l + 1].pca;
    }
    if (!s) profiles_of(res, L, pr->n, err);
    if (!s) s = kvs_calib_create("allocation", kvs_llama_identity(m), L, hp->n_head, hp->n_head_kv, hp->head_dim, &cal);
    if (!s) s = kvs_calib_set_bases(cal, KVS_BASIS_PCA, rd, rd, kp, vp);
    if (!s) s = kvs_calib_set_profiles(cal, pr->n, pr->v, err);
    if (!s) {
        kvs_config cfg = kvs_llama_cache_config(m, 8);
        char spec[96];
        snprintf(spec, sizeof spec, "fp16,self=exact,rope=adjacent,stiefel=auto:%.6g,basis=pca", budget);
        cfg.calib = cal, cfg.n_layers = L; /* --layers: the first L */
        if (!(s = kvs_config_parse(&cfg, spec))) s = kvs_config_ranks(&cfg, rk, rv);
    }
    if (!s) {
        int sum = 0;
        fprintf(stderr, "\nallocated ranks K/V per layer:");
        for (int l = 0; l < L; l++) {
            res[2 * l].rank = rk[l], res[2 * l + 1].rank = rv[l], sum += rk[l] + rv[l];
            fprintf(stderr, " %d/%d", rk[l], rv[l]);
        }
        fprintf(stderr, " (CR %.4f)\n", (double)sum / (2.0 * hp->head_dim * L));
    }
    kvs_calib_free(cal);
    free(rd), free(rk), free(rv), free(kp), free(vp), free(err);
    return s;
}

/* EigenAttention's set: the PCA bases truncated to the rule's ranks */
static kvs_status save_eigen(kvs_calib *cal, const result *res, int L, int d, int Hkv) {
    int *rk = malloc(sizeof(int) * L), *rv = malloc(sizeof(int) * L);
    float *buf = malloc(sizeof(float) * (size_t)L * (1 + Hkv) * d * d);
    const float **kp = malloc(sizeof(float *) * L), **vp = malloc(sizeof(float *) * L);
    kvs_status s = KVS_OK;
    if (!rk || !rv || !buf || !kp || !vp) s = kvs_report(KVS_ERR_NOMEM, "calibrate stiefel: out of memory");
    float *at = buf;
    for (int l = 0; !s && l < L; l++)
        for (int k = 0; k < 2; k++) {
            const int m = k ? Hkv : 1, q = res[2 * l + k].eigen_rank;
            (k ? rv : rk)[l] = q;
            (k ? vp : kp)[l] = at;
            for (int b = 0; b < m; b++)
                for (int t = 0; t < d; t++)
                    for (int j = 0; j < q; j++) *at++ = res[2 * l + k].pca[((size_t)b * d + t) * d + j];
        }
    if (!s) s = kvs_calib_set_bases(cal, KVS_BASIS_EIGEN, rk, rv, kp, vp);
    free(rk), free(rv), free(buf), free(kp), free(vp);
    return s;
}

/* the calibration file: PCA bases whole (rank d: any rank is a prefix), learned at the fitted
 * rank, and the error-rank profiles */
static kvs_status save_calib(const kvs_llama *m, const char *path, const result *res, int L, const char *ranks, const cli_ints *pr,
                             const char *out) {
    const kvs_llama_hparams *hp = kvs_llama_params(m);
    char name[128];
    cli_model_name(m, path, name, sizeof name);
    kvs_calib *cal = NULL;
    int *rd = malloc(sizeof(int) * L), *rr = malloc(sizeof(int) * L), *rv = malloc(sizeof(int) * L);
    const float **kp = malloc(sizeof(float *) * L), **vp = malloc(sizeof(float *) * L);
    const float **kl = malloc(sizeof(float *) * L), **vl = malloc(sizeof(float *) * L);
    double *err = malloc(sizeof(double) * 2 * L * pr->n);
    kvs_status s = KVS_OK;
    if (!rd || !rr || !rv || !kp || !vp || !kl || !vl || !err) s = kvs_report(KVS_ERR_NOMEM, "calibrate stiefel: out of memory");
    for (int l = 0; !s && l < L; l++) {
        rd[l] = hp->head_dim, rr[l] = res[2 * l].rank, rv[l] = res[2 * l + 1].rank;
        kp[l] = res[2 * l].pca, vp[l] = res[2 * l + 1].pca, kl[l] = res[2 * l].learned, vl[l] = res[2 * l + 1].learned;
    }
    if (!s) profiles_of(res, L, pr->n, err);
    if (!s) s = kvs_calib_create(name, kvs_llama_identity(m), L, hp->n_head, hp->n_head_kv, hp->head_dim, &cal);
    if (!s) s = kvs_calib_set_bases(cal, KVS_BASIS_PCA, rd, rd, kp, vp);
    if (!s) s = kvs_calib_set_bases(cal, KVS_BASIS_LEARNED, rr, rv, kl, vl);
    if (!s) s = save_eigen(cal, res, L, hp->head_dim, hp->n_head_kv);
    if (!s) s = kvs_calib_set_profiles(cal, pr->n, pr->v, err);
    if (!s) s = kvs_calib_save(cal, out);
    if (!s) fprintf(stderr, "wrote %s: PCA bases (whole), learned bases at %s, EigenAttention ranks, profiles at %d ranks\n", out, ranks, pr->n);
    kvs_calib_free(cal);
    free(rd), free(rr), free(rv), free(kp), free(vp), free(kl), free(vl), free(err);
    return s;
}

int cmd_calibrate_stiefel(int argc, char **argv) {
    const char *model = CLI_DEFAULT_MODEL, *text = CLI_DEFAULT_TEXT, *report = "stiefel", *out = NULL;
    int seqs = 4, held = 2, T = 256, rank = 32, steps = 20, layers = 0, start = -1, kl_seqs = 2;
    double tau = 0.9, budget = 0;
    cli_ints pr = {7, {8, 16, 24, 32, 40, 48, 56}};
    const cli_opt opts[] = {
        {"--model", "FILE", OPT_STR, &model, 0, 0, "GGUF model, Llama architecture"},
        {"--text", "FILE", OPT_STR, &text, 0, 0, "UTF-8 calibration text"},
        {"--start", "TOKEN", OPT_INT, &start, -1, 1 << 30, "first token used; -1 = 16384 tokens after the middle"},
        {"--seqs", "K", OPT_INT, &seqs, 1, 4096, "training sequences"},
        {"--heldout", "K", OPT_INT, &held, 1, 4096, "held-out sequences after them (scored, not fitted)"},
        {"--seq-len", "T", OPT_INT, &T, 8, 8192, "tokens per sequence"},
        {"--rank", "R", OPT_INT, &rank, 1, 1024, "rank of the key and value bases (of head_dim), every layer"},
        {"--budget", "CR", OPT_NUM, &budget, 0.0, 1.0, "ranks per layer instead: the allocator's under compression ratio CR\n"
                                                        "(what stiefel=auto:CR picks from these profiles); 0 = --rank"},
        {"--steps", "N", OPT_INT, &steps, 0, 100000, "Stiefel descent steps per basis at most"},
        {"--layers", "N", OPT_INT, &layers, 0, 1 << 16, "fit the first N layers only (0 = all)"},
        {"--eigen-tau", "T", OPT_NUM, &tau, 0.01, 1.0, "EigenAttention's threshold on the singular-value share (its ranks)"},
        {"--profile-ranks", "R,R", OPT_INTS, &pr, 1, 1024, "ranks of the error-rank profiles (PCA, held out), ascending"},
        {"--kl-seqs", "K", OPT_INT, &kl_seqs, 1, 4096, "held-out sequences the sensitivity profiles are measured on (at most --heldout)"},
        {"--report", "PREFIX", OPT_STR, &report, 0, 0, "writes PREFIX.json and PREFIX.svg"},
        {"--out", "FILE", OPT_STR, &out, 0, 0, "calibration file to write: PCA bases (whole), learned bases, profiles"},
    };
    const cli_cmd cmd = {"calibrate stiefel",
                         "StiefAttention bases per layer: PCA of the pre-RoPE keys (one basis per layer) and values (one\n"
                         "per KV head) on --seqs sequences of the uncompressed model, then a Stiefel descent on the\n"
                         "decoder-layer output error from that start; both scored on --heldout sequences (relative\n"
                         "output error, token cosine), per layer as a table, JSON and SVG; --out stores the bases and\n"
                         "the error-rank profiles in a calibration file (docs/calibration.md, section LRNK), with\n"
                         "EigenAttention's bases: PCA truncated where the singular-value share reaches --eigen-tau.\n"
                         "With --budget the profiles come first, the rank allocator splits the budget over the layers\n"
                         "(as the cache's stiefel=auto:CR does from the same file), and each layer is fitted at its ranks.",
                         NULL, NULL, 0, opts, CLI_COUNT(opts)};
    int rc = cli_parse(&cmd, argc, argv);
    if (rc != CLI_RUN) return rc;
    kvs_llama *m;
    kvs_tokenizer *tk;
    if (cli_load(model, &m, &tk)) return CLI_EXIT_RUNTIME;
    const kvs_llama_hparams *hp = kvs_llama_params(m);
    const int L = layers > 0 && layers < hp->n_layer ? layers : hp->n_layer, S = seqs + held, D = hp->n_embd;
    rc = CLI_EXIT_RUNTIME;
    size_t len;
    char *buf = NULL;
    int32_t *ids = NULL;
    int n = 0;
    kvs_cache *cache = NULL;
    result *res = NULL;
    float *bases = NULL;
    inputs in = {hp->n_layer, D, T, S, 0, NULL};
    if (rank > hp->head_dim) {
        rc = cli_usage_error("--rank %d is larger than the head dimension %d", rank, hp->head_dim);
        goto out;
    }
    for (int i = 0; i < pr.n; i++)
        if (pr.v[i] > hp->head_dim || (i && pr.v[i] <= pr.v[i - 1]) || i >= MAX_PROFILE) {
            rc = cli_usage_error("--profile-ranks: %d is not ascending in 1..%d", pr.v[i], hp->head_dim);
            goto out;
        }
    if (kl_seqs > held) kl_seqs = held;
    if (out && L != hp->n_layer) {
        rc = cli_usage_error("--out needs every layer (drop --layers)");
        goto out;
    }
    if (!(buf = cli_read_file(text, &len)) || kvs_tokenize(tk, buf, len, &ids, &n) != KVS_OK) {
        fprintf(stderr, "kvslim calibrate stiefel: cannot read or tokenize '%s' (%s)\n", text, kvs_last_error());
        goto out;
    }
    if (start < 0) start = n / 2 + 16384;
    if ((long long)start + (long long)S * T > n) {
        fprintf(stderr, "kvslim calibrate stiefel: tokens %d .. %lld needed, '%s' has %d\n", start, (long long)start + (long long)S * T, text, n);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    kvs_config cfg = kvs_llama_cache_config(m, T);
    in.X = malloc(sizeof(float) * hp->n_layer * (size_t)S * T * D);
    res = calloc((size_t)2 * L, sizeof *res);
    const int d = hp->head_dim, Hkv = hp->n_head_kv;
    bases = malloc(sizeof(float) * (size_t)L * (1 + Hkv) * d * d * 2); /* per layer: K pca, K learned, V pca, V learned */
    for (int l = 0; res && bases && l < L; l++) {
        float *at = bases + (size_t)l * (1 + Hkv) * d * d * 2;
        res[2 * l].pca = at, res[2 * l].learned = at + (size_t)d * d;
        res[2 * l + 1].pca = at + (size_t)d * d * 2, res[2 * l + 1].learned = res[2 * l + 1].pca + (size_t)Hkv * d * d;
        res[2 * l].rank = res[2 * l + 1].rank = rank;
    }
    if (!in.X || !res || !bases) {
        fprintf(stderr, "kvslim calibrate stiefel: out of memory for %d x %d layer inputs\n", S, T);
        goto out;
    }
    if (kvs_cache_create(&cfg, &cache) != KVS_OK) goto fail;
    char ranks[64];
    if (budget > 0) snprintf(ranks, sizeof ranks, "the allocator's ranks under CR %g", budget);
    else snprintf(ranks, sizeof ranks, "rank %d", rank);
    fprintf(stderr, "kvslim calibrate stiefel: %s, tokens %d .. %lld of %s (%d + %d held-out sequences of %d), %s\n",
            cli_basename(model), start, (long long)start + (long long)S * T, text, seqs, held, T, ranks);
    const double t0 = bench_now();
    kvs_llama_set_input_observer(m, keep_input, &in);
    for (in.seq = 0; in.seq < S; in.seq++) {
        kvs_cache_reset(cache);
        if (kvs_llama_forward(m, cache, ids + start + (size_t)in.seq * T, T, 0, T, NULL) != KVS_OK) goto fail;
        cli_progress("calibrate stiefel: inputs", in.seq + 1, S, t0);
    }
    kvs_llama_set_input_observer(m, NULL, NULL);
    const double t1 = bench_now();
    if (budget > 0) { /* profiles of every layer, then the allocation, then the fits */
        for (int l = 0; l < L; l++) {
            if (fit_layer(m, l, in.X + (size_t)l * S * T * D, seqs, held, T, steps, pr.v, pr.n, tau, PASS_PROFILE, res + 2 * l) != KVS_OK)
                goto fail;
            cli_progress("calibrate stiefel: profiles", l + 1, L, t1);
        }
        if (kl_profiles(m, ids + start + (size_t)seqs * T, T, kl_seqs, pr.v, pr.n, L, res) != KVS_OK) goto fail;
        if (allocate_ranks(m, res, L, &pr, budget) != KVS_OK) goto fail;
    }
    const double t2 = bench_now();
    for (int l = 0; l < L; l++) {
        if (fit_layer(m, l, in.X + (size_t)l * S * T * D, seqs, held, T, steps, pr.v, pr.n, tau, budget > 0 ? PASS_FIT : PASS_BOTH,
                      res + 2 * l) != KVS_OK)
            goto fail;
        cli_progress("calibrate stiefel: layers", l + 1, L, t2);
    }
    if (!(budget > 0) && out && kl_profiles(m, ids + start + (size_t)seqs * T, T, kl_seqs, pr.v, pr.n, L, res) != KVS_OK) goto fail;
    printf("\nkvslim calibrate stiefel: held-out relative decoder-layer output error at %s (lower is better)\n", ranks);
    printf("| layer | ranks K/V | keys PCA | keys learned | values PCA | values learned | steps K/V |\n|---:|---:|---:|---:|---:|---:|---:|\n");
    int wins[2] = {0, 0}, cut[2] = {0, 0}; /* over the layers compressed (rank below head_dim) */
    for (int l = 0; l < L; l++) {
        const result *k = res + 2 * l, *v = k + 1;
        wins[0] += k->err[1] < k->err[0], wins[1] += v->err[1] < v->err[0];
        cut[0] += k->rank < hp->head_dim, cut[1] += v->rank < hp->head_dim;
        printf("| %d | %d/%d | %.4f | %.4f | %.4f | %.4f | %d/%d |\n", l, k->rank, v->rank, k->err[0], k->err[1], v->err[0], v->err[1],
               k->steps, v->steps);
    }
    printf("learned below PCA on held-out tokens: keys %d of %d layers, values %d of %d (%.0f s)\n", wins[0], cut[0], wins[1], cut[1],
           bench_now() - t0);
    char path[1024];
    snprintf(path, sizeof path, "%s.json", report);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "kvslim calibrate stiefel: cannot write %s\n", path);
        goto out;
    }
    json_w j;
    json_begin(&j, f, '{');
    json_str(&j, "model", model);
    json_num(&j, "start", start), json_num(&j, "seqs", seqs), json_num(&j, "heldout", held), json_num(&j, "seq_len", T);
    json_num(&j, "rank", budget > 0 ? 0 : rank), json_num(&j, "budget", budget), json_num(&j, "steps", steps), json_num(&j, "eigen_tau", tau);
    json_open(&j, "profile_ranks", '[');
    for (int i = 0; i < pr.n; i++) json_num(&j, NULL, pr.v[i]);
    json_end(&j, ']');
    json_open(&j, "layers", '[');
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 2; k++) {
            const result *x = res + 2 * l + k;
            json_open(&j, NULL, '{');
            json_num(&j, "layer", l);
            json_str(&j, "kind", k ? "values" : "keys");
            json_num(&j, "rank", x->rank);
            json_num(&j, "pca_err", x->err[0]), json_num(&j, "learned_err", x->err[1]);
            json_num(&j, "pca_cos", x->cos[0]), json_num(&j, "learned_cos", x->cos[1]);
            json_num(&j, "pca_train_f", x->f_train[0]), json_num(&j, "learned_train_f", x->f_train[1]);
            json_num(&j, "steps", x->steps), json_num(&j, "eigen_rank", x->eigen_rank);
            json_open(&j, "profile", '[');
            for (int i = 0; i < pr.n; i++) json_num(&j, NULL, x->prof[i]);
            json_end(&j, ']');
            if (out || budget > 0) {
                json_open(&j, "kl_profile", '[');
                for (int i = 0; i < pr.n; i++) json_num(&j, NULL, x->kl[i]);
                json_end(&j, ']');
            }
            json_end(&j, '}');
        }
    json_end(&j, ']');
    json_end(&j, '}');
    fputc('\n', f);
    if (fclose(f)) goto out;
    snprintf(path, sizeof path, "%s.svg", report);
    write_svg(path, res, L, ranks);
    fprintf(stderr, "wrote %s.json and %s.svg\n", report, report);
    if (out && save_calib(m, model, res, L, ranks, &pr, out) != KVS_OK) goto fail;
    rc = CLI_EXIT_OK;
    goto out;
fail:
    fprintf(stderr, "\nkvslim calibrate stiefel: %s\n", kvs_last_error());
out:
    kvs_llama_set_input_observer(m, NULL, NULL);
    kvs_cache_free(cache);
    free(in.X), free(res), free(bases), free(ids), free(buf);
    kvs_tokenizer_free(tk);
    kvs_llama_free(m);
    return rc;
}
