/* Low-rank groups (StiefAttention, docs/methods/stiefel.md): attention over coefficient rows.
 *   key of token t of group grp (position pos = sinks + grp G + t):  k_t = R_pos (P_K c_t)
 *   s_t = tau * q . k_t        (q after RoPE; the key is rebuilt in scratch, never stored),
 *                              minus Jensen's term with jensen= (below)
 *   acc[0 .. r_V) += p_t c^V_t (values summed as coefficients; the driver's merge projects with P_V
 *                               once per output, as it turns a Hadamard-rotated accumulator back)
 * Each token's key is rebuilt once per work item and shared by the item's queries and heads. The
 * loop is shared; the reference and the AVX2 variant (attend_lowrank_avx2.c) differ in the three
 * inner operations only. */
#include <stdlib.h>

#include "../methods/methods.h"
#include "../common/fp16.h"
#include "../quant/formats.h"
#include "../quant/quant.h"
#include "attn.h"

/* Affine keys store a step and an offset per coefficient for the group's G tokens: convert them
 * once per group, not once per token (kvs_dequant_key would convert 2 rk fp16 values per token).
 * out [n][r]; the same values as kvs_dequant_key. */
static void decode_key_group(int b, const uint8_t *kp, int G, int r, int n, float *out) {
    const uint8_t *S = kp + (size_t)r * G * b / 8, *O = S + 2 * (size_t)r;
    float sc[1024], of[1024];
    for (int c = 0; c < r; c++) sc[c] = kvs_fp16_at(S, (size_t)c), of[c] = kvs_fp16_at(O, (size_t)c);
    if (kvs_key_paired(b, G)) { /* walk the bytes (formats.h): chunk `sub` holds channels sub*8/b.., byte p, shift s */
        const int cps = 8 / b;
        const unsigned mask = (1u << b) - 1;
        for (int sub = 0; sub < r / cps; sub++)
            for (int p = 0; p < 32; p++) {
                const unsigned byte = kp[(size_t)sub * 32 + p];
                for (int s = 0; s < cps; s++) {
                    const int t = (s % 2) * 16 + p / 2, c = sub * cps + 2 * (s / 2) + (p % 2);
                    if (t < n) out[(size_t)t * r + c] = (float)((byte >> (b * s)) & mask) * sc[c] + of[c];
                }
            }
        return;
    }
    for (int c = 0; c < r; c++)
        for (int t = 0; t < n; t++) out[(size_t)t * r + c] = (float)kvs_get_code(kp, kvs_key_bit(b, G, c, t), b) * sc[c] + of[c];
}

/* Jensen's correction on rebuilt scores (docs/methods/jensen.md, "low-rank keys"): the stored
 * coefficients carry the rounding noise eps_j (step delta_j), and the score reads them through
 * q . R_pos P eps = u . eps with u = P^T R_pos^T q, so the term is the full-width one with u in
 * place of the query and the coefficient steps in place of the channel steps. u depends on the
 * key's position: r_K dot products of length d per (query, key), more than the rebuild itself. */
static void jensen(const kvs_attn_job *j, const kvs_lowrank_ops *ops, const uint8_t *blk, int grp, const float *q, int nt,
                   float *s) {
    const kvs_method *m = j->m;
    const int d = m->d, G = m->G, rk = m->key.dim;
    float x[1024], u[1024], delta[1024];
    for (int t = 0; t < nt; t++) {
        const float *cs = j->c->rope_cs + ((size_t)m->sinks + (size_t)grp * G + t) * d;
        for (int p = 0; p < d / 2; p++) { /* R_pos^T q: turned back by the key's angles */
            const float c = cs[2 * p], sn = cs[2 * p + 1], a = q[2 * p], b = q[2 * p + 1];
            x[2 * p] = a * c + b * sn, x[2 * p + 1] = b * c - a * sn;
        }
        for (int r = 0; r < rk; r++) u[r] = ops->dot(j->pkt + (size_t)r * d, x, d);
        kvs_key_delta(m->key.type, blk, G, rk, t, delta);
        if (m->jensen == KVS_JENSEN_TAYLOR) {
            float b = 0.0f;
            for (int r = 0; r < rk; r++) b += u[r] * u[r] * delta[r] * delta[r];
            s[t] -= m->lambda * m->tau * m->tau / 24.0f * b;
        } else {
            s[t] -= kvs_jensen_exact(u, delta, rk, m->tau, 1.0f, m->lambda);
        }
    }
}

void kvs__lowrank_groups(const kvs_attn_job *j, int g0, int g1, kvs_partial *p, const kvs_lowrank_ops *ops) {
    const kvs_method *m = j->m;
    const int d = m->d, g = m->g, G = m->G, rk = m->key.dim, rv = m->value.dim;
    kvs_partial_init(j, p);
    const int kbits = m->key.bits; /* affine keys: decoded a group at a time (below) */
    float *kb = malloc(sizeof(float) * ((size_t)G * d + (size_t)G * rv + (size_t)d + (size_t)g * G + (kbits ? (size_t)G * rk : 0)));
    const float **qs = malloc(sizeof(float *) * (size_t)g);
    if (!kb || !qs) { /* a few KB; should it fail, this item adds nothing (l = 0) */
        free(kb), free(qs);
        return;
    }
    float *vc = kb + (size_t)G * d, *coef = vc + (size_t)G * rv, *S = coef + d, *kc = S + (size_t)g * G;
    for (int grp = g0; grp < g1; grp++) {
        const uint8_t *blk = j->blk[grp];
        if (!blk) continue; /* evicted */
        int nmax = 0; /* the rows some query of the item sees */
        for (int i = j->i0; i < j->i1; i++) {
            const int x = kvs_job_group_tokens(j, i, grp);
            nmax = x > nmax ? x : nmax;
        }
        if (kbits) decode_key_group(kbits, blk, G, rk, nmax, kc);
        for (int t = 0; t < nmax; t++) {
            float *k = kb + (size_t)t * d;
            const float *ct = coef;
            if (kbits) ct = kc + (size_t)t * rk;
            else ops->dequant(m->key.type, 1, blk, G, rk, t, coef);
            ops->rebuild(j->pkt, ct, d, rk, k);
            ops->rope(k, d, j->c->rope_cs + ((size_t)m->sinks + (size_t)grp * G + t) * d);
            ops->dequant(m->value.type, 0, blk + m->key.bytes, G, rv, t, vc + (size_t)t * rv);
        }
        for (int i = j->i0; i < j->i1; i++) {
            const int nt = kvs_job_group_tokens(j, i, grp);
            if (nt <= 0) continue;
            for (int hh = 0; hh < g; hh++) qs[hh] = kvs_job_q(j, j->q, i, hh);
            ops->scores(qs, g, kb, nt, d, m->tau, S, G); /* the g heads of the KV head in one pass over the keys */
            for (int hh = 0; hh < g; hh++) {
                const size_t o = (size_t)i * g + hh;
                float *acc = p->acc + o * d, *s = S + (size_t)hh * G;
                if (m->jensen != KVS_JENSEN_OFF) jensen(j, ops, blk, grp, qs[hh], nt, s);
                kvs__ref_softmax_tile(s, nt, &p->m[o], &p->l[o], acc, rv);
                for (int t = 0; t < nt; t++) ops->axpy(acc, s[t], vc + (size_t)t * rv, rv);
            }
        }
    }
    free(kb), free(qs);
}

/* k[d] = sum_r c[r] Pt[r][:] */
static void rebuild_ref(const float *Pt, const float *c, int d, int r, float *k) {
    for (int x = 0; x < d; x++) k[x] = 0.0f;
    for (int a = 0; a < r; a++)
        for (int x = 0; x < d; x++) k[x] += c[a] * Pt[(size_t)a * d + x];
}
static float dot_ref(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
static void axpy_ref(float *acc, float w, const float *x, int n) {
    for (int i = 0; i < n; i++) acc[i] += w * x[i];
}

static void scores_ref(const float *const *q, int g, const float *k, int nt, int d, float tau, float *s, int G) {
    for (int h = 0; h < g; h++)
        for (int t = 0; t < nt; t++) s[(size_t)h * G + t] = tau * dot_ref(q[h], k + (size_t)t * d, d);
}

void kvs__lowrank_dequant_ref(kvs_type t, int is_key, const uint8_t *part, int G, int r, int tok, float *out) {
    if (is_key) kvs_dequant_key(t, part, G, r, tok, out);
    else kvs_dequant_value(t, part, G, r, tok, out);
}

static const kvs_lowrank_ops ref_ops = {rebuild_ref, kvs_rope_apply, kvs__lowrank_dequant_ref, scores_ref, dot_ref, axpy_ref};

void kvs__groups_lowrank_ref(const kvs_attn_job *j, int g0, int g1, kvs_partial *p) { kvs__lowrank_groups(j, g0, g1, p, &ref_ops); }
