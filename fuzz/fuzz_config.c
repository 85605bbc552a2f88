/* Fuzz target for the config parser (libFuzzer entry point; fuzz/replay.c drives it in CTest).
 * Invariants: never crashes; on success the config validates and its canonical string parses back
 * to the same compression settings; on failure the config is untouched and a message is set. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvslim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    kvs_config c = kvs_config_default(), before = c;
    kvs_status s = kvs_config_parse(&c, text);
    if (s == KVS_OK) {
        if (kvs_config_validate(&c) != KVS_OK) abort();
        char buf[256];
        kvs_config_format(&c, buf, sizeof buf);
        kvs_config back = c;
        if (kvs_config_parse(&back, buf) != KVS_OK || memcmp(&back, &c, sizeof c) != 0) abort();
        size_t bytes;
        /* an eviction plan may still refuse a budget it cannot keep between layers (with a message) */
        const kvs_status bs = kvs_cache_bytes_for(&c, 1000, &bytes);
        if (bs != KVS_OK && !(bs == KVS_ERR_CONFIG && c.evict != KVS_EVICT_NONE && kvs_last_error()[0])) abort();
    } else {
        if (memcmp(&c, &before, sizeof c) != 0 || kvs_last_error()[0] == 0) abort();
    }
    free(text);
    return 0;
}
