/* A second scalar reference for tests: the groups contract of the fast kernels, which round the
 * folded query (paired INT2/INT4 keys, G = 32) and the value weights (paired INT2/INT4 values) to
 * int8 before integer multiply-adds, the rounding residual added back at the middle code
 * (docs/kernels.md). The library's reference (attend_ref.c)
 * rounds nothing; this one rounds exactly as the fast kernels do, so their integer paths can be
 * checked to float precision instead of only within the rounding bound. */
#include <math.h>
#include <string.h>

#include "attn/attn.h"
#include "common/fp16.h"
#include "methods/methods.h"
#include "quant/quant.h"
#include "ref_int8.h"

static void groups_i8(const kvs_attn_job *j, int g0, int g1, kvs_partial *p) {
    const struct kvs_cache *c = j->c;
    const int d = c->d, g = c->g, G = c->G;
    const kvs_config *cfg = &c->cfg;
    const int kb = kvs_affine_bits(cfg->k_type), vb = kvs_affine_bits(cfg->v_type);
    const int kpair = kb && kvs_key_paired(kb, G), vpair = vb && kvs_val_paired(vb, G, d);
    float kd[1024], vd[1024], a[1024], s[256], w[256];
    int8_t a8[1024], w8[256];
    kvs_partial_init(j, p);
    for (int grp = g0; grp < g1; grp++) {
        const uint8_t *kp = j->blk[grp], *vp = kp + c->m.key.bytes;
        const float *norm = kvs_job_norm(j, grp);
        for (int i = j->i0; i < j->i1; i++) {
            const int nt = kvs_job_group_tokens(j, i, grp);
            if (nt <= 0) continue;
            for (int hh = 0; hh < g; hh++) {
                const float *qr = kvs_job_q(j, j->qr, i, hh);
                const size_t o = (size_t)i * g + hh;
                float *acc = p->acc + o * d;
                if (kpair) { /* s = tau n (scale_a sum_c a8_c code_ct + qr . O) */
                    const uint8_t *S = kp + (size_t)d * G * kb / 8, *O = S + 2 * (size_t)d;
                    float beta = 0.0f;
                    for (int x = 0; x < d; x++) {
                        a[x] = qr[x] * kvs_fp16_at(S, x);
                        beta += qr[x] * kvs_fp16_at(O, x);
                    }
                    const float sa = kvs_round_i8(a, d, a8);
                    for (int x = 0; x < d; x++) /* the residual goes back at the middle code */
                        beta += 0.5f * (float)((1 << kb) - 1) * (a[x] - sa * (float)a8[x]);
                    for (int t = 0; t < nt; t++) {
                        int32_t isum = 0;
                        for (int x = 0; x < d; x++) isum += a8[x] * (int32_t)kvs_get_code(kp, kvs_key_bit(kb, G, x, t), kb);
                        s[t] = c->m.tau * (norm ? norm[t] : 1.0f) * (sa * (float)isum + beta);
                    }
                } else {
                    for (int t = 0; t < nt; t++) {
                        kvs__block_key(&c->m, kp, norm, t, kd);
                        float dot = 0.0f;
                        for (int x = 0; x < d; x++) dot += qr[x] * kd[x];
                        s[t] = c->m.tau * dot;
                    }
                }
                kvs__ref_jensen(j, i, hh, kp, norm, nt, s);
                kvs__ref_softmax_tile(s, nt, &p->m[o], &p->l[o], acc, d);
                for (int t = nt; t < G; t++) s[t] = 0.0f; /* unseen rows of a partial group weigh 0 */
                if (vpair) { /* w_t = p_t S_tj rounded to int8 per channel group j */
                    const uint8_t *S = vp + (size_t)G * d * vb / 8, *O = S + 2 * (size_t)(d / G) * G;
                    for (int jg = 0; jg < d / G; jg++) {
                        float off = 0.0f;
                        for (int t = 0; t < G; t++) {
                            w[t] = s[t] * kvs_fp16_at(S, (size_t)jg * G + t);
                            off += s[t] * kvs_fp16_at(O, (size_t)jg * G + t);
                        }
                        const float sw = kvs_round_i8(w, G, w8);
                        for (int t = 0; t < G; t++) off += 0.5f * (float)((1 << vb) - 1) * (w[t] - sw * (float)w8[t]);
                        for (int x = jg * G; x < (jg + 1) * G; x++) {
                            int32_t isum = 0;
                            for (int t = 0; t < G; t++) isum += w8[t] * (int32_t)kvs_get_code(vp, kvs_val_bit(vb, G, d, t, x), vb);
                            acc[x] += sw * (float)isum + off;
                        }
                    }
                } else {
                    for (int t = 0; t < nt; t++) {
                        kvs__block_value(&c->m, kp, t, vd);
                        for (int x = 0; x < d; x++) acc[x] += s[t] * vd[x];
                    }
                }
            }
        }
    }
}

static void fp_i8(const kvs_attn_job *j, kvs_partial *p) { kvs_kernels_ref.fp(j, p); }

static const kvs_groups_entry i8_groups[] = {{KVS_LAYOUT_ANY, KVS_LAYOUT_ANY, 0, 0, groups_i8, "ref-int8"}};
const kvs_kernel_table kvs_kernels_ref_int8 = {"ref-int8", i8_groups, 1, fp_i8};
