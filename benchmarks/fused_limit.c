/* The "fused limit" of issue #20: the depth-L NNGP + NTK of a Dense/activation MLP with every layer
 * applied to a row of the upper triangle while it sits in L1 (one read and one write of the output
 * per entry), the entry loop vectorised (glibc's libmvec atan2/asin/sqrt, AVX2/AVX-512), OpenMP over
 * rows, then the triangle mirrored in 64x64 blocks. A measuring stick only, compiled at benchmark
 * time by bench_kernels.py (gcc -O3 -march=native -ffast-math -ffp-contract=off -fopenmp); never
 * part of ntkprior. NTK parameterisation: K <- w2 K + b2, T <- K + w2 T; act 0 = ReLU
 * (arc-cosine), 1 = erf. The diagonal is not made exact (ntkprior's is): NTKs differ by ~5e-9
 * relative there, NNGPs agree to 4e-16.
 * x (n, d) row-major; var (hidden, n) pre-activation variances per hidden layer; out nngp, ntk (n, n). */
#include <math.h>

void kernel(const double *x, int n, int d, int hidden, int act, double w2, double b2,
            const double *var, double *nngp, double *ntk) {
    #pragma omp parallel for schedule(dynamic, 8)
    for (int i = 0; i < n; i++) {
        double *k = nngp + (long)i * n, *th = ntk + (long)i * n;
        for (int j = i; j < n; j++) {
            double s = 0;
            for (int c = 0; c < d; c++) s += x[i * d + c] * x[j * d + c];
            k[j] = s / d; th[j] = 0;
        }
        for (int l = 0; l < hidden; l++) {
            const double v1 = var[l * n + i], *v2 = var + l * n;
            if (act == 0) {
                #pragma omp simd
                for (int j = i; j < n; j++) {
                    double kk = w2 * k[j] + b2, t = kk + w2 * th[j];
                    double s = v1 * v2[j] - kk * kk;
                    s = sqrt(s > 0 ? s : 0);
                    double td = 0.5 - atan2(s, kk) * (1 / (2 * M_PI));
                    k[j] = s * (1 / (2 * M_PI)) + td * kk; th[j] = t * td;
                }
            } else {
                #pragma omp simd
                for (int j = i; j < n; j++) {
                    double kk = w2 * k[j] + b2, t = kk + w2 * th[j];
                    double q = v1 * v2[j] - kk * kk;
                    q = 4 * (q > 0 ? q : 0) + 2 * (v1 + v2[j]) + 1;
                    double td = (4 / M_PI) / sqrt(q);
                    k[j] = (2 / M_PI) * asin(2 * kk / sqrt((1 + 2 * v1) * (1 + 2 * v2[j]))); th[j] = t * td;
                }
            }
        }
        #pragma omp simd
        for (int j = i; j < n; j++) { k[j] = w2 * k[j] + b2; th[j] = k[j] + w2 * th[j]; }
    }
    const int B = 64;   /* mirror the upper triangle in square blocks */
    #pragma omp parallel for schedule(dynamic, 1)
    for (int ib = 0; ib < n; ib += B)
        for (int jb = 0; jb <= ib; jb += B)
            for (int i = ib; i < (ib + B < n ? ib + B : n); i++)
                for (int j = jb; j < (jb + B < i ? jb + B : i); j++) {
                    nngp[(long)i * n + j] = nngp[(long)j * n + i];
                    ntk[(long)i * n + j] = ntk[(long)j * n + i];
                }
}
