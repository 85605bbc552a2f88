/* The rounding reference of tests/ref_int8.c (install with kvs__set_kernel_table). */
#ifndef KVS_TESTS_REF_INT8_H
#define KVS_TESTS_REF_INT8_H
#include "attn/attn.h"
extern const kvs_kernel_table kvs_kernels_ref_int8;
#endif
