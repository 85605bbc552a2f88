/* Jensen bias correction (docs/methods/jensen.md): quantization noise e ~ U(-D/2, D/2) inflates
 * E[exp(q.k^)] by prod_c sinh(a_c)/a_c; subtracting its log from each quantized key's logit makes
 * every cached term of the partition sum unbiased. */
#include <math.h>

#include "methods.h"

double kvs_log_sinhc(double a) {
    a = fabs(a);
    if (a < 0.25) { /* series through a^10: relative error < 1e-12 here */
        double a2 = a * a;
        return a2 * (1.0 / 6 + a2 * (-1.0 / 180 + a2 * (1.0 / 2835 + a2 * (-1.0 / 37800 +
                                                                              a2 / 467775))));
    }
    /* ln(sinh a / a) = a + ln(1 - e^-2a) - ln 2a; finite for any a (sinh overflows past ~710) */
    return a + log1p(-exp(-2.0 * a)) - log(2.0 * a);
}

void kvs_jensen_weights(const float *q, int d, float tau, float lambda, float *w) {
    const float k = lambda * tau * tau / 24.0f;
    for (int c = 0; c < d; c++) w[c] = k * q[c] * q[c];
}

float kvs_jensen_exact(const float *q, const float *delta, int d, float tau, float n, float lambda) {
    double b = 0.0;
    for (int c = 0; c < d; c++) b += kvs_log_sinhc(0.5 * (double)tau * n * q[c] * delta[c]);
    return (float)(lambda * b);
}
