/* The attention kernels against their references, over a matrix of layouts that reaches every
 * specialization (head_dim 64 and 128; G = 8, 16, 32, 64; every type on keys and values; GQA
 * groups of 1, 3, 5 and 7 query heads; every Jensen mode; sinks and windows cut at their edges;
 * one query and chunks that cross flushes):
 *   - the AVX2 kernels against the pure-float reference, within the bound that the int8 rounding
 *     of their integer paths allows (docs/kernels.md, computed here per query and head);
 *   - the AVX2 kernels against tests/ref_int8.c, which rounds as they do, to float precision;
 *   - decode-faithful chunks: a chunk of n queries gives the bits of n single-token steps, for
 *     both kernel sets;
 *   - with threads: 1 and 2 threads give the same bits. */
#include <string.h>

#include "attn/attn.h"
#include "common/fp16.h"
#include "methods/methods.h"
#include "quant/quant.h"
#include "ref_int8.h"
#include "test_util.h"

typedef struct {
    char cfg[256];
    int H, NH, d, T, n;
} layout;

/* keys with outlier channels and varying token norms (like post-RoPE keys), N(0,1) values */
static void fill_kv(rng_t *r, float *k, float *v, size_t tokens, int H, int d) {
    for (size_t t = 0; t < tokens; t++) {
        const double tn = 0.5 + 1.5 * rng_uniform(r);
        for (int x = 0; x < H * d; x++) {
            const double mu = (x % d == 3) ? 4.0 : ((x % d == 17) ? -3.0 : 0.0);
            k[t * H * d + x] = (float)(tn * (mu + rng_normal(r)));
            v[t * H * d + x] = (float)rng_normal(r);
        }
    }
}

static kvs_cache *make_cache(const layout *L, int threads, const float *k, const float *v) {
    kvs_config cfg = kvs_config_default();
    char shapes[200];
    snprintf(shapes, sizeof shapes, "layers=1,heads=%d,kv_heads=%d,head_dim=%d,max_tokens=%d,threads=%d", L->NH, L->H,
             L->d, L->T + L->n, threads);
    kvs_cache *c = NULL;
    if (kvs_config_parse(&cfg, L->cfg) || kvs_config_parse(&cfg, shapes) || kvs_cache_create(&cfg, &c)) {
        CHECK(0, "config '%s': %s", L->cfg, kvs_last_error());
        return NULL;
    }
    if (L->T > 0) CHECK_OK(kvs_cache_append(c, 0, L->T, k, v));
    return c;
}

/* Bound on ||out_avx2 - out_ref||_2 per (query, head), from the int8 rounding of the integer
 * paths (docs/kernels.md, "Rounding bound"), whose residual is added back at the middle code m:
 * key scores move by at most
 *   E = max_t tau n_t (scale_a / 2) sum_c |code_ct - m|,  scale_a = max_c |qr_c S_c| / 127,
 * which moves the output by at most (e^2E - 1) max_t ||v_t||; value weights p_t S_tj rounded with
 * scale max_t(p_t S_tj) / 127 move channel c by at most sum_grp (that scale / 2) sum_t |code_tc - m|,
 * times e^2E for the probabilities the fast kernel holds. Exact scores are recomputed here in
 * double from dequantized keys. */
static void rounding_bound(kvs_cache *c, const layout *L, const float *q, const float *k, const float *v, double *bound,
                           double *flip) {
    const int d = L->d, g = L->NH / L->H, G = c->G, n = L->n;
    const int kb = kvs_affine_bits(c->cfg.k_type), vb = kvs_affine_bits(c->cfg.v_type);
    const int kpair = kb && kvs_key_paired(kb, G), vpair = vb && kvs_val_paired(vb, G, d);
    kvs_view view;
    CHECK_OK(kvs__view_build(c, 0, n, k, v, &view));
    const size_t maxtok = (size_t)L->T + n;
    double *s = malloc(sizeof(double) * maxtok), *dv = malloc(sizeof(double) * d);
    float qr[1024], kd[1024], vd[1024], delta[1024], w[1024];
    kvs_rows rows[5];
    for (int i = 0; i < n; i++)
        for (int h = 0; h < L->H; h++)
            for (int hh = 0; hh < g; hh++) {
                const float *qq = q + ((size_t)i * L->NH + (size_t)h * g + hh) * d;
                memcpy(qr, qq, sizeof(float) * d);
                if (c->cfg.rotate == KVS_ROTATE_HADAMARD) kvs_fwht(qr, d);
                kvs_jensen_weights(qr, d, c->m.tau, c->cfg.lambda, w);
                const uint8_t *const *blk = view.blk + (size_t)h * view.n_groups;
                /* exact scores: quantized tokens first, then the fp32 rows */
                size_t nt = 0;
                double vmax = 0.0, E = 0.0, M = -1e300, Lsum = 0.0;
                for (int grp = 0; grp < view.n_groups; grp++) {
                    const float *norm = view.norm ? view.norm[grp] : NULL;
                    for (int t = 0; t < G && grp * G + t < view.vis[i]; t++) {
                        kvs__block_key(&c->m, blk[grp], norm, t, kd);
                        double dot = 0.0;
                        for (int x = 0; x < d; x++) dot += (double)qr[x] * kd[x];
                        double st = c->m.tau * dot;
                        const double nrm = norm ? norm[t] : 1.0;
                        if (c->cfg.jensen != KVS_JENSEN_OFF) {
                            kvs__block_key_delta(&c->m, blk[grp], t, delta);
                            if (c->cfg.jensen == KVS_JENSEN_TAYLOR) {
                                double b = 0.0;
                                for (int x = 0; x < d; x++) b += (double)w[x] * delta[x] * delta[x];
                                st -= nrm * nrm * b;
                            } else {
                                st -= kvs_jensen_exact(qr, delta, d, c->m.tau, (float)nrm, c->cfg.lambda);
                            }
                        }
                        s[nt++] = st;
                        kvs__block_value(&c->m, blk[grp], t, vd);
                        double vn = 0.0;
                        for (int x = 0; x < d; x++) vn += (double)vd[x] * vd[x];
                        vmax = fmax(vmax, sqrt(vn));
                        if (kpair) {
                            const uint8_t *S = blk[grp] + (size_t)d * G * kb / 8;
                            double amax = 0.0, csum = 0.0;
                            for (int x = 0; x < d; x++) {
                                amax = fmax(amax, fabs((double)qr[x] * kvs_fp16_at(S, x)));
                                csum += fabs(kvs_get_code(blk[grp], kvs_key_bit(kb, G, x, t), kb) - 0.5 * ((1 << kb) - 1));
                            }
                            E = fmax(E, c->m.tau * nrm * amax / 254.0 * csum);
                        }
                    }
                }
                const size_t nq = nt;
                const int nr = kvs__view_rows(c, &view, 0, h, k, v, i, rows);
                for (int r = 0; r < nr; r++)
                    for (int t = 0; t < rows[r].n; t++) {
                        const float *kr = rows[r].k + (size_t)t * rows[r].stride, *vr = rows[r].v + (size_t)t * rows[r].stride;
                        double dot = 0.0, vn = 0.0;
                        for (int x = 0; x < d; x++) {
                            dot += (double)qq[x] * kr[x];
                            vn += (double)vr[x] * vr[x];
                        }
                        s[nt++] = c->m.tau * dot;
                        vmax = fmax(vmax, sqrt(vn));
                    }
                for (size_t t = 0; t < nt; t++) M = fmax(M, s[t]);
                for (size_t t = 0; t < nt; t++) Lsum += exp(s[t] - M);
                /* value weights, per visible group and channel group */
                memset(dv, 0, sizeof(double) * d);
                double one = 0.0; /* one value weight rounded the other way */
                if (vpair) {
                    size_t t0 = 0;
                    for (int grp = 0; grp < view.n_groups && t0 < nq; grp++) {
                        const int vis = view.vis[i] - grp * G < G ? view.vis[i] - grp * G : G;
                        const uint8_t *S = blk[grp] + c->m.key.bytes + (size_t)G * d * vb / 8;
                        for (int jg = 0; jg < d / G; jg++) {
                            double wmax = 0.0;
                            for (int t = 0; t < vis; t++)
                                wmax = fmax(wmax, exp(s[t0 + t] - M) / Lsum * fabs(kvs_fp16_at(S, (size_t)jg * G + t)));
                            one = fmax(one, wmax / 127.0 * 0.5 * ((1 << vb) - 1) * sqrt((double)G));
                            for (int x = jg * G; x < (jg + 1) * G; x++) {
                                double csum = 0.0;
                                for (int t = 0; t < vis; t++)
                                    csum += fabs(kvs_get_code(blk[grp] + c->m.key.bytes, kvs_val_bit(vb, G, d, t, x), vb) -
                                                 0.5 * ((1 << vb) - 1));
                                dv[x] += wmax / 254.0 * csum;
                            }
                        }
                        t0 += (size_t)vis;
                    }
                }
                double vbound = 0.0;
                for (int x = 0; x < d; x++) vbound += dv[x] * dv[x];
                const size_t o = (size_t)i * L->NH + (size_t)h * g + hh;
                bound[o] = expm1(2 * E) * vmax + exp(2 * E) * sqrt(vbound) + KVS_TOL_REF_VS_SIMD * sqrt((double)d);
                flip[o] = one;
            }
    free(s);
    free(dv);
    kvs__view_free(&view);
}

static double l2_diff(const float *a, const float *b, int d) {
    double e = 0.0;
    for (int x = 0; x < d; x++) e += ((double)a[x] - b[x]) * ((double)a[x] - b[x]);
    return sqrt(e);
}

typedef struct {
    int cases, bad_bound, bad_contract, bad_chunk;
    double worst_ratio, worst_contract;
    int entry_hits[16]; /* layouts run by each entry of the AVX2 codec table */
} tally;

static void run_layout(const layout *L, rng_t *r, int have_avx2, tally *tl) {
    const size_t tokens = (size_t)L->T + L->n, nout = (size_t)L->n * L->NH * L->d;
    float *k = malloc(sizeof(float) * tokens * L->H * L->d), *v = malloc(sizeof(float) * tokens * L->H * L->d);
    float *q = malloc(sizeof(float) * nout), *ref = malloc(sizeof(float) * nout), *fast = malloc(sizeof(float) * nout);
    float *i8 = malloc(sizeof(float) * nout), *step = malloc(sizeof(float) * nout);
    double *bound = malloc(sizeof(double) * (size_t)L->n * L->NH), *flip = malloc(sizeof(double) * (size_t)L->n * L->NH);
    fill_kv(r, k, v, tokens, L->H, L->d);
    fill_normal(r, q, nout, 0.7);
    const float *kc = k + (size_t)L->T * L->H * L->d, *vc = v + (size_t)L->T * L->H * L->d;
    kvs_cache *c = make_cache(L, 0, k, v);
    if (!c) goto out;
    tl->cases++;
#if defined(KVS_HAVE_AVX2)
    const long ent = kvs__groups_for(&kvs_kernels_avx2, &c->m) - kvs_kernels_avx2.groups;
    if (ent >= 0 && ent < 16) tl->entry_hits[ent]++;
    const kvs_kernel_table *sets[2] = {&kvs_kernels_ref, &kvs_kernels_avx2};
#else
    const kvs_kernel_table *sets[2] = {&kvs_kernels_ref, &kvs_kernels_ref};
#endif
    for (int ks = 0; ks < 1 + have_avx2; ks++) {
        kvs__set_kernel_table(sets[ks]);
        CHECK_OK(kvs_attend(c, 0, L->n, q, kc, vc, ks ? fast : ref));
        /* the same queries one token at a time, each appended after its step, on a fresh cache */
        kvs_cache *c1 = make_cache(L, 0, k, v);
        for (int i = 0; c1 && i < L->n; i++) {
            const size_t kv = (size_t)i * L->H * L->d, qo = (size_t)i * L->NH * L->d;
            CHECK_OK(kvs_attend(c1, 0, 1, q + qo, kc + kv, vc + kv, step + qo));
            CHECK_OK(kvs_cache_append(c1, 0, 1, kc + kv, vc + kv));
        }
        if (memcmp(step, ks ? fast : ref, sizeof(float) * nout) != 0) {
            tl->bad_chunk++;
            fprintf(stderr, "  %s %s (T %d, n %d): chunk differs from token-by-token (max %g)\n", sets[ks]->name, L->cfg,
                    L->T, L->n, max_abs_diff(step, ks ? fast : ref, nout, NULL));
        }
        kvs_cache_free(c1);
    }
    if (have_avx2) {
        kvs__set_kernel_table(&kvs_kernels_ref_int8);
        CHECK_OK(kvs_attend(c, 0, L->n, q, kc, vc, i8));
        rounding_bound(c, L, q, kc, vc, bound, flip);
        int bad = 0, badc = 0;
        for (size_t o = 0; o < (size_t)L->n * L->NH; o++) {
            const double e = l2_diff(fast + o * L->d, ref + o * L->d, L->d);
            tl->worst_ratio = fmax(tl->worst_ratio, e / bound[o]);
            bad += !(e <= bound[o]);
            /* same rounding, but a probability that differs in its last bit (another exp, another
             * summation order) may send a value weight to the neighbouring integer: allow two */
            const double ec = l2_diff(fast + o * L->d, i8 + o * L->d, L->d);
            const double ctol = KVS_TOL_REF_VS_SIMD * sqrt((double)L->d) + 2 * flip[o];
            tl->worst_contract = fmax(tl->worst_contract, ec);
            if (!(ec <= ctol) && !badc++)
                fprintf(stderr, "  %s (T %d, n %d): avx2 vs rounding reference %g > %g at row %zu\n", L->cfg, L->T, L->n,
                        ec, ctol, o);
            if (bad == 1 && !(e <= bound[o]))
                fprintf(stderr, "  %s (T %d, n %d, %d/%d heads, d %d): |avx2 - ref| %g > bound %g at row %zu\n", L->cfg,
                        L->T, L->n, L->NH, L->H, L->d, e, bound[o], o);
        }
        tl->bad_bound += bad != 0;
        tl->bad_contract += badc != 0;
    }
    kvs_cache_free(c);
out:
    kvs__set_kernel_table(NULL);
    free(k), free(v), free(q), free(ref), free(fast), free(i8), free(step), free(bound), free(flip);
}

/* The layout matrix: every value of every axis appears, combined deterministically. */
static void kernel_matrix(void) {
    const int have_avx2 = kvs_set_kernels("avx2") == KVS_OK;
    CHECK_OK(kvs_set_kernels("auto"));
    if (!have_avx2) printf("no AVX2 on this CPU: only the references are compared\n");
    static const char *types[] = {"fp32", "fp16", "q8_0", "q4_0", "int2", "int3", "int4", "int8"};
    static const char *methods[] = {"rotate=none,scale=none,jensen=off", "rotate=hadamard,scale=token,jensen=taylor",
                                    "rotate=hadamard,scale=none,jensen=exact", "rotate=none,scale=token,jensen=taylor",
                                    "rotate=hadamard,scale=token,jensen=off,lambda=0.5"};
    static const int groups[] = {8, 16, 32, 64};
    static const int gqa[][2] = {{2, 2}, {3, 9}, {1, 5}, {2, 14}};
    static const int chunk[] = {1, 7, 40};
    rng_t r = {32};
    tally tl = {0};
    int idx = 0, seen_dg[2][4] = {{0}}, seen_kt[8] = {0}, seen_vt[8] = {0}, seen_n[3] = {0};
    for (int ti = 0; ti < 8; ti++)
        for (int side = 0; side < 2; side++)
            for (int mi = 0; mi < 5; mi++, idx++) {
                layout L;
                const int d = idx % 3 == 2 ? 128 : 64, G = groups[(ti + mi + side + idx / 7) % 4];
                const char *other = (idx / 2) % 2 ? "int4" : "int2";
                const int W = G * ((mi + ti) % 3), S = (mi + side) % 3 == 0 ? 0 : 1 + (ti % 3);
                L.H = gqa[(ti + side + mi) % 4][0];
                L.NH = gqa[(ti + side + mi) % 4][1];
                L.d = d;
                L.n = chunk[(ti + 2 * mi + side) % 3];
                /* cached tokens: cut sinks, window and groups at their edges in turn */
                const int unit = (side ? !strncmp(other, "int", 3) : !strncmp(types[ti], "int", 3)) ? G : 1;
                const int edges[] = {S + W + unit - 1, S + W + 5 * G, S > 1 ? S - 1 : 0, S + W + 3 * G + unit / 2, 97};
                L.T = edges[(idx + mi) % 5];
                snprintf(L.cfg, sizeof L.cfg, "k=%s,v=%s,group=%d,window=%d,sinks=%d,%s", side ? other : types[ti],
                         side ? types[ti] : other, G, W, S, methods[mi]);
                run_layout(&L, &r, have_avx2, &tl);
                seen_dg[d == 128][(ti + mi + side + idx / 7) % 4]++;
                seen_kt[side ? 4 + 2 * ((idx / 2) % 2) : ti]++;
                seen_vt[side ? ti : 4 + 2 * ((idx / 2) % 2)]++;
                seen_n[(ti + 2 * mi + side) % 3]++;
            }
    /* per-token row types on both sides (llama.cpp's cache types), which the matrix pairs only with
     * INT2/INT4: the codec table has kernels of their own for them */
    static const char *rows_pairs[][2] = {{"fp16", "fp16"}, {"q8_0", "q8_0"}, {"q4_0", "q4_0"}, {"fp32", "q8_0"}};
    for (int x = 0; x < 8; x++) {
        layout L = {{0}, 3, 9, x % 2 ? 128 : 64, 32 * (3 + x), 1 + 19 * (x % 3)};
        snprintf(L.cfg, sizeof L.cfg, "k=%s,v=%s,group=32,sinks=%d,self=%s,%s", rows_pairs[x / 2][0], rows_pairs[x / 2][1],
                 x % 3, x % 2 ? "cache" : "exact", methods[x % 5]);
        run_layout(&L, &r, have_avx2, &tl);
    }
    int missing = 0; /* every (head_dim, G) pair, every type on both sides, every chunk length */
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 4; b++) missing += !seen_dg[a][b];
    for (int t = 0; t < 8; t++) missing += !seen_kt[t] + !seen_vt[t];
    for (int t = 0; t < 3; t++) missing += !seen_n[t];
    CHECK(missing == 0, "the layout matrix misses %d combinations", missing);
    printf("kernels: %d layouts; avx2 vs float reference: worst |diff| / rounding bound %.3f; avx2 vs rounding "
           "reference: worst %.3g\n",
           tl.cases, tl.worst_ratio, tl.worst_contract);
    CHECK(tl.cases == 88, "only %d of 88 layouts ran", tl.cases);
#if defined(KVS_HAVE_AVX2)
    /* every kernel of the AVX2 codec table was chosen for some layout and checked above; the
     * low-rank entry needs calibrated bases and is checked against the reference, and against a
     * dense double-precision attention, in test_lowrank_cache */
    for (int e = 0; have_avx2 && e < kvs_kernels_avx2.n_groups; e++)
        if (kvs_kernels_avx2.groups[e].key != KVS_LAYOUT_LOWRANK)
            CHECK(tl.entry_hits[e] > 0, "no layout ran the avx2 kernel '%s'", kvs_kernels_avx2.groups[e].name);
#endif
    CHECK(tl.bad_bound == 0, "%d layouts beyond the rounding bound", tl.bad_bound);
    CHECK(tl.bad_contract == 0, "%d layouts differ from the rounding reference", tl.bad_contract);
    CHECK(tl.bad_chunk == 0, "%d layouts: a chunk differs from token-by-token decoding", tl.bad_chunk);
}

#ifdef _OPENMP
/* 1 and 2 threads: bit-identical, decode and prefill (only meaningful with threads) */
static void thread_determinism(void) {
    rng_t r = {33};
    layout L = {"oscar-int2,jensen=taylor,sinks=4", 3, 9, 64, 5120, 31};
    const size_t tokens = (size_t)L.T + L.n, nout = (size_t)L.n * 9 * 64;
    float *k = malloc(sizeof(float) * tokens * 3 * 64), *v = malloc(sizeof(float) * tokens * 3 * 64);
    float *q = malloc(sizeof(float) * nout), *a = malloc(sizeof(float) * nout), *b = malloc(sizeof(float) * nout);
    fill_kv(&r, k, v, tokens, 3, 64);
    fill_normal(&r, q, nout, 0.6);
    kvs_cache *c1 = make_cache(&L, 1, k, v), *c2 = make_cache(&L, 2, k, v);
    const float *kc = k + (size_t)L.T * 3 * 64, *vc = v + (size_t)L.T * 3 * 64;
    for (int n = 1; c1 && c2 && n <= L.n; n += L.n - 1) {
        CHECK_OK(kvs_attend(c1, 0, n, q, kc, vc, a));
        CHECK_OK(kvs_attend(c2, 0, n, q, kc, vc, b));
        CHECK(memcmp(a, b, sizeof(float) * n * 9 * 64) == 0, "1 vs 2 threads differ (n = %d)", n);
    }
    kvs_cache_free(c1);
    kvs_cache_free(c2);
    free(k), free(v), free(q), free(a), free(b);
}
#endif

/* The plan is resolved once and read per stream: what a config means (plan.c), which kernel its
 * codecs select, and that the driver and both kernel sets take a stream's score terms from that
 * stream's plan. Cache C runs Jensen on KV head 1 only (its plan swapped after creation): head 1's
 * outputs must be those of an all-Jensen cache, the other heads' those of a cache without. */
static void per_stream_plans(void) {
    kvs_config cfg = kvs_config_default();
    kvs_method m;
    CHECK_OK(kvs_config_parse(&cfg, "oscar-int2,jensen=taylor"));
    kvs__method_resolve(&cfg, &m);
    CHECK(m.key.layout == KVS_LAYOUT_PAIRED && m.value.layout == KVS_LAYOUT_PAIRED && m.key.bits == 2 && m.rotate &&
              m.token_norm && m.jensen == KVS_JENSEN_TAYLOR && m.unit == 32 && fabsf(m.tau - 0.125f) < 1e-7f,
          "oscar-int2 plan: key %s, value %s", kvs__layout_name(m.key.layout), kvs__layout_name(m.value.layout));
    CHECK(m.key.bytes + m.value.bytes == 2 * (64 * 8 + 64 * 4), "oscar-int2 group bytes %zu", m.key.bytes + m.value.bytes);
    CHECK(!strcmp(kvs__groups_for(&kvs_kernels_ref, &m)->name, "ref"), "reference table: one kernel for all codecs");
    cfg = kvs_config_default();
    CHECK_OK(kvs_config_parse(&cfg, "q8_0"));
    kvs__method_resolve(&cfg, &m);
    CHECK(m.key.layout == KVS_LAYOUT_ROWS && m.value.layout == KVS_LAYOUT_ROWS && m.unit == 1 && m.self_cache &&
              m.key.row == 68,
          "q8_0 plan: key %s row %zu, self %d", kvs__layout_name(m.key.layout), m.key.row, m.self_cache);
    CHECK_OK(kvs_config_parse(&cfg, "k=int3,v=int8"));
    kvs__method_resolve(&cfg, &m);
    CHECK(m.key.layout == KVS_LAYOUT_AFFINE && m.value.layout == KVS_LAYOUT_AFFINE && !m.key.perm && m.value.perm,
          "int3/int8 plan: key %s, value %s", kvs__layout_name(m.key.layout), kvs__layout_name(m.value.layout));
#if defined(KVS_HAVE_AVX2)
    CHECK(!strcmp(kvs__groups_for(&kvs_kernels_avx2, &m)->name, "any G32 d64"), "int3/int8 kernel '%s'",
          kvs__groups_for(&kvs_kernels_avx2, &m)->name);
#endif

    rng_t r = {34};
    layout with = {"oscar-int2,jensen=taylor,sinks=2,window=32", 3, 9, 64, 700, 9}, without = with;
    strcpy(without.cfg, "oscar-int2,jensen=off,sinks=2,window=32");
    const size_t tokens = (size_t)with.T + with.n, nout = (size_t)with.n * 9 * 64;
    float *k = malloc(sizeof(float) * tokens * 3 * 64), *v = malloc(sizeof(float) * tokens * 3 * 64);
    float *q = malloc(sizeof(float) * nout), *a = malloc(sizeof(float) * nout), *b = malloc(sizeof(float) * nout),
          *x = malloc(sizeof(float) * nout);
    fill_kv(&r, k, v, tokens, 3, 64);
    fill_normal(&r, q, nout, 0.8);
    const float *kc = k + (size_t)with.T * 3 * 64, *vc = v + (size_t)with.T * 3 * 64;
    kvs_cache *A = make_cache(&with, 0, k, v), *B = make_cache(&without, 0, k, v), *C = make_cache(&without, 0, k, v);
    for (int ks = 0; A && B && C && ks < 2; ks++) {
        if (kvs_set_kernels(ks ? "avx2" : "ref") != KVS_OK) break; /* no AVX2: the reference only */
        kvs_stream_at(C, 0, 1)->m = &A->m;
        CHECK_OK(kvs_attend(A, 0, with.n, q, kc, vc, a));
        CHECK_OK(kvs_attend(B, 0, with.n, q, kc, vc, b));
        CHECK_OK(kvs_attend(C, 0, with.n, q, kc, vc, x));
        int bad = 0, moved = 0;
        for (int i = 0; i < with.n; i++)
            for (int h = 0; h < 9; h++) {
                const size_t o = ((size_t)i * 9 + h) * 64;
                const float *want = h / 3 == 1 ? a : b;
                bad += memcmp(x + o, want + o, 64 * sizeof(float)) != 0;
                moved += memcmp(a + o, b + o, 64 * sizeof(float)) != 0;
            }
        CHECK(bad == 0, "%s: %d head outputs do not follow their stream's plan", kvs_kernels(), bad);
        CHECK(moved > 0, "%s: Jensen changed nothing, the test cannot tell plans apart", kvs_kernels());
    }
    CHECK_OK(kvs_set_kernels("auto"));
    kvs_cache_free(A), kvs_cache_free(B), kvs_cache_free(C);
    free(k), free(v), free(q), free(a), free(b), free(x);
}

int main(void) {
    kernel_matrix();
    per_stream_plans();
#ifdef _OPENMP
    thread_determinism();
#else
    printf("built without threads: no thread-count determinism to test\n");
#endif
    return test_done("test_kernels");
}
