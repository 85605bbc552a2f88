/* HeatKV calibration statistics against hand-computed attention (docs/methods/heatkv.md, oracle 8):
 * a head with uniform attention puts B / (P + 1) on each eligible block; a head that attends only
 * to its own token puts ~0 there and comes first in every ranking; mean and max aggregate the
 * query heads of a KV head as defined. */
#include <string.h>

#include "calib/calib.h"
#include "model.h"
#include "test_util.h"

enum { CTX = 64, D = 64, BLK = 8, WIN = 8, NH = 4, H = 2 };

/* Retrieval statistics: period T, positions 0 .. 2T. Keys e_p. Query head 0 (KV head 0) at a repeat
 * P = T + j attends to j + 1 (induction), query head 2 (KV head 1) to j (echo), heads 1 and 3
 * uniformly: mean and max over each KV head's two query heads are hand-computed. */
static void retrieval(void) {
    enum { T = 20, C = 2 * T + 1 };
    kvs_retrieval_stats *rs = NULL;
    CHECK_OK(kvs_retrieval_stats_new(1, NH, H, D, T, &rs));
    if (!rs) return;
    CHECK(kvs_retrieval_stats_ctx(rs) == C, "context %d", kvs_retrieval_stats_ctx(rs));
    static float q[C][NH][D], k[C][H][D];
    for (int p = 0; p < C; p++) {
        for (int h = 0; h < H; h++) k[p][h][p] = 1.0f;
        if (p > T) q[p][0][p - T + 1] = 400.0f, q[p][2][p - T] = 400.0f;
    }
    kvs_retrieval_stats_begin(rs);
    for (int p0 = 0; p0 < C; p0 += 9) kvs_retrieval_observe(rs, 0, p0 + 9 <= C ? 9 : C - p0, p0, &q[p0][0][0], &k[p0][0][0]);
    CHECK_OK(kvs_retrieval_stats_error(rs));
    double echo[2 * H], ind[2 * H];
    kvs_retrieval_stats_scores(rs, echo, ind);
    /* counted queries: P = T + j with j >= 2 and P < C - 1, i.e. j = 2 .. T - 1; the uniform head puts 1 / (P + 1) on each */
    double uni = 0.0;
    int cnt = 0;
    for (int j = 2; j < T; j++) uni += 1.0 / (T + j + 1), cnt++;
    uni /= cnt;
    const double want_ind[2 * H] = {(1 + uni) / 2, uni / 2, 1, uni}, want_echo[2 * H] = {uni / 2, (1 + uni) / 2, uni, 1};
    double worst = 0.0;
    for (int x = 0; x < 2 * H; x++) worst = fmax(worst, fabs(ind[x] - want_ind[x]) + fabs(echo[x] - want_echo[x]));
    CHECK(worst < 1e-6, "retrieval scores off by %.3g (induction %g %g, echo %g %g)", worst, ind[0], ind[1], echo[0], echo[1]);
    kvs_retrieval_stats_begin(rs);
    kvs_retrieval_observe(rs, 0, 3, 5, &q[0][0][0], &k[0][0][0]);
    CHECK(kvs_retrieval_stats_error(rs) == KVS_ERR_ARG, "out of order positions accepted");
    kvs_retrieval_stats_free(rs);
}

int main(void) {
    kvs_heat_stats *st = NULL;
    CHECK_OK(kvs_heat_stats_new(1, NH, H, D, CTX, BLK, 0, WIN, &st));
    if (!st) return test_done("test_heat_stats");
    /* keys: token j is the unit vector e_j (in both KV heads); query heads 0 of KV head 0 attend
     * uniformly (q = 0), all others only to their own token (q_P = 400 e_P: score 50 vs 0) */
    static float q[CTX][NH][D], k[CTX][H][D];
    for (int p = 0; p < CTX; p++) {
        for (int h = 0; h < H; h++) k[p][h][p] = 1.0f;
        for (int hh = 1; hh < NH; hh++) q[p][hh][p] = 400.0f;
    }
    kvs_heat_stats_begin(st);
    for (int p0 = 0; p0 < CTX;) { /* uneven chunks, as a forward pass with a batch would give */
        const int n = p0 + 13 <= CTX ? 13 : CTX - p0;
        kvs_heat_observe(st, 0, n, p0, &q[p0][0][0], &k[p0][0][0]);
        p0 += n;
    }
    CHECK_OK(kvs_heat_stats_error(st));
    kvs_calib *cal = NULL;
    CHECK_OK(kvs_heat_stats_finish(st, "synthetic", 42, &cal));
    if (cal) {
        const int nb = cal->heat.n_blocks;
        CHECK(nb == CTX / BLK, "%d blocks", nb);
        double worst_u = 0.0, worst_l = 0.0;
        int bad_nq = 0;
        for (int t = 0; t < nb; t++)
            for (int s = 0; s < nb; s++) {
                /* queries P of block t that see block s wholly outside their window: (s+1) B + W <= P + 1 */
                double want = 0.0;
                int cnt = 0;
                for (int P = t * BLK; P < (t + 1) * BLK; P++)
                    if ((s + 1) * BLK + WIN <= P + 1) want += (double)BLK / (P + 1), cnt++;
                want = cnt ? want / cnt : 0.0;
                bad_nq += cal->heat.nq[(size_t)t * nb + s] != (uint32_t)cnt;
                /* KV head 0: one uniform and one local query head: mean = half, max = all */
                const double mean0 = *kvs__heat_mass(cal, 0, 0, 0, t, s), max0 = *kvs__heat_mass(cal, 1, 0, 0, t, s);
                worst_u = fmax(worst_u, fabs(mean0 - want / 2) + fabs(max0 - want));
                worst_l = fmax(worst_l, *kvs__heat_mass(cal, 0, 0, 1, t, s) + *kvs__heat_mass(cal, 1, 0, 1, t, s));
            }
        CHECK(!bad_nq, "%d (t, s) query counts differ from the window rule", bad_nq);
        CHECK(worst_u < 1e-6, "uniform head: mass off by %.3g", worst_u);
        CHECK(worst_l < 1e-12, "local head: mass %.3g on blocks outside its window", worst_l);
        int first = 0, eligible = 0;
        for (int s = 0; s < nb; s++) {
            int any = 0;
            for (int t = 0; t < nb; t++) any |= cal->heat.nq[(size_t)t * nb + s] != 0;
            if (!any) continue;
            eligible++;
            for (int a = 0; a < 2; a++) first += cal->heat.order[((size_t)a * nb + s) * H] == 1;
        }
        CHECK(eligible > 0 && first == 2 * eligible, "the local head leads %d of %d rankings", first, 2 * eligible);
        CHECK(cal->heat.horder[0] == 1 && cal->heat.far[0] > 0.0 && cal->heat.far[1] < 1e-12, "far-mass ranking");
        uint64_t h;
        CHECK(!strcmp(kvs_calib_model(cal, &h), "synthetic") && h == 42, "identity");
    }
    kvs_calib_free(cal);
    /* positions out of order are an error, not a wrong statistic */
    kvs_heat_stats_begin(st);
    kvs_heat_observe(st, 0, 4, 10, &q[0][0][0], &k[0][0][0]);
    CHECK(kvs_heat_stats_error(st) == KVS_ERR_ARG && strstr(kvs_last_error(), "positions"), "out of order: %s", kvs_last_error());
    kvs_heat_stats_free(st);
    retrieval();
    return test_done("test_heat_stats");
}
