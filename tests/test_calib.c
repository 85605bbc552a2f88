/* The calibration container: round trip, and one named failure per corruption class. */
#include <string.h>

#include "cache/evict.h"
#include "calib_fixture.h"
#include "test_util.h"

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}
static void reseal(uint8_t *b, size_t n) { /* a corruption that the checksum alone would not catch */
    const uint64_t h = fnv1a(b, n - 8);
    for (int i = 0; i < 8; i++) b[n - 8 + i] = (uint8_t)(h >> (8 * i));
}

static void expect(const uint8_t *b, size_t n, kvs_calib_error want, const char *what) {
    kvs_calib *c = NULL;
    kvs_calib_error e = KVS_CALIB_OK;
    const kvs_status st = kvs__calib_parse(b, n, &c, &e);
    CHECK(st != KVS_OK && e == want && c == NULL && kvs_last_error()[0], "%s: got %s, class %d (want %d): %s", what,
          kvs_status_str(st), (int)e, (int)want, kvs_last_error());
    kvs_calib_free(c);
}

/* Retrieval-head statistics (RETR section): echo and induction per unit, mean then max. */
static void fill_retr(int U, double *echo, double *ind, uint64_t seed) {
    rng_t r = {seed};
    for (int u = 0; u < U; u++) {
        echo[u] = 0.2 * rng_uniform(&r), ind[u] = 0.3 * rng_uniform(&r);
        echo[U + u] = echo[u] * 1.5, ind[U + u] = ind[u] * 2.0;
    }
}

static void retrieval_section(const kvs_calib *heat_only) {
    const int U = heat_only->n_layers * heat_only->n_kv_heads;
    double echo[64], ind[64];
    fill_retr(U, echo, ind, 9);
    uint8_t *b = NULL, *b2 = NULL;
    size_t n = 0, n2 = 0;
    kvs_calib *cal = NULL, *back = NULL;
    CHECK_OK(kvs__calib_serialize(heat_only, &b, &n));
    CHECK_OK(kvs_calib_load_mem(b, n, &cal));
    free(b);
    if (!cal) return;
    CHECK(!cal->has_retr, "a file without RETR loads without retrieval statistics");
    CHECK_OK(kvs_calib_set_retrieval(cal, 64, 2, echo, ind));
    CHECK_OK(kvs__calib_serialize(cal, &b, &n));
    CHECK_OK(kvs_calib_load_mem(b, n, &back));
    if (back) {
        CHECK(back->has_retr && back->has_heat && back->retr.period == 64 && back->retr.n_texts == 2 &&
                  !memcmp(back->retr.echo, echo, sizeof(double) * 2 * U) && !memcmp(back->retr.induction, ind, sizeof(double) * 2 * U),
              "RETR round trip");
        CHECK_OK(kvs__calib_serialize(back, &b2, &n2));
        CHECK(n2 == n && b2 && !memcmp(b, b2, n), "RETR round trip changed the bytes");
        free(b2);
    }
    kvs_calib_free(back);
    /* the keep= ranking: echo + induction, highest first */
    char prot[64];
    CHECK(kvs__retrieval_units(cal, 0, U, 3, prot) == 3, "three units kept");
    double lo_kept = 1e9, hi_other = -1;
    for (int u = 0; u < U; u++) {
        const double v = echo[u] + ind[u];
        if (prot[u]) lo_kept = v < lo_kept ? v : lo_kept;
        else hi_other = v > hi_other ? v : hi_other;
    }
    CHECK(lo_kept >= hi_other, "kept units are not the highest-scoring (%g < %g)", lo_kept, hi_other);
    /* values: out of range, NaN, max below mean; refused by the setter and by the loader */
    double bad[64];
    memcpy(bad, ind, sizeof(double) * 2 * U);
    bad[1] = 1.5;
    CHECK(kvs_calib_set_retrieval(cal, 64, 2, echo, bad) == KVS_ERR_FORMAT, "induction 1.5 accepted");
    memcpy(bad, ind, sizeof(double) * 2 * U);
    bad[U + 2] = bad[2] * 0.5;
    CHECK(kvs_calib_set_retrieval(cal, 64, 2, echo, bad) == KVS_ERR_FORMAT, "max below mean accepted");
    CHECK(kvs_calib_set_retrieval(cal, 0, 2, echo, ind) == KVS_ERR_ARG, "period 0 accepted");
    const size_t retr0 = n - 8 - (8 + 32 * (size_t)U) - 16; /* the RETR section is the last */
    uint8_t *x = malloc(n + 16);
    memcpy(x, b, n);
    CHECK(!memcmp(x + retr0, "RETR", 4), "RETR section where expected");
    const size_t at = retr0 + 16 + 8 + 8 * 3; /* echo, mean, unit 3 */
    const double nan = NAN;
    uint64_t v;
    memcpy(&v, &nan, 8);
    for (int i = 0; i < 8; i++) x[at + i] = (uint8_t)(v >> (8 * i));
    reseal(x, n);
    expect(x, n, KVS_CALIB_BAD_VALUE, "RETR echo NaN");
    memcpy(x, b, n);
    put32(x + retr0 + 16, 0);
    reseal(x, n);
    expect(x, n, KVS_CALIB_BAD_SHAPE, "RETR period 0");
    memcpy(x, b, n);
    x[retr0 + 8] = (uint8_t)(x[retr0 + 8] - 8); /* section 8 bytes short of its arrays */
    reseal(x, n);
    expect(x, n, KVS_CALIB_BAD_SECTION, "RETR section size");
    memcpy(x, b, n);
    memset(x + 112, 0, 4); /* padding is canonical: a stray byte in the reserved tail of the header */
    put32(x + 112, 2);
    x[118] = 1;
    reseal(x, n);
    expect(x, n, KVS_CALIB_BAD_SECTION, "reserved byte set");
    free(x);
    free(b);
    kvs_calib_free(cal);
}

/* Low-rank bases (LRNK section) */
static void orthonormal(float *P, int d, int r, uint64_t seed) {
    rng_t g = {seed};
    test_orthonormal(&g, P, d, r);
}

/* two layers, two KV heads of 16: key ranks 3/5, value ranks 4/2; PCA and learned sets; profiles */
static kvs_calib *lowrank_fixture(kvs_calib *into) {
    static float k0[16 * 3], k1[16 * 5], v0[2 * 16 * 4], v1[2 * 16 * 2], k0b[16 * 3], k1b[16 * 5];
    orthonormal(k0, 16, 3, 1), orthonormal(k1, 16, 5, 2), orthonormal(k0b, 16, 3, 3), orthonormal(k1b, 16, 5, 4);
    orthonormal(v0, 16, 4, 5), orthonormal(v0 + 64, 16, 4, 6), orthonormal(v1, 16, 2, 7), orthonormal(v1 + 32, 16, 2, 8);
    kvs_calib *c = into;
    if (!c && kvs_calib_create("tiny", 42, 2, 4, 2, 16, &c) != KVS_OK) return NULL;
    const int rk[2] = {3, 5}, rv[2] = {4, 2}, ranks[3] = {4, 8, 16};
    const float *keys[2] = {k0, k1}, *keysb[2] = {k0b, k1b}, *vals[2] = {v0, v1};
    const double err[12] = {0.3, 0.1, 0, 0.4, 0.2, 0, 0.5, 0.25, 0, 0.6, 0.3, 0};
    if (kvs_calib_set_bases(c, KVS_BASIS_PCA, rk, rv, keys, vals) || kvs_calib_set_bases(c, KVS_BASIS_LEARNED, rk, rv, keysb, vals) ||
        kvs_calib_set_profiles(c, 3, ranks, err)) {
        kvs_calib_free(c);
        return NULL;
    }
    return c;
}

static size_t find_tag(const uint8_t *b, size_t n, const char *tag) {
    for (size_t i = 120; i + 4 <= n; i++)
        if (!memcmp(b + i, tag, 4)) return i;
    return 0;
}

static void lowrank_section(void) {
    kvs_calib *c = lowrank_fixture(NULL), *back = NULL;
    CHECK(c != NULL, "low-rank fixture: %s", kvs_last_error());
    if (!c) return;
    uint8_t *b = NULL, *b2 = NULL;
    size_t n = 0, n2 = 0;
    CHECK_OK(kvs__calib_serialize(c, &b, &n));
    CHECK_OK(kvs_calib_load_mem(b, n, &back));
    if (back) {
        int r = 0;
        const float *kb = kvs__calib_basis(back, KVS_BASIS_LEARNED, 1, 0, 0, &r), *vb = kvs__calib_basis(back, KVS_BASIS_PCA, 0, 1, 1, &r);
        CHECK(kb && kb == back->lrnk.set[1].keys + 48 && vb && r == 4 && vb == back->lrnk.set[0].values + 64, "basis lookup");
        CHECK(!kvs__calib_basis(back, KVS_BASIS_EIGEN, 0, 0, 0, &r), "a missing basis kind is found");
        CHECK(!back->has_heat && back->lrnk.n_sets == 2 && back->lrnk.n_ranks == 3 && back->lrnk.profile[4] == 0.2, "LRNK round trip");
        CHECK_OK(kvs__calib_serialize(back, &b2, &n2));
        CHECK(n2 == n && b2 && !memcmp(b, b2, n), "LRNK round trip changed the bytes");
        free(b2);
    }
    kvs_calib_free(back);
    /* the setters refuse bad input */
    float P[16 * 4], Q[2 * 16 * 4];
    orthonormal(P, 16, 4, 11), orthonormal(Q, 16, 4, 12), orthonormal(Q + 64, 16, 4, 13);
    const float *kp[2] = {P, P}, *vp[2] = {Q, Q};
    const int r4[2] = {4, 4}, r0[2] = {4, 0}, r17[2] = {17, 4};
    CHECK(kvs_calib_set_bases(c, KVS_BASIS_EIGEN, r4, r4, kp, vp) == KVS_OK && c->lrnk.n_sets == 3, "a third basis kind");
    CHECK(kvs_calib_set_bases(c, KVS_BASIS_EIGEN, r4, r4, kp, vp) == KVS_OK && c->lrnk.n_sets == 3, "a kind set twice is replaced");
    CHECK(kvs_calib_set_bases(c, KVS_BASIS_EIGEN, r0, r4, kp, vp) == KVS_ERR_ARG, "rank 0 accepted");
    CHECK(kvs_calib_set_bases(c, KVS_BASIS_EIGEN, r17, r4, kp, vp) == KVS_ERR_ARG, "rank above head_dim accepted");
    CHECK(kvs_calib_set_bases(c, (kvs_basis)3, r4, r4, kp, vp) == KVS_ERR_ARG, "unknown basis kind accepted");
    P[5] *= 1.01f;
    CHECK(kvs_calib_set_bases(c, KVS_BASIS_EIGEN, r4, r4, kp, vp) == KVS_ERR_FORMAT, "a non-orthonormal basis accepted");
    P[5] = NAN;
    CHECK(kvs_calib_set_bases(c, KVS_BASIS_EIGEN, r4, r4, kp, vp) == KVS_ERR_NONFINITE, "a NaN basis accepted");
    const int down[2] = {8, 4}, ok2[2] = {4, 8};
    const double e4[8] = {0, 0, 0, 0, 0, 0, 0, -1};
    CHECK(kvs_calib_set_profiles(c, 2, down, e4) == KVS_ERR_ARG, "descending profile ranks accepted");
    CHECK(kvs_calib_set_profiles(c, 2, ok2, e4) == KVS_ERR_NONFINITE, "a negative profile error accepted");
    kvs_calib_free(c);
    /* the loader: one named class per corruption of the section */
    const size_t at = find_tag(b, n, "LRNK"), p0 = at + 16;
    CHECK(at > 0, "LRNK section not found");
    uint8_t *x = malloc(n);
    if (!at || !x) {
        free(b), free(x);
        return;
    }
    const size_t prof = p0 + 16 + 16, set0 = prof + 8 * 2 * 2 * 3, set1 = set0 + 24 + 4 * (16 * 8 + 2 * 16 * 6);
    struct {
        size_t off;
        uint32_t v;
        kvs_calib_error want;
        const char *what;
    } cases[] = {
        {p0, 4, KVS_CALIB_BAD_SHAPE, "four basis sets"},
        {p0, 0, KVS_CALIB_BAD_SECTION, "sets declared 0: bytes left over"},
        {p0 + 16, 0, KVS_CALIB_BAD_SHAPE, "profile rank 0"},
        {p0 + 20, 4, KVS_CALIB_BAD_SHAPE, "profile ranks not ascending"},
        {prof + 8 * 2 + 4, 0xfff00000u, KVS_CALIB_BAD_VALUE, "profile error -Inf (high word)"},
        {set0, 7, KVS_CALIB_BAD_SHAPE, "basis kind 7"},
        {set1, 0, KVS_CALIB_BAD_SECTION, "basis kind given twice"},
        {set0 + 8, 0, KVS_CALIB_BAD_SHAPE, "key rank 0"},
        {set0 + 8, 17, KVS_CALIB_BAD_SHAPE, "key rank 17"},
        {set0 + 8, 2, KVS_CALIB_BAD_VALUE, "key rank 2: the bytes read as [16][2] are not orthonormal"},
        {set0 + 24 + 4 * 5, 0x3f800000u, KVS_CALIB_BAD_VALUE, "a key basis entry set to 1: not orthonormal"},
        {at + 8, (uint32_t)(n - 8 - at - 16 - 8), KVS_CALIB_BAD_SECTION, "section 8 bytes short"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        memcpy(x, b, n);
        put32(x + cases[i].off, cases[i].v);
        reseal(x, n);
        expect(x, n, cases[i].want, cases[i].what);
    }
    /* with HEAT and RETR in the same file: every section survives */
    kvs_calib *h = fixture_calib(2, 4, 2, 16, 8, 0, 0, 16, 2, 7);
    double echo[8], ind[8];
    fill_retr(4, echo, ind, 3);
    CHECK(h && kvs_calib_set_retrieval(h, 32, 1, echo, ind) == KVS_OK && lowrank_fixture(h) == h, "HEAT + RETR + LRNK fixture");
    free(b), b = NULL;
    if (h) {
        CHECK_OK(kvs__calib_serialize(h, &b, &n));
        CHECK_OK(kvs_calib_load_mem(b, n, &back));
        CHECK(back && back->has_heat && back->has_retr && back->lrnk.n_sets == 2, "three sections round trip");
        kvs_calib_free(back);
        kvs_calib_free(h);
    }
    free(b), free(x);
}

/* test_calib --seeds DIR: write the fuzz corpus seeds (small valid files) */
static int write_seeds(const char *dir) {
    const int shapes[3][9] = {{1, 1, 1, 16, 8, 0, 0, 16, 2}, {2, 2, 1, 64, 32, 4, 32, 200, 3}, {1, 6, 3, 64, 64, 4, 64, 512, 4}};
    for (int i = 0; i < 3; i++) {
        const int *s = shapes[i];
        kvs_calib *c = fixture_calib(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], (uint64_t)i + 1);
        char path[1024];
        snprintf(path, sizeof path, "%s/seed%d.kvcal", dir, i);
        if (!c) return 1;
        if (i == 2) { /* one seed with retrieval statistics */
            double echo[64], ind[64];
            fill_retr(s[0] * s[2], echo, ind, 5);
            if (kvs_calib_set_retrieval(c, 32, 1, echo, ind) != KVS_OK) return 1;
        }
        if (kvs__calib_save(c, path) != KVS_OK) return 1;
        kvs_calib_free(c);
    }
    kvs_calib *lr = lowrank_fixture(NULL); /* low-rank bases and profiles alone */
    char path[1024];
    snprintf(path, sizeof path, "%s/seed3.kvcal", dir);
    if (!lr || kvs__calib_save(lr, path) != KVS_OK) return 1;
    kvs_calib_free(lr);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--seeds")) return write_seeds(argv[2]);
    kvs_calib *cal = fixture_calib(3, 6, 2, 64, 32, 4, 16, 512, 10, 3);
    uint8_t *b = NULL, *b2 = NULL;
    size_t n = 0, n2 = 0;
    CHECK_OK(kvs__calib_serialize(cal, &b, &n));
    if (!b) return test_done("test_calib");

    /* round trip: bytes -> handle -> the same bytes; model identity survives */
    kvs_calib *back = NULL;
    CHECK_OK(kvs_calib_load_mem(b, n, &back));
    if (back) {
        CHECK_OK(kvs__calib_serialize(back, &b2, &n2));
        CHECK(n2 == n && b2 && !memcmp(b, b2, n), "round trip changed the bytes (%zu vs %zu)", n, n2);
        uint64_t hash = 0;
        CHECK(!strcmp(kvs_calib_model(back, &hash), "fixture") && hash == 0x1234, "model identity lost");
        free(b2);
    }
    kvs_calib_free(back);

    /* file round trip and I/O errors */
    const char *path = "test_calib.kvcal";
    CHECK_OK(kvs__calib_save(cal, path));
    back = NULL;
    CHECK_OK(kvs_calib_load(path, &back));
    CHECK(back && back->heat.n_blocks == 10 && back->heat.block == 32, "file round trip");
    kvs_calib_free(back);
    remove(path);
    back = NULL;
    CHECK(kvs_calib_load("no/such/file.kvcal", &back) == KVS_ERR_IO && !back && strstr(kvs_last_error(), "no/such"),
          "missing file: %s", kvs_last_error());

    uint8_t *x = malloc(n + 64);
    /* every truncation is refused */
    int accepted = 0;
    for (size_t k = 0; k < n; k += (k < 256 ? 1 : 97)) {
        kvs_calib *c = NULL;
        accepted += kvs_calib_load_mem(b, k, &c) == KVS_OK;
        kvs_calib_free(c);
    }
    CHECK(!accepted, "%d truncated files accepted", accepted);
    memcpy(x, b, n);
    expect(x, n - 1, KVS_CALIB_TRUNCATED, "one byte short");
    memcpy(x, b, n);
    x[0] = 'X';
    expect(x, n, KVS_CALIB_BAD_MAGIC, "magic");
    memcpy(x, b, n);
    put32(x + 8, 2);
    reseal(x, n);
    expect(x, n, KVS_CALIB_BAD_VERSION, "version 2");
    memcpy(x, b, n);
    memset(x + n, 0, 8);
    expect(x, n + 8, KVS_CALIB_BAD_SIZE, "trailing bytes");
    memcpy(x, b, n);
    x[n / 2] ^= 1;
    expect(x, n, KVS_CALIB_BAD_CHECKSUM, "one flipped bit");
    memcpy(x, b, n);
    put32(x + 28, 5); /* heads not a multiple of KV heads */
    reseal(x, n);
    expect(x, n, KVS_CALIB_BAD_SHAPE, "model shapes");
    memcpy(x, b, n);
    put32(x + 120 + 16 + 16, 100); /* 100 blocks of 32 do not fit in a context of 512 */
    reseal(x, n);
    expect(x, n, KVS_CALIB_BAD_SHAPE, "more blocks than the context holds");
    memcpy(x, b, n);
    put32(x + 120 + 16 + 16, 9); /* consistent dims, wrong section size */
    reseal(x, n);
    expect(x, n, KVS_CALIB_BAD_SECTION, "section size");
    /* a mass above 1: patch the first stored double of the mass array where nq > 0 (t=1, s=0) */
    {
        const size_t mass0 = 120 + 16 + 32, at = mass0 + (size_t)(1 * 10 + 0) * 8;
        memcpy(x, b, n);
        const double two = 2.0;
        uint64_t v;
        memcpy(&v, &two, 8);
        for (int i = 0; i < 8; i++) x[at + i] = (uint8_t)(v >> (8 * i));
        reseal(x, n);
        expect(x, n, KVS_CALIB_BAD_VALUE, "mass 2");
        memcpy(x, b, n);
        const double nan = NAN;
        memcpy(&v, &nan, 8);
        for (int i = 0; i < 8; i++) x[at + i] = (uint8_t)(v >> (8 * i));
        reseal(x, n);
        expect(x, n, KVS_CALIB_BAD_VALUE, "mass NaN");
        memcpy(x, b, n);
        const double small = 1e-3; /* where no query may look (t=0, s=0): must be 0 */
        memcpy(&v, &small, 8);
        for (int i = 0; i < 8; i++) x[mass0 + i] = (uint8_t)(v >> (8 * i));
        reseal(x, n);
        expect(x, n, KVS_CALIB_BAD_VALUE, "mass where no query looks");
    }
    /* rankings: the order arrays sit before horder at the end of the section */
    {
        const size_t U = 6, nb = 10, horder_bytes = (2 * U * 2 + 7) / 8 * 8, order_bytes = (2 * nb * U * 2 + 7) / 8 * 8;
        const size_t order0 = n - 8 - horder_bytes - order_bytes;
        memcpy(x, b, n);
        x[order0 + 2] = x[order0]; /* a duplicate unit */
        x[order0 + 3] = x[order0 + 1];
        reseal(x, n);
        expect(x, n, KVS_CALIB_BAD_RANKING, "duplicate in a ranking");
        memcpy(x, b, n);
        uint8_t t0 = x[order0], t1 = x[order0 + 1]; /* a valid permutation, but not the statistics' */
        x[order0] = x[order0 + 2], x[order0 + 1] = x[order0 + 3];
        x[order0 + 2] = t0, x[order0 + 3] = t1;
        reseal(x, n);
        expect(x, n, KVS_CALIB_BAD_RANKING, "ranking that disagrees with the statistics");
    }
    /* sections: HEAT twice is an error; an unknown section is skipped (a later method's data) */
    {
        const size_t sec = n - 8 - 120;
        uint8_t *y = malloc(n + sec + 32);
        memcpy(y, b, n - 8);
        memcpy(y + n - 8, b + 120, sec);
        const size_t m = n + sec;
        put32(y + 112, 2);
        for (int i = 0; i < 8; i++) y[16 + i] = (uint8_t)((uint64_t)m >> (8 * i));
        reseal(y, m);
        expect(y, m, KVS_CALIB_BAD_SECTION, "HEAT twice");
        memcpy(y + n - 8, "STIF", 4);
        reseal(y, m);
        kvs_calib *c = NULL;
        CHECK_OK(kvs_calib_load_mem(y, m, &c));
        CHECK(c && c->has_heat, "unknown section not skipped");
        kvs_calib_free(c);
        free(y);
    }
    free(x);
    free(b);
    retrieval_section(cal);
    lowrank_section();
    kvs_calib_free(cal);
    return test_done("test_calib");
}
