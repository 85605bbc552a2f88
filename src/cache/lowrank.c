/* The low-rank part of a config and the cache's copy of its bases (lowrank.h). */
#include "lowrank.h"

#include <string.h>

#include "../calib/calib.h"
#include "../common/status.h"

kvs_status kvs__lowrank_validate(const kvs_config *c) {
#define BAD(...) return kvs_report(KVS_ERR_CONFIG, __VA_ARGS__)
    if (!c->rank_k && !c->rank_v) return KVS_OK;
    if (c->rank_k < 1 || c->rank_v < 1 || c->rank_k > c->head_dim || c->rank_v > c->head_dim)
        BAD("config: stiefel=%d/%d: ranks must be in 1..head_dim=%d", c->rank_k, c->rank_v, c->head_dim);
    if (c->rope != KVS_ROPE_ADJACENT)
        BAD("config: stiefel= needs rope=adjacent (the key basis acts before RoPE, so the cache applies it)");
    /* coefficients are per-token rows: fp32, fp16, or llama.cpp's q8_0 / q4_0 blocks of 32 */
    const int kq = c->k_type == KVS_TYPE_Q8_0 || c->k_type == KVS_TYPE_Q4_0, vq = c->v_type == KVS_TYPE_Q8_0 || c->v_type == KVS_TYPE_Q4_0;
    if ((!kq && c->k_type != KVS_TYPE_FP32 && c->k_type != KVS_TYPE_FP16) || (!vq && c->v_type != KVS_TYPE_FP32 && c->v_type != KVS_TYPE_FP16))
        BAD("config: stiefel= stores coefficients as fp32, fp16, q8_0 or q4_0 rows (k=, v=); affine INTb coefficients are not in yet");
    if ((kq && c->rank_k % 32) || (vq && c->rank_v % 32))
        BAD("config: stiefel=%d/%d: q8_0/q4_0 coefficient rows need ranks that are multiples of 32", c->rank_k, c->rank_v);
    if (c->rotate != KVS_ROTATE_NONE || c->scale != KVS_SCALE_NONE || c->jensen != KVS_JENSEN_OFF)
        BAD("config: stiefel= does not combine with rotate=, scale= or jensen= (they act on full-width keys)");
    const kvs_calib *cal = c->calib;
    if (!cal || !cal->lrnk.n_sets) BAD("config: stiefel= needs a calibration with low-rank bases (kvslim calibrate stiefel --out)");
    if (cal->n_layers != c->n_layers || cal->n_kv_heads != c->n_kv_heads || cal->head_dim != c->head_dim)
        BAD("config: the calibration's bases are for %d layers x %d KV heads of %d, the cache has %d x %d of %d", cal->n_layers,
            cal->n_kv_heads, cal->head_dim, c->n_layers, c->n_kv_heads, c->head_dim);
    const char *name = c->basis == KVS_BASIS_PCA ? "pca" : "learned";
    for (int l = 0; l < c->n_layers; l++) {
        int rk = 0, rv = 0;
        if (!kvs__calib_basis(cal, c->basis, l, 0, 0, &rk) || !kvs__calib_basis(cal, c->basis, l, 1, 0, &rv))
            BAD("config: the calibration has no %s bases (basis=)", name);
        const int exact = c->basis != KVS_BASIS_PCA;
        if (exact ? (rk != c->rank_k || rv != c->rank_v) : (rk < c->rank_k || rv < c->rank_v))
            BAD("config: stiefel=%d/%d: layer %d's %s bases have ranks %d/%d%s", c->rank_k, c->rank_v, l, name, rk, rv,
                exact ? " (learned bases are fitted at one rank)" : "");
    }
#undef BAD
    return KVS_OK;
}

size_t kvs__lowrank_floats(const kvs_config *c) {
    if (!c->rank_k) return 0;
    return (size_t)c->n_layers * c->head_dim * ((size_t)c->rank_k + (size_t)c->n_kv_heads * c->rank_v);
}

/* the first r columns of a [d][stored] basis */
static void prefix(const float *src, int d, int stored, int r, float *dst) {
    for (int t = 0; t < d; t++) memcpy(dst + (size_t)t * r, src + (size_t)t * stored, sizeof(float) * r);
}

void kvs__lowrank_fill(const kvs_config *c, float *pkt, float *pv) {
    const int d = c->head_dim, H = c->n_kv_heads, rk = c->rank_k, rv = c->rank_v;
    for (int l = 0; l < c->n_layers; l++) {
        int sk = 0, sv = 0;
        const float *P = kvs__calib_basis(c->calib, c->basis, l, 0, 0, &sk);
        for (int t = 0; t < d; t++)
            for (int j = 0; j < rk; j++) pkt[((size_t)l * rk + j) * d + t] = P[(size_t)t * sk + j];
        for (int h = 0; h < H; h++) {
            const float *V = kvs__calib_basis(c->calib, c->basis, l, 1, h, &sv); /* sets sv: before prefix() reads it */
            prefix(V, d, sv, rv, pv + ((size_t)l * H + h) * d * rv);
        }
    }
}
