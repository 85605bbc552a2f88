/* Retrieval-head statistics (docs/methods/heatkv.md, section 7.4, RazorAttention's probe): the model
 * reads a sequence of random tokens twice; in the second copy, a query at the repeat of position j
 * can look back at position j itself (echo) or at j + 1, the token that came next last time
 * (induction: what copying a fact out of the context needs). Per (layer, KV head), the mean over
 * those queries of the attention mass on the two targets, aggregated over the KV head's query heads
 * by mean and by max. Prose does not show these heads: their mass on far blocks is small. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "key_log.h"
#include "model.h"

struct kvs_retrieval_stats {
    int L, NH, H, d, period, ctx, texts;
    float tau;
    double *sum;    /* [2 agg][2 kind: echo, induction][L][H] */
    long *count;    /* [L] queries counted per layer */
    kvs_key_log log; /* keys of the current text */
    kvs_status err;
};

kvs_status kvs_retrieval_stats_new(int n_layers, int n_heads, int n_kv_heads, int head_dim, int period,
                                   kvs_retrieval_stats **out) {
    *out = NULL;
    if (n_layers < 1 || n_kv_heads < 1 || n_heads % n_kv_heads || head_dim < 1 || period < 4 || period > (1 << 20))
        return kvs_report(KVS_ERR_ARG, "calibrate: bad shapes or period %d for retrieval statistics", period);
    kvs_retrieval_stats *s = calloc(1, sizeof *s);
    if (!s) return kvs_report(KVS_ERR_NOMEM, "calibrate: out of memory");
    s->L = n_layers, s->NH = n_heads, s->H = n_kv_heads, s->d = head_dim, s->period = period;
    s->ctx = 1 + 2 * period; /* BOS, the random tokens, the same tokens again */
    s->tau = 1.0f / sqrtf((float)head_dim);
    s->sum = calloc(4 * (size_t)n_layers * n_kv_heads, sizeof(double));
    s->count = calloc((size_t)n_layers, sizeof(long));
    const int have_log = kvs__key_log_init(&s->log, n_layers, n_kv_heads, head_dim, s->ctx) == KVS_OK;
    if (!have_log || !s->sum || !s->count) {
        kvs_retrieval_stats_free(s);
        return kvs_report(KVS_ERR_NOMEM, "calibrate: out of memory for retrieval statistics");
    }
    *out = s;
    return KVS_OK;
}

void kvs_retrieval_stats_free(kvs_retrieval_stats *s) {
    if (!s) return;
    kvs__key_log_free(&s->log);
    free(s->sum), free(s->count);
    free(s);
}

int kvs_retrieval_stats_ctx(const kvs_retrieval_stats *s) { return s->ctx; }

void kvs_retrieval_stats_begin(kvs_retrieval_stats *s) {
    kvs__key_log_begin(&s->log);
    s->texts++;
}

void kvs_retrieval_observe(void *user, int layer, int n, int pos0, const float *q, const float *k) {
    kvs_retrieval_stats *s = user;
    if (s->err) return;
    const float *K = kvs__key_log_add(&s->log, layer, n, pos0, k);
    if (!K) {
        s->err = KVS_ERR_ARG;
        return;
    }
    const int H = s->H, NH = s->NH, d = s->d, g = NH / H, T = s->period;
    float *rows = malloc((size_t)H * (pos0 + n) * sizeof(float));
    if (!rows) {
        s->err = kvs_report(KVS_ERR_NOMEM, "calibrate: out of memory");
        return;
    }
    long counted = 0;
    for (int i = 0; i < n; i++) counted += pos0 + i > T + 1 && pos0 + i < s->ctx - 1; /* echo j and induction j+1 exist */
    s->count[layer] += counted;
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (int h = 0; h < H; h++) {
        float *row = rows + (size_t)h * (pos0 + n);
        for (int i = 0; i < n; i++) {
            const int P = pos0 + i, j = P - T; /* the first copy's position of this token */
            if (j < 2 || P >= s->ctx - 1) continue;
            double agg[2][2] = {{0, 0}, {0, 0}}; /* [mean, max][echo, induction] */
            for (int hh = 0; hh < g; hh++) {
                const float *qv = q + ((size_t)i * NH + (size_t)h * g + hh) * d;
                cblas_sgemv(CblasRowMajor, CblasNoTrans, P + 1, d, s->tau, K + (size_t)h * d, H * d, qv, 1, 0.0f, row, 1);
                float mx = row[0];
                for (int x = 1; x <= P; x++) mx = row[x] > mx ? row[x] : mx;
                double z = 0.0;
                for (int x = 0; x <= P; x++) z += (row[x] = expf(row[x] - mx));
                const double echo = row[j] / z, ind = row[j + 1] / z;
                agg[0][0] += echo / g, agg[0][1] += ind / g;
                agg[1][0] = echo > agg[1][0] ? echo : agg[1][0];
                agg[1][1] = ind > agg[1][1] ? ind : agg[1][1];
            }
            for (int a = 0; a < 2; a++)
                for (int kind = 0; kind < 2; kind++) s->sum[(((size_t)a * 2 + kind) * s->L + layer) * H + h] += agg[a][kind];
        }
    }
    free(rows);
}

kvs_status kvs_retrieval_stats_error(const kvs_retrieval_stats *s) { return s->err; }

void kvs_retrieval_stats_scores(const kvs_retrieval_stats *s, double *echo, double *induction) {
    const size_t U = (size_t)s->L * s->H;
    for (int a = 0; a < 2; a++)
        for (size_t u = 0; u < U; u++) {
            const long c = s->count[u / s->H];
            echo[a * U + u] = c ? s->sum[((size_t)a * 2 + 0) * U + u] / c : 0.0;
            induction[a * U + u] = c ? s->sum[((size_t)a * 2 + 1) * U + u] / c : 0.0;
        }
}
