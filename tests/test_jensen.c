/* Jensen bias correction (docs/methods/jensen.md oracles 1-4, 10; 6 and 9 are in test_attend.c). */
#include <string.h>

#include "methods/methods.h"
#include "test_util.h"

enum { D = 64 };

static double b2(const float *q, const float *delta, int d, float tau) {
    float w[256];
    double b = 0;
    kvs_jensen_weights(q, d, tau, 1.0f, w);
    for (int c = 0; c < d; c++) b += (double)w[c] * delta[c] * delta[c];
    return b;
}

static void monte_carlo(void) {
    rng_t r = {11};
    float q[D], delta[D];
    const float tau = 1.0f / 8.0f;
    fill_normal(&r, q, D, 1.0);
    for (int c = 0; c < D; c++) delta[c] = (float)(0.1 + 0.7 * rng_uniform(&r));
    const double bex = kvs_jensen_exact(q, delta, D, tau, 1.0f, 1.0f), bt = b2(q, delta, D, tau);
    const int N = 400000;
    double s1 = 0, s2 = 0, c1 = 0, c2 = 0, g1 = 0;
    for (int it = 0; it < N; it++) {
        double du = 0, dg = 0;
        for (int c = 0; c < D; c++) {
            du += q[c] * delta[c] * (rng_uniform(&r) - 0.5);
            dg += q[c] * delta[c] / sqrt(12.0) * rng_normal(&r);
        }
        const double e = exp(tau * du), ec = exp(tau * du - bex);
        s1 += e;
        s2 += e * e;
        c1 += ec;
        c2 += ec * ec;
        g1 += exp(tau * dg);
    }
    const double m = s1 / N, se = sqrt((s2 / N - m * m) / N), mc = c1 / N, sec = sqrt((c2 / N - mc * mc) / N);
    printf("E[exp d] = %.6f +- %.6f, exp(b_exact) = %.6f; corrected %.6f; gaussian %.6f vs exp(b2) %.6f\n", m, se,
           exp(bex), mc, g1 / N, exp(bt));
    CHECK(fabs(m - exp(bex)) <= 4 * se, "inflation factor: %g vs %g (se %g)", m, exp(bex), se);
    CHECK(fabs(mc - 1.0) <= 4 * sec, "corrected mean %g != 1 (se %g)", mc, sec);
    CHECK(fabs(g1 / N - exp(bt)) <= 4 * se, "gaussian noise: %g vs exp(b2) %g", g1 / N, exp(bt));
}

/* double-precision twins of the library formulas, for the inequality checks */
static double b2_double(const float *q, const float *delta, int d, double tau) {
    double b = 0;
    for (int c = 0; c < d; c++) b += tau * tau / 24 * (double)q[c] * q[c] * (double)delta[c] * delta[c];
    return b;
}
static double bexact_double(const float *q, const float *delta, int d, double tau) {
    double b = 0;
    for (int c = 0; c < d; c++) b += kvs_log_sinhc(0.5 * tau * q[c] * delta[c]);
    return b;
}

/* ln(sinh a / a) in long double: its series sum 2^2n B_2n a^2n / (2n (2n)!) for small a (where
 * logl(sinhl(a)/a) itself cancels), the direct form elsewhere. */
static long double ref_log_sinhc(long double a) {
    if (a < 0.5L) {
        static const long double B[] = {1.0L / 6, -1.0L / 30, 1.0L / 42, -1.0L / 30, 5.0L / 66, -691.0L / 2730, 7.0L / 6,
                                        -3617.0L / 510, 43867.0L / 798, -174611.0L / 330};
        long double s = 0, p2 = 1, fact = 1, a2n = 1;
        for (int n = 1; n <= 10; n++) {
            p2 *= 4;
            fact *= (long double)(2 * n - 1) * (2 * n);
            a2n *= a * a;
            s += p2 * B[n - 1] * a2n / (2 * n * fact);
        }
        return s;
    }
    return logl(sinhl(a) / a);
}

static void bounds_and_limits(void) {
    rng_t r = {12};
    float q[D], delta[D], q2[D], z[D];
    int bad = 0, bad_float = 0;
    for (int rep = 0; rep < 2000; rep++) {
        fill_normal(&r, q, D, 0.2 + rep % 9);
        for (int c = 0; c < D; c++) delta[c] = (float)(rng_uniform(&r) * (rep % 3 + 0.1));
        const float tau = 0.125f;
        const double be = bexact_double(q, delta, D, tau), bt = b2_double(q, delta, D, tau);
        double a4 = 0, amax = 0;
        for (int c = 0; c < D; c++) {
            const double a = 0.5 * tau * q[c] * delta[c];
            a4 += a * a * a * a / 180;
            amax = fmax(amax, fabs(a));
        }
        if (!(be >= 0 && be <= bt + 1e-14)) bad++;
        if (amax <= 3.14159265358979 && bt - be > a4 + 1e-14) bad++;
        /* the float library versions agree with the double ones */
        if (fabs(b2(q, delta, D, tau) - bt) > 1e-5 * bt + 1e-12 ||
            fabs(kvs_jensen_exact(q, delta, D, tau, 1.0f, 1.0f) - be) > 1e-5 * be + 1e-12)
            bad_float++;
        for (int c = 0; c < D; c++) q2[c] = -q[c];
        if (b2_double(q2, delta, D, tau) != bt) bad++;
        for (int c = 0; c < D; c++) q2[c] = 2 * q[c]; /* exact in float */
        if (fabs(b2_double(q2, delta, D, tau) - 4 * bt) > 1e-12 * (1 + bt)) bad++;
    }
    CHECK(bad_float == 0, "%d float/double disagreements", bad_float);
    CHECK(bad == 0, "%d bound/scaling violations", bad);
    memset(z, 0, sizeof z);
    fill_normal(&r, q, D, 1.0);
    CHECK(kvs_jensen_exact(q, z, D, 0.125f, 1.0f, 1.0f) == 0.0f && b2(q, z, D, 0.125f) == 0.0, "delta=0 must give 0");
    CHECK(kvs_jensen_exact(z, q, D, 0.125f, 1.0f, 1.0f) == 0.0f, "q=0 must give 0");
    /* spot values and numerics (oracles 3, 10) */
    CHECK(fabs(kvs_log_sinhc(1.0) - 0.161439) < 1e-6, "ln sinhc(1) = %.7f", kvs_log_sinhc(1.0));
    CHECK(fabs(kvs_log_sinhc(3.0) - 1.205759) < 1e-6, "ln sinhc(3) = %.7f", kvs_log_sinhc(3.0));
    CHECK(fabs(kvs_log_sinhc(10.0) - 7.0043) < 1e-4, "ln sinhc(10) = %.7f", kvs_log_sinhc(10.0));
    CHECK(fabs(kvs_log_sinhc(1e4) - 9990.0965) < 1e-3, "ln sinhc(1e4) = %.4f", kvs_log_sinhc(1e4));
    double worst = 0;
    for (int i = 1; i <= 100000; i++) {
        const long double a = (long double)i * 1e-4L;
        const long double ref = ref_log_sinhc(a);
        worst = fmax(worst, (double)fabsl(((long double)kvs_log_sinhc((double)a) - ref) / ref));
    }
    CHECK(worst <= 1.1e-12, "ln sinhc relative error %g", worst);
}

int main(void) {
    monte_carlo();
    bounds_and_limits();
    return test_done("test_jensen");
}
