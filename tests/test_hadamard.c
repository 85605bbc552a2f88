/* Walsh-Hadamard rotation (docs/methods/oscar.md oracle 1): dense equality, orthogonality, involution,
 * norms and dot products preserved. */
#include <string.h>

#include "methods/methods.h"
#include "test_util.h"

int main(void) {
    rng_t r = {5};
    static float Hm[128 * 128];
    for (int d = 16; d <= 128; d *= 2) {
        /* columns of H from unit vectors */
        for (int j = 0; j < d; j++) {
            float e[128] = {0};
            e[j] = 1.0f;
            kvs_fwht(e, d);
            for (int i = 0; i < d; i++) Hm[i * d + j] = e[i];
        }
        double dense = 0, orth = 0, sym = 0;
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) {
                const double want = (__builtin_popcount((unsigned)(i & j)) & 1 ? -1.0 : 1.0) / sqrt((double)d);
                dense = fmax(dense, fabs(Hm[i * d + j] - want));
                sym = fmax(sym, fabs(Hm[i * d + j] - Hm[j * d + i]));
                double s = 0;
                for (int k = 0; k < d; k++) s += (double)Hm[i * d + k] * Hm[j * d + k];
                orth = fmax(orth, fabs(s - (i == j)));
            }
        CHECK(dense < 1e-6, "d=%d: FWHT differs from dense H by %g", d, dense);
        CHECK(orth < 1e-6, "d=%d: |H H^T - I| = %g", d, orth);
        CHECK(sym == 0, "d=%d: H not symmetric (%g)", d, sym);
        float x[128], y[128], q[128], k[128];
        for (int rep = 0; rep < 100; rep++) {
            fill_normal(&r, x, (size_t)d, 3.0);
            memcpy(y, x, sizeof x);
            kvs_fwht(y, d);
            double nx = 0, ny = 0, xm = 0;
            for (int i = 0; i < d; i++) {
                nx += (double)x[i] * x[i];
                ny += (double)y[i] * y[i];
                xm = fmax(xm, fabs(x[i]));
            }
            CHECK(fabs(sqrt(ny) - sqrt(nx)) <= 1e-5 * sqrt(nx), "d=%d norm not preserved", d);
            kvs_fwht(y, d);
            CHECK(max_abs_diff(x, y, (size_t)d, NULL) <= 2e-5 * xm, "d=%d: H(Hx) != x", d);
            fill_normal(&r, q, (size_t)d, 1.0);
            fill_normal(&r, k, (size_t)d, 1.0);
            double dot0 = 0, dot1 = 0, nq = 0, nk = 0;
            for (int i = 0; i < d; i++) {
                dot0 += (double)q[i] * k[i];
                nq += (double)q[i] * q[i];
                nk += (double)k[i] * k[i];
            }
            kvs_fwht(q, d);
            kvs_fwht(k, d);
            for (int i = 0; i < d; i++) dot1 += (double)q[i] * k[i];
            CHECK(fabs(dot1 - dot0) <= 1e-5 * sqrt(nq * nk), "d=%d: dot product moved by %g", d, fabs(dot1 - dot0));
        }
    }
    return test_done("test_hadamard");
}
