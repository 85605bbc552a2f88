/* Byte-level BPE as llama.cpp applies it to GPT-2-style vocabularies (docs/engine.md,
 * section 4): pre-tokenize (digits one by one for smollm, then the GPT-2 pattern), map bytes to
 * printable code points, merge adjacent pairs by rank (lowest first, leftmost on ties). */
#include <stdlib.h>
#include <string.h>

#include "model.h"

extern const uint32_t kvs_unicode_letters[][2], kvs_unicode_numbers[][2];
extern const int kvs_unicode_n_letters, kvs_unicode_n_numbers;

typedef struct {
    uint64_t key; /* string hash slot: index+1 of the token; pair slot: (left << 32 | right) + 1 */
    int32_t a, b; /* string map: id; pair map: rank, merged id */
} slot;

struct kvs_tokenizer {
    int n_vocab, bos, eos, add_bos, split_digits;
    const char **tok;   /* token strings (byte-level encoded), into the GGUF */
    uint32_t *tok_len;
    int32_t *tok_type;
    slot *vocab;        /* open addressing, cap_v slots */
    size_t cap_v;
    slot *pairs;
    size_t cap_p;
    int32_t byte_tok[256];  /* token of each byte's code point */
    uint8_t enc[256][3];    /* UTF-8 of each byte's code point */
    uint8_t enc_len[256];
    int16_t cp_byte[324];   /* inverse map: code point -> byte, -1 if none */
};

static uint64_t fnv(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int32_t vocab_find(const kvs_tokenizer *t, const char *s, size_t n) {
    for (size_t i = fnv(s, n) & (t->cap_v - 1);; i = (i + 1) & (t->cap_v - 1)) {
        const slot *e = &t->vocab[i];
        if (!e->key) return -1;
        const int32_t id = e->a;
        if (t->tok_len[id] == n && !memcmp(t->tok[id], s, n)) return id;
    }
}

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    return x ^ (x >> 33);
}

static const slot *pair_find(const kvs_tokenizer *t, int32_t l, int32_t r) {
    const uint64_t key = ((uint64_t)(uint32_t)l << 32 | (uint32_t)r) + 1;
    for (size_t i = mix(key) & (t->cap_p - 1);; i = (i + 1) & (t->cap_p - 1)) {
        const slot *e = &t->pairs[i];
        if (!e->key) return NULL;
        if (e->key == key) return e;
    }
}

static size_t utf8_put(uint32_t cp, uint8_t *o) {
    if (cp < 0x80) { o[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) { o[0] = (uint8_t)(0xC0 | cp >> 6); o[1] = (uint8_t)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | cp >> 12); o[1] = (uint8_t)(0x80 | ((cp >> 6) & 63)); o[2] = (uint8_t)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | cp >> 18); o[1] = (uint8_t)(0x80 | ((cp >> 12) & 63));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 63)); o[3] = (uint8_t)(0x80 | (cp & 63));
    return 4;
}

/* One code point from s[*i..n); invalid or truncated sequences give U+FFFD and advance 1 byte. */
static uint32_t utf8_next(const uint8_t *s, size_t n, size_t *i) {
    const uint8_t c = s[*i];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || *i + (size_t)len > n) { (*i)++; return 0xFFFD; }
    uint32_t cp = len == 1 ? c : len == 2 ? c & 31u : len == 3 ? c & 15u : c & 7u;
    for (int k = 1; k < len; k++) {
        if ((s[*i + k] & 0xC0) != 0x80) { (*i)++; return 0xFFFD; }
        cp = cp << 6 | (s[*i + k] & 63u);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) { (*i)++; return 0xFFFD; }
    *i += (size_t)len;
    return cp;
}

static int in_ranges(const uint32_t (*r)[2], int n, uint32_t cp) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        const int mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid - 1;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

static int is_letter(uint32_t cp) {
    if (cp < 128) return (cp | 32) >= 'a' && (cp | 32) <= 'z';
    return in_ranges(kvs_unicode_letters, kvs_unicode_n_letters, cp);
}
static int is_number(uint32_t cp) {
    if (cp < 128) return cp >= '0' && cp <= '9';
    return in_ranges(kvs_unicode_numbers, kvs_unicode_n_numbers, cp);
}
static int is_space(uint32_t cp) { /* the Unicode White_Space property */
    return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

void kvs_tokenizer_free(kvs_tokenizer *t) {
    if (!t) return;
    free(t->tok);
    free(t->tok_len);
    free(t->tok_type);
    free(t->vocab);
    free(t->pairs);
    free(t);
}

kvs_status kvs_tokenizer_load(const kvs_gguf *g, kvs_tokenizer **out) {
    if (!g || !out) return kvs_report(KVS_ERR_ARG, "tokenizer: NULL argument");
    *out = NULL;
    const char *s;
    size_t n;
    kvs_status st = kvs_gguf_get_str(g, "tokenizer.ggml.model", &s, &n);
    if (st) return st;
    if (n != 4 || memcmp(s, "gpt2", 4)) return kvs_report(KVS_ERR_UNSUPPORTED, "tokenizer: model '%.*s' (only gpt2 BPE)", (int)(n > 40 ? 40 : n), s);
    kvs_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return kvs_report(KVS_ERR_NOMEM, "tokenizer: out of memory");
    t->split_digits = 0;
    if (kvs_gguf_find(g, "tokenizer.ggml.pre")) {
        if ((st = kvs_gguf_get_str(g, "tokenizer.ggml.pre", &s, &n))) goto fail;
#define PRE(x) (n == strlen(x) && !memcmp(s, x, n))
        if (PRE("smollm") || PRE("starcoder") || PRE("refact")) t->split_digits = 1;
        else if (!(PRE("gpt2") || PRE("default"))) {
            st = kvs_report(KVS_ERR_UNSUPPORTED, "tokenizer: pre-tokenizer '%.*s'", (int)(n > 40 ? 40 : n), s);
            goto fail;
        }
#undef PRE
    }
    uint64_t nv;
    if ((st = kvs_gguf_get_str_array(g, "tokenizer.ggml.tokens", &nv, &t->tok, &t->tok_len))) goto fail;
    if (nv == 0 || nv > (1u << 24)) {
        st = kvs_report(KVS_ERR_FORMAT, "tokenizer: %llu tokens", (unsigned long long)nv);
        goto fail;
    }
    t->n_vocab = (int)nv;
    t->tok_type = calloc(nv, sizeof *t->tok_type);
    if (!t->tok_type) goto oom;
    {
        uint32_t ty;
        uint64_t cnt;
        const uint8_t *data;
        if (kvs_gguf_find(g, "tokenizer.ggml.token_type")) {
            if ((st = kvs_gguf_get_array(g, "tokenizer.ggml.token_type", &ty, &cnt, &data))) goto fail;
            if (ty != KVS_GGUF_TYPE_I32 || cnt != nv) {
                st = kvs_report(KVS_ERR_FORMAT, "tokenizer: token_type has type %u and %llu entries", ty, (unsigned long long)cnt);
                goto fail;
            }
            memcpy(t->tok_type, data, nv * 4);
        }
    }
    for (t->cap_v = 1; t->cap_v < 2 * nv; t->cap_v <<= 1) {}
    if (!(t->vocab = calloc(t->cap_v, sizeof *t->vocab))) goto oom;
    for (uint64_t i = 0; i < nv; i++) {
        if (vocab_find(t, t->tok[i], t->tok_len[i]) >= 0) continue; /* duplicate string: first id wins */
        size_t k = fnv(t->tok[i], t->tok_len[i]) & (t->cap_v - 1);
        while (t->vocab[k].key) k = (k + 1) & (t->cap_v - 1);
        t->vocab[k].key = i + 1;
        t->vocab[k].a = (int32_t)i;
    }
    /* byte -> code point: printable Latin-1 bytes map to themselves, the 68 others to 256+ */
    for (int i = 0; i < 324; i++) t->cp_byte[i] = -1;
    for (int b = 0, extra = 0; b < 256; b++) {
        const int keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        const uint32_t cp = keep ? (uint32_t)b : 256u + (uint32_t)extra++;
        t->enc_len[b] = (uint8_t)utf8_put(cp, t->enc[b]);
        t->cp_byte[cp] = (int16_t)b;
        t->byte_tok[b] = vocab_find(t, (const char *)t->enc[b], t->enc_len[b]);
    }
    /* merges "left right": rank = index */
    const char **mg = NULL;
    uint32_t *ml = NULL;
    uint64_t nm = 0;
    if ((st = kvs_gguf_get_str_array(g, "tokenizer.ggml.merges", &nm, &mg, &ml))) goto fail;
    for (t->cap_p = 1; t->cap_p < 2 * nm + 2; t->cap_p <<= 1) {}
    if (!(t->pairs = calloc(t->cap_p, sizeof *t->pairs))) {
        free(mg);
        free(ml);
        goto oom;
    }
    char buf[1024];
    for (uint64_t r = 0; r < nm; r++) {
        const char *m = mg[r];
        const uint32_t len = ml[r];
        uint32_t sp = 1;
        while (sp < len && m[sp] != ' ') sp++;
        if (sp >= len || len >= sizeof buf) continue; /* malformed merge: ignored, as llama.cpp would fail to use it */
        const int32_t l = vocab_find(t, m, sp), rr = vocab_find(t, m + sp + 1, len - sp - 1);
        memcpy(buf, m, sp);
        memcpy(buf + sp, m + sp + 1, len - sp - 1);
        const int32_t merged = vocab_find(t, buf, len - 1);
        if (l < 0 || rr < 0 || merged < 0) continue;
        const uint64_t key = ((uint64_t)(uint32_t)l << 32 | (uint32_t)rr) + 1;
        size_t k = mix(key) & (t->cap_p - 1);
        while (t->pairs[k].key && t->pairs[k].key != key) k = (k + 1) & (t->cap_p - 1);
        if (t->pairs[k].key) continue; /* the same pair twice: the first (lower) rank stays */
        t->pairs[k].key = key;
        t->pairs[k].a = (int32_t)r;
        t->pairs[k].b = merged;
    }
    free(mg);
    free(ml);
    t->bos = t->eos = -1;
    int64_t v;
    if (kvs_gguf_find(g, "tokenizer.ggml.bos_token_id") && !kvs_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v) && v >= 0 && v < (int64_t)nv)
        t->bos = (int)v;
    if (kvs_gguf_find(g, "tokenizer.ggml.eos_token_id") && !kvs_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v) && v >= 0 && v < (int64_t)nv)
        t->eos = (int)v;
    t->add_bos = 0; /* BPE vocabularies: only when the file asks for it */
    if (kvs_gguf_find(g, "tokenizer.ggml.add_bos_token") && !kvs_gguf_get_int(g, "tokenizer.ggml.add_bos_token", &v)) t->add_bos = v != 0;
    *out = t;
    return KVS_OK;
oom:
    st = kvs_report(KVS_ERR_NOMEM, "tokenizer: out of memory");
fail:
    kvs_tokenizer_free(t);
    return st;
}

int kvs_tokenizer_n_vocab(const kvs_tokenizer *t) { return t->n_vocab; }
int kvs_tokenizer_bos(const kvs_tokenizer *t) { return t->bos; }
int kvs_tokenizer_eos(const kvs_tokenizer *t) { return t->eos; }
int kvs_tokenizer_add_bos(const kvs_tokenizer *t) { return t->add_bos; }

typedef struct {
    int32_t *ids;
    int n, cap;
} idvec;

static int push(idvec *v, int32_t id) {
    if (v->n == v->cap) {
        const int cap = v->cap ? 2 * v->cap : 1024;
        int32_t *p = realloc(v->ids, (size_t)cap * sizeof *p);
        if (!p) return 0;
        v->ids = p;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return 1;
}

/* BPE over one piece (code points cp[0..n)), appending token ids to out. */
static int bpe_piece(const kvs_tokenizer *t, const uint32_t *cp, int n, idvec *out, int32_t *sym) {
    int ns = 0;
    uint8_t u8[4];
    for (int i = 0; i < n; i++) { /* UTF-8 bytes of the piece, each mapped to its symbol */
        const size_t m = utf8_put(cp[i], u8);
        for (size_t k = 0; k < m; k++) sym[ns++] = t->byte_tok[u8[k]];
    }
    for (;;) {
        int best = -1;
        int32_t best_rank = INT32_MAX, best_id = -1;
        for (int i = 0; i + 1 < ns; i++) {
            if (sym[i] < 0 || sym[i + 1] < 0) continue;
            const slot *e = pair_find(t, sym[i], sym[i + 1]);
            if (e && e->a < best_rank) {
                best_rank = e->a;
                best_id = e->b;
                best = i;
            }
        }
        if (best < 0) break;
        sym[best] = best_id;
        memmove(sym + best + 1, sym + best + 2, (size_t)(ns - best - 2) * sizeof *sym);
        ns--;
    }
    for (int i = 0; i < ns; i++)
        if (sym[i] >= 0 && !push(out, sym[i])) return 0;
    return 1;
}

/* GPT-2 pattern over one digit-free (or digit-only) piece: docs/engine.md, section 4, step 2. */
static int gpt2_split(const kvs_tokenizer *t, const uint32_t *cp, int n, idvec *out, int32_t *sym) {
    int i = 0;
    while (i < n) {
        const uint32_t c = cp[i];
        const uint32_t c1 = i + 1 < n ? cp[i + 1] : 0, c2 = i + 2 < n ? cp[i + 2] : 0;
        int j = i;
        if (c == '\'' && (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd')) {
            j = i + 2;
        } else if (c == '\'' && ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))) {
            j = i + 3;
        } else if (is_letter(c) || (c == ' ' && i + 1 < n && is_letter(c1))) {
            j = i + (c == ' ');
            while (j < n && is_letter(cp[j])) j++;
        } else if (is_number(c) || (c == ' ' && i + 1 < n && is_number(c1))) {
            j = i + (c == ' ');
            while (j < n && is_number(cp[j])) j++;
        } else if ((!is_space(c) && !is_letter(c) && !is_number(c)) ||
                   (c == ' ' && i + 1 < n && !is_space(c1) && !is_letter(c1) && !is_number(c1))) {
            j = i + (c == ' ');
            while (j < n && !is_space(cp[j]) && !is_letter(cp[j]) && !is_number(cp[j])) j++;
        } else { /* whitespace run: leave its last character to the next word if one follows */
            while (j < n && is_space(cp[j])) j++;
            if (j - i > 1 && j < n) j--;
        }
        if (!bpe_piece(t, cp + i, j - i, out, sym)) return 0;
        i = j;
    }
    return 1;
}

kvs_status kvs_tokenize(const kvs_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n) {
    if (!t || (!text && len) || !ids || !n) return kvs_report(KVS_ERR_ARG, "tokenize: NULL argument");
    if (len > (size_t)1 << 30) return kvs_report(KVS_ERR_ARG, "tokenize: %zu bytes is too long", len);
    *ids = NULL;
    *n = 0;
    uint32_t *cp = malloc((len + 1) * sizeof *cp);
    int32_t *sym = malloc((4 * len + 4) * sizeof *sym);
    idvec out = {NULL, 0, 0};
    int ok = cp && sym;
    size_t ncp = 0;
    for (size_t i = 0; ok && i < len;) cp[ncp++] = utf8_next((const uint8_t *)text, len, &i);
    if (ok && t->add_bos && t->bos >= 0) ok = push(&out, t->bos);
    /* pass 1 (smollm): every numeric code point is its own piece */
    for (size_t i = 0; ok && i < ncp;) {
        size_t j = i;
        if (t->split_digits && is_number(cp[i])) j = i + 1;
        else
            while (j < ncp && !(t->split_digits && is_number(cp[j]))) j++;
        ok = gpt2_split(t, cp + i, (int)(j - i), &out, sym);
        i = j;
    }
    free(cp);
    free(sym);
    if (!ok) {
        free(out.ids);
        return kvs_report(KVS_ERR_NOMEM, "tokenize: out of memory for %zu bytes", len);
    }
    *ids = out.ids;
    *n = out.n;
    return KVS_OK;
}

size_t kvs_token_bytes(const kvs_tokenizer *t, int32_t id, char *buf, size_t cap) {
    if (id < 0 || id >= t->n_vocab || t->tok_type[id] == 3) return 0; /* control tokens print nothing */
    const uint8_t *s = (const uint8_t *)t->tok[id];
    size_t i = 0, w = 0;
    while (i < t->tok_len[id]) {
        const uint32_t c = utf8_next(s, t->tok_len[id], &i);
        if (c < 324 && t->cp_byte[c] >= 0) {
            if (w < cap) buf[w] = (char)t->cp_byte[c];
            w++;
        } else { /* not byte-level (user-defined token): its UTF-8 as is */
            uint8_t u[4];
            const size_t m = utf8_put(c, u);
            for (size_t k = 0; k < m; k++, w++)
                if (w < cap) buf[w] = (char)u[k];
        }
    }
    return w;
}
