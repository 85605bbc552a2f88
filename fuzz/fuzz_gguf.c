/* Fuzz target for the GGUF reader (libFuzzer entry point; fuzz/replay.c drives it in CTest).
 * Invariants: never crashes or reads out of bounds; on success every tensor lies inside the
 * buffer and every string array can be walked; on failure a class and a message are set. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

static volatile uint8_t g_sink; /* the last byte of every value is read (ASan checks it) */
static const uint8_t k_elem_size[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8}; /* by GGUF value type */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kvs_gguf *g = NULL;
    kvs_gguf_error e = KVS_GGUF_OK;
    if (kvs_gguf_open_mem(data, size, &g, &e) != KVS_OK) {
        if (e == KVS_GGUF_OK || kvs_last_error()[0] == 0 || g) abort();
        return 0;
    }
    for (int i = 0; i < kvs_gguf_n_tensors(g); i++) {
        const kvs_gguf_tensor *t = kvs_gguf_tensor_at(g, i);
        if (t->data < data || t->data + t->bytes > data + size) abort();
        float tmp[256];
        const int bs = kvs_ggml_block_size(t->type);
        if (t->ne[0] >= bs && bs <= 256 && kvs_ggml_dequant(t->type, t->data, tmp, bs) != KVS_OK) abort();
    }
    for (int i = 0; i < kvs_gguf_n_kv(g); i++) {
        const kvs_gguf_kv *kv = kvs_gguf_kv_at(g, i);
        /* every typed getter on every key: each must read only what the parser validated */
        int64_t iv;
        float fv;
        const char *sv;
        size_t sl;
        uint32_t at;
        uint64_t an;
        const uint8_t *ad;
        if (kvs_gguf_get_int(g, kv->key, &iv) == KVS_OK) g_sink ^= (uint8_t)iv;
        if (kvs_gguf_get_f32(g, kv->key, &fv) == KVS_OK) g_sink ^= (uint8_t)(fv == fv);
        if (kvs_gguf_get_str(g, kv->key, &sv, &sl) == KVS_OK && sl) g_sink ^= (uint8_t)sv[sl - 1];
        if (kvs_gguf_get_array(g, kv->key, &at, &an, &ad) == KVS_OK && an) {
            if (at >= sizeof k_elem_size || !k_elem_size[at]) abort();
            g_sink ^= ad[an * k_elem_size[at] - 1];
        }
        if (kv->type == KVS_GGUF_TYPE_ARRAY && kv->arr_type == KVS_GGUF_TYPE_STRING) {
            uint64_t n;
            const char **s;
            uint32_t *l;
            if (kvs_gguf_get_str_array(g, kv->key, &n, &s, &l) == KVS_OK) {
                for (uint64_t k = 0; k < n; k++)
                    if (l[k]) g_sink ^= (uint8_t)s[k][l[k] - 1];
                free(s);
                free(l);
            }
        }
    }
    kvs_gguf_close(g);
    return 0;
}
