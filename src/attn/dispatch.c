/* CPU probe and kernel-table choice, done once; "ref" can be forced for tests and benchmarks. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../common/status.h"
#include "attn.h"

#if defined(KVS_HAVE_AVX2)
#include <cpuid.h>
static int cpu_has_avx2(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!(fma && osxsave && avx && f16c)) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0)); /* OS saves YMM state */
    if ((lo & 6) != 6) return 0;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 5) & 1;
}
#endif

static _Atomic(const kvs_kernel_table *) g_table;

/* The default: the best the CPU runs, unless the environment variable KVS_KERNELS=ref asks for
 * the scalar reference (CI runs the whole suite both ways). */
static const kvs_kernel_table *best(void) {
    const char *env = getenv("KVS_KERNELS");
    if (env && !strcmp(env, "ref")) return &kvs_kernels_ref;
#if defined(KVS_HAVE_AVX2)
    if (cpu_has_avx2()) return &kvs_kernels_avx2;
#endif
    return &kvs_kernels_ref;
}

const kvs_kernel_table *kvs__kernels(void) {
    const kvs_kernel_table *t = atomic_load(&g_table);
    if (!t) {
        t = best();
        atomic_store(&g_table, t);
    }
    return t;
}

const kvs_groups_entry *kvs__groups_for(const kvs_kernel_table *t, const kvs_method *m) {
    for (int e = 0; e < t->n_groups; e++) {
        const kvs_groups_entry *x = &t->groups[e];
        if ((x->key == KVS_LAYOUT_ANY || x->key == m->key.layout) &&
            (x->value == KVS_LAYOUT_ANY || x->value == m->value.layout) && (!x->G || x->G == m->G) &&
            (!x->d || x->d == m->d))
            return x;
    }
    return &t->groups[t->n_groups - 1]; /* tables end with a catch-all entry */
}

const char *kvs_kernels(void) { return kvs__kernels()->name; }

void kvs__set_kernel_table(const kvs_kernel_table *t) { atomic_store(&g_table, t ? t : best()); }

kvs_status kvs_set_kernels(const char *name) {
    if (!name) return kvs_report(KVS_ERR_ARG, "kvs_set_kernels: NULL name");
    if (!strcmp(name, "auto")) {
        atomic_store(&g_table, best());
        return KVS_OK;
    }
    if (!strcmp(name, "ref")) {
        atomic_store(&g_table, &kvs_kernels_ref);
        return KVS_OK;
    }
#if defined(KVS_HAVE_AVX2)
    if (!strcmp(name, "avx2")) {
        if (!cpu_has_avx2()) return kvs_report(KVS_ERR_ARG, "kvs_set_kernels: this CPU lacks AVX2/FMA/F16C");
        atomic_store(&g_table, &kvs_kernels_avx2);
        return KVS_OK;
    }
#endif
    return kvs_report(KVS_ERR_ARG, "kvs_set_kernels: unknown kernel set '%s' (auto, ref, avx2)", name);
}
