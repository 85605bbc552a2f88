/* Eviction (HeatKV and its baselines): the plan's oracles (docs/methods/heatkv.md, section 8),
 * attention over a pruned cache equal to masking the dropped keys, exact bytes as blocks are freed. */
#include <string.h>

#include "attn/attn.h"
#include "cache/cache.h"
#include "calib_fixture.h"
#include "test_util.h"

static long long stored_at(const kvs_config *cfg, long long t) {
    long long s, q, w;
    kvs_method m;
    kvs__method_resolve(cfg, &m);
    kvs__counts(&m, t, &s, &q, &w);
    return q;
}
/* evictable: as evict.c defines it (self=cache keeps the newest token's block one step longer) */
static long long quant_at(const kvs_config *cfg, long long t) {
    t -= cfg->self == KVS_SELF_CACHE;
    return stored_at(cfg, t > 0 ? t : 0);
}

/* tokens stream (l, h) holds after t appends */
static long long held(const kvs_config *cfg, const kvs_evict_plan *p, int l, int h, long long t) {
    const int32_t *drop = p->drop + ((size_t)l * cfg->n_kv_heads + h) * p->n_blocks;
    long long k = 0;
    for (int b = 0; b < p->n_blocks; b++) k += drop[b] <= t;
    return t - k * p->blk_tokens;
}

/* Oracles every plan must meet: decode order (layers one by one) never exceeds M; nothing is
 * dropped before its block is complete; budget 1 drops nothing. Returns the plan for more checks. */
static int check_plan(const kvs_config *cfg, kvs_evict_plan *p, const char *what) {
    kvs_status st = kvs__evict_plan(cfg, p);
    CHECK(st == KVS_OK, "%s: plan -> %s (%s)", what, kvs_status_str(st), kvs_last_error());
    if (st) return 0;
    const int L = cfg->n_layers, H = cfg->n_kv_heads, B = p->blk_tokens;
    long long worst = 0, peak = 0;
    long long *now = calloc((size_t)L, sizeof(long long)), *before = calloc((size_t)L, sizeof(long long));
    for (long long t = 1; t <= cfg->max_tokens; t++) {
        for (int l = 0; l < L; l++) {
            before[l] = now[l];
            now[l] = 0;
            for (int h = 0; h < H; h++) now[l] += held(cfg, p, l, h, t);
        }
        for (int l = 0; l < L; l++) { /* layers <= l hold t tokens, the others still t - 1 */
            long long total = 0;
            for (int x = 0; x < L; x++) total += x <= l ? now[x] : before[x];
            worst = total - p->slots > worst ? total - p->slots : worst;
            peak = total > peak ? total : peak;
        }
    }
    free(now);
    free(before);
    CHECK(worst <= 0, "%s: decode exceeds the budget of %lld slots by %lld", what, p->slots, worst);
    int premature = 0, any = 0;
    for (int u = 0; u < L * H; u++)
        for (int b = 0; b < p->n_blocks; b++) {
            const int32_t d = p->drop[(size_t)u * p->n_blocks + b];
            if (d == KVS_NEVER) continue;
            any = 1;
            premature += quant_at(cfg, d) < (long long)(b + 1) * B; /* block not complete when dropped */
        }
    CHECK(!premature, "%s: %d blocks dropped before they were complete", what, premature);
    if (cfg->budget >= 1.0f) CHECK(!any, "%s: budget 1 dropped blocks", what);
    else CHECK(peak > p->slots - (long long)L * H * B, "%s: peak %lld slots far below the budget %lld (wasted)", what, peak, p->slots);
    return 1;
}

static kvs_config small_cfg(const char *s, const kvs_calib *cal, int L, int H, int T) {
    kvs_config c = kvs_config_default();
    c.n_layers = L, c.n_kv_heads = H, c.n_heads = 2 * H, c.head_dim = 64, c.max_tokens = T;
    c.calib = cal;
    kvs_status st = kvs_config_parse(&c, s);
    CHECK(st == KVS_OK, "parse '%s' -> %s (%s)", s, kvs_status_str(st), kvs_last_error());
    return c;
}

/* x(t) of heatkv=block at full state t: every complete block has lost the same number of units,
 * the first of its ranking; minimal when it grows; fewer with a larger budget. */
static void block_shape(void) {
    const int L = 1, H = 8, U = L * H, T = 1024; /* one layer: no early pruning to blur the shape */
    kvs_calib *cal = fixture_calib(L, 2 * H, H, 64, 64, 4, 32, 2048, 30, 7);
    long long prev_x[1025];
    for (int bi = 0; bi < 3; bi++) {
        const float budgets[3] = {0.6f, 0.35f, 0.2f};
        char s[128];
        snprintf(s, sizeof s, "kivi-int4,window=32,sinks=4,heatkv=block,budget=%g", (double)budgets[bi]);
        kvs_config cfg = small_cfg(s, cal, L, H, T);
        kvs_evict_plan p;
        if (!check_plan(&cfg, &p, s)) continue;
        const int B = p.blk_tokens, nbk = p.n_blocks;
        int bad_shape = 0, bad_prefix = 0, not_minimal = 0, over = 0, not_mono = 0;
        long long x_prev = 0;
        for (long long t = 1; t <= T; t++) {
            const long long nb = quant_at(&cfg, t) / B, R = t - nb * B;
            long long x = -1;
            for (int b = 0; b < nb && b < nbk; b++) {
                long long cnt = 0;
                const uint16_t *o = cal->heat.order + ((size_t)0 * cal->heat.n_blocks + (b < 30 ? b : 29)) * U;
                int prefix = 1;
                for (int r = 0; r < U; r++) {
                    const int u = o[r];
                    const int gone = p.drop[(size_t)u * nbk + b] <= t;
                    cnt += gone;
                    if (gone && r > 0 && p.drop[(size_t)o[r - 1] * nbk + b] > t) prefix = 0;
                }
                bad_prefix += !prefix;
                if (x < 0) x = cnt;
                else bad_shape += cnt != x;
            }
            if (x < 0) x = 0;
            over += (long long)U * t - x * (t - R) > p.slots;
            if (x > x_prev) not_minimal += (long long)U * t - (x - 1) * (t - R) <= p.slots; /* x - 1 would have fit */
            if (bi > 0) not_mono += x < prev_x[t];
            prev_x[t] = x;
            x_prev = x;
        }
        CHECK(!bad_shape, "%s: complete blocks lost different numbers of units at %d steps", s, bad_shape);
        CHECK(!bad_prefix, "%s: removed units are not a prefix of the ranking at %d (step, block)s", s, bad_prefix);
        CHECK(!over, "%s: %d full states over the budget", s, over);
        CHECK(!not_minimal, "%s: x(t) not minimal at %d steps", s, not_minimal);
        CHECK(!not_mono, "%s: a smaller budget removed fewer units at %d steps", s, not_mono);
        kvs__evict_plan_free(&p);
    }
    kvs_calib_free(cal);
}

/* Hand-computed: 1 layer x 2 heads, fp32 (tokens stored one at a time), W = S = 0, blocks of 8,
 * 64 tokens, budget 1/2 (64 slots). x(t) = 0 up to 32, 1 from 33 (t + t mod 8 <= 64), 2 from 61.
 * The first-ranked unit of block b goes at max(8(b+1), 33), the other at max(8(b+1), 61). */
static void known_answer(void) {
    kvs_calib *cal = fixture_calib(1, 4, 2, 64, 8, 0, 0, 64, 8, 3);
    kvs_config cfg = small_cfg("fp32,heatkv=block,budget=0.5,group=8", cal, 1, 2, 64);
    kvs_evict_plan p;
    if (check_plan(&cfg, &p, "known answer")) {
        int bad = 0;
        for (int b = 0; b < 8; b++) {
            const uint16_t *o = cal->heat.order + (size_t)b * 2;
            const int32_t want0 = 8 * (b + 1) > 33 ? 8 * (b + 1) : 33, want1 = 8 * (b + 1) > 61 ? 8 * (b + 1) : 61;
            const int32_t got0 = p.drop[(size_t)o[0] * 8 + b], got1 = p.drop[(size_t)o[1] * 8 + b];
            if (got0 != want0 || got1 != want1) {
                bad++;
                fprintf(stderr, "  block %d: drops %d, %d; want %d, %d\n", b, got0, got1, want0, want1);
            }
        }
        CHECK(!bad, "known-answer schedule differs in %d blocks", bad);
        kvs__evict_plan_free(&p);
    }
    kvs_calib_free(cal);
}

/* head: a unit keeps all or nothing; uniform: every unit the same; prop: more mass, more slots;
 * random: a function of the seed; every variant deterministic; infeasible budgets refused. */
static void variants(void) {
    const int L = 3, H = 3, U = L * H, T = 768;
    kvs_calib *cal = fixture_calib(L, 2 * H, H, 64, 64, 4, 32, 1024, 12, 11);
    const char *v[] = {"oscar-int2,sinks=4,window=32,heatkv=head,budget=0.3",
                       "oscar-int2,sinks=4,window=32,evict=uniform,budget=0.3",
                       "oscar-int2,sinks=4,window=32,heatkv=prop,budget=0.3",
                       "oscar-int2,sinks=4,window=32,heatkv=prop,budget=0.3,agg=max",
                       "oscar-int2,sinks=4,window=32,evict=random,budget=0.3,seed=5",
                       "oscar-int2,sinks=4,window=32,heatkv=greedy,budget=0.3",
                       "oscar-int2,sinks=4,window=32,heatkv=greedy,budget=0.3,agg=max",
                       "q4_0,sinks=4,heatkv=block,budget=0.25",
                       "q8_0,evict=uniform,budget=0.1",
                       "oscar-int2,sinks=4,window=32,heatkv=block,budget=1",
                       "oscar-int2,sinks=4,window=32,heatkv=prop,budget=0.45,keep=2",
                       "oscar-int2,sinks=4,window=32,evict=uniform,budget=0.45,keep=3,agg=max"};
    CHECK(fixture_retr(cal), "retrieval statistics");
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        kvs_config cfg = small_cfg(v[i], cal, L, H, T);
        kvs_evict_plan p, again;
        if (!check_plan(&cfg, &p, v[i])) continue;
        if (kvs__evict_plan(&cfg, &again) == KVS_OK) {
            CHECK(!memcmp(p.drop, again.drop, (size_t)U * p.n_blocks * sizeof(int32_t)), "%s: not deterministic", v[i]);
            kvs__evict_plan_free(&again);
        }
        const int nb = p.n_blocks;
        if (cfg.evict == KVS_EVICT_HEATKV_HEAD) {
            int mixed = 0;
            for (long long t = 1; t <= T; t += 7) {
                const long long full = quant_at(&cfg, t) / p.blk_tokens;
                for (int u = 0; u < U; u++) {
                    long long k = 0;
                    for (int b = 0; b < nb; b++) k += p.drop[(size_t)u * nb + b] <= t;
                    mixed += k != 0 && k != full;
                }
            }
            CHECK(!mixed, "%s: %d (unit, step)s keep part of their old blocks", v[i], mixed);
        }
        if (cfg.evict == KVS_EVICT_UNIFORM && !cfg.keep) { /* with keep=, retrieval_keep checks the shape */
            int diff = 0;
            for (int u = 1; u < U; u++) diff += memcmp(p.drop, p.drop + (size_t)u * nb, (size_t)nb * sizeof(int32_t)) != 0;
            CHECK(!diff, "%s: %d units differ from unit 0", v[i], diff);
        }
        if (cfg.evict == KVS_EVICT_HEATKV_PROP && !cfg.keep) {
            const double *far = cal->heat.far + (size_t)cfg.agg * U;
            int inverted = 0;
            for (int a = 0; a < U; a++)
                for (int b = 0; b < U; b++)
                    if (far[a] > far[b] && held(&cfg, &p, a / H, a % H, T) < held(&cfg, &p, b / H, b % H, T) - p.blk_tokens) inverted++;
            CHECK(!inverted, "%s: %d pairs where more mass kept fewer slots", v[i], inverted);
        }
        if (cfg.evict == KVS_EVICT_RANDOM) {
            kvs_config c2 = cfg;
            c2.seed = 6;
            kvs_evict_plan q;
            if (kvs__evict_plan(&c2, &q) == KVS_OK) {
                CHECK(memcmp(p.drop, q.drop, (size_t)U * nb * sizeof(int32_t)) != 0, "random: seeds 5 and 6 gave the same plan");
                kvs__evict_plan_free(&q);
            }
        }
        kvs__evict_plan_free(&p);
    }
    /* refusals, each naming its reason */
    struct { const char *s; const char *word; int with_cal; } bad[] = {
        {"oscar-int2,sinks=4,window=32,heatkv=block,budget=0.05", "budget", 1},
        {"oscar-int2,heatkv=block,budget=0.5", "calibration", 0},
        {"oscar-int2,evict=uniform,budget=0", "budget", 0},
        {"oscar-int2,evict=uniform,budget=1.5", "budget", 0},
        {"oscar-int2,calib=x.kvcal", "calib", 0},
        {"oscar-int2,heatkv=blocks", "heatkv", 0},
        {"oscar-int2,evict=uniform,max_tokens=2000000", "max_tokens", 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        kvs_config c = kvs_config_default();
        c.n_layers = L, c.n_kv_heads = H, c.n_heads = 2 * H, c.max_tokens = T;
        c.calib = bad[i].with_cal ? cal : NULL;
        const kvs_status st = kvs_config_parse(&c, bad[i].s);
        CHECK(st == KVS_ERR_CONFIG && strstr(kvs_last_error(), bad[i].word), "'%s' -> %s (%s)", bad[i].s, kvs_status_str(st),
              kvs_last_error());
    }
    kvs_calib *other = fixture_calib(L + 1, 2 * H, H, 64, 64, 4, 32, 1024, 12, 11);
    kvs_config c = kvs_config_default();
    c.n_layers = L, c.n_kv_heads = H, c.n_heads = 2 * H, c.max_tokens = T, c.calib = other;
    kvs_status st = kvs_config_parse(&c, "heatkv=block,budget=0.5");
    CHECK(st == KVS_ERR_CONFIG && strstr(kvs_last_error(), "calibration measured"), "another model's calibration -> %s (%s)",
          kvs_status_str(st), kvs_last_error());
    kvs_calib_free(other);
    kvs_calib_free(cal);
}

/* prop and greedy budgets: sum exactly M, each in [base, cap]; prop monotone in its score; greedy
 * optimal for the dropped-mass objective (no unit's next block holds more mass than another
 * unit's last block: an exchange would not help). */
static void budgets(void) {
    const int L = 4, H = 3, U = L * H;
    kvs_calib *cal = fixture_calib(L, 2 * H, H, 64, 64, 4, 32, 2048, 20, 17);
    long long b[64];
    const long long base = 300, cap = 2048;
    for (long long M = base * U; M <= cap * U; M += 1777) {
        CHECK(kvs__prop_budgets(cal->heat.far, U, base, M, cap, b), "prop budgets");
        long long sum = 0;
        int bad = 0, inverted = 0;
        for (int u = 0; u < U; u++) {
            sum += b[u];
            bad += b[u] < base || b[u] > cap;
            for (int v = 0; v < U; v++) inverted += cal->heat.far[u] > cal->heat.far[v] && b[u] + 1 < b[v];
        }
        CHECK(sum == M && !bad && !inverted, "prop M=%lld: sum %lld, %d out of range, %d inverted", M, sum, bad, inverted);
        CHECK(kvs__greedy_budgets(cal, 0, U, base, M, cap, b), "greedy budgets");
        sum = 0, bad = 0;
        const int nb = cal->heat.n_blocks, B = cal->heat.block;
        double min_last = 1e300, max_next = -1.0;
        for (int u = 0; u < U; u++) {
            sum += b[u];
            bad += b[u] < base || b[u] > cap;
            const int k = (int)((b[u] - base) / B); /* whole blocks given (the pool's tail may add a part) */
            double prof[64] = {0};
            for (int d = 1; d <= nb; d++) {
                double s2 = 0.0;
                int n = 0;
                for (int t = d; t < nb; t++)
                    if (cal->heat.nq[(size_t)t * nb + t - d]) s2 += *kvs__heat_mass(cal, 0, u / H, u % H, t, t - d), n++;
                prof[d] = n ? s2 / n : 0.0;
            }
            if (k >= 1) min_last = fmin(min_last, prof[k <= nb ? k : nb]);
            if (b[u] + B <= cap && (b[u] - base) % B == 0) max_next = fmax(max_next, prof[k + 1 <= nb ? k + 1 : nb]);
        }
        CHECK(sum == M && !bad, "greedy M=%lld: sum %lld, %d out of range", M, sum, bad);
        CHECK(max_next <= min_last, "greedy M=%lld: a unit's next block holds %g, another's last only %g", M, max_next, min_last);
    }
    kvs_calib_free(cal);
}

/* ---- attention over a pruned cache ---------------------------------------------------------- */

typedef struct {
    size_t live;
} counter;
static void *count_alloc(void *user, size_t n) {
    size_t *p = malloc(n + 16);
    if (!p) return NULL;
    p[0] = n;
    ((counter *)user)->live += n;
    return (char *)p + 16;
}
static void count_free(void *user, void *p, size_t n) {
    size_t *base = (size_t *)((char *)p - 16);
    ((counter *)user)->live -= base[0];
    (void)n;
    free(base);
}

/* Query at position P (layer l, query head qh) over the dense twin D (same codec, no eviction),
 * with every key E's plan has dropped by state P + self masked: the definition of pruned attention. */
static void masked_ref(const kvs_cache *D, const kvs_cache *E, int l, int qh, long long P, const float *K, const float *V,
                       const float *q, double *out) {
    const kvs_config *cfg = &D->cfg;
    const int d = D->d, hk = qh / D->g, S = cfg->sinks, G = D->G;
    const long long state = P + (cfg->self == KVS_SELF_CACHE);
    const long long nq = stored_at(cfg, state);
    const int32_t *drop = kvs_stream_at(E, l, hk)->drop;
    double m = -1e300, sum = 0.0, *acc = calloc((size_t)d, sizeof(double));
    double *sc = malloc((size_t)(P + 1) * sizeof(double));
    float kd[1024], vd[1024];
    for (int pass = 0; pass < 2; pass++)
        for (long long p = 0; p <= P; p++) {
            const float *kr = K + ((size_t)p * D->n_kv + hk) * d, *vr = V + ((size_t)p * D->n_kv + hk) * d;
            const long long u = p - S; /* index among the stored (non-sink) tokens */
            if (p >= S && u < nq) {
                if (drop && state >= drop[u / E->plan.blk_tokens]) continue; /* masked */
                const uint8_t *blk = kvs_stream_at(D, l, hk)->blk[u / G];
                const float *nrm = D->layers[l].norm ? D->layers[l].norm[u / G] : NULL;
                kvs__block_key(&D->m, blk, nrm, (int)(u % G), kd);
                kvs__block_value(&D->m, blk, (int)(u % G), vd);
                kr = kd, vr = vd;
            }
            double s = 0.0;
            for (int x = 0; x < d; x++) s += (double)q[x] * kr[x];
            s *= D->m.tau;
            if (pass == 0) {
                sc[p] = s;
                m = s > m ? s : m;
            } else {
                const double e = exp(s - m);
                sum += e;
                for (int x = 0; x < d; x++) acc[x] += e * vr[x];
            }
        }
    for (int x = 0; x < d; x++) out[x] = acc[x] / sum;
    free(acc);
    free(sc);
}

static void attention(const char *spec, int use_avx2) {
    const int L = 2, H = 2, NH = 4, d = 64, T = 400;
    kvs_calib *cal = fixture_calib(L, NH, H, d, 64, 4, 32, 1024, 12, 5);
    CHECK(fixture_retr(cal), "retrieval statistics");
    kvs_config ce = small_cfg(spec, cal, L, H, T);
    ce.max_tokens = T;
    kvs_config cd = ce;
    cd.evict = KVS_EVICT_NONE;
    counter ct = {0};
    const kvs_allocator mem = {count_alloc, count_free, &ct};
    kvs_cache *E = NULL, *D = NULL, *E1 = NULL;
    CHECK_OK(kvs_cache_create_with(&ce, &mem, &E));
    CHECK_OK(kvs_cache_create(&cd, &D));
    CHECK_OK(kvs_cache_create(&ce, &E1));
    if (!E || !D || !E1) return;
#ifdef KVS_HAVE_AVX2
    kvs__set_kernel_table(use_avx2 ? &kvs_kernels_avx2 : &kvs_kernels_ref);
#else
    if (use_avx2) return;
    kvs__set_kernel_table(&kvs_kernels_ref);
#endif
    rng_t r = {99};
    float *K = malloc(sizeof(float) * T * H * d), *V = malloc(sizeof(float) * T * H * d), *Q = malloc(sizeof(float) * T * NH * d);
    float *out = malloc(sizeof(float) * T * NH * d), *out1 = malloc(sizeof(float) * T * NH * d);
    fill_normal(&r, K, (size_t)T * H * d, 1.0);
    fill_normal(&r, V, (size_t)T * H * d, 1.0);
    fill_normal(&r, Q, (size_t)T * NH * d, 1.5);
    for (int i = 0; i < T * H * d; i += d) K[i] += 3.0f; /* a shared direction: peaked attention */
    double worst = 0.0;
    int bytes_bad = 0, accounted_bad = 0, differ = 0;
    size_t dense_bytes = 0;
    for (int t0 = 0; t0 < T;) {
        int n = 1 + (int)(rng_u64(&r) % 45);
        if (t0 + n > T) n = T - t0;
        for (int l = 0; l < L; l++) {
            const float *k = K + (size_t)t0 * H * d, *v = V + (size_t)t0 * H * d, *q = Q + (size_t)t0 * NH * d;
            CHECK_OK(kvs_attend(E, l, n, q, k, v, out));
            for (int i = 0; i < n; i++) { /* the same queries one token at a time: bit-identical */
                CHECK_OK(kvs_attend(E1, l, 1, q + (size_t)i * NH * d, k + (size_t)i * H * d, v + (size_t)i * H * d,
                                    out1 + (size_t)i * NH * d));
                CHECK_OK(kvs_cache_append(E1, l, 1, k + (size_t)i * H * d, v + (size_t)i * H * d));
            }
            differ += memcmp(out, out1, sizeof(float) * n * NH * d) != 0;
            CHECK_OK(kvs_cache_append(E, l, n, k, v));
            CHECK_OK(kvs_cache_append(D, l, n, k, v));
        }
        for (int l = 0; l < L; l++) /* compare the last layer's chunk outputs against the masked dense reference */
            if (l == L - 1)
                for (int i = 0; i < n; i++)
                    for (int qh = 0; qh < NH; qh++) {
                        double ref[1024];
                        masked_ref(D, E, l, qh, t0 + i, K, V, Q + ((size_t)(t0 + i) * NH + qh) * d, ref);
                        const float *o = out + ((size_t)i * NH + qh) * d;
                        for (int x = 0; x < d; x++) worst = fabs(o[x] - ref[x]) > worst ? fabs(o[x] - ref[x]) : worst;
                    }
        t0 += n;
        size_t want = 0;
        CHECK_OK(kvs_cache_bytes_for(&ce, t0, &want));
        bytes_bad += kvs_cache_bytes(E) != want;
        accounted_bad += kvs_cache_bytes(E) != ct.live;
        size_t streams = 0;
        for (int l = 0; l < L; l++)
            for (int h = 0; h < H; h++) streams += kvs_cache_stream_bytes(E, l, h);
        accounted_bad += streams > kvs_cache_bytes(E);
        dense_bytes = kvs_cache_bytes(D);
    }
    /* int4 values: the reference kernel is within float rounding, AVX2 within its int8 rounding of
     * the folded query and the value weights (docs/kernels.md bounds it per query; 0.05 covers it here) */
    const int quantized = ce.k_type != KVS_TYPE_FP32;
    const double tol = use_avx2 && quantized ? 5e-2 : 2e-4;
    CHECK(worst <= tol, "%s (%s): pruned attention vs masked dense reference: max error %.3g > %.3g", spec,
          use_avx2 ? "avx2" : "ref", worst, tol);
    CHECK(!differ, "%s: chunked and token-by-token outputs differ in %d chunks", spec, differ);
    CHECK(!bytes_bad, "%s: kvs_cache_bytes != kvs_cache_bytes_for at %d steps", spec, bytes_bad);
    CHECK(!accounted_bad, "%s: cache bytes != allocator's live bytes (or streams exceed it) at %d steps", spec, accounted_bad);
    CHECK(kvs_cache_bytes(E) < dense_bytes, "%s: pruned cache %zu bytes, dense %zu", spec, kvs_cache_bytes(E), dense_bytes);
    printf("%-62s %s: max error %.2e, bytes %zu vs dense %zu\n", spec, use_avx2 ? "avx2" : "ref ", worst, kvs_cache_bytes(E),
           dense_bytes);
    kvs__set_kernel_table(NULL);
    kvs_cache_free(E);
    kvs_cache_free(E1);
    kvs_cache_free(D);
    CHECK(ct.live == 0, "%s: %zu bytes not returned to the allocator", spec, ct.live);
    free(K), free(V), free(Q), free(out), free(out1);
    kvs_calib_free(cal);
}

/* keep=K: the K units with the most retrieval mass never lose a block, the others stay within
 * the budget that is left; what keep= cannot do is refused with a message. */
static void retrieval_keep(void) {
    const int L = 3, H = 3, U = L * H, T = 768;
    kvs_calib *cal = fixture_calib(L, 2 * H, H, 64, 64, 4, 32, 1024, 12, 11);
    kvs_config cfg = small_cfg("oscar-int2,sinks=4,window=32,heatkv=prop,budget=0.3", cal, L, H, T);
    cfg.keep = 2;
    CHECK(kvs_config_validate(&cfg) == KVS_ERR_CONFIG && strstr(kvs_last_error(), "retrieval"),
          "keep= without retrieval statistics: %s", kvs_last_error());
    CHECK(fixture_retr(cal), "retrieval statistics");
    for (int uniform = 0; uniform < 2; uniform++) {
        cfg = small_cfg(uniform ? "oscar-int2,sinks=4,window=32,evict=uniform,budget=0.45,keep=2"
                                : "oscar-int2,sinks=4,window=32,heatkv=prop,budget=0.45,keep=2",
                        cal, L, H, T);
        kvs_evict_plan p;
        if (!check_plan(&cfg, &p, uniform ? "uniform keep=2" : "prop keep=2")) continue;
        char prot[64];
        kvs__retrieval_units(cal, 0, U, 2, prot);
        int kept_drops = 0, other_drops = 0;
        for (int u = 0; u < U; u++)
            for (int b = 0; b < p.n_blocks; b++) {
                const int dropped = p.drop[(size_t)u * p.n_blocks + b] <= T; /* T + 1: never within capacity */
                kept_drops += prot[u] && dropped;
                other_drops += !prot[u] && dropped;
            }
        /* fixture_retr ranks unit u by (7u) % 9: units 5 (8) and 1 (7) come first */
        int n_prot = 0;
        for (int u = 0; u < U; u++) n_prot += prot[u];
        CHECK(n_prot == 2 && prot[5] && prot[1], "keep=2 picked the wrong units");
        CHECK(kept_drops == 0 && other_drops > 0, "keep=2: %d drops in kept units, %d in the others", kept_drops, other_drops);
        int shape = 0; /* the others: equal under uniform, ordered by far mass under prop */
        for (int a = 0; a < U; a++)
            for (int b = 0; b < U; b++) {
                if (prot[a] || prot[b]) continue;
                const long long ha = held(&cfg, &p, a / H, a % H, T), hb = held(&cfg, &p, b / H, b % H, T);
                shape += uniform ? ha != hb : cal->heat.far[a] > cal->heat.far[b] && ha < hb - p.blk_tokens;
            }
        CHECK(!shape, "keep=2: %d pairs of the other units break the variant's shape", shape);
        kvs__evict_plan_free(&p);
    }
    cfg = small_cfg("oscar-int2,sinks=4,window=32,heatkv=block,budget=0.45", cal, L, H, T);
    cfg.keep = 1;
    CHECK(kvs_config_validate(&cfg) == KVS_ERR_CONFIG && strstr(kvs_last_error(), "keep="), "keep= with heatkv=block: %s",
          kvs_last_error());
    cfg = small_cfg("oscar-int2,sinks=4,window=32,heatkv=prop,budget=0.3", cal, L, H, T);
    cfg.keep = 3; /* 3 whole streams are a third of the slots: nothing left for the others' windows */
    CHECK(kvs_config_validate(&cfg) == KVS_ERR_CONFIG && strstr(kvs_last_error(), "cannot keep"), "keep=3 at 0.3: %s",
          kvs_last_error());
    cfg.keep = U + 1;
    CHECK(kvs_config_validate(&cfg) == KVS_ERR_CONFIG, "keep above the stream count accepted");
    kvs_calib_free(cal);
}

int main(void) {
    known_answer();
    retrieval_keep();
    block_shape();
    budgets();
    variants();
    const char *specs[] = {"k=int4,v=int4,window=32,sinks=4,heatkv=block,budget=0.4",
                           "k=int4,v=int4,window=32,sinks=4,heatkv=head,budget=0.4",
                           "fp32,sinks=4,evict=uniform,budget=0.3",
                           "q8_0,sinks=2,heatkv=prop,budget=0.35",
                           "q4_0,sinks=15,evict=uniform,budget=0.4", /* 385 stored: a last block of one token */
                           "k=int4,v=int4,window=32,sinks=4,heatkv=greedy,budget=0.3",
                           "k=int2,v=int4,window=64,sinks=4,evict=random,budget=0.5,scale=token",
                           "k=int4,v=int4,window=32,heatkv=block,budget=0.4,self=cache",
                           "k=int4,v=int4,window=32,sinks=4,heatkv=prop,budget=0.6,keep=1"};
    for (int a = 0; a < 2; a++)
        for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) attention(specs[i], a);
    return test_done("test_evict");
}
