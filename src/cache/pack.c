/* OScaR on append (docs/methods/oscar.md): Hadamard rotation of keys and values, one L2 norm per
 * token over all KV heads of the layer, then the codecs of quant/. */
#include "pack.h"

#include <string.h>

#include "../methods/methods.h"
#include "../quant/quant.h"

/* Rotate rows x[n][d] (stride d) and, with scale=token, divide token t of every head by the norm
 * of that token over all heads. x: [H][n][d]; the norm of token t over heads is written to norm[t]. */
static void transform_keys(const struct kvs_cache *c, float *x, int n, float *norm) {
    const int H = c->n_kv, d = c->d;
    if (c->m.rotate)
        for (int r = 0; r < H * n; r++) kvs_fwht(x + (size_t)r * d, d);
    if (!norm) return;
    for (int t = 0; t < n; t++) {
        norm[t] = kvs_oscar_norm(x + (size_t)t * d, H, d, (size_t)n * d);
        const float inv = 1.0f / norm[t];
        for (int h = 0; h < H; h++) {
            float *r = x + ((size_t)h * n + t) * d;
            for (int i = 0; i < d; i++) r[i] *= inv;
        }
    }
}

static void rotate_values(const struct kvs_cache *c, float *x, int n) {
    if (c->m.rotate)
        for (int r = 0; r < c->n_kv * n; r++) kvs_fwht(x + (size_t)r * c->d, c->d);
}

static void lowrank_group(const struct kvs_cache *c, int layer, long long pos0, float *k, float *v, uint8_t *const *blocks);

void kvs__pack_group(const struct kvs_cache *c, int layer, long long pos0, float *k, float *v, uint8_t *const *blocks, float *norm) {
    const int G = c->G, d = c->d;
    if (kvs_layer_plan(c, layer)->key.layout == KVS_LAYOUT_LOWRANK) {
        lowrank_group(c, layer, pos0, k, v, blocks);
        return;
    }
    transform_keys(c, k, G, norm);
    rotate_values(c, v, G);
    for (int h = 0; h < c->n_kv; h++) {
        kvs_quant_keys(c->m.key.type, k + (size_t)h * G * d, G, d, blocks[h]);
        kvs_quant_values(c->m.value.type, v + (size_t)h * G * d, G, d, blocks[h] + c->m.key.bytes);
    }
}

/* c[r] = P^T x for a basis P [d][r] */
static void coefficients(const float *P, const float *x, int d, int r, float *c) {
    for (int j = 0; j < r; j++) c[j] = 0.0f;
    for (int t = 0; t < d; t++)
        for (int j = 0; j < r; j++) c[j] += P[(size_t)t * r + j] * x[t];
}
/* the same from the transpose Pt [r][d] */
static void coefficients_t(const float *Pt, const float *x, int d, int r, float *c) {
    for (int j = 0; j < r; j++) {
        float a = 0.0f;
        for (int t = 0; t < d; t++) a += Pt[(size_t)j * d + t] * x[t];
        c[j] = a;
    }
}

/* affine INTb coefficients (keys per coefficient over the G tokens, values per token): the G
 * tokens' coefficients first, then the codecs on [G][rank] as on [G][d] */
static void lowrank_group(const struct kvs_cache *c, int layer, long long pos0, float *k, float *v, uint8_t *const *blocks) {
    const int G = c->G, d = c->d;
    const kvs_method *m = kvs_layer_plan(c, layer);
    const int rk = m->key.dim, rv = m->value.dim;
    for (int h = 0; h < c->n_kv; h++) {
        const kvs_stream *s = kvs_stream_at(c, layer, h);
        float *kh = k + (size_t)h * G * d, *vh = v + (size_t)h * G * d;
        for (int t = 0; t < G; t++) { /* in place: row t's coefficients fit in the first rank floats of row t */
            float coef[1024];
            kvs_rope_rows(kh + (size_t)t * d, 1, 1, d, -(pos0 + t), m->rope_base);
            coefficients_t(s->pkt, kh + (size_t)t * d, d, rk, coef);
            memcpy(kh + (size_t)t * rk, coef, sizeof(float) * rk); /* rows packed to [G][rk]: t * rk <= t * d */
            coefficients(s->pv, vh + (size_t)t * d, d, rv, coef);
            memcpy(vh + (size_t)t * rv, coef, sizeof(float) * rv);
        }
        kvs_quant_keys(m->key.type, kh, G, rk, blocks[h]);
        kvs_quant_values(m->value.type, vh, G, rv, blocks[h] + m->key.bytes);
    }
}

void kvs__pack_token(const struct kvs_cache *c, int layer, long long pos, float *k, float *v, uint8_t *const *blocks,
                     int row, float *norm) {
    const int G = c->G, d = c->d;
    const kvs_method *m = kvs_layer_plan(c, layer);
    if (m->key.layout == KVS_LAYOUT_LOWRANK) { /* no rotation, norm or Jensen with low rank (validated) */
        const int rk = m->key.dim, rv = m->value.dim;
        float coef[1024];
        for (int h = 0; h < c->n_kv; h++) {
            const kvs_stream *s = kvs_stream_at(c, layer, h);
            float *kh = k + (size_t)h * d;
            kvs_rope_rows(kh, 1, 1, d, -pos, m->rope_base); /* the cache holds keys after RoPE: turn back */
            coefficients_t(s->pkt, kh, d, rk, coef);
            kvs_quant_key_token(m->key.type, coef, G, rk, row, blocks[h]);
            coefficients(s->pv, v + (size_t)h * d, d, rv, coef);
            kvs_quant_value_token(m->value.type, coef, G, rv, row, blocks[h] + m->key.bytes);
        }
        return;
    }
    transform_keys(c, k, 1, norm ? norm + row : NULL);
    rotate_values(c, v, 1);
    for (int h = 0; h < c->n_kv; h++) {
        kvs_quant_key_token(c->m.key.type, k + (size_t)h * d, G, d, row, blocks[h]);
        kvs_quant_value_token(c->m.value.type, v + (size_t)h * d, G, d, row, blocks[h] + c->m.key.bytes);
    }
}
