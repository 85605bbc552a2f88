/* Perplexity with llama-perplexity's protocol (docs/engine.md, section 6), and KL divergence of
 * the next-token distribution against a reference run. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

kvs_status kvs_ppl_chunk(kvs_llama *m, kvs_cache *cache, const int32_t *tokens, int n_ctx, int n_batch, int bos,
                         float *logp_out, const float *logp_ref, kvs_ppl_acc *acc) {
    if (!m || !cache || !tokens || !acc || n_ctx < 4 || n_batch < 1)
        return kvs_report(KVS_ERR_ARG, "ppl: bad argument (n_ctx %d, n_batch %d)", n_ctx, n_batch);
    const int V = kvs_llama_params(m)->n_vocab, first = n_ctx / 2;
    int32_t *tok = malloc((size_t)n_ctx * sizeof *tok);
    float *logits = malloc((size_t)n_batch * V * sizeof(float));
    if (!tok || !logits) {
        free(tok);
        free(logits);
        return kvs_report(KVS_ERR_NOMEM, "ppl: out of memory");
    }
    memcpy(tok, tokens, (size_t)n_ctx * sizeof *tok);
    if (bos >= 0) tok[0] = bos;
    kvs_cache_reset(cache);
    kvs_status s = KVS_OK;
    for (int b0 = 0; b0 < n_ctx && !s; b0 += n_batch) {
        const int n = n_ctx - b0 < n_batch ? n_ctx - b0 : n_batch;
        const int fl = first - b0 > 0 ? first - b0 : 0; /* first row of this batch that is scored */
        if ((s = kvs_llama_forward(m, cache, tok + b0, n, b0, fl < n ? fl : n, fl < n ? logits : NULL))) break;
        for (int r = fl; r < n; r++) {
            const int p = b0 + r;
            if (p > n_ctx - 2) break;
            const float *lg = logits + (size_t)(r - fl) * V;
            float mx = lg[0];
            for (int v = 1; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
            double sum = 0.0;
            for (int v = 0; v < V; v++) sum += expf(lg[v] - mx);
            const double lse = mx + log(sum);
            const double nll = lse - lg[tok[p + 1]];
            acc->nll += nll;
            acc->nll2 += nll * nll;
            acc->count++;
            const size_t row = (size_t)(p - first) * V;
            if (logp_out)
                for (int v = 0; v < V; v++) logp_out[row + v] = (float)(lg[v] - lse);
            if (logp_ref) {
                double kl = 0.0;
                for (int v = 0; v < V; v++) { /* both sides rounded to float as logp_out stores them */
                    const double lr = logp_ref[row + v];
                    kl += exp(lr) * (lr - (double)(float)(lg[v] - lse));
                }
                acc->kl += kl;
            }
        }
    }
    free(tok);
    free(logits);
    return s;
}

double kvs_ppl_value(const kvs_ppl_acc *a) { return a->count ? exp(a->nll / (double)a->count) : NAN; }

double kvs_ppl_error(const kvs_ppl_acc *a) {
    if (a->count < 2) return NAN;
    const double mean = a->nll / (double)a->count, mean2 = a->nll2 / (double)a->count;
    return kvs_ppl_value(a) * sqrt((mean2 - mean * mean) / (double)(a->count - 1));
}
