/* Internal error reporting: every failing path sets a per-thread message and returns its code. */
#ifndef KVS_COMMON_STATUS_H
#define KVS_COMMON_STATUS_H
#include "kvslim.h"

#if defined(__GNUC__) || defined(__clang__)
#define KVS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define KVS_PRINTF(a, b)
#endif

/* Set the per-thread message; returns s so callers can write `return kvs_fail(...)`. */
kvs_status kvs_fail(kvs_status s, const char *fmt, ...) KVS_PRINTF(2, 3);
void kvs_clear_error(void);

/* Overflow-checked size arithmetic: return 0 on overflow, 1 on success. */
static inline int kvs_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > (size_t)-1 / a) return 0;
    *out = a * b;
    return 1;
}
static inline int kvs_add_size(size_t a, size_t b, size_t *out) {
    if (b > (size_t)-1 - a) return 0;
    *out = a + b;
    return 1;
}
#endif
