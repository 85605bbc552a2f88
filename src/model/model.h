/* libkvslim-model: a small inference engine for Llama-architecture GGUF models on the kvslim
 * cache, and the pieces it is made of (GGUF reader, ggml dequantizers, byte-level BPE tokenizer,
 * perplexity). Used by tools/ and tests/; sees only kvslim.h of the core. */
#ifndef KVS_MODEL_H
#define KVS_MODEL_H
#include <stddef.h>
#include <stdint.h>

#include "kvslim.h"

/* ---- GGUF ---------------------------------------------------------------------------------- */

/* The specific failure class of a GGUF file (every corruption class has its own). */
typedef enum {
    KVS_GGUF_OK = 0,
    KVS_GGUF_IO,            /* cannot open / stat / map */
    KVS_GGUF_BAD_MAGIC,
    KVS_GGUF_BAD_VERSION,   /* not 2 or 3 (1 and byte-swapped files included) */
    KVS_GGUF_TRUNCATED,     /* a header, key, value or tensor info runs past the end */
    KVS_GGUF_BAD_COUNT,     /* tensor or key count larger than the file could hold */
    KVS_GGUF_BAD_VALUE_TYPE,/* unknown metadata value type, nested array, bool not 0/1 */
    KVS_GGUF_DUPLICATE_KEY,
    KVS_GGUF_DUPLICATE_TENSOR,
    KVS_GGUF_BAD_ALIGNMENT, /* general.alignment not a power of two, or offsets not aligned */
    KVS_GGUF_BAD_SHAPE,     /* n_dims outside 1..4, zero dims, overflowing product, row not whole blocks */
    KVS_GGUF_BAD_TENSOR_TYPE,
    KVS_GGUF_BAD_OFFSET,    /* tensor data outside the file, or overlapping another tensor */
    KVS_GGUF_BAD_NAME       /* empty or >= 64 bytes, or key longer than 65535 */
} kvs_gguf_error;
const char *kvs_gguf_error_str(kvs_gguf_error e);

enum { KVS_GGUF_TYPE_U8 = 0, KVS_GGUF_TYPE_I8, KVS_GGUF_TYPE_U16, KVS_GGUF_TYPE_I16, KVS_GGUF_TYPE_U32,
       KVS_GGUF_TYPE_I32, KVS_GGUF_TYPE_F32, KVS_GGUF_TYPE_BOOL, KVS_GGUF_TYPE_STRING, KVS_GGUF_TYPE_ARRAY,
       KVS_GGUF_TYPE_U64, KVS_GGUF_TYPE_I64, KVS_GGUF_TYPE_F64 };

/* ggml tensor types used here */
enum { KVS_GGML_F32 = 0, KVS_GGML_F16 = 1, KVS_GGML_Q4_0 = 2, KVS_GGML_Q4_1 = 3, KVS_GGML_Q5_0 = 6,
       KVS_GGML_Q5_1 = 7, KVS_GGML_Q8_0 = 8, KVS_GGML_Q4_K = 12, KVS_GGML_Q6_K = 14 };

typedef struct {
    char name[64];
    int n_dims;
    int64_t ne[4];     /* ne[0] = row length */
    uint32_t type;     /* ggml type id */
    uint64_t offset;   /* relative to the data section */
    const uint8_t *data;
    size_t bytes;
} kvs_gguf_tensor;

typedef struct {
    char *key;
    uint32_t type;     /* value type */
    uint32_t arr_type; /* element type for arrays */
    uint64_t count;    /* array length (1 for scalars) */
    const uint8_t *val;/* value bytes in the file (for strings: the u64 length first) */
} kvs_gguf_kv;

typedef struct kvs_gguf kvs_gguf;

/* Open and validate a whole file (memory-mapped). On error *err (if not NULL) gets the class and
 * kvs_last_error() names the offset/key/tensor. @return KVS_OK, KVS_ERR_IO, KVS_ERR_FORMAT,
 * KVS_ERR_UNSUPPORTED, KVS_ERR_NOMEM. */
KVS_NODISCARD kvs_status kvs_gguf_open(const char *path, kvs_gguf **out, kvs_gguf_error *err);
/* The same over a caller-owned buffer that must outlive the handle (tests, fuzzing). */
KVS_NODISCARD kvs_status kvs_gguf_open_mem(const uint8_t *data, size_t size, kvs_gguf **out, kvs_gguf_error *err);
void kvs_gguf_close(kvs_gguf *g);

int kvs_gguf_n_kv(const kvs_gguf *g);
const kvs_gguf_kv *kvs_gguf_kv_at(const kvs_gguf *g, int i);
const kvs_gguf_kv *kvs_gguf_find(const kvs_gguf *g, const char *key);
/* Typed getters: any integer type converts to the target if it fits. KVS_ERR_FORMAT if absent
 * or of another type. */
KVS_NODISCARD kvs_status kvs_gguf_get_int(const kvs_gguf *g, const char *key, int64_t *out);
KVS_NODISCARD kvs_status kvs_gguf_get_f32(const kvs_gguf *g, const char *key, float *out);
/* String value: pointer into the file and length (not NUL-terminated). */
KVS_NODISCARD kvs_status kvs_gguf_get_str(const kvs_gguf *g, const char *key, const char **s, size_t *len);
/* All elements of a string array: *s and *len are new arrays of *n entries (free() both); the
 * strings point into the file and are not NUL-terminated. */
KVS_NODISCARD kvs_status kvs_gguf_get_str_array(const kvs_gguf *g, const char *key, uint64_t *n, const char ***s,
                                               uint32_t **len);
/* Numeric array: element type and count, data pointer into the file (unaligned: memcpy). */
KVS_NODISCARD kvs_status kvs_gguf_get_array(const kvs_gguf *g, const char *key, uint32_t *type, uint64_t *n,
                                           const uint8_t **data);
int kvs_gguf_n_tensors(const kvs_gguf *g);
const kvs_gguf_tensor *kvs_gguf_tensor_at(const kvs_gguf *g, int i);
const kvs_gguf_tensor *kvs_gguf_find_tensor(const kvs_gguf *g, const char *name);

/* ---- ggml blocks ------------------------------------------------------------------------------ */

/* Block size and bytes per block of a ggml type; 0 for an unsupported type. */
int kvs_ggml_block_size(uint32_t type);
size_t kvs_ggml_block_bytes(uint32_t type);
const char *kvs_ggml_type_name(uint32_t type);
/* Dequantize n elements (a multiple of the block size) of a row. @return KVS_OK or
 * KVS_ERR_UNSUPPORTED for a type without a decoder. */
KVS_NODISCARD kvs_status kvs_ggml_dequant(uint32_t type, const uint8_t *src, float *dst, int64_t n);

/* ---- Llama forward pass ----------------------------------------------------------------------- */

typedef struct {
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx_train;
    float rms_eps, rope_base;
} kvs_llama_hparams;

typedef struct kvs_llama kvs_llama;

/* Load a Llama-architecture GGUF: hyper-parameters from its metadata; the weight matrices stay in
 * the file's own formats (memory-mapped, read in place by the products: qgemv.h), every weight is
 * checked finite once. @return KVS_OK, KVS_ERR_IO, KVS_ERR_FORMAT (missing key/tensor, wrong shape,
 * a weight not finite), KVS_ERR_UNSUPPORTED (architecture, tensor type), KVS_ERR_NOMEM. */
KVS_NODISCARD kvs_status kvs_llama_load(const char *path, kvs_llama **out);
void kvs_llama_free(kvs_llama *m);
const kvs_llama_hparams *kvs_llama_params(const kvs_llama *m);
const kvs_gguf *kvs_llama_file(const kvs_llama *m);
/* Bytes of the weights a forward pass reads (matrices in their file formats, norms in fp32, the
 * output matrix once when tied): what a decode step streams from memory. */
size_t kvs_llama_weight_bytes(const kvs_llama *m);

/* Where forward() spends its time, summed over calls since the last reset (monotonic clock):
 * weights = every matrix product (output layer included), attention = kvs_attend plus the cache
 * append, total = whole calls; total - weights - attention is the rest (norms, RoPE, SwiGLU). */
typedef struct {
    double weights_s, attention_s, total_s;
    long long calls, tokens;
} kvs_llama_timing;
void kvs_llama_timing_get(const kvs_llama *m, kvs_llama_timing *out);
void kvs_llama_timing_reset(kvs_llama *m);
/* A cache config with this model's shapes (layers, heads, head_dim) and the given capacity. */
kvs_config kvs_llama_cache_config(const kvs_llama *m, int max_tokens);

/* Batch-invariant weight products (off by default): each row of a chunk goes through the same
 * matrix-vector product whatever the chunk length, so feeding n tokens at once gives the bits of
 * feeding them one at a time (the cache is decode-faithful by construction; see kvs_attend).
 * Slower for prefill: tests and exact comparisons use it, evaluations need not. */
void kvs_llama_set_batch_invariant(kvs_llama *m, int on);

/* Sees every layer's queries [n][n_head][head_dim] and keys [n][n_head_kv][head_dim] of a chunk as
 * they go to the cache, before its attention: after RoPE, unless the cache applies it (its config's
 * rope=adjacent). Calibration watches the uncompressed model, with an fp32 cache, through this. */
typedef void (*kvs_llama_observer)(void *user, int layer, int n, int pos0, const float *q, const float *k);
void kvs_llama_set_observer(kvs_llama *m, kvs_llama_observer fn, void *user);
/* Sees every layer's input, the residual stream x [n][n_embd] before its attention norm
 * (StiefAttention's calibration fits each layer on the uncompressed model's inputs). */
typedef void (*kvs_llama_input_observer)(void *user, int layer, int n, int pos0, const float *x);
void kvs_llama_set_input_observer(kvs_llama *m, kvs_llama_input_observer fn, void *user);
/* May change every layer's keys and values [n][n_head_kv][head_dim] before RoPE, before they reach
 * the attention and the cache (calibration: the model with one layer's keys projected). */
typedef void (*kvs_llama_kv_filter)(void *user, int layer, int n, int pos0, float *k, float *v);
void kvs_llama_set_kv_filter(kvs_llama *m, kvs_llama_kv_filter fn, void *user);
/* One layer's weights decoded to fp32 ([out][in]: y = x W^T; wq and wk in the GGUF's row order,
 * RoPE on adjacent pairs): copies the caller frees with kvs_llama_layer_free. */
typedef struct {
    float *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm, *w_gate, *w_up, *w_down;
} kvs_llama_layer_weights;
/* @return KVS_OK, KVS_ERR_ARG (layer out of range), KVS_ERR_NOMEM (then nothing to free). */
KVS_NODISCARD kvs_status kvs_llama_layer(const kvs_llama *m, int layer, kvs_llama_layer_weights *out);
void kvs_llama_layer_free(kvs_llama_layer_weights *w);
/* StiefAttention's value bases folded into the output projection (spec section 2.3, oracle 10):
 * from now on forward() takes the value coefficients from kvs_attend_coef and multiplies them by
 * W_o' = W_o P_V (per query head, its KV head's basis) instead of projecting them back to head_dim
 * first. Only with this cache (another is KVS_ERR_ARG), which must be low-rank with window=0,
 * sinks=0, self=cache (KVS_ERR_CONFIG otherwise). NULL unfolds. The write path (W_k P_K, W_v P_V)
 * is not folded: the cache projects the keys and values it is given. */
KVS_NODISCARD kvs_status kvs_llama_fold(kvs_llama *m, const kvs_cache *cache);
/* FNV-1a 64 over the bytes of every tensor of the GGUF, in file order: the model identity that
 * calibration files carry and are checked against. */
uint64_t kvs_llama_identity(const kvs_llama *m);

/* Run n tokens (positions pos0 .. pos0+n-1, pos0 = tokens already in the cache) through the model:
 * attention over the cache plus the chunk, then the chunk's keys/values are appended to `cache`.
 * Logits of rows first_logit .. n-1 are written to logits[(i - first_logit) * n_vocab] (logits
 * may be NULL). One call at a time per model (it keeps the fp32 scratch that a chunk's weight rows
 * decode into, and its timing). @return KVS_OK or the first failing status (cache full, NaN, out
 * of memory). */
KVS_NODISCARD kvs_status kvs_llama_forward(kvs_llama *m, kvs_cache *cache, const int32_t *tokens, int n, int pos0,
                                          int first_logit, float *logits);

/* ---- HeatKV calibration statistics (heat_stats.c) ------------------------------------------------ */

typedef struct kvs_heat_stats kvs_heat_stats;
/* Accumulator for texts of ctx tokens: blocks of `block` positions after `sinks`, queries counted
 * for blocks outside their `window` newest positions. @return KVS_OK, KVS_ERR_ARG, KVS_ERR_NOMEM. */
KVS_NODISCARD kvs_status kvs_heat_stats_new(int n_layers, int n_heads, int n_kv_heads, int head_dim, int ctx, int block,
                                            int sinks, int window, kvs_heat_stats **out);
void kvs_heat_stats_free(kvs_heat_stats *s);
/* Before each text (its positions start at 0 again). */
void kvs_heat_stats_begin(kvs_heat_stats *s);
/* The observer (kvs_llama_set_observer with user = the stats). */
void kvs_heat_observe(void *stats, int layer, int n, int pos0, const float *q, const float *k);
/* A failure inside the observer (positions out of order, beyond ctx), or KVS_OK. */
kvs_status kvs_heat_stats_error(const kvs_heat_stats *s);
/* Means over the observed texts into a calibration (kvs_calib_heat_new). */
KVS_NODISCARD kvs_status kvs_heat_stats_finish(const kvs_heat_stats *s, const char *model, uint64_t hash, kvs_calib **out);

/* ---- retrieval-head statistics (retrieval_stats.c) ------------------------------------------- */

typedef struct kvs_retrieval_stats kvs_retrieval_stats;
/* Accumulator for texts of 1 + 2 * period tokens: BOS, `period` random tokens, the same again. */
KVS_NODISCARD kvs_status kvs_retrieval_stats_new(int n_layers, int n_heads, int n_kv_heads, int head_dim, int period,
                                                 kvs_retrieval_stats **out);
void kvs_retrieval_stats_free(kvs_retrieval_stats *s);
int kvs_retrieval_stats_ctx(const kvs_retrieval_stats *s);
void kvs_retrieval_stats_begin(kvs_retrieval_stats *s);
void kvs_retrieval_observe(void *stats, int layer, int n, int pos0, const float *q, const float *k);
kvs_status kvs_retrieval_stats_error(const kvs_retrieval_stats *s);
/* Mean attention mass on the echo and on the induction target per (layer, KV head), [2][L * H]:
 * aggregated over the KV head's query heads by mean (first L * H) and by max. */
void kvs_retrieval_stats_scores(const kvs_retrieval_stats *s, double *echo, double *induction);

/* ---- tokenizer: GPT-2 byte-level BPE as stored in the GGUF ------------------------------------- */

typedef struct kvs_tokenizer kvs_tokenizer;

/* From tokenizer.ggml.{model,pre,tokens,token_type,merges,bos_token_id,eos_token_id,add_bos_token}.
 * Supports model "gpt2" with the pre-tokenizers "smollm"/"starcoder"/"refact" (digits split one by
 * one, then the GPT-2 pattern) and "gpt2"/"default" (GPT-2 pattern only).
 * @return KVS_OK, KVS_ERR_FORMAT, KVS_ERR_UNSUPPORTED, KVS_ERR_NOMEM. */
KVS_NODISCARD kvs_status kvs_tokenizer_load(const kvs_gguf *g, kvs_tokenizer **out);
void kvs_tokenizer_free(kvs_tokenizer *t);
int kvs_tokenizer_n_vocab(const kvs_tokenizer *t);
int kvs_tokenizer_bos(const kvs_tokenizer *t); /* -1 if none */
int kvs_tokenizer_eos(const kvs_tokenizer *t);
int kvs_tokenizer_add_bos(const kvs_tokenizer *t);
/* Encode UTF-8 text (specials are not parsed: "<|im_start|>" is plain text, as llama-perplexity
 * tokenizes). *ids is allocated (free()); invalid UTF-8 bytes are read as U+FFFD. */
KVS_NODISCARD kvs_status kvs_tokenize(const kvs_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n);
/* Bytes of one token (control tokens give ""); returns the full length, writes at most cap. */
size_t kvs_token_bytes(const kvs_tokenizer *t, int32_t id, char *buf, size_t cap);

/* ---- perplexity, as llama.cpp's llama-perplexity computes it ---------------------------------- */

/* One chunk of n_ctx tokens from an empty cache, fed n_batch tokens per forward call (so later
 * tokens attend to already-compressed earlier ones). Positions n_ctx/2 .. n_ctx-2 are scored
 * (row p predicts token p+1). With add_bos the first token is replaced by BOS, as llama.cpp does.
 * Adds to *nll, *nll2 (double) and *count. logp_out (if not NULL) receives the log-softmax of each
 * scored row [n_ctx/2 - 1][n_vocab]; with logp_ref (same layout, e.g. of an fp32 cache) the sum
 * of KL(ref || this) over scored rows is added to *kl. */
typedef struct {
    double nll, nll2, kl;
    long count;
} kvs_ppl_acc;
KVS_NODISCARD kvs_status kvs_ppl_chunk(kvs_llama *m, kvs_cache *cache, const int32_t *tokens, int n_ctx, int n_batch,
                                      int bos, float *logp_out, const float *logp_ref, kvs_ppl_acc *acc);
/* exp(mean nll) and llama.cpp's uncertainty estimate. */
double kvs_ppl_value(const kvs_ppl_acc *a);
double kvs_ppl_error(const kvs_ppl_acc *a);
#endif
