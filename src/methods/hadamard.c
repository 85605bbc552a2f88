/* Fast Walsh-Hadamard transform: OScaR's "canalized rotation" (docs/methods/oscar.md section 3). */
#include <math.h>

#include "methods.h"

void kvs_fwht(float *x, int d) {
    for (int h = 1; h < d; h <<= 1)
        for (int i = 0; i < d; i += h << 1)
            for (int j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    const float s = 1.0f / sqrtf((float)d);
    for (int i = 0; i < d; i++) x[i] *= s;
}
