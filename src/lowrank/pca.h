/* PCA bases of pre-RoPE keys and values (spec section 4.3): the uncentred second moment
 * C = (1/N) sum_t x_t x_t^T (uncentred so that the projection stays linear and folds into W_k, W_v,
 * W_o), its eigenvectors by descending eigenvalue, each with its largest-magnitude entry positive
 * so that two runs give the same bytes. By Eckart-Young the top r minimise ||X - X P P^T||_F^2, and
 * that minimum is N times the sum of the discarded eigenvalues. Also the start of the Stiefel
 * descent, and EigenAttention's rank rule for its baseline. */
#ifndef KVS_LOWRANK_PCA_H
#define KVS_LOWRANK_PCA_H
#include "kvslim.h"

/* C [d][d] += sum over n rows of X [n][stride] (the first d columns) of x x^T.
 * @return KVS_OK, KVS_ERR_ARG, KVS_ERR_NONFINITE (a row holds NaN/Inf; C unchanged). */
kvs_status kvs_lr_gram_add(double *C, const double *X, int n, int d, int stride);

/* From the second moment C [d][d] (symmetric; scaled by 1/N or not, P does not care): eig [d] the
 * eigenvalues descending (negative round-off clamped to 0), P [d][r] the top r eigenvectors with the
 * canonical sign. @return KVS_OK, KVS_ERR_ARG (r outside 1..d), KVS_ERR_NONFINITE, KVS_ERR_INTERNAL. */
kvs_status kvs_lr_pca(const double *C, int d, int r, double *P, double *eig);

/* EigenAttention's rank rule: singular values (square roots of the eigenvalues) normalised by
 * their sum; the number of them whose cumulative share stays below tau, at least 1. */
int kvs_lr_eigen_rank(const double *eig, int d, double tau);
#endif
