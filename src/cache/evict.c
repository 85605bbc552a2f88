/* Eviction plans: budgets to per-block drop times (evict.h). Units are (layer, KV head) streams,
 * U of them; M = budget * U * max_tokens token slots for the whole cache. At t tokens a stream
 * whose evictable blocks are all gone still holds R(t) = t - (complete blocks) * B tokens (sinks,
 * window, the block being filled): no budget below max R works, and validation says so. */
#include "evict.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../calib/calib.h"
#include "../common/status.h"
#include "cache.h"

static int is_heat(kvs_evict e) { return e >= KVS_EVICT_HEATKV_BLOCK && e <= KVS_EVICT_HEATKV_GREEDY; }

int kvs__evict_block(const kvs_config *cfg) {
    if (cfg->evict == KVS_EVICT_NONE) return 0;
    if (cfg->evict == KVS_EVICT_HEATKV_BLOCK || cfg->evict == KVS_EVICT_RANDOM)
        return cfg->calib && cfg->calib->has_heat ? cfg->calib->heat.block : KVS_RANDOM_BLOCK;
    return cfg->group; /* uniform, head, prop, greedy: as fine as the storage allows */
}

/* Stored tokens that may be evicted after t appends. With self=cache a query attends through its
 * own stored token, so the newest token's block waits one more step: no query ever loses itself. */
static long long quant_at(const kvs_method *m, long long t) {
    long long s, q, w;
    t -= m->self_cache;
    kvs__counts(m, t > 0 ? t : 0, &s, &q, &w);
    return q;
}

int kvs__evict_n_blocks(const kvs_config *cfg) { /* every stored token's block, evictable or not (self=cache) */
    const int B = kvs__evict_block(cfg);
    long long s, q, w;
    kvs_method m;
    kvs__method_resolve(cfg, &m);
    kvs__counts(&m, cfg->max_tokens, &s, &q, &w);
    return B ? (int)((q + B - 1) / B) : 0;
}

/* max over t <= T of R(t) */
static long long r_max(const kvs_config *cfg, int B) {
    long long best = 0;
    kvs_method m; /* the layout rule lives in the plan (resolved once, not per token) */
    kvs__method_resolve(cfg, &m);
    for (long long t = 1; t <= cfg->max_tokens; t++) {
        const long long r = t - quant_at(&m, t) / B * B;
        best = r > best ? r : best;
    }
    return best;
}

static long long budget_slots(const kvs_config *cfg) {
    const double U = (double)cfg->n_layers * cfg->n_kv_heads;
    return (long long)floor((double)cfg->budget * U * cfg->max_tokens);
}

kvs_status kvs__evict_validate(const kvs_config *cfg) {
#define BAD(...) return kvs_report(KVS_ERR_CONFIG, __VA_ARGS__)
    if ((int)cfg->evict < 0 || cfg->evict > KVS_EVICT_HEATKV_GREEDY) BAD("config: evict %d unknown", (int)cfg->evict);
    if (cfg->agg != KVS_AGG_MEAN && cfg->agg != KVS_AGG_MAX) BAD("config: agg %d unknown", (int)cfg->agg);
    if (cfg->evict == KVS_EVICT_NONE) return KVS_OK;
    if (!(cfg->budget > 0.0f && cfg->budget <= 1.0f)) BAD("config: budget=%g must be in (0, 1] with eviction", (double)cfg->budget);
    if (cfg->max_tokens > KVS_EVICT_MAX_TOKENS)
        BAD("config: max_tokens=%d above %d with eviction (the plan has one entry per token count)", cfg->max_tokens,
            KVS_EVICT_MAX_TOKENS);
    if ((long long)cfg->n_layers * cfg->n_kv_heads > 65535) BAD("config: more than 65535 (layer, KV head) streams to rank");
    /* the plan walks every (token, layer) checkpoint once and holds one entry per (stream, block) */
    if ((long long)cfg->n_layers * cfg->max_tokens > (1LL << 28))
        BAD("config: layers x max_tokens = %lld above 2^28 with eviction", (long long)cfg->n_layers * cfg->max_tokens);
    if ((long long)cfg->n_layers * cfg->n_kv_heads * ((cfg->max_tokens + cfg->group - 1) / cfg->group) > (1LL << 24))
        BAD("config: more than 2^24 (stream, group) pairs to plan with eviction");
    const kvs_calib *cal = cfg->calib;
    if (is_heat(cfg->evict)) {
        if (!cal || !cal->has_heat)
            BAD("config: heatkv needs a calibration with HeatKV statistics (API: cfg.calib; CLI: calib=PATH)");
        if (cal->n_layers != cfg->n_layers || cal->n_kv_heads != cfg->n_kv_heads || cal->n_heads != cfg->n_heads ||
            cal->head_dim != cfg->head_dim)
            BAD("config: calibration measured on %d layers x %d heads (%d KV) x %d, cache is %d x %d (%d) x %d",
                cal->n_layers, cal->n_heads, cal->n_kv_heads, cal->head_dim, cfg->n_layers, cfg->n_heads, cfg->n_kv_heads,
                cfg->head_dim);
    }
    if (cfg->keep < 0 || cfg->keep > (long long)cfg->n_layers * cfg->n_kv_heads)
        BAD("config: keep=%d outside [0, %lld streams]", cfg->keep, (long long)cfg->n_layers * cfg->n_kv_heads);
    if (cfg->keep > 0) {
        if (cfg->evict != KVS_EVICT_UNIFORM && cfg->evict != KVS_EVICT_HEATKV_PROP)
            BAD("config: keep= (retrieval heads kept whole) works with evict=uniform and heatkv=prop only");
        if (!cal || !cal->has_retr)
            BAD("config: keep= needs a calibration with retrieval-head statistics (kvslim calibrate heatkv --probe-texts)");
        if (cal->n_layers != cfg->n_layers || cal->n_kv_heads != cfg->n_kv_heads)
            BAD("config: calibration measured on %d layers x %d KV heads, cache has %d x %d", cal->n_layers, cal->n_kv_heads,
                cfg->n_layers, cfg->n_kv_heads);
    }
    const int B = kvs__evict_block(cfg);
    if (B % cfg->group) BAD("config: calibration block %d is not a multiple of group=%d", B, cfg->group);
    const long long need = r_max(cfg, B), U = (long long)cfg->n_layers * cfg->n_kv_heads;
    if (budget_slots(cfg) < need * U)
        BAD("config: budget=%g keeps %lld token slots per head, below the %lld that sinks (%d), window (%d) and one "
            "block in progress (%d) need",
            (double)cfg->budget, budget_slots(cfg) / U, need, cfg->sinks, cfg->window, B);
    if (cfg->keep > 0 && budget_slots(cfg) - (long long)cfg->keep * cfg->max_tokens < need * (U - cfg->keep))
        BAD("config: budget=%g cannot keep %d streams whole (%d tokens each) and give the other %lld the %lld slots that "
            "sinks, window and one block in progress need",
            (double)cfg->budget, cfg->keep, cfg->max_tokens, U - cfg->keep, need);
    return KVS_OK;
#undef BAD
}

/* ---- per-head budgets (uniform, prop): drop the oldest blocks to stay within b_u ------------ */

/* t_complete[b]: first token count at which block b is complete (KVS_NEVER if not by max_tokens) */
static void completion_times(const kvs_config *cfg, int B, int nb, int32_t *tc) {
    for (int b = 0; b < nb; b++) tc[b] = KVS_NEVER;
    int next = 0;
    kvs_method m;
    kvs__method_resolve(cfg, &m);
    for (long long t = 1; t <= cfg->max_tokens && next < nb; t++)
        while (next < nb && quant_at(&m, t) >= (long long)(next + 1) * B) tc[next++] = (int32_t)t;
}

static void per_head_drops(int B, int nb, const int32_t *tc, long long budget, int32_t *drop) {
    for (int b = 0; b < nb; b++) {
        const long long over = budget + (long long)b * B + 1; /* first t with t - b*B > budget */
        const long long t = tc[b] > over ? tc[b] : over;
        drop[b] = tc[b] == KVS_NEVER || t > INT32_MAX - 1 ? KVS_NEVER : (int32_t)t;
    }
}

/* b_u = base + share of the pool proportional to score, capped at max_tokens, sum exactly M
 * (largest remainder; the excess of capped units goes to the others). */
int kvs__prop_budgets(const double *score, int U, long long base, long long M, long long cap, long long *b) {
    char *capped = calloc((size_t)U, 1);
    double *rem = malloc((size_t)U * sizeof(double));
    if (!capped || !rem) {
        free(capped), free(rem);
        return 0;
    }
    for (int u = 0; u < U; u++) b[u] = base;
    long long pool = M - base * U;
    for (int round = 0; pool > 0 && round <= U; round++) {
        double sum = 0.0;
        int free_units = 0;
        for (int u = 0; u < U; u++)
            if (!capped[u]) sum += score[u] > 0.0 ? score[u] : 0.0, free_units++;
        if (!free_units) break;
        long long given = 0;
        for (int u = 0; u < U; u++) {
            rem[u] = -1.0;
            if (capped[u]) continue;
            const double share = sum > 0.0 ? (double)pool * (score[u] > 0.0 ? score[u] : 0.0) / sum : (double)pool / free_units;
            const long long whole = (long long)floor(share);
            b[u] += whole;
            given += whole;
            rem[u] = share - (double)whole;
        }
        for (long long k = given; k < pool; k++) { /* largest remainder, ties to the lower unit */
            int best = -1;
            for (int u = 0; u < U; u++)
                if (rem[u] >= 0.0 && (best < 0 || rem[u] > rem[best])) best = u;
            if (best < 0) break;
            b[best]++;
            rem[best] = -1.0;
        }
        pool = 0;
        for (int u = 0; u < U; u++)
            if (b[u] > cap) pool += b[u] - cap, b[u] = cap, capped[u] = 1;
    }
    free(capped);
    free(rem);
    return 1;
}

/* b_u = base + the calibration blocks that keep the most attention mass: unit u's profile m_u(k) is
 * the calibrated mass its queries put on source blocks k blocks back (mean over query blocks); each
 * step gives one block of slots to the unit whose next-older block holds the most mass (optimal
 * for the dropped-mass objective when profiles decrease with distance, as they do). */
int kvs__greedy_budgets(const kvs_calib *cal, int agg, int U, long long base, long long M, long long cap, long long *b) {
    const int nb = cal->heat.n_blocks, Bc = cal->heat.block;
    double *prof = calloc((size_t)U * (nb + 1), sizeof(double));
    int *kept = calloc((size_t)U, sizeof(int));
    if (!prof || !kept) {
        free(prof), free(kept);
        return 0;
    }
    for (int u = 0; u < U; u++) b[u] = base;
    long long pool = M - base * U;
    const int H = cal->n_kv_heads;
    for (int u = 0; u < U; u++)
        for (int k = 1; k <= nb; k++) {
            double sum = 0.0;
            int n = 0;
            for (int t = k; t < nb; t++)
                if (cal->heat.nq[(size_t)t * nb + (t - k)]) sum += *kvs__heat_mass(cal, agg, u / H, u % H, t, t - k), n++;
            prof[(size_t)u * (nb + 1) + k] = n ? sum / n : 0.0;
        }
    while (pool > 0) {
        int best = -1;
        double bv = -1.0;
        for (int u = 0; u < U; u++) {
            if (b[u] >= cap) continue;
            const int k = kept[u] + 1; /* beyond the calibrated distances the last profile value holds */
            const double v = prof[(size_t)u * (nb + 1) + (k <= nb ? k : nb)];
            if (v > bv) bv = v, best = u;
        }
        if (best < 0) break;
        long long give = Bc < pool ? Bc : pool;
        if (b[best] + give > cap) give = cap - b[best];
        b[best] += give;
        pool -= give;
        kept[best]++;
    }
    free(prof);
    free(kept);
    return 1;
}

/* ---- rankings (block, head, random): x(t) units lose every complete block ------------------ */

static uint64_t xorshift(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* rank[b][u]: position of unit u in block b's removal order (0 = first removed). */
static int rankings(const kvs_config *cfg, int U, int nb, int *rank) {
    const kvs_calib *cal = cfg->calib;
    uint16_t *perm = malloc((size_t)U * sizeof(uint16_t));
    if (!perm) return 0;
    uint64_t st = 0x9E3779B97F4A7C15ull ^ ((uint64_t)cfg->seed * 0xD1B54A32D192ED03ull);
    if (!st) st = 1;
    for (int b = 0; b < nb; b++) {
        const uint16_t *o;
        if (cfg->evict == KVS_EVICT_RANDOM) {
            for (int u = 0; u < U; u++) perm[u] = (uint16_t)u;
            for (int u = U - 1; u > 0; u--) { /* Fisher-Yates */
                const int k = (int)(xorshift(&st) % (uint64_t)(u + 1));
                const uint16_t x = perm[u];
                perm[u] = perm[k], perm[k] = x;
            }
            o = perm;
        } else if (cfg->evict == KVS_EVICT_HEATKV_HEAD) {
            o = cal->heat.horder + (size_t)cfg->agg * U;
        } else { /* past the calibrated blocks, the last ranking holds */
            const int s = b < cal->heat.n_blocks ? b : cal->heat.n_blocks - 1;
            o = cal->heat.order + ((size_t)cfg->agg * cal->heat.n_blocks + s) * U;
        }
        for (int r = 0; r < U; r++) rank[(size_t)b * U + o[r]] = r;
    }
    free(perm);
    return 1;
}

typedef struct {
    int32_t t;
    int layer, block, rank;
    size_t idx; /* into drop[] */
} atom;

static int by_priority(const void *a, const void *b) { /* early activation: latest layer, then block, then rank */
    const atom *x = a, *y = b;
    if (x->layer != y->layer) return y->layer - x->layer;
    if (x->block != y->block) return y->block - x->block;
    return x->rank - y->rank;
}

static int by_time(const void *a, const void *b) {
    const atom *x = a, *y = b;
    return x->t != y->t ? (x->t < y->t ? -1 : 1) : (x->layer - y->layer);
}

/* Decode order: at token count t, layers reach t one after another; while layers above l still
 * hold t - 1 tokens the total may exceed M (they have not yet lost the blocks due at t). Then
 * blocks of those layers that are complete already go early (drop = t - 1): those due soonest
 * first, within a due time the latest layer first (HeatKV's early pruning). Returns 1 if M holds
 * at every layer checkpoint, 0 if it cannot, -1 out of memory. */
static int early_pruning(const kvs_config *cfg, const int32_t *tc, int B, atom *at, size_t na, int32_t *drop, long long M) {
    const int L = cfg->n_layers, H = cfg->n_kv_heads;
    qsort(at, na, sizeof *at, by_time);
    char *gone = calloc(na ? na : 1, 1);
    atom *cand = malloc((na ? na : 1) * sizeof *cand);
    if (!gone || !cand) {
        free(gone), free(cand);
        return -1;
    }
    long long total = 0;
    size_t a0 = 0;
    int ok = 1;
    for (long long t = 1; t <= cfg->max_tokens && ok; t++) {
        while (a0 < na && at[a0].t < t) a0++;
        size_t a1 = a0;
        while (a1 < na && at[a1].t == t) a1++;
        for (int l = 0; l < L && ok; l++) {
            total += H;
            for (size_t a = a0; a < a1; a++)
                if (at[a].layer == l && !gone[a]) gone[a] = 1, total -= B;
            for (size_t s0 = a0; total > M && s0 < na;) { /* one due time after another */
                size_t s1 = s0, nc = 0;
                while (s1 < na && at[s1].t == at[s0].t) s1++;
                for (size_t a = s0; a < s1; a++)
                    if (at[a].layer > l && !gone[a] && tc[at[a].block] <= t - 1) cand[nc] = at[a], cand[nc++].idx = a;
                qsort(cand, nc, sizeof *cand, by_priority);
                for (size_t k = 0; k < nc && total > M; k++) {
                    gone[cand[k].idx] = 1;
                    drop[at[cand[k].idx].idx] = (int32_t)(t - 1);
                    total -= B;
                }
                s0 = s1;
            }
            if (total > M) ok = 0;
        }
    }
    free(gone);
    free(cand);
    return ok;
}

/* keep=K: the K units with the most calibrated retrieval mass, echo plus induction (RazorAttention
 * protects both kinds; ties: lower unit), as a mask. */
int kvs__retrieval_units(const kvs_calib *cal, int agg, int U, int K, char *prot) {
    const double *echo = cal->retr.echo + (size_t)agg * U, *ind = cal->retr.induction + (size_t)agg * U;
    memset(prot, 0, (size_t)U);
    for (int k = 0; k < K && k < U; k++) {
        int best = -1;
        for (int u = 0; u < U; u++)
            if (!prot[u] && (best < 0 || echo[u] + ind[u] > echo[best] + ind[best])) best = u;
        if (best < 0) return k;
        prot[best] = 1;
    }
    return K < U ? K : U;
}

/* Budgets with keep=K: kept units get T (never lose a block), the other U - K share M - K T by
 * the variant's rule (uniform: equally; prop: by far mass). 1, or 0 out of memory. */
static int kept_budgets(const kvs_config *cfg, int U, long long base, long long M, long long T, long long *bu) {
    char *prot = malloc((size_t)U);
    long long *sub = malloc((size_t)U * sizeof(long long));
    double *score = malloc((size_t)U * sizeof(double));
    int ok = prot && sub && score;
    if (ok) {
        const int K = kvs__retrieval_units(cfg->calib, (int)cfg->agg, U, cfg->keep, prot), rest = U - K;
        const long long Mr = M - (long long)K * T;
        int j = 0;
        for (int u = 0; u < U; u++)
            if (!prot[u]) score[j++] = cfg->evict == KVS_EVICT_HEATKV_PROP ? cfg->calib->heat.far[(size_t)cfg->agg * U + u] : 1.0;
        if (rest > 0 && cfg->evict == KVS_EVICT_UNIFORM)
            for (int r = 0; r < rest; r++) sub[r] = Mr / rest;
        else if (rest > 0)
            ok = kvs__prop_budgets(score, rest, base, Mr, T, sub);
        j = 0;
        for (int u = 0; ok && u < U; u++) bu[u] = prot[u] ? T : sub[j++];
    }
    free(prot), free(sub), free(score);
    return ok;
}

kvs_status kvs__evict_plan(const kvs_config *cfg, kvs_evict_plan *plan) {
    memset(plan, 0, sizeof *plan);
    if (cfg->evict == KVS_EVICT_NONE) return KVS_OK;
    const int L = cfg->n_layers, H = cfg->n_kv_heads, U = L * H, B = kvs__evict_block(cfg);
    const int nb = kvs__evict_n_blocks(cfg);
    const long long M = budget_slots(cfg), T = cfg->max_tokens;
    plan->blk_tokens = B;
    plan->n_blocks = nb;
    plan->slots = M;
    const size_t n = (size_t)U * nb;
    plan->drop = malloc((n ? n : 1) * sizeof(int32_t));
    int32_t *tc = malloc(((size_t)nb + 1) * sizeof(int32_t));
    if (!plan->drop || !tc) goto oom;
    completion_times(cfg, B, nb, tc);

    if (cfg->evict == KVS_EVICT_UNIFORM || cfg->evict == KVS_EVICT_HEATKV_PROP || cfg->evict == KVS_EVICT_HEATKV_GREEDY) {
        long long *bu = malloc((size_t)U * sizeof(long long));
        if (!bu) goto oom;
        const long long base = r_max(cfg, B);
        if (cfg->keep > 0) { /* retrieval heads keep everything; the others share what is left */
            if (!kept_budgets(cfg, U, base, M, T, bu)) {
                free(bu);
                goto oom;
            }
        } else if (cfg->evict == KVS_EVICT_UNIFORM) {
            for (int u = 0; u < U; u++) bu[u] = M / U; /* the same for every head; M % U slots unused */
        } else if (!(cfg->evict == KVS_EVICT_HEATKV_PROP
                         ? kvs__prop_budgets(cfg->calib->heat.far + (size_t)cfg->agg * U, U, base, M, T, bu)
                         : kvs__greedy_budgets(cfg->calib, (int)cfg->agg, U, base, M, T, bu))) {
            free(bu);
            goto oom;
        }
        for (int u = 0; u < U; u++) per_head_drops(B, nb, tc, bu[u], plan->drop + (size_t)u * nb);
        free(bu);
        free(tc);
        return KVS_OK;
    }

    /* x(t): fewest units that must lose every complete block so that U t - x (t - R(t)) <= M;
     * a running maximum, so that what is dropped stays dropped. tx[r]: first t with x(t) > r. */
    int32_t *tx = malloc((size_t)U * sizeof(int32_t));
    int *rank = malloc((n ? n : 1) * sizeof(int));
    atom *at = malloc((n ? n : 1) * sizeof(atom));
    if (!tx || !rank || !at) {
        free(tx), free(rank), free(at);
        goto oom;
    }
    for (int r = 0; r < U; r++) tx[r] = KVS_NEVER;
    kvs_method layout;
    kvs__method_resolve(cfg, &layout);
    long long x = 0;
    for (long long t = 1; t <= T; t++) {
        const long long R = t - quant_at(&layout, t) / B * B, over = (long long)U * t - M;
        if (over > 0) {
            const long long need = t > R ? (over + (t - R) - 1) / (t - R) : (long long)U + 1;
            if (need > x) {
                for (long long r = x; r < need && r < U; r++) tx[r] = (int32_t)t;
                x = need;
            }
        }
    }
    if (!rankings(cfg, U, nb, rank)) {
        free(tx), free(rank), free(at);
        goto oom;
    }
    for (int l = 0; l < L; l++)
        for (int h = 0; h < H; h++)
            for (int b = 0; b < nb; b++) {
                const size_t i = ((size_t)l * H + h) * nb + b;
                const int r = rank[(size_t)b * U + l * H + h];
                const int32_t t = tc[b] > tx[r] ? tc[b] : tx[r];
                plan->drop[i] = t;
                at[i] = (atom){t, l, b, r, i};
            }
    /* only atoms that are ever dropped take part in the simulation */
    size_t na = 0;
    for (size_t i = 0; i < n; i++)
        if (at[i].t != KVS_NEVER) at[na++] = at[i];
    const int ok = early_pruning(cfg, tc, B, at, na, plan->drop, M);
    free(tx), free(rank), free(at), free(tc);
    if (ok < 0) {
        kvs__evict_plan_free(plan);
        return kvs_report(KVS_ERR_NOMEM, "cache: out of memory for the eviction plan");
    }
    if (!ok) {
        kvs__evict_plan_free(plan);
        return kvs_report(KVS_ERR_CONFIG, "config: budget=%g cannot be kept while layers advance one by one",
                          (double)cfg->budget);
    }
    return KVS_OK;
oom:
    free(tc);
    kvs__evict_plan_free(plan);
    return kvs_report(KVS_ERR_NOMEM, "cache: out of memory for the eviction plan");
}

void kvs__evict_plan_free(kvs_evict_plan *plan) {
    free(plan->drop);
    plan->drop = NULL;
}
