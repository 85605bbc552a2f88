/* Llama forward pass: RMSNorm, RoPE (adjacent pairs, as llama.cpp's "normal" mode on GGUF
 * weights), grouped-query attention through the kvslim cache, SwiGLU MLP, tied or untied output.
 * Weight matrices stay in the GGUF's formats (qgemv.h): decode rows go through the product that
 * reads them in place; a chunk's rows decode blocks of weight rows to fp32 for OpenBLAS's gemm. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "model.h"
#include "qgemv.h"

typedef struct {
    float *attn_norm, *ffn_norm;                           /* [n_embd], fp32 */
    kvs_wmat wq, wk, wv, wo, w_gate, w_up, w_down;         /* [out][in], the file's format */
    kvs_wmat wo_folded; /* kvs_llama_fold: fp32 [n_embd][n_head * rank_v] = W_o blockdiag(P_V,h(j)); rows 0 when unfolded */
} layer_w;

struct kvs_llama {
    kvs_gguf *file;
    kvs_llama_hparams hp;
    kvs_wmat tok_embd; /* [n_vocab][n_embd] */
    float *out_norm;   /* [n_embd] */
    kvs_wmat output;   /* [n_vocab][n_embd]; the embedding's view when tied */
    layer_w *layers;
    kvs_qgemv_fn gemv;
    kvs_llama_timing timing;
    float *scratch; /* fp32 weight rows a chunk's gemm reads (forward() runs one call at a time per model) */
    size_t scratch_floats;
    int batch_invariant; /* see kvs_llama_set_batch_invariant */
    kvs_llama_observer observe;
    void *observe_user;
    kvs_llama_input_observer observe_input;
    void *observe_input_user;
    const kvs_cache *folded; /* the cache whose value bases W_o is folded with (kvs_llama_fold), or NULL */
    kvs_llama_kv_filter filter;
    void *filter_user;
};

void kvs_llama_set_kv_filter(kvs_llama *m, kvs_llama_kv_filter fn, void *user) {
    if (!m) return;
    m->filter = fn;
    m->filter_user = user;
}

static void unfold(kvs_llama *m) {
    for (int l = 0; l < m->hp.n_layer; l++) kvs_wmat_free(&m->layers[l].wo_folded);
    m->folded = NULL;
}

/* W_o' = W_o · blockdiag over query heads j of P_V of j's KV head: [D][H rv] from [D][H hd] */
kvs_status kvs_llama_fold(kvs_llama *m, const kvs_cache *c) {
    if (!m) return kvs_report(KVS_ERR_ARG, "fold: NULL model");
    const kvs_llama_hparams *hp = &m->hp;
    unfold(m);
    if (!c) return KVS_OK;
    const kvs_config *cc = kvs_cache_config(c);
    if (cc->n_layers != hp->n_layer || cc->n_heads != hp->n_head || cc->n_kv_heads != hp->n_head_kv || cc->head_dim != hp->head_dim)
        return kvs_report(KVS_ERR_ARG, "fold: the cache's shapes do not match the model");
    if (cc->window || cc->sinks || cc->self != KVS_SELF_CACHE || !cc->rank_k)
        return kvs_report(KVS_ERR_CONFIG, "fold: needs a low-rank cache (stiefel=) with window=0, sinks=0, self=cache: every token "
                          "it attends to must be stored as coefficients");
    const int D = hp->n_embd, H = hp->n_head, hd = hp->head_dim, g = hp->n_head / hp->n_head_kv;
    float *wo = malloc(sizeof(float) * (size_t)D * H * hd);
    if (!wo) return kvs_report(KVS_ERR_NOMEM, "fold: out of memory");
    kvs_status st = KVS_OK;
    for (int l = 0; l < hp->n_layer && !st; l++) {
        layer_w *w = &m->layers[l];
        const float *P;
        int rv;
        float *f = NULL;
        if ((st = kvs_cache_value_basis(c, l, 0, &P, &rv))) break;
        if (!(f = malloc(sizeof(float) * (size_t)D * H * rv))) {
            st = kvs_report(KVS_ERR_NOMEM, "fold: out of memory for layer %d", l);
            break;
        }
        w->wo_folded = kvs_wmat_f32(f, D, H * rv);
        kvs_wmat_dequant_rows(&w->wo, 0, D, wo);
        for (int j = 0; j < H && !st; j++) {
            if ((st = kvs_cache_value_basis(c, l, j / g, &P, &rv))) break;
            /* rows o of W_o, columns j hd .. j hd + hd: times P [hd][rv] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, rv, hd, 1.0f, wo + (size_t)j * hd, H * hd, P, rv, 0.0f,
                        f + (size_t)j * rv, H * rv);
        }
    }
    free(wo);
    if (st) {
        unfold(m);
        return st;
    }
    m->folded = c;
    return KVS_OK;
}

void kvs_llama_set_input_observer(kvs_llama *m, kvs_llama_input_observer fn, void *user) {
    if (!m) return;
    m->observe_input = fn;
    m->observe_input_user = user;
}

void kvs_llama_layer_free(kvs_llama_layer_weights *w) {
    if (!w) return;
    free(w->attn_norm), free(w->wq), free(w->wk), free(w->wv), free(w->wo);
    free(w->ffn_norm), free(w->w_gate), free(w->w_up), free(w->w_down);
    memset(w, 0, sizeof *w);
}

static float *decoded(const kvs_wmat *w) {
    float *f = malloc(sizeof(float) * (size_t)w->rows * w->cols);
    if (f) kvs_wmat_dequant_rows(w, 0, w->rows, f);
    return f;
}

static float *copied(const float *x, size_t n) {
    float *f = malloc(sizeof(float) * n);
    if (f) memcpy(f, x, sizeof(float) * n);
    return f;
}

kvs_status kvs_llama_layer(const kvs_llama *m, int layer, kvs_llama_layer_weights *out) {
    if (!m || !out || layer < 0 || layer >= m->hp.n_layer)
        return kvs_report(KVS_ERR_ARG, "model: layer %d outside 0..%d", layer, m ? m->hp.n_layer - 1 : -1);
    const layer_w *w = &m->layers[layer];
    const kvs_llama_layer_weights v = {copied(w->attn_norm, (size_t)m->hp.n_embd), decoded(&w->wq), decoded(&w->wk),
                                       decoded(&w->wv), decoded(&w->wo), copied(w->ffn_norm, (size_t)m->hp.n_embd),
                                       decoded(&w->w_gate), decoded(&w->w_up), decoded(&w->w_down)};
    *out = v;
    if (!v.attn_norm || !v.wq || !v.wk || !v.wv || !v.wo || !v.ffn_norm || !v.w_gate || !v.w_up || !v.w_down) {
        kvs_llama_layer_free(out);
        return kvs_report(KVS_ERR_NOMEM, "model: out of memory for layer %d's weights", layer);
    }
    return KVS_OK;
}

/* A layer's weight matrices, in one list for whatever walks them all. */
enum { LAYER_MATS = 7 };
static void layer_mats(const layer_w *w, const kvs_wmat *mats[LAYER_MATS]) {
    const kvs_wmat *all[LAYER_MATS] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
    memcpy(mats, all, sizeof all);
}

size_t kvs_llama_weight_bytes(const kvs_llama *m) {
    if (!m) return 0;
    size_t b = (size_t)m->hp.n_embd * sizeof(float) + m->output.row_bytes * m->output.rows; /* output norm, output */
    for (int l = 0; l < m->hp.n_layer; l++) {
        const kvs_wmat *mats[LAYER_MATS];
        layer_mats(&m->layers[l], mats);
        b += 2 * (size_t)m->hp.n_embd * sizeof(float);
        for (int i = 0; i < LAYER_MATS; i++) b += mats[i]->row_bytes * mats[i]->rows;
    }
    return b;
}

void kvs_llama_timing_get(const kvs_llama *m, kvs_llama_timing *out) {
    if (m && out) *out = m->timing;
}

void kvs_llama_timing_reset(kvs_llama *m) {
    if (m) memset(&m->timing, 0, sizeof m->timing);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void kvs_llama_set_observer(kvs_llama *m, kvs_llama_observer fn, void *user) {
    if (!m) return;
    m->observe = fn;
    m->observe_user = user;
}

uint64_t kvs_llama_identity(const kvs_llama *m) {
    uint64_t h = 1469598103934665603ull;
    if (!m || !m->file) return h;
    for (int i = 0; i < kvs_gguf_n_tensors(m->file); i++) {
        const kvs_gguf_tensor *t = kvs_gguf_tensor_at(m->file, i);
        for (size_t j = 0; j < t->bytes; j++) h = (h ^ t->data[j]) * 1099511628211ull;
    }
    return h;
}

/* A weight matrix [ne1][ne0] viewed in the file's format; every weight decoded once to check it is
 * finite (a NaN in a weight would surface far away, as a NaN attention input). */
static kvs_status load_wmat(const kvs_gguf *g, const char *name, int64_t ne0, int64_t ne1, kvs_wmat *out) {
    const kvs_gguf_tensor *t = kvs_gguf_find_tensor(g, name);
    if (!t) return kvs_report(KVS_ERR_FORMAT, "model: tensor '%s' missing", name);
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1)
        return kvs_report(KVS_ERR_FORMAT, "model: tensor '%s' has shape [%lld, %lld, %lld, %lld], want [%lld, %lld]", name,
                          (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                          (long long)ne0, (long long)ne1);
    kvs_status s = kvs_wmat_from_tensor(t, out);
    if (s) return s;
    enum { ROWS = 64 };
    float *buf = malloc(sizeof(float) * ROWS * (size_t)ne0);
    if (!buf) return kvs_report(KVS_ERR_NOMEM, "model: out of memory checking '%s'", name);
    for (int o0 = 0; o0 < out->rows && !s; o0 += ROWS) {
        const int o1 = o0 + ROWS < out->rows ? o0 + ROWS : out->rows;
        kvs_wmat_dequant_rows(out, o0, o1, buf);
        for (size_t i = 0; i < (size_t)(o1 - o0) * ne0; i++)
            if (!isfinite(buf[i])) {
                s = kvs_report(KVS_ERR_FORMAT, "model: tensor '%s' element %lld is not finite", name,
                               (long long)((size_t)o0 * ne0 + i));
                break;
            }
    }
    free(buf);
    return s;
}

/* A small tensor (a norm's weights) decoded to fp32, with load_wmat's checks. */
static kvs_status load_tensor(const kvs_gguf *g, const char *name, int64_t ne0, int64_t ne1, float **out) {
    kvs_wmat w;
    kvs_status s = load_wmat(g, name, ne0, ne1, &w);
    if (s) return s;
    if (!(*out = decoded(&w))) return kvs_report(KVS_ERR_NOMEM, "model: out of memory for '%s'", name);
    return KVS_OK;
}

static kvs_status get_dim(const kvs_gguf *g, const char *key, int lo, int hi, int *out) {
    int64_t v;
    kvs_status s = kvs_gguf_get_int(g, key, &v);
    if (s) return s;
    if (v < lo || v > hi) return kvs_report(KVS_ERR_FORMAT, "model: %s = %lld out of range [%d, %d]", key, (long long)v, lo, hi);
    *out = (int)v;
    return KVS_OK;
}

void kvs_llama_free(kvs_llama *m) {
    if (!m) return;
    if (m->layers)
        for (int l = 0; l < m->hp.n_layer; l++) {
            layer_w *w = &m->layers[l];
            free(w->attn_norm), free(w->ffn_norm), kvs_wmat_free(&w->wo_folded);
        }
    free(m->layers);
    free(m->out_norm);
    free(m->scratch);
    kvs_gguf_close(m->file);
    free(m);
}

kvs_status kvs_llama_load(const char *path, kvs_llama **out) {
    if (!path || !out) return kvs_report(KVS_ERR_ARG, "model: NULL argument");
    *out = NULL;
    kvs_llama *m = calloc(1, sizeof *m);
    if (!m) return kvs_report(KVS_ERR_NOMEM, "model: out of memory");
    openblas_set_num_threads(1); /* see matmul() */
    m->gemv = kvs_qgemv_best();
    kvs_status s = kvs_gguf_open(path, &m->file, NULL);
    if (s) goto fail;
    const kvs_gguf *g = m->file;
    const char *arch;
    size_t alen;
    if ((s = kvs_gguf_get_str(g, "general.architecture", &arch, &alen))) goto fail;
    if (alen != 5 || memcmp(arch, "llama", 5)) {
        s = kvs_report(KVS_ERR_UNSUPPORTED, "model: architecture '%.*s' (only llama)", (int)(alen > 40 ? 40 : alen), arch);
        goto fail;
    }
    kvs_llama_hparams *hp = &m->hp;
    if ((s = get_dim(g, "llama.embedding_length", 16, 1 << 16, &hp->n_embd)) ||
        (s = get_dim(g, "llama.block_count", 1, 1024, &hp->n_layer)) ||
        (s = get_dim(g, "llama.feed_forward_length", 1, 1 << 18, &hp->n_ff)) ||
        (s = get_dim(g, "llama.attention.head_count", 1, 1024, &hp->n_head)) ||
        (s = get_dim(g, "llama.context_length", 1, 1 << 24, &hp->n_ctx_train)))
        goto fail;
    hp->n_head_kv = hp->n_head;
    if (kvs_gguf_find(g, "llama.attention.head_count_kv") &&
        (s = get_dim(g, "llama.attention.head_count_kv", 1, hp->n_head, &hp->n_head_kv)))
        goto fail;
    if (hp->n_embd % hp->n_head || hp->n_head % hp->n_head_kv) {
        s = kvs_report(KVS_ERR_FORMAT, "model: %d heads / %d KV heads do not divide width %d", hp->n_head, hp->n_head_kv, hp->n_embd);
        goto fail;
    }
    hp->head_dim = hp->n_embd / hp->n_head;
    if (hp->head_dim % 2) {
        s = kvs_report(KVS_ERR_FORMAT, "model: odd head dim %d", hp->head_dim);
        goto fail;
    }
    hp->rms_eps = 1e-5f;
    hp->rope_base = 10000.0f;
    if (kvs_gguf_find(g, "llama.attention.layer_norm_rms_epsilon") &&
        (s = kvs_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &hp->rms_eps)))
        goto fail;
    if (kvs_gguf_find(g, "llama.rope.freq_base") && (s = kvs_gguf_get_f32(g, "llama.rope.freq_base", &hp->rope_base))) goto fail;
    if (!(hp->rms_eps > 0 && hp->rms_eps < 1) || !(hp->rope_base > 1 && isfinite(hp->rope_base))) {
        s = kvs_report(KVS_ERR_FORMAT, "model: rms eps %g or rope base %g out of range", (double)hp->rms_eps, (double)hp->rope_base);
        goto fail;
    }
    if (kvs_gguf_find(g, "llama.rope.dimension_count")) {
        int rd = 0;
        if ((s = get_dim(g, "llama.rope.dimension_count", 1, 1 << 16, &rd))) goto fail;
        if (rd != hp->head_dim) {
            s = kvs_report(KVS_ERR_UNSUPPORTED, "model: partial RoPE (%d of %d dims)", rd, hp->head_dim);
            goto fail;
        }
    }
    const kvs_gguf_tensor *te = kvs_gguf_find_tensor(g, "token_embd.weight");
    if (!te) {
        s = kvs_report(KVS_ERR_FORMAT, "model: tensor 'token_embd.weight' missing");
        goto fail;
    }
    hp->n_vocab = (int)te->ne[1];
    const int D = hp->n_embd, KV = hp->n_head_kv * hp->head_dim, F = hp->n_ff;
    if ((s = load_wmat(g, "token_embd.weight", D, hp->n_vocab, &m->tok_embd)) ||
        (s = load_tensor(g, "output_norm.weight", D, 1, &m->out_norm)))
        goto fail;
    if (kvs_gguf_find_tensor(g, "output.weight")) {
        if ((s = load_wmat(g, "output.weight", D, hp->n_vocab, &m->output))) goto fail;
    } else {
        m->output = m->tok_embd; /* tied embeddings */
    }
    if (!(m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers))) {
        s = kvs_report(KVS_ERR_NOMEM, "model: out of memory");
        goto fail;
    }
    for (int l = 0; l < hp->n_layer; l++) {
        layer_w *w = &m->layers[l];
        const struct {
            kvs_wmat *dst;
            const char *name;
            int64_t ne0, ne1;
        } spec[] = {{&w->wq, "attn_q", D, D},       {&w->wk, "attn_k", D, KV},   {&w->wv, "attn_v", D, KV},
                    {&w->wo, "attn_output", D, D}, {&w->w_gate, "ffn_gate", D, F}, {&w->w_up, "ffn_up", D, F},
                    {&w->w_down, "ffn_down", F, D}};
        char n[64];
        snprintf(n, sizeof n, "blk.%d.attn_norm.weight", l);
        if ((s = load_tensor(g, n, D, 1, &w->attn_norm))) goto fail;
        snprintf(n, sizeof n, "blk.%d.ffn_norm.weight", l);
        if ((s = load_tensor(g, n, D, 1, &w->ffn_norm))) goto fail;
        for (size_t i = 0; i < sizeof spec / sizeof *spec; i++) {
            snprintf(n, sizeof n, "blk.%d.%s.weight", l, spec[i].name);
            if ((s = load_wmat(g, n, spec[i].ne0, spec[i].ne1, spec[i].dst))) goto fail;
        }
    }
    *out = m;
    return KVS_OK;
fail:
    kvs_llama_free(m);
    return s;
}

const kvs_llama_hparams *kvs_llama_params(const kvs_llama *m) { return &m->hp; }
const kvs_gguf *kvs_llama_file(const kvs_llama *m) { return m->file; }

kvs_config kvs_llama_cache_config(const kvs_llama *m, int max_tokens) {
    kvs_config c = kvs_config_default();
    c.n_layers = m->hp.n_layer;
    c.n_heads = m->hp.n_head;
    c.n_kv_heads = m->hp.n_head_kv;
    c.head_dim = m->hp.head_dim;
    c.max_tokens = max_tokens;
    c.rope_base = m->hp.rope_base; /* used when a config sets rope=adjacent (the cache turns q and k) */
    return c;
}

/* y[n][D] = x / sqrt(mean(x^2) + eps) * w */
static void rmsnorm(const float *x, const float *w, float *y, int n, int D, float eps) {
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (int j = 0; j < D; j++) ss += (double)x[(size_t)i * D + j] * x[(size_t)i * D + j];
        const float r = 1.0f / sqrtf((float)(ss / D) + eps);
        for (int j = 0; j < D; j++) y[(size_t)i * D + j] = x[(size_t)i * D + j] * r * w[j];
    }
}

/* y[n][out] = x[n][in] W^T, W [out][in] in its file format.
 * OpenBLAS runs single-threaded (set at load); the work is split over kvslim's own OpenMP threads
 * instead. Two thread pools spinning against each other on 2 cores cost 30 % (measured: 172 vs 236
 * tokens/s prefill with BLAS threads on vs off).
 * Up to GEMV_ROWS rows (decode), and every row in batch-invariant mode: the product that reads the
 * weights in their format (qgemv.h), weight rows split over the threads; a row's result depends on
 * nothing but that row, so batch 1 and batch n give the same bits. Longer chunks: the output columns
 * in 4 parts (as when the weights were fp32 at load, so a chunk's products keep their bits), each
 * part's weight rows decoded to fp32 into its thread's scratch, then gemm (the decode costs a few %
 * of the gemm's multiply-adds at n = 128). */
enum { GEMV_ROWS = 4, GEMV_CHUNK = 16, GEMM_PARTS = 4 };

static int gemm_parts(int n, int in, int out) { return (double)n * in * out > 2e6 ? GEMM_PARTS : 1; }
static int gemm_step(int parts, int out) { return (out / parts + 15) / 16 * 16; }

/* The scratch a chunk of n rows needs per thread: the largest part of any matrix, in floats. */
static size_t scratch_floats(const kvs_llama *m, int n) {
    size_t most = 0;
    const kvs_wmat *mats[LAYER_MATS + 1] = {&m->output};
    for (int l = 0; l < m->hp.n_layer; l++) {
        layer_mats(&m->layers[l], mats + 1);
        for (int i = 0; i < LAYER_MATS + 1; i++) {
            const int parts = gemm_parts(n, mats[i]->cols, mats[i]->rows);
            const size_t f = (size_t)gemm_step(parts, mats[i]->rows) * mats[i]->cols;
            most = f > most ? f : most;
        }
    }
    return most;
}

typedef struct {
    float *buf; /* threads × per_thread */
    size_t per_thread;
    int threads;
} scratch_t;

/* y_i = x W_i^T for `count` matrices of the same input width (q, k, v; gate, up): decode rows share
 * one parallel region over all their row chunks, so the threads meet once, not once per matrix. */
static void matmul_many(kvs_llama *m, const float *x, const kvs_wmat *const *W, float *const *y, int count, int n,
                        const scratch_t *sc) {
    const double t0 = now_s();
    if (n <= GEMV_ROWS || m->batch_invariant || !sc->buf) {
        int first[4], total = 0; /* chunk index where each matrix starts */
        double work = 0.0;
        for (int i = 0; i < count; i++) {
            first[i] = total;
            total += (W[i]->rows + GEMV_CHUNK - 1) / GEMV_CHUNK;
            work += (double)n * W[i]->cols * W[i]->rows;
        }
        const kvs_qgemv_fn gemv = m->gemv;
        /* each input row prepared once (block sums, 16-bit codes) for every matrix and thread */
        const int in = W[0]->cols;
        const size_t qb = kvs_qvec_bytes(in);
        kvs_qvec qv_stack[GEMV_ROWS], *qv = n <= GEMV_ROWS ? qv_stack : malloc(sizeof(kvs_qvec) * (size_t)n);
        unsigned char *buf = malloc(qb * (size_t)n);
        if (!qv || !buf) { /* tiny; if even this fails, the reference needs no prepared codes */
            for (int i = 0; i < count; i++)
                for (int r = 0; r < n; r++) {
                    const kvs_qvec plain = {x + (size_t)r * in, in, 0, NULL, NULL, NULL};
                    kvs_qgemv_ref(W[i], &plain, y[i] + (size_t)r * W[i]->rows, 0, W[i]->rows);
                }
        } else {
            for (int r = 0; r < n; r++) kvs_qvec_prepare(x + (size_t)r * in, in, buf + qb * (size_t)r, &qv[r]);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (work >= 65536.0)
#endif
            for (int c = 0; c < total; c++) {
                int i = count - 1;
                while (c < first[i]) i--;
                const kvs_wmat *w = W[i];
                const int out = w->rows, o0 = (c - first[i]) * GEMV_CHUNK;
                const int o1 = o0 + GEMV_CHUNK < out ? o0 + GEMV_CHUNK : out;
                for (int r = 0; r < n; r++) gemv(w, &qv[r], y[i] + (size_t)r * out + o0, o0, o1);
            }
        }
        if (qv != qv_stack) free(qv);
        free(buf);
    } else {
        for (int i = 0; i < count; i++) {
            const kvs_wmat *w = W[i];
            const int in = w->cols, out = w->rows, parts = gemm_parts(n, in, out), step = gemm_step(parts, out);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(sc->threads) if (parts > 1)
#endif
            for (int p = 0; p < parts; p++) {
                const int o0 = p * step, o1 = o0 + step < out ? o0 + step : out;
                if (o0 >= o1) continue;
#ifdef _OPENMP
                const int tid = omp_get_thread_num();
#else
                const int tid = 0;
#endif
                const float *wf = (const float *)(const void *)(w->data + (size_t)o0 * w->row_bytes); /* fp32 rows: in place */
                if (w->type != KVS_GGML_F32) {
                    float *buf = sc->buf + (size_t)tid * sc->per_thread;
                    kvs_wmat_dequant_rows(w, o0, o1, buf);
                    wf = buf;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, o1 - o0, in, 1.0f, x, in, wf, in, 0.0f, y[i] + o0, out);
            }
        }
    }
    m->timing.weights_s += now_s() - t0;
}

static void matmul(kvs_llama *m, const float *x, const kvs_wmat *W, float *y, int n, const scratch_t *sc) {
    matmul_many(m, x, &W, &y, 1, n, sc);
}

void kvs_llama_set_batch_invariant(kvs_llama *m, int on) {
    if (m) m->batch_invariant = on != 0;
}

/* RoPE angles of the chunk, the same for every layer and for q and k: cs[i][p] = (cos, sin) of
 * (pos0 + i) * base^(-2p/head_dim). */
static void rope_table(float *cs, int n, int hd, int pos0, float base) {
    for (int i = 0; i < n; i++)
        for (int p = 0; p < hd / 2; p++) {
            const double theta = (double)(pos0 + i) * pow((double)base, -2.0 * p / hd);
            cs[((size_t)i * (hd / 2) + p) * 2] = (float)cos(theta);
            cs[((size_t)i * (hd / 2) + p) * 2 + 1] = (float)sin(theta);
        }
}

/* RoPE on adjacent pairs (2p, 2p+1) of every head. */
static void rope(float *x, int n, int heads, int hd, const float *cs) {
    for (int i = 0; i < n; i++)
        for (int p = 0; p < hd / 2; p++) {
            const float c = cs[((size_t)i * (hd / 2) + p) * 2], s = cs[((size_t)i * (hd / 2) + p) * 2 + 1];
            for (int h = 0; h < heads; h++) {
                float *v = x + ((size_t)i * heads + h) * hd + 2 * p;
                const float a = v[0], b = v[1];
                v[0] = a * c - b * s;
                v[1] = a * s + b * c;
            }
        }
}

kvs_status kvs_llama_forward(kvs_llama *m, kvs_cache *cache, const int32_t *tokens, int n, int pos0, int first_logit,
                             float *logits) {
    if (!m || !cache || !tokens || n < 1 || pos0 < 0 || first_logit < 0)
        return kvs_report(KVS_ERR_ARG, "forward: bad argument (n = %d, pos0 = %d)", n, pos0);
    const kvs_llama_hparams *hp = &m->hp;
    const int D = hp->n_embd, H = hp->n_head, HKV = hp->n_head_kv, hd = hp->head_dim, F = hp->n_ff, V = hp->n_vocab;
    const kvs_config *cc = kvs_cache_config(cache);
    if (cc->n_layers != hp->n_layer || cc->n_heads != H || cc->n_kv_heads != HKV || cc->head_dim != hd)
        return kvs_report(KVS_ERR_ARG, "forward: cache shapes (%d layers, %d/%d heads, %d) do not match the model",
                          cc->n_layers, cc->n_heads, cc->n_kv_heads, cc->head_dim);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V) return kvs_report(KVS_ERR_ARG, "forward: token %d = %d outside the vocabulary", i, tokens[i]);
    const int cache_rope = cc->rope == KVS_ROPE_ADJACENT; /* then q and k go to the cache before RoPE */
    if (cache_rope && cc->rope_base != hp->rope_base)
        return kvs_report(KVS_ERR_ARG, "forward: the cache's rope_base %g is not the model's %g", (double)cc->rope_base,
                          (double)hp->rope_base);
    if (cc->rope != KVS_ROPE_NONE && !cache_rope) return kvs_report(KVS_ERR_ARG, "forward: cache rope mode %d unknown", (int)cc->rope);
    if (m->folded && m->folded != cache)
        return kvs_report(KVS_ERR_ARG, "forward: W_o is folded with another cache's value bases (kvs_llama_fold)");
    const size_t KVD = (size_t)HKV * hd;
    float *x = malloc(sizeof(float) * n * D), *h = malloc(sizeof(float) * n * D), *q = malloc(sizeof(float) * n * D);
    float *k = malloc(sizeof(float) * n * KVD), *v = malloc(sizeof(float) * n * KVD), *att = malloc(sizeof(float) * n * D);
    float *g = malloc(sizeof(float) * n * F), *u = malloc(sizeof(float) * n * F), *cs = malloc(sizeof(float) * n * hd);
    scratch_t sc = {NULL, 0, 1};
    const double t_start = now_s();
    kvs_status s = KVS_OK;
    if (n > GEMV_ROWS && !m->batch_invariant) { /* gemm path: each thread decodes a part's weight rows */
#ifdef _OPENMP
        sc.threads = omp_get_max_threads() < GEMM_PARTS ? omp_get_max_threads() : GEMM_PARTS;
#endif
        sc.per_thread = scratch_floats(m, n);
        if (m->scratch_floats < sc.per_thread * sc.threads) { /* kept: a chunk's weights decode into it 7 × layers times */
            free(m->scratch);
            m->scratch_floats = (m->scratch = malloc(sizeof(float) * sc.per_thread * sc.threads)) ? sc.per_thread * sc.threads : 0;
        }
        sc.buf = m->scratch;
    }
    if (!x || !h || !q || !k || !v || !att || !g || !u || !cs || (n > GEMV_ROWS && !m->batch_invariant && !sc.buf)) {
        s = kvs_report(KVS_ERR_NOMEM, "forward: out of memory for %d tokens", n);
        goto done;
    }
    for (int i = 0; i < n; i++) kvs_wmat_dequant_rows(&m->tok_embd, tokens[i], tokens[i] + 1, x + (size_t)i * D);
    rope_table(cs, n, hd, pos0, hp->rope_base);
    for (int l = 0; l < hp->n_layer; l++) {
        const layer_w *w = &m->layers[l];
        if (m->observe_input) m->observe_input(m->observe_input_user, l, n, pos0, x);
        rmsnorm(x, w->attn_norm, h, n, D, hp->rms_eps);
        const kvs_wmat *qkv_w[3] = {&w->wq, &w->wk, &w->wv};
        float *const qkv[3] = {q, k, v};
        matmul_many(m, h, qkv_w, qkv, 3, n, &sc);
        if (m->filter) m->filter(m->filter_user, l, n, pos0, k, v);
        if (!cache_rope) {
            rope(q, n, H, hd, cs);
            rope(k, n, HKV, hd, cs);
        }
        if (m->observe) m->observe(m->observe_user, l, n, pos0, q, k);
        const double t_att = now_s();
        if (m->folded) { /* value coefficients straight into W_o' = W_o P_V */
            if ((s = kvs_attend_coef(cache, l, n, q, k, v, att)) || (s = kvs_cache_append(cache, l, n, k, v))) goto done;
        } else {
            if ((s = kvs_attend(cache, l, n, q, k, v, att)) || (s = kvs_cache_append(cache, l, n, k, v))) goto done;
        }
        m->timing.attention_s += now_s() - t_att;
        matmul(m, att, m->folded ? &w->wo_folded : &w->wo, h, n, &sc);
        for (size_t i = 0; i < (size_t)n * D; i++) x[i] += h[i];
        rmsnorm(x, w->ffn_norm, h, n, D, hp->rms_eps);
        const kvs_wmat *gu_w[2] = {&w->w_gate, &w->w_up};
        float *const gu[2] = {g, u};
        matmul_many(m, h, gu_w, gu, 2, n, &sc);
        for (size_t i = 0; i < (size_t)n * F; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
        matmul(m, g, &w->w_down, h, n, &sc);
        for (size_t i = 0; i < (size_t)n * D; i++) x[i] += h[i];
    }
    if (logits && first_logit < n) {
        const int nl = n - first_logit;
        rmsnorm(x + (size_t)first_logit * D, m->out_norm, h, nl, D, hp->rms_eps);
        matmul(m, h, &m->output, logits, nl, &sc);
    }
done:
    free(x), free(h), free(q), free(k), free(v), free(att), free(g), free(u), free(cs);
    m->timing.total_s += now_s() - t_start;
    m->timing.calls++;
    m->timing.tokens += n;
    return s;
}
