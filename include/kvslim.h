/*
 * kvslim.h — a compressed key/value cache for transformer attention, and attention computed
 * directly over it. The one public header; it is also the manual.
 *
 * Life cycle
 *   kvs_config cfg = kvs_config_default();            shapes + compression method
 *   kvs_config_parse(&cfg, "oscar-int2,jensen=taylor"); optional: the same as one string
 *   kvs_cache_create(&cfg, &cache);                    allocates the fixed bookkeeping
 *   for each chunk of n tokens (a prompt, or 1 when decoding), for each layer l:
 *       kvs_attend(cache, l, n, q, k, v, out);         attention of the chunk's n queries
 *       kvs_cache_append(cache, l, n, k, v);            then the chunk joins the cache
 *   kvs_cache_free(cache);
 *
 * Layout of the cache, per (layer, KV head)
 *   [sinks: first S tokens, fp32] [quantized groups of G tokens] [window: newest tokens, fp32]
 *   Appended tokens enter the window. Keys quantized per channel (int2..int8) need G tokens: when
 *   the window holds W + G tokens its oldest G are compressed into one group (so it holds W to
 *   W + G - 1). Per-token key types (fp32, fp16, q8_0, q4_0) are compressed one at a time as soon
 *   as the window holds W + 1, into the next row of the last group (W = 0: every token is stored
 *   compressed at once, as llama.cpp does). Groups are aligned to absolute positions after the
 *   sinks, so the cache never depends on how tokens were chunked; stored tokens are never
 *   re-quantized.
 *
 * Eviction (HeatKV and its baselines, docs/methods/heatkv.md)
 *   With cfg.evict set, each (layer, KV head) stream drops whole blocks of old quantized tokens so
 *   that the cache holds at most budget * n_layers * n_kv_heads * max_tokens token slots. Which
 *   block goes when is fixed at kvs_cache_create (from the calibration for heatkv=); a dropped
 *   block's memory is freed at the append that reaches its time, and attention is the exact
 *   softmax over what is left. Sinks and the window are never dropped.
 *
 * Decode-faithful attention
 *   Query i of a chunk (position P = cached tokens + i) sees exactly what token-by-token decoding
 *   would show it: the cache after P appends (the chunk's earlier tokens included, compressed if
 *   they would have left the window by then) and its own token, at full precision (self=exact)
 *   or as the cache will store it (self=cache). A chunk of n gives the bits of n single steps.
 *
 * Units and shapes (row-major, float32)
 *   keys/values of a chunk: [n][n_kv_heads][head_dim]; keys after RoPE, as the model produces them,
 *   unless cfg.rope is set: then queries and keys come before RoPE and the cache rotates them by
 *   their positions (the cached token count plus the index in the chunk), which low-rank keys need
 *   (their basis acts before RoPE).
 *   queries and output:     [n][n_heads][head_dim]; query head h reads KV head h / (n_heads/n_kv_heads).
 *   Bytes are exact allocated payload bytes (every code, scale, zero point, norm, window and table);
 *   bits per element = 8 * bytes / (tokens * n_layers * n_kv_heads * head_dim * 2).
 *
 * Config grammar (kvs_config_parse): comma-separated items, each `key=value` or a preset name.
 *   presets: fp32 fp16 q8_0 q4_0 (llama.cpp's types: W = 0, self=cache), kivi-int2 kivi-int4
 *            (G = 32, W = 128), oscar-int2 oscar-int4 (KIVI + rotate=hadamard, scale=token)
 *   keys:    k v (fp32|fp16|q8_0|q4_0|int2|int3|int4|int8)  group  window  sinks
 *            rotate (none|hadamard)  scale (none|token)  jensen (off|taylor|exact)  lambda
 *            self (exact|cache)  layers heads kv_heads head_dim max_tokens threads tau
 *            heatkv (block|head|prop|greedy)  evict (none|uniform|random)  budget (0 < f <= 1)
 *            agg (mean|max)  seed  keep (retrieval heads kept whole: 0..layers*kv_heads)
 *            rope (none|adjacent)  rope_base (> 1; default 10000)
 *            stiefel (RK/RV: low-rank keys/values, ranks of head_dim; auto: ranks per layer, from
 *            the calibration's set, or auto:CR allocated under a compression ratio CR of the full
 *            cache's bytes; without heatkv/evict, budget= is that CR)  basis (learned|pca|eigen)
 *   (calib=PATH is the command line's: the library takes a loaded handle in cfg.calib.)
 *   Later items override earlier ones. Unknown keys and bad values are errors naming the offset.
 *   The methods are documented in docs/methods/ (oscar.md, jensen.md, baselines.md).
 *
 * Threads: calls on one cache must not overlap; different caches are independent. kvs_attend uses
 * cfg.n_threads worker threads (0 = all cores) when built with OpenMP; results are bit-identical
 * for every thread count. The library never prints, never aborts and keeps no global state except
 * the kernel table (chosen once, changed only by kvs_set_kernels) and the per-thread error message;
 * memory comes from malloc or from the caller's kvs_allocator.
 */
#ifndef KVSLIM_H
#define KVSLIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVSLIM_VERSION_MAJOR 0
#define KVSLIM_VERSION_MINOR 1
#define KVSLIM_VERSION_PATCH 0

#if defined(__GNUC__) || defined(__clang__)
#define KVS_NODISCARD __attribute__((warn_unused_result))
#else
#define KVS_NODISCARD
#endif

/* On every function here: the shared library hides all else (CTest exported_symbols checks). */
#if defined(__GNUC__) || defined(__clang__)
#define KVS_API __attribute__((visibility("default")))
#else
#define KVS_API
#endif

/* Status codes: values are stable, new ones are only appended. */
typedef enum {
    KVS_OK = 0,
    KVS_ERR_ARG = 1,          /* NULL pointer, layer out of range, n <= 0 */
    KVS_ERR_CONFIG = 2,       /* unknown key, bad value, inconsistent combination */
    KVS_ERR_NOMEM = 3,        /* allocation failed or a size overflowed */
    KVS_ERR_NONFINITE = 4,    /* NaN or Inf in keys, values or queries */
    KVS_ERR_RANGE = 5,        /* finite value outside what the cache type can store (|x| > 65504) */
    KVS_ERR_CAPACITY = 6,     /* append past cfg.max_tokens */
    KVS_ERR_IO = 7,           /* file could not be opened, read or written */
    KVS_ERR_FORMAT = 8,       /* malformed or truncated file */
    KVS_ERR_UNSUPPORTED = 9,  /* valid but not implemented (version, type) */
    KVS_ERR_INTERNAL = 10
} kvs_status;

/* Text of a status code ("config error", ...). Never NULL. */
KVS_API const char *kvs_status_str(kvs_status s);
/* Detail of the last failed call on this thread ("unknown key 'grp' at offset 14"); "" if none. */
KVS_API const char *kvs_last_error(void);
/* For code layered on kvslim (the model engine, tools): set this thread's message, printf-style,
 * and return s, so one kvs_last_error() serves the whole stack. */
KVS_API kvs_status kvs_report(kvs_status s, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Storage type of keys or values. */
typedef enum {
    KVS_TYPE_FP32 = 0,
    KVS_TYPE_FP16 = 1,
    KVS_TYPE_Q8_0 = 2, /* ggml q8_0: per token, blocks of 32 channels, fp16 scale, int8 */
    KVS_TYPE_Q4_0 = 3, /* ggml q4_0: per token, blocks of 32 channels, fp16 scale, 4-bit */
    KVS_TYPE_INT2 = 4, /* asymmetric uniform, fp16 scale + offset per group; keys per channel */
    KVS_TYPE_INT3 = 5, /* over G tokens, values per token over G channels */
    KVS_TYPE_INT4 = 6,
    KVS_TYPE_INT8 = 7,
    KVS_TYPE_COUNT
} kvs_type;

typedef enum { KVS_ROTATE_NONE = 0, KVS_ROTATE_HADAMARD = 1 } kvs_rotate;
typedef enum { KVS_SCALE_NONE = 0, KVS_SCALE_TOKEN = 1 } kvs_scale;
typedef enum { KVS_JENSEN_OFF = 0, KVS_JENSEN_TAYLOR = 1, KVS_JENSEN_EXACT = 2 } kvs_jensen;
/* How a query sees its own token: at full precision (kvslim's default), or as the cache stores it
 * (llama.cpp and most engines store the token before attending). Differs only when the window is 0. */
typedef enum { KVS_SELF_EXACT = 0, KVS_SELF_CACHE = 1 } kvs_self;
/* Which whole blocks of old tokens a (layer, KV head) stream drops to stay within cfg.budget
 * (docs/methods/heatkv.md). Sinks and the window are always kept. The heatkv variants need a
 * calibration (cfg.calib); the baselines do not. */
typedef enum {
    KVS_EVICT_NONE = 0,
    KVS_EVICT_UNIFORM = 1,      /* every head keeps sinks + the same number of newest tokens (StreamingLLM) */
    KVS_EVICT_RANDOM = 2,       /* heatkv=block's schedule with random rankings (control) */
    KVS_EVICT_HEATKV_BLOCK = 3, /* one ranking of (layer, head) per source block, by calibrated attention mass */
    KVS_EVICT_HEATKV_HEAD = 4,  /* one ranking by far-context mass: far heads keep all, others sinks + window */
    KVS_EVICT_HEATKV_PROP = 5,  /* per-head budgets proportional to far-context mass, oldest blocks first */
    KVS_EVICT_HEATKV_GREEDY = 6 /* per-head budgets that keep the most calibrated mass (by distance), oldest first */
} kvs_evict;
typedef enum { KVS_AGG_MEAN = 0, KVS_AGG_MAX = 1 } kvs_agg; /* over the query heads of a KV head */
/* Who applies RoPE: the caller (none: q and k arrive rotated) or the cache (adjacent: pairs
 * (2p, 2p+1) of every head turned by position * rope_base^(-2p/head_dim), llama.cpp's and the GGUF's
 * order). */
typedef enum { KVS_ROPE_NONE = 0, KVS_ROPE_ADJACENT = 1 } kvs_rope;
/* StiefAttention's low-rank bases (docs/methods/stiefel.md): PCA of the keys and values, EigenAttention's
 * ranks, or learned on the decoder-layer output. */
typedef enum { KVS_BASIS_PCA = 0, KVS_BASIS_LEARNED = 1, KVS_BASIS_EIGEN = 2 } kvs_basis;
/* A loaded calibration (kvs_calib_load): per-head statistics measured on one model. Opaque. */
typedef struct kvs_calib kvs_calib;

/* Facts about a storage type (the traits table). */
typedef struct {
    const char *name;   /* "int2", "q8_0", ... as in the config grammar */
    int bits;           /* bits per code, scales excluded (q8_0: 8; its 34-byte blocks give 8.5 per element) */
    int block;          /* ggml types: elements per block (32); others 1 */
    int block_bytes;    /* ggml types: bytes per block; fp: bytes per element; affine: 0 */
    int affine;         /* 1 for INT2/3/4/8: grouped codes with fp16 scale and offset */
} kvs_type_info;
KVS_API const kvs_type_info *kvs_type_get(kvs_type t); /* NULL for an out-of-range t */

/* The whole description of a cache. Create with kvs_config_default() so new fields get defaults. */
typedef struct {
    int n_layers, n_heads, n_kv_heads, head_dim; /* head_dim: power of two when rotate=hadamard */
    int max_tokens;      /* capacity per layer; appending past it is KVS_ERR_CAPACITY */
    kvs_type k_type, v_type;
    int group;           /* G: tokens per key group (per channel), channels per value group */
    int window;          /* W: newest tokens kept fp32; multiple of group */
    int sinks;           /* first tokens kept fp32 forever */
    kvs_rotate rotate;   /* Hadamard on keys (query rotated to match) and values (output rotated back) */
    kvs_scale scale;     /* OScaR per-token key norm (all KV heads of the layer) before quantization */
    kvs_jensen jensen;   /* bias correction on scores of quantized keys */
    float lambda;        /* Jensen strength, default 1 */
    float tau;           /* softmax scale; 0 = 1/sqrt(head_dim) */
    int n_threads;       /* 0 = all available */
    kvs_self self;       /* the query's own token: exact (default) or as stored */
    kvs_evict evict;     /* eviction policy; NONE keeps every token */
    float budget;        /* with evict: token slots kept, as a fraction of n_layers * n_kv_heads * max_tokens */
    kvs_agg agg;         /* heatkv: statistic aggregated over a KV head's query heads by mean or max */
    unsigned seed;       /* evict=random: seed of the rankings */
    const kvs_calib *calib; /* heatkv: calibration of this model (not owned; must outlive the cache) */
    int keep;            /* evict=uniform, heatkv=prop|greedy: the `keep` streams with the most calibrated
                            induction mass (retrieval heads) keep every token; the rest share the budget */
    kvs_rope rope;       /* none (default): q, k come rotated; adjacent: the cache rotates them (see above) */
    float rope_base;     /* RoPE frequency base with rope=adjacent (default 10000) */
    int rank_k, rank_v;  /* StiefAttention: keys and values stored as this many coefficients in the
                            calibration's bases (0, 0: full width), or both KVS_RANK_AUTO: per layer
                            (rank_budget, or the basis set's own ranks). Needs rope=adjacent, cfg.calib */
    kvs_basis basis;     /* which bases of the calibration: learned (default), pca or eigen */
    float rank_budget;   /* KVS_RANK_AUTO: the rank allocator's budget, bytes of the coefficients as a
                            fraction of the full-width rows (the compression ratio); 0 = the set's ranks */
} kvs_config;
enum { KVS_RANK_AUTO = -1 };

/* Defaults: SmolLM2-135M shapes (30 layers, 9 heads, 3 KV heads, 64), 8192 tokens, fp32, G=32, W=0. */
KVS_API kvs_config kvs_config_default(void);
/* Apply a config string on top of *cfg (see grammar above). On error *cfg is left unchanged.
 * @return KVS_OK or KVS_ERR_CONFIG (message names the item and its offset). */
KVS_API KVS_NODISCARD kvs_status kvs_config_parse(kvs_config *cfg, const char *text);
/* Check a config for consistency. @return KVS_OK or KVS_ERR_CONFIG naming the field. */
KVS_API KVS_NODISCARD kvs_status kvs_config_validate(const kvs_config *cfg);
/* The ranks a low-rank config resolves to, per layer (rank_k, rank_v: [n_layers]; 0 when the config
 * is full width): what the cache will store, known before it is created (kvslim info prints them).
 * @return KVS_OK, or kvs_config_validate's error. */
KVS_API KVS_NODISCARD kvs_status kvs_config_ranks(const kvs_config *cfg, int *rank_k, int *rank_v);
/* Canonical string of the compression part (k, v, group, window, sinks, rotate, scale, jensen,
 * lambda), parseable back. Writes at most cap bytes incl. NUL. @return length needed (w/o NUL).
 * An enum field out of range is written "?" (e.g. "k=?"), which kvs_config_parse rejects; a NULL
 * cfg writes "" and returns 0. */
KVS_API size_t kvs_config_format(const kvs_config *cfg, char *buf, size_t cap);

typedef struct kvs_cache kvs_cache; /* opaque */

/* @return KVS_OK (and *out set), KVS_ERR_ARG, KVS_ERR_CONFIG or KVS_ERR_NOMEM. */
KVS_API KVS_NODISCARD kvs_status kvs_cache_create(const kvs_config *cfg, kvs_cache **out);
/* Where the cache's memory comes from (an engine's own pool, a counting allocator in tests).
 * alloc returns `bytes` of memory aligned for any type, or NULL; free gets the same size back.
 * Every byte kvs_cache_bytes counts goes through these two, the cache struct included. */
typedef struct {
    void *(*alloc)(void *user, size_t bytes);
    void (*free)(void *user, void *p, size_t bytes);
    void *user;
} kvs_allocator;
/* kvs_cache_create with an allocator (NULL: malloc/free). The allocator is copied; user must
 * outlive the cache. @return as kvs_cache_create. */
KVS_API KVS_NODISCARD kvs_status kvs_cache_create_with(const kvs_config *cfg, const kvs_allocator *alloc,
                                                      kvs_cache **out);
KVS_API void kvs_cache_free(kvs_cache *c); /* NULL is a no-op */
/* Forget all tokens, keep the allocation of fixed tables. */
KVS_API void kvs_cache_reset(kvs_cache *c);
KVS_API const kvs_config *kvs_cache_config(const kvs_cache *c);

/* Append n tokens to `layer`. k, v: [n][n_kv_heads][head_dim]. Layers are independent (a model
 * appends the same tokens to each).
 * @return KVS_OK, KVS_ERR_ARG, KVS_ERR_NONFINITE, KVS_ERR_RANGE, KVS_ERR_CAPACITY, KVS_ERR_NOMEM.
 * On error nothing is appended. */
KVS_API KVS_NODISCARD kvs_status kvs_cache_append(kvs_cache *c, int layer, int n, const float *k,
                                                  const float *v);

/* Attention of n queries: the chunk's tokens take the positions after the cached ones, and query
 * i sees the cache as decoding would have left it after chunk tokens 0..i-1 (see "Decode-faithful
 * attention" above), plus its own token. q, out: [n][n_heads][head_dim]; k, v:
 * [n][n_kv_heads][head_dim], the chunk's own keys and values (n >= 1), to be appended next.
 * Does not modify the cache. @return KVS_OK, KVS_ERR_ARG, KVS_ERR_NONFINITE, KVS_ERR_NOMEM. */
KVS_API KVS_NODISCARD kvs_status kvs_attend(kvs_cache *c, int layer, int n, const float *q,
                                            const float *k, const float *v, float *out);

/* Tokens appended to `layer` (sinks + groups + window, evicted blocks included: the position of the
 * next token). -1 for a bad argument. */
KVS_API int kvs_cache_tokens(const kvs_cache *c, int layer);

/* Memory, exact: payload bytes allocated by the cache right now (codes, scales, offsets, norms,
 * window and sink buffers, block tables). */
KVS_API size_t kvs_cache_bytes(const kvs_cache *c);
/* Bits per cached element: 8 * bytes / (tokens * layers * kv_heads * head_dim * 2); 0 if empty.
 * With eviction, tokens counts those appended, so this is the effective rate against a full cache. */
KVS_API double kvs_cache_bits_per_element(const kvs_cache *c);
/* Bytes the cache would hold after n_tokens appended to every layer, before creating it.
 * @return KVS_OK or KVS_ERR_CONFIG / KVS_ERR_ARG / KVS_ERR_NOMEM (overflow). */
KVS_API KVS_NODISCARD kvs_status kvs_cache_bytes_for(const kvs_config *cfg, long long n_tokens,
                                                     size_t *bytes);

/* Calibration files (docs/calibration.md): written by `kvslim calibrate`, loaded explicitly (the
 * library never opens a file on its own). Every corruption (magic, version, truncation, checksum,
 * shapes, rankings that are not permutations, statistics out of range) is KVS_ERR_FORMAT or
 * KVS_ERR_UNSUPPORTED with kvs_last_error() naming the class.
 * @return KVS_OK, KVS_ERR_ARG, KVS_ERR_IO, KVS_ERR_FORMAT, KVS_ERR_UNSUPPORTED, KVS_ERR_NOMEM. */
KVS_API KVS_NODISCARD kvs_status kvs_calib_load(const char *path, kvs_calib **out);
KVS_API KVS_NODISCARD kvs_status kvs_calib_load_mem(const void *data, size_t size, kvs_calib **out);
KVS_API void kvs_calib_free(kvs_calib *cal); /* NULL is a no-op */
/* The model the calibration was measured on: its name and a hash of its weights (the tool compares
 * them with the model it runs before applying a file). */
KVS_API const char *kvs_calib_model(const kvs_calib *cal, uint64_t *model_hash);
/* Building one from statistics measured by any engine (kvslim calibrate is one such engine). */
typedef struct {
    const char *model;   /* name, at most 63 bytes kept */
    uint64_t model_hash;
    int n_layers, n_heads, n_kv_heads, head_dim;
    int block;           /* tokens per source block (a multiple of 8) */
    int sinks, window;   /* positions before block 0; query window excluded from the statistic */
    int ctx;             /* context of the calibration texts */
    int n_blocks;        /* source blocks measured: n_blocks * block + sinks <= ctx */
    int n_texts;         /* calibration texts averaged */
} kvs_calib_heat_desc;
/* mass[2][n_layers][n_kv_heads][n_blocks][n_blocks]: for aggregation a (0 mean, 1 max over the KV
 * head's query heads), the attention mass the queries of block t put on block s, averaged over
 * the nq[t][s] queries of t that see s outside their window (mass 0 where nq is 0). Rankings are
 * derived here. @return KVS_OK, KVS_ERR_ARG (shapes), KVS_ERR_FORMAT (a mass outside [0, 1]),
 * KVS_ERR_NOMEM. */
KVS_API KVS_NODISCARD kvs_status kvs_calib_heat_new(const kvs_calib_heat_desc *desc, const double *mass,
                                                    const uint32_t *nq, kvs_calib **out);
/* Add retrieval-head statistics (the keep= option's ranking) to a calibration: echo[2][n_layers *
 * n_kv_heads] and induction[2][...], aggregated over each KV head's query heads by mean, then max:
 * the mean attention mass that the repeat of a random token puts on its first occurrence (echo) and
 * on the token after it (induction), over n_texts sequences of `period` tokens read twice. Each in
 * [0, 1], echo + induction <= 1, max >= mean. Replaces earlier ones.
 * @return KVS_OK, KVS_ERR_ARG, KVS_ERR_FORMAT (a value out of range), KVS_ERR_NOMEM. */
KVS_API KVS_NODISCARD kvs_status kvs_calib_set_retrieval(kvs_calib *cal, int period, int n_texts, const double *echo,
                                                         const double *induction);
/* An empty calibration of a model, for sections added below. @return KVS_OK, KVS_ERR_ARG (shapes),
 * KVS_ERR_NOMEM. */
KVS_API KVS_NODISCARD kvs_status kvs_calib_create(const char *model, uint64_t model_hash, int n_layers, int n_heads,
                                                  int n_kv_heads, int head_dim, kvs_calib **out);
/* One basis set: keys[l] [head_dim][rank_k[l]] (one per layer, shared by its KV heads) and values[l]
 * [n_kv_heads][head_dim][rank_v[l]], each column-orthonormal (checked to 1e-4), pre-RoPE, in the
 * GGUF's channel order. Ranks in 1..head_dim. Replaces a set of the same kind.
 * @return KVS_OK, KVS_ERR_ARG (ranks, shapes), KVS_ERR_NONFINITE, KVS_ERR_FORMAT (not orthonormal),
 * KVS_ERR_NOMEM. */
KVS_API KVS_NODISCARD kvs_status kvs_calib_set_bases(kvs_calib *cal, kvs_basis basis, const int *rank_k, const int *rank_v,
                                                     const float *const *keys, const float *const *values);
/* Error-rank profiles for the rank allocator (stiefel=auto:CR): err[2][n_layers][n_ranks], keys then
 * values, the cost of that layer's keys (values) at ranks[i] (strictly ascending, in 1..head_dim),
 * summed over layers by the allocator; kvslim calibrate stiefel stores the model's output KL with
 * only that layer projected on the PCA prefix. @return KVS_OK, KVS_ERR_ARG, KVS_ERR_NONFINITE (an error NaN, Inf or negative), KVS_ERR_NOMEM. */
KVS_API KVS_NODISCARD kvs_status kvs_calib_set_profiles(kvs_calib *cal, int n_ranks, const int *ranks, const double *err);
/* @return KVS_OK, KVS_ERR_ARG, KVS_ERR_IO, KVS_ERR_NOMEM. */
KVS_API KVS_NODISCARD kvs_status kvs_calib_save(const kvs_calib *cal, const char *path);

/* StiefAttention folded into the output projection (docs/methods/stiefel.md, oracle 10): like
 * kvs_attend, but each query head's output is its rank_v coefficients in its KV head's value basis
 * P_V (out: [n][n_heads][rank_v of this layer]); out · (P_Vᵀ W_o) equals kvs_attend's out · W_o.
 * Needs a low-rank cache that stores every token it attends to as coefficients: window=0, sinks=0,
 * self=cache. @return kvs_attend's codes; KVS_ERR_CONFIG for another cache. */
KVS_API KVS_NODISCARD kvs_status kvs_attend_coef(kvs_cache *c, int layer, int n, const float *q, const float *k,
                                                 const float *v, float *out);
/* The value basis a low-rank cache uses for (layer, KV head): *basis [head_dim][*rank], row-major,
 * owned by the cache (after the Hadamard turn with rotate=hadamard). @return KVS_OK, KVS_ERR_ARG,
 * KVS_ERR_CONFIG (a full-width cache). */
KVS_API KVS_NODISCARD kvs_status kvs_cache_value_basis(const kvs_cache *c, int layer, int kv_head, const float **basis, int *rank);

/* Bytes of one (layer, KV head) stream right now: its group blocks, their share of the OScaR norms
 * (a norm row shared by k live streams counts 1/k to each, rounded down), sinks and window.
 * Sum over streams <= kvs_cache_bytes (the rest: tables and the cache struct). */
KVS_API size_t kvs_cache_stream_bytes(const kvs_cache *c, int layer, int kv_head);

/* Kernel variant in use: "avx2" or "ref". kvs_set_kernels("ref") forces the scalar reference
 * (tests and benchmarks); "auto" restores the default: the best the CPU supports, or "ref" when
 * the environment variable KVS_KERNELS=ref is set. @return KVS_OK or KVS_ERR_ARG (unknown name,
 * or avx2 asked on a CPU without AVX2/FMA/F16C). Process-wide; not to be changed while another
 * thread is inside kvs_attend. */
KVS_API const char *kvs_kernels(void);
KVS_API KVS_NODISCARD kvs_status kvs_set_kernels(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* KVSLIM_H */
