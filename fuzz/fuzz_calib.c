/* Fuzz target for the calibration loader (libFuzzer entry point; fuzz/replay.c drives it in CTest).
 * Each input is parsed twice: as given (the checksum rejects nearly every mutation), and resealed
 * with a correct checksum so that mutations reach the shape, value and ranking checks behind it.
 * Invariants: never crashes; a failure names its class; a loaded file serializes back to the same
 * bytes, and an eviction plan built on it either is made or is refused with a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "calib/calib.h"

static uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void one(const uint8_t *data, size_t size) {
    kvs_calib *c = NULL;
    kvs_calib_error e = KVS_CALIB_OK;
    if (kvs__calib_parse(data, size, &c, &e) != KVS_OK) {
        if (e == KVS_CALIB_OK || kvs_last_error()[0] == 0 || c) abort();
        return;
    }
    uint8_t *b = NULL;
    size_t n = 0;
    if (kvs__calib_serialize(c, &b, &n) != KVS_OK) abort();
    /* unknown sections are skipped on load and not written back: compare only files without them */
    if (c->has_heat && n == size && memcmp(b, data, n) != 0) abort();
    free(b);
    kvs_config cfg = kvs_config_default();
    cfg.n_layers = c->n_layers, cfg.n_heads = c->n_heads, cfg.n_kv_heads = c->n_kv_heads, cfg.head_dim = c->head_dim;
    cfg.max_tokens = 512;
    cfg.calib = c;
    if (c->has_heat && c->heat.block <= 256 && c->n_layers <= 8) {
        kvs_config x = cfg;
        if (kvs_config_parse(&x, "kivi-int4,window=32,sinks=4,heatkv=block,budget=0.5") == KVS_OK) {
            kvs_cache *cache = NULL;
            if (kvs_cache_create(&x, &cache) != KVS_OK && kvs_last_error()[0] == 0) abort();
            kvs_cache_free(cache);
        } else if (kvs_last_error()[0] == 0) {
            abort();
        }
    }
    kvs_calib_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    one(data, size);
    if (size >= 16) {
        uint8_t *x = malloc(size);
        if (!x) return 0;
        memcpy(x, data, size);
        const uint64_t total = size; /* make the header's size agree too, so the body is what is tested */
        for (int i = 0; i < 8 && size >= 24; i++) x[16 + i] = (uint8_t)(total >> (8 * i));
        const uint64_t h = fnv1a(x, size - 8);
        for (int i = 0; i < 8; i++) x[size - 8 + i] = (uint8_t)(h >> (8 * i));
        one(x, size);
        free(x);
    }
    return 0;
}
