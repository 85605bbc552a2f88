/* The low-rank cache (StiefAttention; docs/methods/stiefel.md oracles 5, 11, 12, 13): keys stored as
 * coefficients of their pre-RoPE form in a per-layer basis and rebuilt and turned inside the
 * kernel, values as coefficients in per-head bases, projected once per output. Checked against a
 * dense double-precision attention over K P Pᵀ (then RoPE) and V P Pᵀ, with both kernel sets;
 * chunked = token by token bit for bit; exact bytes; r = d equal to the full cache; the config's
 * refusals. */
#include <string.h>

#include "attn/attn.h"
#include "cache/cache.h"
#include "calib/rank_alloc.h"
#include "quant/quant.h"
#include "test_util.h"

enum { L = 2, NH = 4, H = 2, D = 32, T = 70, RK = 6, RV = 5 };

/* a calibration with learned bases at RK/RV, PCA bases whole (rank D), EigenAttention's at ranks
 * that differ per layer, and error-rank profiles for the allocator: with these profiles and 64 of
 * the 128 coefficients per token, the best choice (worked by hand) is keys 24 / values 8 in layer 0
 * and keys 8 / values 24 in layer 1 (error 0.2 + 0.1 + 0.3 + 0.1) */
enum { N_PROF = 3 };
static float g_pk[L][D * D], g_pv[L][H * D * D], g_lk[L][D * RK], g_lv[L][H * D * RV];
static int g_eig_k[L] = {4, 9}, g_eig_v[L] = {7, 3}, g_prof_ranks[N_PROF] = {8, 16, 24};
static const double g_prof[2][L][N_PROF] = {{{0.9, 0.5, 0.2}, {0.3, 0.1, 0.05}}, {{0.1, 0.05, 0.01}, {0.6, 0.4, 0.1}}};
static kvs_calib *make_calib(void) {
    rng_t g = {77};
    kvs_calib *cal = NULL;
    if (kvs_calib_create("tiny", 1, L, NH, H, D, &cal)) return NULL;
    const float *pk[L], *pv[L], *lk[L], *lv[L];
    int rd[L], rk[L], rv[L];
    for (int l = 0; l < L; l++) {
        test_orthonormal(&g, g_pk[l], D, D), test_orthonormal(&g, g_lk[l], D, RK);
        for (int h = 0; h < H; h++) test_orthonormal(&g, g_pv[l] + h * D * D, D, D), test_orthonormal(&g, g_lv[l] + h * D * RV, D, RV);
        pk[l] = g_pk[l], pv[l] = g_pv[l], lk[l] = g_lk[l], lv[l] = g_lv[l], rd[l] = D, rk[l] = RK, rv[l] = RV;
    }
    /* EigenAttention's set as calibrate stiefel writes it: the PCA bases cut at per-layer ranks */
    static float ek[L][D * D], ev[L][H * D * D];
    const float *ekp[L], *evp[L];
    for (int l = 0; l < L; l++) {
        for (int t = 0; t < D; t++)
            for (int j = 0; j < g_eig_k[l]; j++) ek[l][t * g_eig_k[l] + j] = g_pk[l][t * D + j];
        for (int h = 0; h < H; h++)
            for (int t = 0; t < D; t++)
                for (int j = 0; j < g_eig_v[l]; j++) ev[l][(h * D + t) * g_eig_v[l] + j] = g_pv[l][(h * D + t) * D + j];
        ekp[l] = ek[l], evp[l] = ev[l];
    }
    if (kvs_calib_set_bases(cal, KVS_BASIS_PCA, rd, rd, pk, pv) || kvs_calib_set_bases(cal, KVS_BASIS_LEARNED, rk, rv, lk, lv) ||
        kvs_calib_set_bases(cal, KVS_BASIS_EIGEN, g_eig_k, g_eig_v, ekp, evp) ||
        kvs_calib_set_profiles(cal, N_PROF, g_prof_ranks, &g_prof[0][0][0])) {
        kvs_calib_free(cal);
        return NULL;
    }
    return cal;
}

/* x <- P_r P_r^T x for the first r columns of P [D][stride] */
static void project(const float *P, int stride, int r, const double *x, double *y) {
    double c[D];
    for (int j = 0; j < r; j++) {
        c[j] = 0;
        for (int t = 0; t < D; t++) c[j] += (double)P[t * stride + j] * x[t];
    }
    for (int t = 0; t < D; t++) {
        y[t] = 0;
        for (int j = 0; j < r; j++) y[t] += (double)P[t * stride + j] * c[j];
    }
}

static void rope_d(double *x, long pos, double base) {
    for (int p = 0; p < D / 2; p++) {
        const double th = pos * pow(base, -2.0 * p / D), c = cos(th), s = sin(th), a = x[2 * p], b = x[2 * p + 1];
        x[2 * p] = a * c - b * s, x[2 * p + 1] = a * s + b * c;
    }
}

/* dense attention of query token P: tokens before P (from `sinks` on, and outside the newest `win`)
 * projected with rank rk / rv of the layer's bases kb, vb; sinks, window and itself exact */
static int g_post_rope; /* oracle 11's wrong convention: project the key after RoPE */
static void reference(int P, const float *q, const float *k, const float *v, const float *kb, int ks, int rk,
                      const float *vb, int vs, int rv, int sinks, int win, double *out /* [NH][D] */) {
    for (int hq = 0; hq < NH; hq++) {
        const int h = hq / (NH / H);
        double qq[D], m = -INFINITY, l_ = 0, acc[D] = {0}, *sc = malloc(sizeof(double) * (P + 1));
        for (int t = 0; t < D; t++) qq[t] = q[((size_t)P * NH + hq) * D + t];
        rope_d(qq, P, 10000.0);
        for (int s = 0; s <= P; s++) {
            double kk[D], x[D];
            for (int t = 0; t < D; t++) x[t] = k[((size_t)s * H + h) * D + t];
            const int exact = s < sinks || s > P - 1 - win || s == P; /* win newest before P stay fp32 */
            if (exact || g_post_rope) memcpy(kk, x, sizeof kk);
            else project(kb, ks, rk, x, kk);
            rope_d(kk, s, 10000.0);
            if (!exact && g_post_rope) memcpy(x, kk, sizeof kk), project(kb, ks, rk, x, kk);
            double dot = 0;
            for (int t = 0; t < D; t++) dot += qq[t] * kk[t];
            sc[s] = dot / sqrt((double)D);
            m = sc[s] > m ? sc[s] : m;
        }
        for (int s = 0; s <= P; s++) {
            double vv[D], x[D];
            for (int t = 0; t < D; t++) x[t] = v[((size_t)s * H + h) * D + t];
            const int exact = s < sinks || s > P - 1 - win || s == P;
            if (exact) memcpy(vv, x, sizeof vv);
            else project(vb + (size_t)h * D * vs, vs, rv, x, vv);
            const double e = exp(sc[s] - m);
            l_ += e;
            for (int t = 0; t < D; t++) acc[t] += e * vv[t];
        }
        for (int t = 0; t < D; t++) out[hq * D + t] = acc[t] / l_;
        free(sc);
    }
}

/* run T tokens through a cache in chunks of `chunk`: outputs [L][T][NH][D] */
static int run(const kvs_config *cfg, const float *q, const float *k, const float *v, int chunk, float *out) {
    kvs_cache *c = NULL;
    if (kvs_cache_create(cfg, &c)) return 1;
    int bad = 0;
    for (int p = 0; p < T && !bad; p += chunk) {
        const int n = T - p < chunk ? T - p : chunk;
        for (int l = 0; l < L && !bad; l++) {
            const size_t qo = (size_t)p * NH * D, ko = (size_t)p * H * D;
            bad |= kvs_attend(c, l, n, q + qo, k + ko, v + ko, out + ((size_t)l * T + p) * NH * D) != KVS_OK;
            bad |= kvs_cache_append(c, l, n, k + ko, v + ko) != KVS_OK;
        }
    }
    size_t want = 0;
    bad |= kvs_cache_bytes_for(cfg, T, &want) != KVS_OK || want != kvs_cache_bytes(c);
    kvs_cache_free(c);
    return bad;
}

/* against the dense reference at the ranks the config resolves to in each layer (learned bases, or
 * prefixes of the PCA bases: PCA and EigenAttention's) */
static double check_against_reference(const char *what, const kvs_config *cfg, const float *q, const float *k, const float *v,
                                      const float *out, int layer_bases_learned) {
    double worst = 0;
    int rk[L], rv[L];
    CHECK_OK(kvs_config_ranks(cfg, rk, rv));
    for (int l = 0; l < L; l++)
        for (int P = 0; P < T; P += 7) {
            double ref[NH * D];
            const float *kb = layer_bases_learned ? g_lk[l] : g_pk[l], *vb = layer_bases_learned ? g_lv[l] : g_pv[l];
            reference(P, q, k, v, kb, layer_bases_learned ? RK : D, rk[l], vb, layer_bases_learned ? RV : D, rv[l],
                      cfg->sinks, cfg->window, ref);
            for (int i = 0; i < NH * D; i++) {
                const double e = fabs(ref[i] - out[((size_t)l * T + P) * NH * D + i]);
                worst = e > worst ? e : worst;
            }
        }
    /* fp32 coefficients: float summation only; fp16 ones round each coefficient (2^-11 relative) */
    const double tol = cfg->k_type == KVS_TYPE_FP16 ? 1e-3 : 2e-5;
    CHECK(worst < tol, "%s: worst |cache - dense reference| %g (tolerance %g)", what, worst, tol);
    return worst;
}

/* Jensen's correction on rebuilt scores: 64 tokens stored as INT2 (or q4_0) key coefficients, one
 * query at position 64 against a double-precision reference that reads the cache's own codes and
 * steps: s = tau q . R_s(P c^) - lambda sum_j b(tau u_j delta_j / 2), u = P^T R_s^T q, with
 * b(a) = a^2/6 (taylor) or ln(sinh a / a) (exact); values are fp32 or INT4 coefficients, read back
 * with kvs_dequant_value (the kernel decodes them its own way). The term must
 * move the output (jensen=off differs) and match the reference, with both kernel sets. */
static void check_jensen(const kvs_calib *cal, const float *q, const float *k, const float *v) {
    const char *cfgs[] = {"k=int2,v=fp32,rope=adjacent,stiefel=16/16,basis=pca,jensen=taylor",
                          "k=int2,v=fp32,rope=adjacent,stiefel=16/16,basis=pca,jensen=exact,lambda=0.7",
                          "k=int4,v=int4,rope=adjacent,stiefel=16/32,basis=pca,rotate=hadamard,jensen=taylor", /* paired INT4 values too */
                          "k=q4_0,v=fp32,self=exact,rope=adjacent,stiefel=32/16,basis=pca,jensen=taylor"};
    const double min_move[] = {1e-3, 1e-3, 1e-5, 1e-5}; /* INT4-level noise: a bias ~25x smaller than INT2's */
    const char *kernel_sets[] = {"ref", "avx2"};
    enum { N = 64 };
    for (size_t x = 0; x < sizeof cfgs / sizeof *cfgs; x++)
        for (int ks = 0; ks < 2; ks++) {
            if (kvs_set_kernels(kernel_sets[ks]) != KVS_OK) continue;
            kvs_config cfg = kvs_config_default();
            cfg.n_layers = L, cfg.n_heads = NH, cfg.n_kv_heads = H, cfg.head_dim = D, cfg.max_tokens = T, cfg.calib = cal;
            CHECK_OK(kvs_config_parse(&cfg, cfgs[x]));
            kvs_config off = cfg;
            off.jensen = KVS_JENSEN_OFF;
            float out[2][NH * D];
            kvs_cache *c[2] = {NULL, NULL};
            for (int y = 0; y < 2; y++) {
                CHECK_OK(kvs_cache_create(y ? &off : &cfg, &c[y]));
                if (!c[y]) return;
                CHECK_OK(kvs_cache_append(c[y], 0, N, k, v));
                CHECK_OK(kvs_attend(c[y], 0, 1, q + (size_t)N * NH * D, k + (size_t)N * H * D, v + (size_t)N * H * D, out[y]));
            }
            const kvs_method *m = kvs_layer_plan(c[0], 0);
            const int rk = m->key.dim, rv = m->value.dim, G = m->G;
            CHECK(c[0]->layers[0].n_quant == N, "%s: all %d tokens in groups (%d)", cfgs[x], N, c[0]->layers[0].n_quant);
            double worst = 0, moved = 0;
            for (int hq = 0; hq < NH; hq++) {
                const int h = hq / (NH / H);
                const kvs_stream *st = kvs_stream_at(c[0], 0, h);
                double qq[D], sc[N + 1], mx = -INFINITY, l_ = 0, acc[D] = {0};
                for (int t = 0; t < D; t++) qq[t] = q[((size_t)N * NH + hq) * D + t];
                rope_d(qq, N, 10000.0);
                for (int s_ = 0; s_ <= N; s_++) {
                    double kk[D] = {0}, bias = 0;
                    if (s_ == N) {
                        for (int t = 0; t < D; t++) kk[t] = k[((size_t)N * H + h) * D + t];
                    } else {
                        float cf[D], dl[D];
                        const uint8_t *blk = st->blk[s_ / G];
                        kvs_dequant_key(m->key.type, blk, G, rk, s_ % G, cf);
                        kvs_key_delta(m->key.type, blk, G, rk, s_ % G, dl);
                        for (int j = 0; j < rk; j++)
                            for (int t = 0; t < D; t++) kk[t] += (double)cf[j] * st->pkt[(size_t)j * D + t];
                        double back[D]; /* R_s^T q: turned by -s */
                        memcpy(back, qq, sizeof back);
                        rope_d(back, -s_, 10000.0);
                        for (int j = 0; j < rk; j++) {
                            double u = 0;
                            for (int t = 0; t < D; t++) u += (double)st->pkt[(size_t)j * D + t] * back[t];
                            const double a = fabs(u * dl[j] / sqrt((double)D) / 2);
                            bias += cfg.jensen == KVS_JENSEN_TAYLOR ? a * a / 6 : (a > 1e-6 ? log(sinh(a) / a) : a * a / 6);
                        }
                    }
                    rope_d(kk, s_, 10000.0);
                    double dot = 0;
                    for (int t = 0; t < D; t++) dot += qq[t] * kk[t];
                    sc[s_] = dot / sqrt((double)D) - cfg.lambda * bias;
                    mx = sc[s_] > mx ? sc[s_] : mx;
                }
                for (int s_ = 0; s_ <= N; s_++) {
                    double vv[D] = {0};
                    if (s_ == N)
                        for (int t = 0; t < D; t++) vv[t] = v[((size_t)N * H + h) * D + t];
                    else {
                        float cv[D];
                        kvs_dequant_value(m->value.type, st->blk[s_ / G] + m->key.bytes, G, rv, s_ % G, cv);
                        for (int t = 0; t < D; t++)
                            for (int j = 0; j < rv; j++) vv[t] += (double)st->pv[(size_t)t * rv + j] * cv[j];
                    }
                    const double e = exp(sc[s_] - mx);
                    l_ += e;
                    for (int t = 0; t < D; t++) acc[t] += e * vv[t];
                }
                for (int t = 0; t < D; t++) {
                    worst = fmax(worst, fabs(acc[t] / l_ - out[0][hq * D + t]));
                    moved = fmax(moved, fabs(out[1][hq * D + t] - out[0][hq * D + t]));
                }
            }
            CHECK(worst < 1e-4, "%s (%s): |cache - Jensen reference| %g", cfgs[x], kernel_sets[ks], worst);
            CHECK(moved > min_move[x], "%s (%s): the Jensen term changed the output by only %g", cfgs[x], kernel_sets[ks], moved);
            kvs_cache_free(c[0]), kvs_cache_free(c[1]);
        }
    CHECK_OK(kvs_set_kernels("auto"));
}

int main(void) {
    kvs_calib *cal = make_calib();
    CHECK(cal != NULL, "calibration: %s", kvs_last_error());
    if (!cal) return test_done("test_lowrank_cache");
    static float q[T * NH * D], k[T * H * D], v[T * H * D], o1[L * T * NH * D], o2[L * T * NH * D], o3[L * T * NH * D];
    rng_t r = {5};
    for (int i = 0; i < T * NH * D; i++) q[i] = (float)rng_normal(&r);
    for (int i = 0; i < T * H * D; i++) k[i] = (float)rng_normal(&r), v[i] = (float)rng_normal(&r);
    check_jensen(cal, q, k, v);
    const char *configs[] = {"fp32,rope=adjacent,stiefel=6/5", "fp16,self=exact,rope=adjacent,stiefel=6/5",
                             "fp32,rope=adjacent,stiefel=6/5,sinks=3,window=8", "fp32,rope=adjacent,stiefel=4/9,basis=pca",
                             "fp32,rope=adjacent,stiefel=6/5,group=8"};
    const char *kernel_sets[] = {"ref", "avx2"};
    for (size_t x = 0; x < sizeof configs / sizeof *configs; x++) {
        kvs_config cfg = kvs_config_default();
        cfg.n_layers = L, cfg.n_heads = NH, cfg.n_kv_heads = H, cfg.head_dim = D, cfg.max_tokens = T, cfg.calib = cal;
        CHECK_OK(kvs_config_parse(&cfg, configs[x]));
        const int learned = cfg.basis == KVS_BASIS_LEARNED;
        for (int ks = 0; ks < 2; ks++) {
            if (kvs_set_kernels(kernel_sets[ks]) != KVS_OK) continue; /* no AVX2 on this CPU */
            CHECK(!run(&cfg, q, k, v, 1, o1), "%s: run token by token: %s", configs[x], kvs_last_error());
            CHECK(!run(&cfg, q, k, v, 9, o2), "%s: run in chunks: %s", configs[x], kvs_last_error());
            CHECK(!memcmp(o1, o2, sizeof o1), "%s (%s): chunks of 9 differ from token by token", configs[x], kernel_sets[ks]);
            char what[160];
            snprintf(what, sizeof what, "%s (%s)", configs[x], kernel_sets[ks]);
            check_against_reference(what, &cfg, q, k, v, o1, learned);
            if (ks == 0) { /* oracle 11: projecting after RoPE is another function of the keys */
                double far = 0;
                int rk[L], rv[L];
                CHECK_OK(kvs_config_ranks(&cfg, rk, rv));
                g_post_rope = 1;
                for (int P = 20; P < T; P += 13) {
                    double ref[NH * D];
                    reference(P, q, k, v, learned ? g_lk[0] : g_pk[0], learned ? RK : D, rk[0], learned ? g_lv[0] : g_pv[0],
                              learned ? RV : D, rv[0], cfg.sinks, cfg.window, ref);
                    for (int i = 0; i < NH * D; i++) far = fmax(far, fabs(ref[i] - o1[(size_t)P * NH * D + i]));
                }
                g_post_rope = 0;
                CHECK(far > 1e-3, "%s: projecting after RoPE gives the same outputs (%g): the convention is not tested", configs[x], far);
            }
            if (ks == 0) memcpy(o3, o1, sizeof o1);
            else {
                double worst = 0;
                for (size_t i = 0; i < sizeof o1 / sizeof *o1; i++) worst = fmax(worst, fabs(o1[i] - o3[i]));
                CHECK(worst < KVS_TOL_REF_VS_SIMD, "%s: avx2 vs reference kernel %g", configs[x], worst);
            }
        }
        CHECK_OK(kvs_set_kernels("auto"));
    }
    /* with eviction (uniform budgets, HeatKV's baseline): blocks of coefficients are dropped and
     * freed like any others; bytes stay exact (run() compares them), chunked = token by token */
    {
        kvs_config cfg = kvs_config_default();
        cfg.n_layers = L, cfg.n_heads = NH, cfg.n_kv_heads = H, cfg.head_dim = D, cfg.max_tokens = T, cfg.calib = cal;
        CHECK_OK(kvs_config_parse(&cfg, "fp32,rope=adjacent,stiefel=6/5,group=8,sinks=2,evict=uniform,budget=0.5"));
        CHECK(!run(&cfg, q, k, v, 1, o1) && !run(&cfg, q, k, v, 9, o2), "evicting runs: %s", kvs_last_error());
        CHECK(!memcmp(o1, o2, sizeof o1), "evicting low-rank cache: chunks of 9 differ from token by token");
        double worst = 0; /* the last query saw half its context dropped: it must differ from the full cache */
        kvs_config full = cfg;
        full.evict = KVS_EVICT_NONE, full.budget = 1.0f;
        CHECK(!run(&full, q, k, v, 9, o3), "full run");
        for (size_t i = (size_t)(T - 1) * NH * D; i < (size_t)T * NH * D; i++) worst = fmax(worst, fabs(o1[i] - o3[i]));
        CHECK(worst > 1e-3, "eviction changed nothing (%g)", worst);
    }
    /* r = d: the basis is square orthogonal, so the cache equals the full one (oracle 5) */
    {
        kvs_config a = kvs_config_default(), b;
        a.n_layers = L, a.n_heads = NH, a.n_kv_heads = H, a.head_dim = D, a.max_tokens = T, a.calib = cal;
        b = a;
        CHECK_OK(kvs_config_parse(&a, "fp32,rope=adjacent,stiefel=32/32,basis=pca"));
        CHECK_OK(kvs_config_parse(&b, "fp32,rope=adjacent"));
        CHECK(!run(&a, q, k, v, 5, o1) && !run(&b, q, k, v, 5, o2), "full-rank runs: %s", kvs_last_error());
        double worst = 0;
        for (size_t i = 0; i < sizeof o1 / sizeof *o1; i++) worst = fmax(worst, fabs(o1[i] - o2[i]));
        CHECK(worst < 1e-5, "rank = head_dim differs from the full cache by %g", worst);
    }
    /* bytes (oracle 13): coefficient rows, the bases' copy and the RoPE table, all counted */
    {
        kvs_config a = kvs_config_default(), b;
        a.n_layers = L, a.n_heads = NH, a.n_kv_heads = H, a.head_dim = D, a.max_tokens = T, a.calib = cal;
        b = a;
        CHECK_OK(kvs_config_parse(&a, "fp32,rope=adjacent,stiefel=6/5"));
        CHECK_OK(kvs_config_parse(&b, "fp32,rope=adjacent"));
        size_t ba0, ba64, bb0, bb64;
        CHECK_OK(kvs_cache_bytes_for(&a, 0, &ba0));
        CHECK_OK(kvs_cache_bytes_for(&a, 64, &ba64));
        CHECK_OK(kvs_cache_bytes_for(&b, 0, &bb0));
        CHECK_OK(kvs_cache_bytes_for(&b, 64, &bb64));
        CHECK(ba64 - ba0 == (size_t)64 * L * H * (RK + RV) * 4, "low-rank bytes per token: %zu", (ba64 - ba0) / 64);
        CHECK(bb64 - bb0 == (size_t)64 * L * H * 2 * D * 4, "full bytes per token: %zu", (bb64 - bb0) / 64);
        CHECK(ba0 - bb0 == sizeof(float) * ((size_t)L * D * (RK + H * RV) + (size_t)T * D) + L * sizeof(kvs_method),
              "fixed part: bases + RoPE table + layer plans (%zu)", ba0 - bb0);
    }
    /* ranks per layer: EigenAttention's own (4/7, 9/3), and the allocator's under half the bytes */
    {
        const struct {
            const char *cfg;
            int learned, rk[L], rv[L];
        } per_layer[] = {
            {"fp32,rope=adjacent,stiefel=auto,basis=eigen", 0, {4, 9}, {7, 3}},
            {"fp32,rope=adjacent,stiefel=auto:0.5,basis=pca", 0, {24, 8}, {8, 24}},
            {"fp32,rope=adjacent,stiefel=auto,basis=pca,budget=0.5", 0, {24, 8}, {8, 24}},
            {"fp32,rope=adjacent,stiefel=auto:0.5,basis=pca,window=3,sinks=2", 0, {24, 8}, {8, 24}},
            {"fp32,rope=adjacent,stiefel=auto", 1, {RK, RK}, {RV, RV}},
            {"fp16,self=exact,rope=adjacent,stiefel=auto,basis=eigen", 0, {4, 9}, {7, 3}},
            {"fp32,rope=adjacent,stiefel=8/16,basis=pca,rotate=hadamard", 0, {8, 8}, {16, 16}}, /* P H: the same span */
        };
        for (size_t x = 0; x < sizeof per_layer / sizeof *per_layer; x++) {
            kvs_config cfg = kvs_config_default();
            cfg.n_layers = L, cfg.n_heads = NH, cfg.n_kv_heads = H, cfg.head_dim = D, cfg.max_tokens = T, cfg.calib = cal;
            CHECK_OK(kvs_config_parse(&cfg, per_layer[x].cfg));
            int rk[L], rv[L];
            CHECK_OK(kvs_config_ranks(&cfg, rk, rv));
            size_t per_token = 0;
            for (int l = 0; l < L; l++) {
                CHECK(rk[l] == per_layer[x].rk[l] && rv[l] == per_layer[x].rv[l], "%s: layer %d ranks %d/%d, want %d/%d", per_layer[x].cfg, l,
                      rk[l], rv[l], per_layer[x].rk[l], per_layer[x].rv[l]);
                per_token += (size_t)H * (rk[l] + rv[l]) * (cfg.k_type == KVS_TYPE_FP16 ? 2 : 4);
            }
            CHECK_OK(kvs_set_kernels("ref"));
            CHECK(!run(&cfg, q, k, v, 1, o1), "%s: token by token: %s", per_layer[x].cfg, kvs_last_error());
            CHECK_OK(kvs_set_kernels("auto"));
            CHECK(!run(&cfg, q, k, v, 9, o2), "%s: in chunks: %s", per_layer[x].cfg, kvs_last_error());
            double dk = 0;
            for (size_t i = 0; i < sizeof o1 / sizeof *o1; i++) dk = fmax(dk, fabs(o1[i] - o2[i]));
            CHECK(dk < KVS_TOL_REF_VS_SIMD, "%s: default kernels in chunks vs reference token by token %g", per_layer[x].cfg, dk);
            check_against_reference(per_layer[x].cfg, &cfg, q, k, v, o1, per_layer[x].learned);
            size_t b0, b64; /* oracle 13 with ranks per layer: sum over layers of H (rK + rV) coefficients per token */
            CHECK_OK(kvs_cache_bytes_for(&cfg, 0, &b0));
            CHECK_OK(kvs_cache_bytes_for(&cfg, 64, &b64));
            CHECK(b64 - b0 == 64 * per_token, "%s: %zu bytes per token, formula %zu", per_layer[x].cfg, (b64 - b0) / 64, per_token);
            char txt[512]; /* the canonical string parses back to the same ranks */
            CHECK(kvs_config_format(&cfg, txt, sizeof txt) < sizeof txt, "format fits");
            kvs_config back = kvs_config_default();
            back.n_layers = L, back.n_heads = NH, back.n_kv_heads = H, back.head_dim = D, back.max_tokens = T, back.calib = cal;
            CHECK_OK(kvs_config_parse(&back, txt));
            CHECK(back.rank_k == cfg.rank_k && back.rank_budget == cfg.rank_budget && back.basis == cfg.basis, "%s: round trip '%s'",
                  per_layer[x].cfg, txt);
        }
        /* the allocator's choice is the exact knapsack's on these options (oracle 12 through the cache) */
        const kvs_lr_option o[4][4] = {
            {{8, 0.9}, {16, 0.5}, {24, 0.2}, {32, 0}}, {{8, 0.1}, {16, 0.05}, {24, 0.01}, {32, 0}},
            {{8, 0.3}, {16, 0.1}, {24, 0.05}, {32, 0}}, {{8, 0.6}, {16, 0.4}, {24, 0.1}, {32, 0}}};
        const kvs_lr_option *rows[4] = {o[0], o[1], o[2], o[3]};
        int n4[4] = {4, 4, 4, 4}, ch[4];
        CHECK_OK(kvs_lr_allocate_exact(rows, n4, 4, 64, ch));
        CHECK(o[0][ch[0]].bytes == 24 && o[1][ch[1]].bytes == 8 && o[2][ch[2]].bytes == 8 && o[3][ch[3]].bytes == 24,
              "knapsack: %ld %ld %ld %ld", o[0][ch[0]].bytes, o[1][ch[1]].bytes, o[2][ch[2]].bytes, o[3][ch[3]].bytes);
    }
    /* coefficients in llama.cpp's q8_0 / q4_0 rows (rank 32 = one block) and in affine INT4 / INT2
     * (keys per coefficient over G tokens, values per token): near the fp32 coefficients, not equal
     * to them, the bytes of each format, the AVX2 kernel against the reference, chunked = token by
     * token; the same with the coefficient space turned by H */
    {
        const char *qc[4] = {"q8_0,self=exact,rope=adjacent,stiefel=32/32,basis=pca", "q4_0,self=exact,rope=adjacent,stiefel=32/32,basis=pca",
                             "k=int4,v=int4,rope=adjacent,stiefel=32/32,basis=pca", "k=int2,v=int2,rope=adjacent,stiefel=32/32,basis=pca"};
        const double tol[4] = {2e-2, 0.3, 0.3, 1.5}; /* max |output error| over 70 tokens x 4 heads x 32 of unit scale */
        const size_t row[4] = {34, 18, 20, 12}; /* bytes per token of 32 coefficients: q8_0, q4_0 blocks; INT4, INT2 with their scales */
        kvs_config fp = kvs_config_default();
        fp.n_layers = L, fp.n_heads = NH, fp.n_kv_heads = H, fp.head_dim = D, fp.max_tokens = T, fp.calib = cal;
        CHECK_OK(kvs_config_parse(&fp, "fp32,rope=adjacent,stiefel=32/32,basis=pca"));
        CHECK(!run(&fp, q, k, v, 9, o3), "fp32 coefficients: %s", kvs_last_error());
        for (int x = 0; x < 4; x++) {
            kvs_config cfg = fp;
            CHECK_OK(kvs_config_parse(&cfg, qc[x]));
            CHECK_OK(kvs_set_kernels("ref"));
            CHECK(!run(&cfg, q, k, v, 1, o1), "%s: %s", qc[x], kvs_last_error());
            CHECK_OK(kvs_set_kernels("auto"));
            CHECK(!run(&cfg, q, k, v, 9, o2), "%s: %s", qc[x], kvs_last_error());
            double dq = 0, dk = 0;
            for (size_t i = 0; i < sizeof o1 / sizeof *o1; i++) dq = fmax(dq, fabs(o1[i] - o3[i])), dk = fmax(dk, fabs(o1[i] - o2[i]));
            CHECK(dq < tol[x] && dq > 1e-5, "%s: |quantized - fp32 coefficients| %g", qc[x], dq);
            /* the coefficient space turned by H (spec section 6): other codes, same tolerance */
            kvs_config rot = cfg;
            CHECK_OK(kvs_config_parse(&rot, "rotate=hadamard"));
            CHECK(!run(&rot, q, k, v, 9, o2), "%s + rotate: %s", qc[x], kvs_last_error());
            double dr = 0, dd = 0;
            for (size_t i = 0; i < sizeof o1 / sizeof *o1; i++) dr = fmax(dr, fabs(o2[i] - o3[i])), dd = fmax(dd, fabs(o2[i] - o1[i]));
            CHECK(dr < tol[x] && dd > 1e-6, "%s + rotate=hadamard: |quantized - fp32| %g, |rotated - not| %g", qc[x], dr, dd);
            CHECK(dk < KVS_TOL_REF_VS_SIMD, "%s: default kernels in chunks vs reference token by token %g", qc[x], dk);
            size_t b0, b64;
            CHECK_OK(kvs_cache_bytes_for(&cfg, 0, &b0));
            CHECK_OK(kvs_cache_bytes_for(&cfg, 64, &b64));
            CHECK(b64 - b0 == (size_t)64 * L * H * 2 * row[x], "%s: %zu bytes per token", qc[x], (b64 - b0) / 64);
        }
    }
    /* refusals, each naming its reason */
    struct {
        const char *cfg;
        const char *msg;
    } bad[] = {
        {"fp32,stiefel=6/5", "rope=adjacent"},
        {"k=int4,v=int4,rope=adjacent,stiefel=32/8,basis=pca", "groups of group=32"},
        {"k=int4,v=fp32,rope=adjacent,stiefel=5/8,basis=pca", "multiple of 8"},
        {"fp32,rope=adjacent,stiefel=6/5,jensen=taylor", "no rounding noise"},
        {"fp32,rope=adjacent,stiefel=6/5,rotate=hadamard,basis=pca", "power-of-two ranks"},
        {"fp32,rope=adjacent,stiefel=auto,basis=eigen,rotate=hadamard", "power-of-two ranks"},
        {"fp32,rope=adjacent,stiefel=8/8,basis=pca,scale=token", "scale="},
        {"fp32,rope=adjacent,stiefel=8/5", "learned bases are fitted at their ranks"},
        {"fp32,rope=adjacent,stiefel=auto:0.5", "learned bases are fitted at their ranks"},
        {"fp32,rope=adjacent,stiefel=auto,basis=pca", "needs a budget"},
        {"fp32,rope=adjacent,stiefel=auto:0.5,basis=eigen", "own ranks"},
        {"fp32,rope=adjacent,stiefel=auto:0.1,basis=pca", "no ranks fit"},
        {"q8_0,rope=adjacent,stiefel=auto:0.5,basis=pca", "no ranks fit"},
        {"fp32,rope=adjacent,stiefel=10/5,basis=eigen", "eigen bases have 4/7"},
        {"fp32,rope=adjacent,stiefel=auto:", "bad value"},
        {"fp32,rope=adjacent,stiefel=auto:1.5,basis=pca", "bad value"},
        {"fp32,rope=adjacent,stiefel=33/5,basis=pca", "ranks must be in 1..head_dim"},
        {"q8_0,rope=adjacent,stiefel=16/32,basis=pca", "multiples of 32"},
        {"fp32,rope=adjacent,stiefel=0/5", "ranks must be in 1..head_dim"},
        {"fp32,rope=adjacent,stiefel=6", "bad value"},
        {"fp32,rope=adjacent,basis=svd", "bad value"},
    };
    for (size_t x = 0; x < sizeof bad / sizeof *bad; x++) {
        kvs_config cfg = kvs_config_default();
        cfg.n_layers = L, cfg.n_heads = NH, cfg.n_kv_heads = H, cfg.head_dim = D, cfg.max_tokens = T, cfg.calib = cal;
        const kvs_status st = kvs_config_parse(&cfg, bad[x].cfg);
        CHECK(st == KVS_ERR_CONFIG && strstr(kvs_last_error(), bad[x].msg), "'%s' -> %s: %s", bad[x].cfg, kvs_status_str(st), kvs_last_error());
    }
    {
        kvs_config cfg = kvs_config_default(); /* no calibration */
        CHECK(kvs_config_parse(&cfg, "fp32,rope=adjacent,stiefel=6/5") == KVS_ERR_CONFIG && strstr(kvs_last_error(), "calibration"),
              "stiefel= without a calibration: %s", kvs_last_error());
        cfg.n_layers = L, cfg.n_heads = NH, cfg.n_kv_heads = H, cfg.head_dim = D + 16, cfg.calib = cal;
        CHECK(kvs_config_parse(&cfg, "fp32,rope=adjacent,stiefel=6/5") == KVS_ERR_CONFIG && strstr(kvs_last_error(), "bases are for"),
              "bases of other shapes: %s", kvs_last_error());
    }
    kvs_calib_free(cal);
    return test_done("test_lowrank_cache");
}
