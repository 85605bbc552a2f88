/* The reference kernels: plain C, one token at a time, dequantize-then-dot. They define what the
 * fast kernels must compute. Shapes: d = head_dim, g = query heads per KV head, G = group. */
#include <math.h>
#include <string.h>

#include "../methods/methods.h"
#include "attn.h"

/* Online softmax with one new score s and value row v[d]. */
static void online_update(float *m, float *l, float *acc, int d, float s, const float *v) {
    if (s > *m) {
        const float r = expf(*m - s); /* 0 when m = -inf */
        *l *= r;
        for (int i = 0; i < d; i++) acc[i] *= r;
        *m = s;
    }
    const float p = expf(s - *m);
    *l += p;
    for (int i = 0; i < d; i++) acc[i] += p * v[i];
}

static float dot(const float *a, const float *b, int d) {
    float s = 0.0f;
    for (int i = 0; i < d; i++) s += a[i] * b[i];
    return s;
}

static void groups_ref(const kvs_attn_job *j, int g0, int g1, kvs_partial *p) {
    const struct kvs_cache *c = j->c;
    const int d = c->d, g = c->g, G = c->G;
    const kvs_config *cfg = &c->cfg;
    float kb[1024], vb[1024], delta[1024];
    for (int i = 0; i < j->n; i++)
        for (int hh = 0; hh < g; hh++) {
            const float *qr = kvs_job_q(j, j->qr, i, hh);
            const float *w = j->w ? kvs_job_q(j, j->w, i, hh) : NULL;
            float m = -INFINITY, l = 0.0f, *acc = p->acc + ((size_t)i * g + hh) * d;
            memset(acc, 0, (size_t)d * sizeof(float));
            for (int grp = g0; grp < g1; grp++)
                for (int t = 0; t < G; t++) {
                    kvs__group_key(c, j->layer, j->kvh, grp, t, kb);
                    float s = c->tau * dot(qr, kb, d);
                    if (cfg->jensen != KVS_JENSEN_OFF) {
                        const float n = cfg->scale == KVS_SCALE_TOKEN ? c->layers[j->layer].norm[grp][t] : 1.0f;
                        kvs__group_key_delta(c, j->layer, j->kvh, grp, t, delta);
                        if (cfg->jensen == KVS_JENSEN_TAYLOR) {
                            float b = 0.0f;
                            for (int x = 0; x < d; x++) b += w[x] * delta[x] * delta[x];
                            s -= n * n * b;
                        } else {
                            s -= kvs_jensen_exact(qr, delta, d, c->tau, n, cfg->lambda);
                        }
                    }
                    kvs__group_value(c, j->layer, j->kvh, grp, t, vb);
                    online_update(&m, &l, acc, d, s, vb);
                }
            p->m[i * g + hh] = m;
            p->l[i * g + hh] = l;
        }
}

static void fp_ref(const kvs_attn_job *j, kvs_partial *p) {
    const struct kvs_cache *c = j->c;
    const int d = c->d, g = c->g;
    const kvs_layer *ly = &c->layers[j->layer];
    const kvs_stream *s = kvs_stream_at(c, j->layer, j->kvh);
    for (int i = 0; i < j->n; i++)
        for (int hh = 0; hh < g; hh++) {
            const float *q = kvs_job_q(j, j->q, i, hh);
            float m = -INFINITY, l = 0.0f, *acc = p->acc + ((size_t)i * g + hh) * d;
            memset(acc, 0, (size_t)d * sizeof(float));
            for (int t = 0; t < ly->n_sink; t++)
                online_update(&m, &l, acc, d, c->tau * dot(q, s->sink_k + (size_t)t * d, d), s->sink_v + (size_t)t * d);
            for (int t = 0; t < ly->n_win; t++)
                online_update(&m, &l, acc, d, c->tau * dot(q, s->win_k + (size_t)t * d, d), s->win_v + (size_t)t * d);
            for (int t = 0; t <= i; t++)
                online_update(&m, &l, acc, d, c->tau * dot(q, kvs_job_kv(j, j->k, t), d), kvs_job_kv(j, j->v, t));
            p->m[i * g + hh] = m;
            p->l[i * g + hh] = l;
        }
}

const kvs_kernel_table kvs_kernels_ref = {"ref", groups_ref, fp_ref};
