/* OScaR (docs/methods/oscar.md oracles 2, 7, 8): the per-token norm, and the token-norm-imbalance effect that
 * omni-token scaling removes. */
#include <string.h>

#include "cache/cache.h"
#include "methods/methods.h"
#include "quant/quant.h"
#include "test_util.h"

enum { D = 128, G = 32 };

/* Quantize 32 tokens x 128 channels per channel at INT2, optionally rotated and/or scaled, and
 * return the relative error of each token's reconstruction. */
static void roundtrip(const float *k, int rotate, int scale, double *rel) {
    static float x[G * D], y[D], n[G];
    memcpy(x, k, sizeof x);
    for (int t = 0; t < G; t++) {
        if (rotate) kvs_fwht(x + t * D, D);
        n[t] = scale ? kvs_oscar_norm(x + t * D, 1, D, 0) : 1.0f;
        for (int i = 0; i < D; i++) x[t * D + i] /= n[t];
    }
    static uint8_t part[D * (G / 4 + 4)];
    kvs_quant_keys(KVS_TYPE_INT2, x, G, D, part);
    for (int t = 0; t < G; t++) {
        kvs_dequant_key(KVS_TYPE_INT2, part, G, D, t, y);
        for (int i = 0; i < D; i++) y[i] *= n[t];
        if (rotate) kvs_fwht(y, D);
        double e = 0, s = 0;
        for (int i = 0; i < D; i++) {
            e += ((double)y[i] - k[t * D + i]) * ((double)y[i] - k[t * D + i]);
            s += (double)k[t * D + i] * k[t * D + i];
        }
        rel[t] = sqrt(e / s);
    }
}

static void make_keys(rng_t *r, float *k, int outlier) {
    for (int t = 0; t < G; t++)
        for (int i = 0; i < D; i++) {
            double mu = i == 3 ? 8 : (i == 40 ? -6 : (i == 77 ? 5 : 0));
            k[t * D + i] = t == 0 ? (float)(0.03 * rng_normal(r)) : (float)(mu + rng_normal(r));
        }
    if (outlier)
        for (int i = 0; i < D; i++) k[1 * D + i] *= 20.0f;
}

int main(void) {
    static float k[G * D];
    double rel[G];
    double sink_plain = 0, sink_ots = 0, sink_oscar = 0, norm_plain = 0, norm_ots = 0, norm_oscar = 0;
    for (int seed = 0; seed < 10; seed++) {
        rng_t r = {100 + (uint64_t)seed};
        make_keys(&r, k, 0);
        roundtrip(k, 0, 0, rel);
        sink_plain += rel[0] / 10;
        roundtrip(k, 0, 1, rel);
        sink_ots += rel[0] / 10;
        roundtrip(k, 1, 1, rel);
        sink_oscar += rel[0] / 10;
        make_keys(&r, k, 1);
        double a = 0, b = 0, c = 0;
        roundtrip(k, 0, 0, rel);
        for (int t = 2; t < G; t++) a += rel[t] / (G - 2);
        roundtrip(k, 0, 1, rel);
        for (int t = 2; t < G; t++) b += rel[t] / (G - 2);
        roundtrip(k, 1, 1, rel);
        for (int t = 2; t < G; t++) c += rel[t] / (G - 2);
        norm_plain += a / 10;
        norm_ots += b / 10;
        norm_oscar += c / 10;
    }
    printf("low-norm sink rel. error: plain %.3f, scaled %.3f, rotated+scaled %.3f\n", sink_plain, sink_ots, sink_oscar);
    printf("normal tokens beside a 20x outlier: plain %.3f, scaled %.3f, rotated+scaled %.3f\n", norm_plain, norm_ots,
           norm_oscar);
    CHECK(sink_ots <= 0.5 * sink_plain && sink_oscar <= 0.5 * sink_plain, "sink error not halved by OTS");
    CHECK(norm_ots <= 0.5 * norm_plain && norm_oscar <= 0.5 * norm_plain, "outlier harm not halved by OTS");

    /* norms through the cache: unit vectors after scaling, n_t = |k_t| over all heads, zero key -> 1 */
    kvs_config cfg = kvs_config_default();
    CHECK_OK(kvs_config_parse(&cfg, "oscar-int2,window=0,layers=1,heads=2,kv_heads=2,head_dim=64,max_tokens=64"));
    kvs_cache *c = NULL;
    CHECK_OK(kvs_cache_create(&cfg, &c));
    if (c) {
        static float kk[32 * 2 * 64], vv[32 * 2 * 64];
        rng_t r = {9};
        fill_normal(&r, kk, sizeof kk / sizeof *kk, 2.0);
        fill_normal(&r, vv, sizeof vv / sizeof *vv, 1.0);
        memset(kk + 5 * 128, 0, 128 * sizeof(float)); /* token 5: all-zero key */
        CHECK_OK(kvs_cache_append(c, 0, 32, kk, vv));
        double worst = 0;
        for (int t = 0; t < 32; t++) {
            double s = 0;
            for (int i = 0; i < 128; i++) s += (double)kk[t * 128 + i] * kk[t * 128 + i];
            const double want = t == 5 ? 1.0 : sqrt(s);
            worst = fmax(worst, fabs(c->layers[0].norm[0][t] - want) / want);
        }
        CHECK(worst <= 1e-5, "norm differs from |k| by %g relative", worst);
        float kd[64];
        kvs__block_key(&c->m, kvs_stream_at(c, 0, 0)->blk[0], c->layers[0].norm[0], 5, kd);
        int finite = 1;
        for (int i = 0; i < 64; i++) finite &= isfinite(kd[i]) && fabsf(kd[i]) < 1e-2f;
        CHECK(finite, "zero key does not come back as ~0");
    }
    kvs_cache_free(c);
    return test_done("test_oscar");
}
