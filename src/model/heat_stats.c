/* HeatKV calibration statistics (docs/methods/heatkv.md, section 7.2): watching the uncompressed
 * model through kvs_llama_set_observer, the attention mass each query puts on each block of older
 * tokens, from the model's own post-RoPE q and k, probabilities in float, sums in double. A query
 * at position P counts for source block s only when s lies wholly outside its window (the W newest
 * positions, its own included) and after the sinks: what is always kept is not what is ranked. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "key_log.h"
#include "model.h"

struct kvs_heat_stats {
    int L, NH, H, d, ctx, block, sinks, window, nb, texts;
    float tau;
    double *sum;    /* [2][L][H][nb][nb] */
    uint32_t *nq;   /* [nb][nb] */
    kvs_key_log log; /* keys of the current text */
    kvs_status err; /* first failure inside the observer (it returns nothing) */
};

kvs_status kvs_heat_stats_new(int n_layers, int n_heads, int n_kv_heads, int head_dim, int ctx, int block, int sinks, int window,
                              kvs_heat_stats **out) {
    *out = NULL;
    if (n_layers < 1 || n_kv_heads < 1 || n_heads % n_kv_heads || head_dim < 1 || block < 8 || block % 8 || sinks < 0 ||
        window < 0 || ctx < sinks + window + 2 * block)
        return kvs_report(KVS_ERR_ARG, "calibrate: ctx %d too short for sinks %d + window %d + two blocks of %d", ctx, sinks,
                          window, block);
    kvs_heat_stats *s = calloc(1, sizeof *s);
    if (!s) return kvs_report(KVS_ERR_NOMEM, "calibrate: out of memory");
    s->L = n_layers, s->NH = n_heads, s->H = n_kv_heads, s->d = head_dim, s->ctx = ctx, s->block = block;
    s->sinks = sinks, s->window = window;
    s->nb = (ctx - sinks) / block;
    s->tau = 1.0f / sqrtf((float)head_dim);
    const size_t nb = (size_t)s->nb;
    s->sum = calloc(2 * (size_t)n_layers * n_kv_heads * nb * nb, sizeof(double));
    s->nq = calloc(nb * nb, sizeof(uint32_t));
    const int have_log = kvs__key_log_init(&s->log, n_layers, n_kv_heads, head_dim, ctx) == KVS_OK;
    if (!have_log || !s->sum || !s->nq) {
        kvs_heat_stats_free(s);
        return kvs_report(KVS_ERR_NOMEM, "calibrate: out of memory for %d layers x %d tokens", n_layers, ctx);
    }
    *out = s;
    return KVS_OK;
}

void kvs_heat_stats_free(kvs_heat_stats *s) {
    if (!s) return;
    kvs__key_log_free(&s->log);
    free(s->sum), free(s->nq);
    free(s);
}

void kvs_heat_stats_begin(kvs_heat_stats *s) {
    kvs__key_log_begin(&s->log);
    s->texts++;
}

void kvs_heat_observe(void *user, int layer, int n, int pos0, const float *q, const float *k) {
    kvs_heat_stats *s = user;
    if (s->err) return;
    const float *K = kvs__key_log_add(&s->log, layer, n, pos0, k);
    if (!K) {
        s->err = KVS_ERR_ARG;
        return;
    }
    const int H = s->H, NH = s->NH, d = s->d, g = NH / H, B = s->block, S = s->sinks, W = s->window, nb = s->nb;
    const int P1 = pos0 + n; /* keys 0 .. P1-1 */
    /* per KV head: one query's scores (then probabilities), and its block masses per query head */
    float *rows = malloc((size_t)H * P1 * sizeof(float));
    double *bms = malloc((size_t)H * g * nb * sizeof(double));
    if (!rows || !bms) {
        free(rows), free(bms);
        s->err = kvs_report(KVS_ERR_NOMEM, "calibrate: out of memory for %d positions", P1);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (int h = 0; h < H; h++) {
        float *row = rows + (size_t)h * P1;
        double *bm = bms + (size_t)h * g * nb;
        for (int i = 0; i < n; i++) {
            const int P = pos0 + i;
            /* eligible source blocks: s with S + (s+1) B <= P + 1 - W */
            const int ns = P + 1 - W - S >= 0 ? (P + 1 - W - S) / B : 0, ne = ns < nb ? ns : nb;
            if (P < S || ne == 0 || (P - S) / B >= nb) continue;
            const int t = (P - S) / B;
            for (int hh = 0; hh < g; hh++) {
                const float *qv = q + ((size_t)i * NH + (size_t)h * g + hh) * d;
                cblas_sgemv(CblasRowMajor, CblasNoTrans, P + 1, d, s->tau, K + (size_t)h * d, H * d, qv, 1, 0.0f, row, 1);
                float mx = row[0];
                for (int j = 1; j <= P; j++) mx = row[j] > mx ? row[j] : mx;
                double z = 0.0;
                for (int j = 0; j <= P; j++) z += (row[j] = expf(row[j] - mx));
                const float inv = (float)(1.0 / z);
                for (int x = 0; x < ne; x++) {
                    double m = 0.0;
                    const float *r = row + S + (size_t)x * B;
                    for (int j = 0; j < B; j++) m += (double)(r[j] * inv);
                    bm[(size_t)hh * nb + x] = m;
                }
            }
            for (int x = 0; x < ne; x++) {
                double mean = 0.0, mx = 0.0;
                for (int hh = 0; hh < g; hh++) {
                    const double v = bm[(size_t)hh * nb + x];
                    mean += v;
                    mx = v > mx ? v : mx;
                }
                const size_t o = (((size_t)layer * H + h) * nb + t) * nb + x;
                s->sum[o] += mean / g;
                s->sum[(size_t)s->L * H * nb * nb + o] += mx;
                if (layer == 0 && h == 0) s->nq[(size_t)t * nb + x]++;
            }
        }
    }
    free(rows), free(bms);
}

kvs_status kvs_heat_stats_error(const kvs_heat_stats *s) { return s->err; }

kvs_status kvs_heat_stats_finish(const kvs_heat_stats *s, const char *model, uint64_t hash, kvs_calib **out) {
    *out = NULL;
    if (s->err) return s->err;
    if (!s->texts) return kvs_report(KVS_ERR_ARG, "calibrate: no text observed");
    const size_t nb = (size_t)s->nb, per = (size_t)s->L * s->H * nb * nb;
    double *mass = malloc(2 * per * sizeof(double));
    if (!mass) return kvs_report(KVS_ERR_NOMEM, "calibrate: out of memory");
    for (size_t a = 0; a < 2; a++)
        for (size_t u = 0; u < (size_t)s->L * s->H; u++)
            for (size_t x = 0; x < nb * nb; x++) {
                const uint32_t c = s->nq[x];
                double m = c ? s->sum[a * per + u * nb * nb + x] / c : 0.0;
                mass[a * per + u * nb * nb + x] = m > 1.0 ? 1.0 : m; /* float rounding can pass 1 by an ulp */
            }
    const kvs_calib_heat_desc desc = {model, hash, s->L, s->NH, s->H, s->d, s->block, s->sinks, s->window, s->ctx, s->nb, s->texts};
    kvs_status st = kvs_calib_heat_new(&desc, mass, s->nq, out);
    free(mass);
    return st;
}
