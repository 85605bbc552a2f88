/* The low-rank cache (StiefAttention; docs/methods/stiefel.md oracles 5, 11, 13): keys stored as
 * coefficients of their pre-RoPE form in a per-layer basis and rebuilt and turned inside the
 * kernel, values as coefficients in per-head bases, projected once per output. Checked against a
 * dense double-precision attention over K P Pᵀ (then RoPE) and V P Pᵀ, with both kernel sets;
 * chunked = token by token bit for bit; exact bytes; r = d equal to the full cache; the config's
 * refusals. */
#include <string.h>

#include "attn/attn.h"
#include "cache/cache.h"
#include "test_util.h"

enum { L = 2, NH = 4, H = 2, D = 32, T = 70, RK = 6, RV = 5 };

/* a calibration with learned bases at RK/RV and PCA bases whole (rank D) */
static float g_pk[L][D * D], g_pv[L][H * D * D], g_lk[L][D * RK], g_lv[L][H * D * RV];
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
    if (kvs_calib_set_bases(cal, KVS_BASIS_PCA, rd, rd, pk, pv) || kvs_calib_set_bases(cal, KVS_BASIS_LEARNED, rk, rv, lk, lv)) {
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
            if (exact) memcpy(kk, x, sizeof kk);
            else project(kb, ks, rk, x, kk);
            rope_d(kk, s, 10000.0);
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

static double check_against_reference(const char *what, const kvs_config *cfg, const float *q, const float *k, const float *v,
                                      const float *out, int layer_bases_learned) {
    double worst = 0;
    for (int l = 0; l < L; l++)
        for (int P = 0; P < T; P += 7) {
            double ref[NH * D];
            const float *kb = layer_bases_learned ? g_lk[l] : g_pk[l], *vb = layer_bases_learned ? g_lv[l] : g_pv[l];
            reference(P, q, k, v, kb, layer_bases_learned ? RK : D, cfg->rank_k, vb, layer_bases_learned ? RV : D, cfg->rank_v,
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

int main(void) {
    kvs_calib *cal = make_calib();
    CHECK(cal != NULL, "calibration: %s", kvs_last_error());
    if (!cal) return test_done("test_lowrank_cache");
    static float q[T * NH * D], k[T * H * D], v[T * H * D], o1[L * T * NH * D], o2[L * T * NH * D], o3[L * T * NH * D];
    rng_t r = {5};
    for (int i = 0; i < T * NH * D; i++) q[i] = (float)rng_normal(&r);
    for (int i = 0; i < T * H * D; i++) k[i] = (float)rng_normal(&r), v[i] = (float)rng_normal(&r);
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
        CHECK(ba0 - bb0 == sizeof(float) * ((size_t)L * D * (RK + H * RV) + (size_t)T * D), "fixed part: bases + RoPE table (%zu)", ba0 - bb0);
    }
    /* coefficients in llama.cpp's q8_0 / q4_0 rows (rank 32 = one block): near the fp32 coefficients
     * (q8_0 within 2e-2, q4_0 within 0.25 of outputs of unit scale), not equal to them, 34 / 18 bytes
     * per row, the AVX2 kernel against the reference, chunked = token by token */
    {
        const char *qc[2] = {"q8_0,self=exact,rope=adjacent,stiefel=32/32,basis=pca", "q4_0,self=exact,rope=adjacent,stiefel=32/32,basis=pca"};
        const double tol[2] = {2e-2, 0.25};
        kvs_config fp = kvs_config_default();
        fp.n_layers = L, fp.n_heads = NH, fp.n_kv_heads = H, fp.head_dim = D, fp.max_tokens = T, fp.calib = cal;
        CHECK_OK(kvs_config_parse(&fp, "fp32,rope=adjacent,stiefel=32/32,basis=pca"));
        CHECK(!run(&fp, q, k, v, 9, o3), "fp32 coefficients: %s", kvs_last_error());
        for (int x = 0; x < 2; x++) {
            kvs_config cfg = fp;
            CHECK_OK(kvs_config_parse(&cfg, qc[x]));
            CHECK_OK(kvs_set_kernels("ref"));
            CHECK(!run(&cfg, q, k, v, 1, o1), "%s: %s", qc[x], kvs_last_error());
            CHECK_OK(kvs_set_kernels("auto"));
            CHECK(!run(&cfg, q, k, v, 9, o2), "%s: %s", qc[x], kvs_last_error());
            double dq = 0, dk = 0;
            for (size_t i = 0; i < sizeof o1 / sizeof *o1; i++) dq = fmax(dq, fabs(o1[i] - o3[i])), dk = fmax(dk, fabs(o1[i] - o2[i]));
            CHECK(dq < tol[x] && dq > 1e-5, "%s: |quantized - fp32 coefficients| %g", qc[x], dq);
            CHECK(dk < KVS_TOL_REF_VS_SIMD, "%s: default kernels in chunks vs reference token by token %g", qc[x], dk);
            size_t b0, b64;
            CHECK_OK(kvs_cache_bytes_for(&cfg, 0, &b0));
            CHECK_OK(kvs_cache_bytes_for(&cfg, 64, &b64));
            CHECK(b64 - b0 == (size_t)64 * L * H * 2 * (x ? 18 : 34), "%s: %zu bytes per token", qc[x], (b64 - b0) / 64);
        }
    }
    /* refusals, each naming its reason */
    struct {
        const char *cfg;
        const char *msg;
    } bad[] = {
        {"fp32,stiefel=6/5", "rope=adjacent"},
        {"k=int4,rope=adjacent,stiefel=6/5", "fp32, fp16, q8_0 or q4_0"},
        {"fp32,rope=adjacent,stiefel=6/5,jensen=taylor", "jensen"},
        {"fp32,rope=adjacent,stiefel=6/5,rotate=hadamard", "rotate"},
        {"fp32,rope=adjacent,stiefel=8/5", "learned bases are fitted at one rank"},
        {"fp32,rope=adjacent,stiefel=33/5,basis=pca", "ranks must be in 1..head_dim"},
        {"q8_0,rope=adjacent,stiefel=16/32,basis=pca", "multiples of 32"},
        {"fp32,rope=adjacent,stiefel=0/5", "ranks must be in 1..head_dim"},
        {"fp32,rope=adjacent,stiefel=6", "bad value"},
        {"fp32,rope=adjacent,basis=eigen", "bad value"},
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
