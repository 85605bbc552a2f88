/* PCA bases (pca.h). */
#include "pca.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

kvs_status kvs_lr_gram_add(double *C, const double *X, int n, int d, int stride) {
    if (!C || !X || n < 0 || d < 1 || stride < d) return kvs_report(KVS_ERR_ARG, "pca: bad arguments (n %d, d %d)", n, d);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++)
            if (!isfinite(X[(size_t)i * stride + j])) return kvs_report(KVS_ERR_NONFINITE, "pca: NaN or Inf in row %d of the activations", i);
    if (n) cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, n, 1.0, X, stride, 1.0, C, d);
    for (int i = 0; i < d; i++) /* dsyrk fills one triangle */
        for (int j = 0; j < i; j++) C[(size_t)i * d + j] = C[(size_t)j * d + i];
    return KVS_OK;
}

kvs_status kvs_lr_pca(const double *C, int d, int r, double *P, double *eig) {
    if (!C || !P || !eig || d < 1 || d > 1024 || r < 1 || r > d)
        return kvs_report(KVS_ERR_ARG, "pca: rank %d outside 1..%d", r, d);
    for (size_t i = 0; i < (size_t)d * d; i++)
        if (!isfinite(C[i])) return kvs_report(KVS_ERR_NONFINITE, "pca: NaN or Inf in the second-moment matrix");
    double *A = malloc(sizeof(double) * d * d), *w = malloc(sizeof(double) * d);
    kvs_status s = KVS_OK;
    if (!A || !w) {
        s = kvs_report(KVS_ERR_NOMEM, "pca: out of memory");
        goto done;
    }
    memcpy(A, C, sizeof(double) * d * d);
    if (LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', d, A, d, w)) {
        s = kvs_report(KVS_ERR_INTERNAL, "pca: dsyevd did not converge");
        goto done;
    }
    for (int k = 0; k < d; k++) { /* ascending from LAPACK: column d-1-k is the k-th largest */
        const int c = d - 1 - k;
        eig[k] = w[c] > 0 ? w[c] : 0;
        if (k >= r) continue;
        int big = 0;
        for (int i = 1; i < d; i++) big = fabs(A[(size_t)i * d + c]) > fabs(A[(size_t)big * d + c]) ? i : big;
        const double sg = A[(size_t)big * d + c] < 0 ? -1.0 : 1.0;
        for (int i = 0; i < d; i++) P[(size_t)i * r + k] = sg * A[(size_t)i * d + c];
    }
done:
    free(A), free(w);
    return s;
}

int kvs_lr_eigen_rank(const double *eig, int d, double tau) {
    double total = 0, run = 0;
    for (int i = 0; i < d; i++) total += sqrt(eig[i] > 0 ? eig[i] : 0);
    if (!(total > 0)) return 1;
    int k = 0;
    while (k < d && (run + sqrt(eig[k] > 0 ? eig[k] : 0)) / total < tau) run += sqrt(eig[k] > 0 ? eig[k] : 0), k++;
    return k > 0 ? k : 1;
}
