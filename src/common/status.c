#include "status.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char g_msg[512];

const char *kvs_status_str(kvs_status s) {
    switch (s) {
    case KVS_OK: return "ok";
    case KVS_ERR_ARG: return "invalid argument";
    case KVS_ERR_CONFIG: return "config error";
    case KVS_ERR_NOMEM: return "out of memory or size overflow";
    case KVS_ERR_NONFINITE: return "non-finite input (NaN or Inf)";
    case KVS_ERR_RANGE: return "value out of range for the cache type";
    case KVS_ERR_CAPACITY: return "cache capacity exceeded";
    case KVS_ERR_IO: return "i/o error";
    case KVS_ERR_FORMAT: return "malformed file";
    case KVS_ERR_UNSUPPORTED: return "unsupported";
    case KVS_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *kvs_last_error(void) { return g_msg; }


kvs_status kvs_report(kvs_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return s;
}
