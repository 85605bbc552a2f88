/* kvs__method_resolve: the one place where config flags become a plan (plan.h). */
#include "plan.h"

#include <math.h>

#include "../quant/formats.h"

static kvs_codec codec(kvs_type t, int G, int d, int is_key) {
    kvs_codec c = {t, KVS_LAYOUT_ROWS, kvs_affine_bits(t), 0, kvs_row_bytes(t, d), 0, d};
    c.bytes = is_key ? kvs_kgroup_bytes(t, d, G) : kvs_vgroup_bytes(t, d, G);
    if (!c.bits) return c;
    /* keys: one code row of G tokens per channel; values: one code row of d channels per token */
    const int len = is_key ? G : d;
    const int paired = is_key ? kvs_key_paired(c.bits, G) : kvs_val_paired(c.bits, G, d);
    c.layout = paired ? KVS_LAYOUT_PAIRED : KVS_LAYOUT_AFFINE;
    c.perm = c.bits != 3 && len % (64 / c.bits) == 0;
    c.row = (size_t)len * c.bits / 8;
    return c;
}

void kvs__method_resolve(const kvs_config *cfg, kvs_method *m) {
    m->key = codec(cfg->k_type, cfg->group, cfg->head_dim, 1);
    m->value = codec(cfg->v_type, cfg->group, cfg->head_dim, 0);
    m->G = cfg->group;
    m->d = cfg->head_dim;
    m->g = cfg->n_heads / cfg->n_kv_heads;
    m->n_heads = cfg->n_heads;
    m->sinks = cfg->sinks;
    m->window = cfg->window;
    m->unit = m->key.bits ? cfg->group : 1;
    m->tau = cfg->tau > 0.0f ? cfg->tau : 1.0f / sqrtf((float)cfg->head_dim);
    m->rotate = cfg->rotate == KVS_ROTATE_HADAMARD;
    m->token_norm = cfg->scale == KVS_SCALE_TOKEN;
    m->jensen = cfg->jensen;
    m->lambda = cfg->lambda;
    m->self_cache = cfg->self == KVS_SELF_CACHE;
    m->rope = cfg->rope == KVS_ROPE_ADJACENT;
    m->rope_base = cfg->rope_base;
    m->n_threads = cfg->n_threads;
}

void kvs__method_ranks(const kvs_config *cfg, int rank_k, int rank_v, kvs_method *m) {
    m->key = codec(cfg->k_type, cfg->group, rank_k, 1); /* coefficient rows, per token (validated) */
    m->value = codec(cfg->v_type, cfg->group, rank_v, 0);
    m->key.layout = m->value.layout = KVS_LAYOUT_LOWRANK;
    m->rotate = 0; /* rotate=hadamard turns the coefficient space: it lives in the bases (P H), not in q or the output */
}

const char *kvs__layout_name(kvs_layout l) {
    switch (l) {
    case KVS_LAYOUT_ROWS: return "rows";
    case KVS_LAYOUT_AFFINE: return "affine";
    case KVS_LAYOUT_PAIRED: return "paired";
    case KVS_LAYOUT_ANY: return "any";
    case KVS_LAYOUT_LOWRANK: return "lowrank";
    }
    return "?";
}
