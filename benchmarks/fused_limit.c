/* The "fused limit" of issue #20: the depth-L NNGP + NTK of a Dense/activation MLP as one pass per
 * kernel entry (every layer applied to an entry while it sits in registers), OpenMP over rows.
 * A measuring stick only, compiled at benchmark time by bench_kernels.py; never part of ntkprior.
 * NTK parameterisation: K <- w2 K + b2, T <- K + w2 T; act 0 = ReLU (arc-cosine), 1 = erf. */
#include <math.h>

static void act_pair(int act, double k, double v1, double v2, double *t, double *td) {
    if (act == 0) {
        double s = v1 * v2 - k * k;
        s = s > 0 ? sqrt(s) : 0;
        double th = atan2(s, k);
        *td = 0.5 - th / (2 * M_PI);
        *t = s / (2 * M_PI) + *td * k;
    } else {
        double q = v1 * v2 - k * k;
        q = 4 * (q > 0 ? q : 0) + 2 * (v1 + v2) + 1;
        *td = (4 / M_PI) / sqrt(q);
        *t = (2 / M_PI) * asin(2 * k / sqrt((1 + 2 * v1) * (1 + 2 * v2)));
    }
}

/* x (n, d) row-major; var (layers, n) pre-activation variances per hidden layer; out nngp, ntk (n, n) */
void kernel(const double *x, int n, int d, int hidden, int act, double w2, double b2,
            const double *var, double *nngp, double *ntk) {
    #pragma omp parallel for schedule(dynamic, 8)
    for (int i = 0; i < n; i++) {
        for (int j = i; j < n; j++) {
            double k = 0;
            for (int c = 0; c < d; c++) k += x[i * d + c] * x[j * d + c];
            k /= d;
            double th = 0;
            for (int l = 0; l < hidden; l++) {
                k = w2 * k + b2; th = k + w2 * th;
                double t, td;
                act_pair(act, k, var[l * n + i], var[l * n + j], &t, &td);
                k = t; th *= td;
            }
            k = w2 * k + b2; th = k + w2 * th;
            nngp[i * n + j] = nngp[j * n + i] = k;
            ntk[i * n + j] = ntk[j * n + i] = th;
        }
    }
}
