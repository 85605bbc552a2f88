/* A synthetic HeatKV calibration for tests: random masses where queries may see a block, rankings
 * derived by the library's own rule. */
#ifndef KVS_TEST_CALIB_FIXTURE_H
#define KVS_TEST_CALIB_FIXTURE_H
#include <string.h>

#include "calib/calib.h"
#include "test_util.h"

static inline kvs_calib *fixture_calib(int L, int NH, int H, int d, int block, int sinks, int window, int ctx, int nb,
                                       uint64_t seed) {
    kvs_calib *cal = NULL;
    if (kvs__calib_new(L, NH, H, d, block, sinks, window, ctx, nb, &cal) != KVS_OK) return NULL;
    rng_t r = {seed};
    strcpy(cal->model, "fixture");
    cal->model_hash = 0x1234;
    cal->heat.n_texts = 1;
    for (int t = 0; t < nb; t++)
        for (int s = 0; s < t; s++) cal->heat.nq[(size_t)t * nb + s] = (uint32_t)(block - (t == s + 1 ? block / 2 : 0));
    for (int a = 0; a < 2; a++)
        for (int l = 0; l < L; l++)
            for (int h = 0; h < H; h++)
                for (int t = 0; t < nb; t++)
                    for (int s = 0; s < t; s++) /* some heads look far, some do not */
                        *kvs__heat_mass(cal, a, l, h, t, s) = rng_uniform(&r) * (((l + h) % 3) ? 0.02 : 0.3) / (t + 1) * (a ? 1.5 : 1.0);
    kvs__calib_derive(cal);
    return cal;
}

/* Retrieval statistics on top (for keep=): unit u's echo + induction grows with (u * 7) % U, so
 * the kept units are spread over layers. */
static inline int fixture_retr(kvs_calib *cal) {
    const int U = cal->n_layers * cal->n_kv_heads;
    double *echo = calloc(2 * (size_t)U, sizeof(double)), *ind = calloc(2 * (size_t)U, sizeof(double));
    int ok = echo && ind;
    for (int u = 0; ok && u < U; u++) {
        ind[u] = 0.4 * ((u * 7) % U) / U, echo[u] = 0.1 * ((u * 7) % U) / U;
        ind[U + u] = 1.5 * ind[u], echo[U + u] = 1.5 * echo[u];
    }
    ok = ok && kvs_calib_set_retrieval(cal, 32, 1, echo, ind) == KVS_OK;
    free(echo), free(ind);
    return ok;
}
#endif
