/* The reference kernels: plain C, one token at a time, dequantize-then-dot. They define what the
 * fast kernels must compute. Shapes: d = head_dim, g = query heads per KV head, G = group. */
#include <math.h>
#include <string.h>

#include "../common/fp16.h"
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

/* The groups contract, one group (G tokens) at a time:
 *   keys:   s_t = tau * qr . k^_t - b_t (Jensen), k^_t the dequantized key times its norm; for the
 *           paired INT2/INT4 key layout the folded query a_c = qr_c * S_c is first rounded to int8
 *           (kvs_round_i8) and s_t = tau * n_t * (scale_a * sum_c a8_c code_ct + qr . O) - b_t;
 *   softmax over the tile, online across tiles;
 *   values: acc += sum_t p_t v^_t; for the paired value layout the weights w_t = p_t * S_tj of
 *           each channel group j are rounded to int8 too: acc_c += scale_w * sum_t w8_t code_tc
 *           + sum_t p_t O_tj. */
static void groups_ref(const kvs_attn_job *j, int g0, int g1, kvs_partial *p) {
    const struct kvs_cache *c = j->c;
    const int d = c->d, g = c->g, G = c->G;
    const kvs_config *cfg = &c->cfg;
    const int kb = kvs_affine_bits(cfg->k_type), vb = kvs_affine_bits(cfg->v_type);
    const int kpair = kb && kvs_key_paired(kb, G), vpair = vb && kvs_val_paired(vb, G, d);
    float kd[1024], vd[1024], delta[1024], a[1024], s[256], w[256];
    int8_t a8[1024], w8[256];
    for (int x = 0; x < j->n * g; x++) {
        p->m[x] = -INFINITY;
        p->l[x] = 0.0f;
    }
    memset(p->acc, 0, (size_t)j->n * g * d * sizeof(float));
    for (int grp = g0; grp < g1; grp++) {
        const uint8_t *kp = kvs_stream_at(c, j->layer, j->kvh)->blk[grp], *vp = kp + c->kbytes;
        const float *norm = cfg->scale == KVS_SCALE_TOKEN ? c->layers[j->layer].norm[grp] : NULL;
        for (int i = 0; i < j->n; i++)
            for (int hh = 0; hh < g; hh++) {
                const float *qr = kvs_job_q(j, j->qr, i, hh);
                const size_t o = (size_t)i * g + hh;
                float *acc = p->acc + o * d;
                if (kpair) {
                    const uint8_t *S = kp + (size_t)d * G * kb / 8, *O = S + 2 * (size_t)d;
                    float beta = 0.0f;
                    for (int x = 0; x < d; x++) {
                        a[x] = qr[x] * kvs_fp16_at(S, x);
                        beta += qr[x] * kvs_fp16_at(O, x);
                    }
                    const float sa = kvs_round_i8(a, d, a8);
                    for (int t = 0; t < G; t++) {
                        int32_t isum = 0;
                        for (int x = 0; x < d; x++) isum += a8[x] * (int32_t)kvs_get_code(kp, kvs_key_bit(kb, G, x, t), kb);
                        s[t] = c->tau * (norm ? norm[t] : 1.0f) * (sa * (float)isum + beta);
                    }
                } else {
                    for (int t = 0; t < G; t++) {
                        kvs__group_key(c, j->layer, j->kvh, grp, t, kd);
                        s[t] = c->tau * dot(qr, kd, d);
                    }
                }
                if (cfg->jensen != KVS_JENSEN_OFF)
                    for (int t = 0; t < G; t++) {
                        const float n = norm ? norm[t] : 1.0f;
                        kvs__group_key_delta(c, j->layer, j->kvh, grp, t, delta);
                        if (cfg->jensen == KVS_JENSEN_TAYLOR) {
                            const float *wj = kvs_job_q(j, j->w, i, hh);
                            float b = 0.0f;
                            for (int x = 0; x < d; x++) b += wj[x] * delta[x] * delta[x];
                            s[t] -= n * n * b;
                        } else {
                            s[t] -= kvs_jensen_exact(qr, delta, d, c->tau, n, cfg->lambda);
                        }
                    }
                /* softmax over the tile */
                float mt = s[0];
                for (int t = 1; t < G; t++) mt = s[t] > mt ? s[t] : mt;
                if (mt > p->m[o]) {
                    const float r = expf(p->m[o] - mt);
                    p->l[o] *= r;
                    for (int x = 0; x < d; x++) acc[x] *= r;
                    p->m[o] = mt;
                }
                for (int t = 0; t < G; t++) {
                    s[t] = expf(s[t] - p->m[o]);
                    p->l[o] += s[t];
                }
                if (vpair) {
                    const uint8_t *S = vp + (size_t)G * d * vb / 8, *O = S + 2 * (size_t)(d / G) * G;
                    for (int jg = 0; jg < d / G; jg++) {
                        float off = 0.0f;
                        for (int t = 0; t < G; t++) {
                            w[t] = s[t] * kvs_fp16_at(S, (size_t)jg * G + t);
                            off += s[t] * kvs_fp16_at(O, (size_t)jg * G + t);
                        }
                        const float sw = kvs_round_i8(w, G, w8);
                        for (int x = jg * G; x < (jg + 1) * G; x++) {
                            int32_t isum = 0;
                            for (int t = 0; t < G; t++) isum += w8[t] * (int32_t)kvs_get_code(vp, kvs_val_bit(vb, G, d, t, x), vb);
                            acc[x] += sw * (float)isum + off;
                        }
                    }
                } else {
                    for (int t = 0; t < G; t++) {
                        kvs__group_value(c, j->layer, j->kvh, grp, t, vd);
                        for (int x = 0; x < d; x++) acc[x] += s[t] * vd[x];
                    }
                }
            }
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
