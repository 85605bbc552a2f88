/* Attention over the cache: fp32 equals a double-precision reference; each quantized config stays
 * within its error bound, with both kernel sets; Jensen leaves full-precision keys alone and
 * returns attention mass to the window (docs/methods/jensen.md oracles 6, 9). The kernels against
 * each other, chunks against token-by-token decoding and threads: tests/test_kernels.c. */
#include <string.h>

#include "test_util.h"

typedef struct {
    int H, NH, d, T;   /* KV heads, query heads, head_dim, cached tokens */
    float *k, *v;      /* all tokens [T + n][H][d] (cached ones first, then the chunk) */
} seq_t;

/* Double-precision attention of chunk query i over tokens [0, T + i]. */
static void reference(const seq_t *s, int n, const float *q, float tau, float *out) {
    const int g = s->NH / s->H, d = s->d;
    double *p = malloc(sizeof(double) * (size_t)(s->T + n));
    for (int i = 0; i < n; i++)
        for (int h = 0; h < s->NH; h++) {
            const float *qq = q + ((size_t)i * s->NH + h) * d;
            const int kh = h / g, cnt = s->T + i + 1;
            double m = -1e300, l = 0;
            for (int t = 0; t < cnt; t++) {
                const float *kk = s->k + ((size_t)t * s->H + kh) * d;
                double dot = 0;
                for (int x = 0; x < d; x++) dot += (double)qq[x] * kk[x];
                p[t] = tau * dot;
                m = p[t] > m ? p[t] : m;
            }
            for (int t = 0; t < cnt; t++) l += (p[t] = exp(p[t] - m));
            for (int x = 0; x < d; x++) {
                double acc = 0;
                for (int t = 0; t < cnt; t++) acc += p[t] * s->v[((size_t)t * s->H + kh) * d + x];
                out[((size_t)i * s->NH + h) * d + x] = (float)(acc / l);
            }
        }
    free(p);
}

static void make_seq(seq_t *s, rng_t *r, int H, int NH, int d, int T, int n) {
    s->H = H;
    s->NH = NH;
    s->d = d;
    s->T = T;
    const size_t e = (size_t)(T + n) * H * d;
    s->k = malloc(e * sizeof(float));
    s->v = malloc(e * sizeof(float));
    /* keys with a few outlier channels and varying token norms, like real post-RoPE keys */
    for (size_t t = 0; t < (size_t)(T + n); t++) {
        const double tn = 0.5 + 1.5 * rng_uniform(r);
        for (int x = 0; x < H * d; x++) {
            const double mu = (x % d == 3) ? 4.0 : ((x % d == 17) ? -3.0 : 0.0);
            s->k[t * H * d + x] = (float)(tn * (mu + rng_normal(r)));
            s->v[t * H * d + x] = (float)rng_normal(r);
        }
    }
}

static kvs_cache *build(const char *cfgs, const seq_t *s, int max_tokens, int threads) {
    kvs_config cfg = kvs_config_default();
    char shapes[160];
    snprintf(shapes, sizeof shapes, "layers=1,heads=%d,kv_heads=%d,head_dim=%d,max_tokens=%d,threads=%d", s->NH, s->H,
             s->d, max_tokens, threads);
    kvs_cache *c = NULL;
    if (kvs_config_parse(&cfg, cfgs) || kvs_config_parse(&cfg, shapes) || kvs_cache_create(&cfg, &c)) {
        CHECK(0, "config '%s': %s", cfgs, kvs_last_error());
        return NULL;
    }
    if (s->T > 0) CHECK_OK(kvs_cache_append(c, 0, s->T, s->k, s->v));
    return c;
}

static double rel_rms(const float *a, const float *b, size_t n) {
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return sqrt(e / s);
}

static void free_seq(seq_t *s) {
    free(s->k);
    free(s->v);
}

/* fp32 cache and every quantized config against the double reference, both kernel sets. The
 * bounds on relative RMS output error are about 1.2x what these synthetic N(0,1) values give
 * (value noise dominates: an INT2 step over ~6 sigma leaves ~0.6 relative error after the
 * weighted average); on Gaussian data OScaR need not beat KIVI (docs/methods/oscar.md oracle 8). */
static void accuracy(void) {
    struct { const char *cfg; double bound; } cases[] = {
        {"fp32,sinks=4,window=64", KVS_TOL_FP32}, {"fp16", 2e-3}, {"q8_0", 2e-2}, {"q4_0", 0.2},
        {"k=int8,v=int8,window=0", 2e-2}, {"kivi-int4,window=0", 0.15}, {"oscar-int4,window=0", 0.15},
        {"k=int3,v=int3,window=0,rotate=hadamard,scale=token", 0.35}, {"kivi-int2,window=0", 0.75},
        {"oscar-int2,window=0", 0.75}, {"oscar-int2,window=0,jensen=taylor", 0.75},
        {"oscar-int2,window=0,jensen=exact", 0.75}};
    rng_t r = {31};
    seq_t s;
    const int n = 4;
    make_seq(&s, &r, 3, 9, 64, 517, n);
    float *q = malloc(sizeof(float) * n * 9 * 64), *want = malloc(sizeof(float) * n * 9 * 64);
    float *got = malloc(sizeof(float) * n * 9 * 64);
    fill_normal(&r, q, (size_t)n * 9 * 64, 0.6);
    reference(&s, n, q, 0.125f, want);
    const char *sets[] = {"ref", "avx2"};
    for (int ks = 0; ks < 2; ks++) {
        if (kvs_set_kernels(sets[ks]) != KVS_OK) continue;
        for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
            kvs_cache *c = build(cases[ci].cfg, &s, 1024, 0);
            if (!c) continue;
            CHECK_OK(kvs_attend(c, 0, n, q, s.k + (size_t)s.T * 3 * 64, s.v + (size_t)s.T * 3 * 64, got));
            const double e = ci == 0 ? max_abs_diff(got, want, (size_t)n * 9 * 64, NULL) : rel_rms(got, want, (size_t)n * 9 * 64);
            printf("%-5s %-50s error %.3g (bound %.3g)\n", sets[ks], cases[ci].cfg, e, cases[ci].bound);
            CHECK(e <= cases[ci].bound, "%s %s: error %g > %g", sets[ks], cases[ci].cfg, e, cases[ci].bound);
            kvs_cache_free(c);
        }
    }
    CHECK_OK(kvs_set_kernels("auto"));
    free(q);
    free(want);
    free(got);
    free_seq(&s);
}

/* Jensen oracle 6: no quantized keys -> bit-identical with the correction on and off */
static void jensen_untouched(void) {
    rng_t r = {34};
    seq_t s;
    make_seq(&s, &r, 3, 9, 64, 150, 2);
    float q[2 * 9 * 64], a[2 * 9 * 64], b[2 * 9 * 64];
    fill_normal(&r, q, 2 * 9 * 64, 1.0);
    kvs_cache *c0 = build("oscar-int2,sinks=4", &s, 512, 0), *c1 = build("oscar-int2,sinks=4,jensen=taylor", &s, 512, 0);
    const float *kc = s.k + (size_t)s.T * 3 * 64, *vc = s.v + (size_t)s.T * 3 * 64;
    CHECK_OK(kvs_attend(c0, 0, 2, q, kc, vc, a));
    CHECK_OK(kvs_attend(c1, 0, 2, q, kc, vc, b));
    CHECK(memcmp(a, b, sizeof a) == 0, "jensen changed a cache without quantized keys");
    kvs_cache_free(c0);
    kvs_cache_free(c1);
    free_seq(&s);
}

/* Jensen oracle 9: d=128, G=32, INT2 per-channel keys (no rotation/scaling), 2048 quantized +
 * 512 full-precision keys (the window) + the query's own token; k_c ~ N(0, s_c^2), ln s_c ~
 * N(0, 0.7^2), q_c ~ t N(0,1)/s_c. Values mark full-precision tokens, so out[0] is their mass. */
static void jensen_mass(void) {
    const int d = 128, NQ = 2048, NW = 512, T = NQ + NW, trials = 60;
    rng_t r = {35};
    double err_u = 0, err_t = 0, err_e = 0, mref = 0, mu = 0, mt = 0;
    seq_t s;
    s.H = 1;
    s.NH = 1;
    s.d = d;
    s.T = T;
    s.k = malloc(sizeof(float) * (T + 1) * d);
    s.v = malloc(sizeof(float) * (T + 1) * d);
    float q[128], out[128], want[128], sig[128];
    for (int tr = 0; tr < trials; tr++) {
        for (int c = 0; c < d; c++) sig[c] = (float)exp(0.7 * rng_normal(&r));
        for (int t = 0; t <= T; t++)
            for (int c = 0; c < d; c++) {
                s.k[(size_t)t * d + c] = (float)(sig[c] * rng_normal(&r));
                s.v[(size_t)t * d + c] = (c == 0 && t >= NQ) ? 1.0f : 0.0f;
            }
        for (int c = 0; c < d; c++) q[c] = (float)(rng_normal(&r) / sig[c]);
        reference(&s, 1, q, 1.0f / sqrtf(128.0f), want);
        const char *cfgs[3] = {"k=int2,v=fp32,group=32,window=512,jensen=off", "k=int2,v=fp32,group=32,window=512,jensen=taylor",
                               "k=int2,v=fp32,group=32,window=512,jensen=exact"};
        double got[3];
        for (int m = 0; m < 3; m++) {
            kvs_cache *c = build(cfgs[m], &s, 4096, 0);
            if (!c) return;
            CHECK_OK(kvs_attend(c, 0, 1, q, s.k + (size_t)T * d, s.v + (size_t)T * d, out));
            got[m] = out[0];
            kvs_cache_free(c);
        }
        mref += want[0] / trials;
        mu += got[0] / trials;
        mt += got[1] / trials;
        err_u += fabs(got[0] - want[0]) / trials;
        err_t += fabs(got[1] - want[0]) / trials;
        err_e += fabs(got[2] - want[0]) / trials;
    }
    printf("full-precision mass: reference %.3f, uncorrected %.3f, taylor %.3f; mean abs error %.3f -> %.3f (exact %.3f)\n",
           mref, mu, mt, err_u, err_t, err_e);
    CHECK(err_t * 3 <= err_u && err_e * 3 <= err_u, "correction does not cut the mass error 3x: %g -> %g / %g", err_u, err_t,
          err_e);
    free_seq(&s);
}

int main(void) {
    accuracy();
    jensen_untouched();
    jensen_mass();
    return test_done("test_attend");
}
