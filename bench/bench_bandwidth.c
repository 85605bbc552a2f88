/* The roofline: the machine's streaming read bandwidth, measured in the same run. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../tools/kvslim/args.h"
#include "bench.h"

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Sum 1 GiB of 64-bit words with independent accumulators (enough to saturate DRAM on any
 * x86 core without SIMD); best of the passes run within `seconds`. */
double bench_read_bandwidth(int threads, double seconds) {
    const size_t bytes = (size_t)1 << 30, n = bytes / sizeof(uint64_t);
    uint64_t *buf = malloc(bytes);
    if (!buf) return 0.0;
#ifdef _OPENMP
    if (threads <= 0) threads = omp_get_max_threads();
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (size_t i = 0; i < n; i++) buf[i] = i * 2654435761u; /* touch every page on its own thread */
    double best = 0.0, t_end = bench_now() + seconds;
    volatile uint64_t sink = 0;
    do {
        uint64_t total = 0;
        const double t0 = bench_now();
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total)
#endif
        for (size_t blk = 0; blk < n / 1024; blk++) {
            const uint64_t *p = buf + blk * 1024;
            uint64_t a = 0, b = 0, c = 0, d = 0;
            for (int i = 0; i < 1024; i += 4) {
                a += p[i];
                b += p[i + 1];
                c += p[i + 2];
                d += p[i + 3];
            }
            total += a ^ b ^ c ^ d;
        }
        const double dt = bench_now() - t0;
        sink += total;
        if (bytes / dt > best) best = bytes / dt;
    } while (bench_now() < t_end);
    (void)sink;
    free(buf);
    return best;
}

int bench_bandwidth_main(int argc, char **argv) {
    int threads = 0;
    const cli_opt opts[] = {{"--threads", "N", OPT_INT, &threads, 0, 1024, "threads, 0 = all"}};
    const cli_cmd cmd = {"bench bandwidth", "Streaming read bandwidth of this machine (1 GiB, best pass within 1 s).",
                         NULL, NULL, 0, opts, CLI_COUNT(opts)};
    const int rc = cli_parse(&cmd, argc, argv);
    if (rc != CLI_RUN) return rc;
    printf("read bandwidth: %.2f GB/s\n", bench_read_bandwidth(threads, 1.0) / 1e9);
    return 0;
}
