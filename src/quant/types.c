#include "formats.h"

static const kvs_type_info g_types[KVS_TYPE_COUNT] = {
    [KVS_TYPE_FP32] = {"fp32", 32, 1, 4, 0},
    [KVS_TYPE_FP16] = {"fp16", 16, 1, 2, 0},
    [KVS_TYPE_Q8_0] = {"q8_0", 8, KVS_QK, (int)sizeof(kvs_block_q8_0), 0},
    [KVS_TYPE_Q4_0] = {"q4_0", 4, KVS_QK, (int)sizeof(kvs_block_q4_0), 0},
    [KVS_TYPE_INT2] = {"int2", 2, 1, 0, 1},
    [KVS_TYPE_INT3] = {"int3", 3, 1, 0, 1},
    [KVS_TYPE_INT4] = {"int4", 4, 1, 0, 1},
    [KVS_TYPE_INT8] = {"int8", 8, 1, 0, 1},
};

const kvs_type_info *kvs_type_get(kvs_type t) {
    if ((int)t < 0 || t >= KVS_TYPE_COUNT) return NULL;
    return &g_types[t];
}
