/* Internal error helpers: every failing path returns kvs_report(code, "message naming the value"). */
#ifndef KVS_COMMON_STATUS_H
#define KVS_COMMON_STATUS_H
#include "kvslim.h"

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
