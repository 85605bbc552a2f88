/* One Llama decoder layer, forward and backward, written plainly in double for StiefAttention's
 * calibration (spec sections 3.1 and 7.2): the objective f(P) = ||Y - Y(P)||_F^2 / ||Y||_F^2, where
 * Y is the layer's output on inputs X from the uncompressed model and Y(P) the same layer with its
 * pre-RoPE keys (one basis for the layer) or values (one basis per KV head) replaced by their
 * projections K P P^T, V_h P_h P_h^T; and its Euclidean gradient in P for stiefel.c. Key and value
 * bases are fitted separately: while one is projected the other stays exact.
 * Conventions are the engine's (src/model/llama.c): weights [out][in], y = x W^T; RoPE on adjacent
 * pairs (2p, 2p+1) with angle pos * base^(-2p/d); each of the S sequences starts at position 0. */
#ifndef KVS_LOWRANK_LAYER_FIT_H
#define KVS_LOWRANK_LAYER_FIT_H
#include "kvslim.h"

typedef struct {
    int D, Hq, Hkv, d, F; /* model width, query heads, KV heads, head dim, MLP width */
    double eps, rope_base;
    const double *attn_norm, *ffn_norm;      /* [D] */
    const double *wq, *wk, *wv;              /* [Hq d][D], [Hkv d][D], [Hkv d][D] */
    const double *wo;                        /* [D][Hq d] */
    const double *w_gate, *w_up, *w_down;    /* [F][D], [F][D], [D][F] */
} kvs_lr_layer;

enum { KVS_LR_KEYS = 0, KVS_LR_VALUES = 1 };

typedef struct kvs_lr_fit kvs_lr_fit;

/* The calibration problem of one layer on X [S*T][D] (S sequences of T tokens; copied). Runs the
 * exact layer once: Q (after RoPE), K and V (before), Y. The weights must outlive the handle.
 * @return KVS_OK, KVS_ERR_ARG (shapes), KVS_ERR_NONFINITE (X or the exact output), KVS_ERR_NOMEM. */
kvs_status kvs_lr_fit_new(const kvs_lr_layer *w, const double *X, int S, int T, kvs_lr_fit **out);
void kvs_lr_fit_free(kvs_lr_fit *f);

/* Tokens S * T of the problem. */
int kvs_lr_fit_tokens(const kvs_lr_fit *f);
/* The exact pre-RoPE keys or values [S*T][Hkv][d], and the exact output Y [S*T][D]. */
const double *kvs_lr_fit_kv(const kvs_lr_fit *f, int which);
const double *kvs_lr_fit_output(const kvs_lr_fit *f);

/* The layer's output Yh [S*T][D] with keys Kt and values Vt [S*T][Hkv][d] (pre-RoPE; NULL: exact). */
kvs_status kvs_lr_fit_forward(kvs_lr_fit *f, const double *Kt, const double *Vt, double *Yh);

/* f(P) for `which` projected on P: keys [d][r] (one block), values [Hkv][d][r]; G (same shape as P,
 * or NULL) receives dF/dP. NaN on an error (reported). */
double kvs_lr_fit_objective(kvs_lr_fit *f, int which, const double *P, int r, double *G);

/* One basis problem as stiefel.h's objective: kvs_lr_descend(kvs_lr_fit_f, &problem, ...). */
typedef struct {
    kvs_lr_fit *fit;
    int which, r; /* KVS_LR_KEYS or KVS_LR_VALUES; the rank */
} kvs_lr_problem;
double kvs_lr_fit_f(void *problem, const double *P, double *G);

/* The mean over tokens of cos(y_t, yh_t) between the exact output and the last evaluated one
 * (kvs_lr_fit_objective or kvs_lr_fit_forward): the paper's second layer diagnostic. */
double kvs_lr_fit_cosine(const kvs_lr_fit *f);
#endif
