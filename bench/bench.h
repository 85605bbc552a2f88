/* Benchmarks linked into the kvslim CLI. Speed goals are ratios measured in one run. */
#ifndef KVS_BENCH_H
#define KVS_BENCH_H
double bench_now(void);               /* monotonic seconds */
double bench_read_bandwidth(int threads, double seconds); /* bytes/s, streaming read of 1 GiB */
int bench_attention_main(int argc, char **argv);
int bench_bandwidth_main(int argc, char **argv);
int bench_decode_main(int argc, char **argv);
#endif
