/* The reference kernels: plain C, one token at a time, dequantize-then-dot. They define what the
 * fast kernels must compute. Shapes: d = head_dim, g = query heads per KV head, G = group. */
#include <math.h>
#include <string.h>

#include "../methods/methods.h"
#include "../quant/quant.h"
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

void kvs__ref_jensen(const kvs_attn_job *j, int i, int hh, const uint8_t *blk, const float *norm, int nt, float *s) {
    const kvs_method *m = j->m;
    const int d = m->d;
    float delta[1024];
    if (m->jensen == KVS_JENSEN_OFF) return;
    const float *qr = kvs_job_q(j, j->qr, i, hh);
    for (int t = 0; t < nt; t++) {
        const float n = norm ? norm[t] : 1.0f;
        kvs__block_key_delta(m, blk, t, delta);
        if (m->jensen == KVS_JENSEN_TAYLOR) {
            const float *wj = kvs_job_q(j, j->w, i, hh);
            float b = 0.0f;
            for (int x = 0; x < d; x++) b += wj[x] * delta[x] * delta[x];
            s[t] -= n * n * b;
        } else {
            s[t] -= kvs_jensen_exact(qr, delta, d, m->tau, n, m->lambda);
        }
    }
}

void kvs__ref_softmax_tile(float *s, int nt, float *m, float *l, float *acc, int d) {
    float mt = s[0];
    for (int t = 1; t < nt; t++) mt = s[t] > mt ? s[t] : mt;
    if (mt > *m) {
        const float r = expf(*m - mt); /* 0 while m = -inf */
        *l *= r;
        for (int x = 0; x < d; x++) acc[x] *= r;
        *m = mt;
    }
    for (int t = 0; t < nt; t++) {
        s[t] = expf(s[t] - *m);
        *l += s[t];
    }
}

/* The groups contract, one group (G tokens) at a time, in the stored basis:
 *   s_t = tau * qr . k^_t - b_t, k^_t the dequantized key times its OScaR norm n_t, b_t the
 *         Jensen term (taylor: n_t^2 sum_c w_c delta_c^2; exact: lambda sum_c ln sinhc(a_c));
 *   softmax over the tile's visible tokens, online across tiles;
 *   acc += sum_t p_t v^_t, v^_t the dequantized value.
 * Everything in float, nothing rounded to integers: the fast kernels are judged against this. */
static void groups_ref(const kvs_attn_job *j, int g0, int g1, kvs_partial *p) {
    const kvs_method *m = j->m;
    const int d = m->d, g = m->g;
    float kd[1024], vd[1024], s[256];
    kvs_partial_init(j, p);
    for (int grp = g0; grp < g1; grp++) {
        const uint8_t *blk = j->blk[grp];
        if (!blk) continue; /* evicted before this chunk */
        const float *norm = kvs_job_norm(j, grp);
        for (int i = j->i0; i < j->i1; i++) {
            const int nt = kvs_job_group_tokens(j, i, grp);
            if (nt <= 0) continue;
            for (int hh = 0; hh < g; hh++) {
                const float *qr = kvs_job_q(j, j->qr, i, hh);
                const size_t o = (size_t)i * g + hh;
                float *acc = p->acc + o * d;
                for (int t = 0; t < nt; t++) {
                    kvs__block_key(m, blk, norm, t, kd);
                    s[t] = m->tau * dot(qr, kd, d);
                }
                kvs__ref_jensen(j, i, hh, blk, norm, nt, s);
                kvs__ref_softmax_tile(s, nt, &p->m[o], &p->l[o], acc, d);
                for (int t = 0; t < nt; t++) {
                    kvs__block_value(m, blk, t, vd);
                    for (int x = 0; x < d; x++) acc[x] += s[t] * vd[x];
                }
            }
        }
    }
}

/* Sinks, window and the chunk itself: exact fp32 scores, one token at a time. */
static void fp_ref(const kvs_attn_job *j, kvs_partial *p) {
    const struct kvs_cache *c = j->c;
    const int d = j->m->d, g = j->m->g;
    kvs_rows rows[5];
    for (int i = j->i0; i < j->i1; i++) {
        const int nr = kvs__view_rows(c, j->view, j->layer, j->kvh, j->k, j->v, i, rows);
        for (int hh = 0; hh < g; hh++) {
            const float *q = kvs_job_q(j, j->q, i, hh);
            float m = -INFINITY, l = 0.0f, *acc = p->acc + ((size_t)i * g + hh) * d;
            memset(acc, 0, (size_t)d * sizeof(float));
            for (int r = 0; r < nr; r++)
                for (int t = 0; t < rows[r].n; t++) {
                    const float *kr = rows[r].k + (size_t)t * rows[r].stride, *vr = rows[r].v + (size_t)t * rows[r].stride;
                    online_update(&m, &l, acc, d, j->m->tau * dot(q, kr, d), vr);
                }
            p->m[i * g + hh] = m;
            p->l[i * g + hh] = l;
        }
    }
}

/* One groups kernel for every codec: the reference defines them all. */
static const kvs_groups_entry ref_groups[] = {
    {KVS_LAYOUT_LOWRANK, KVS_LAYOUT_LOWRANK, 0, 0, kvs__groups_lowrank_ref, "lowrank ref"},
    {KVS_LAYOUT_ANY, KVS_LAYOUT_ANY, 0, 0, groups_ref, "ref"}};
const kvs_kernel_table kvs_kernels_ref = {"ref", ref_groups, 2, fp_ref};
