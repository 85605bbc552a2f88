/* OScaR on append (docs/methods/oscar.md): Hadamard rotation of keys and values, one L2 norm per
 * token over all KV heads of the layer, then the codecs of quant/. */
#include "pack.h"

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

void kvs__pack_group(const struct kvs_cache *c, float *k, float *v, uint8_t *const *blocks, float *norm) {
    const int G = c->G, d = c->d;
    transform_keys(c, k, G, norm);
    rotate_values(c, v, G);
    for (int h = 0; h < c->n_kv; h++) {
        kvs_quant_keys(c->m.key.type, k + (size_t)h * G * d, G, d, blocks[h]);
        kvs_quant_values(c->m.value.type, v + (size_t)h * G * d, G, d, blocks[h] + c->m.key.bytes);
    }
}

void kvs__pack_token(const struct kvs_cache *c, float *k, float *v, uint8_t *const *blocks, int row, float *norm) {
    const int G = c->G, d = c->d;
    transform_keys(c, k, 1, norm ? norm + row : NULL);
    rotate_values(c, v, 1);
    for (int h = 0; h < c->n_kv; h++) {
        kvs_quant_key_token(c->m.key.type, k + (size_t)h * d, G, d, row, blocks[h]);
        kvs_quant_value_token(c->m.value.type, v + (size_t)h * d, G, d, row, blocks[h] + c->m.key.bytes);
    }
}
