// Runs the fused-loss kernels of crates/layerzero-kernels/src/cuda/xent.rs on the CPU: each
// block as real threads (pthreads) with a barrier for __syncthreads, against a double-precision
// reference of the loss, correct count and gradient. Checks the kernels' logic, not their
// launch. Run by tests/nvrtc_kernels_emulated.rs.
#include <pthread.h>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <vector>
#include <functional>
struct Dim { unsigned x, y, z; };
static __thread Dim threadIdx;
static __thread Dim blockIdx;
static Dim blockDim, gridDim;
static pthread_barrier_t bar;
static void __syncthreads() { pthread_barrier_wait(&bar); }
static float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
#define __global__
#define __shared__ static
#include "xent.cu.inc"

// Runs `body` as grid x block threads, one block at a time (each block's threads concurrently).
static void run(unsigned grid, unsigned block, std::function<void()> body) {
    blockDim = {block, 1, 1}; gridDim = {grid, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        pthread_barrier_init(&bar, nullptr, block);
        std::vector<pthread_t> ts(block);
        struct Arg { unsigned b, t; std::function<void()>* f; };
        std::vector<Arg> args(block);
        for (unsigned t = 0; t < block; ++t) {
            args[t] = {b, t, &body};
            pthread_create(&ts[t], nullptr, [](void* p) -> void* {
                Arg* a = (Arg*)p; blockIdx = {a->b, 0, 0}; threadIdx = {a->t, 0, 0}; (*a->f)(); return nullptr; }, &args[t]);
        }
        for (auto& t : ts) pthread_join(t, nullptr);
        pthread_barrier_destroy(&bar);
    }
}

int main() {
    int bad = 0;
    struct Case { unsigned n, k; float s; } cases[] = {{128,10,0.f},{37,10,0.1f},{300,100,0.f},{1,3,0.2f},{600,10,0.05f}};
    srand(1);
    for (auto c : cases) {
        std::vector<float> x(c.n * c.k); std::vector<unsigned> y(c.n);
        for (auto& v : x) v = (rand() / (float)RAND_MAX * 2 - 1) * 4;
        for (unsigned i = 0; i < c.n; ++i) y[i] = (i * 7) % c.k;
        if (c.n > 2) for (unsigned j = 0; j < c.k; ++j) x[1 * c.k + j] = 0.5f;
        float loss = 0, correct = 0;
        run(1, 256, [&] { layerzero_xent_fwd(x.data(), y.data(), &loss, &correct, c.n, c.k, c.s); });
        float g = 0.5f; std::vector<float> dx(c.n * c.k);
        run((c.n + 127) / 128, 128, [&] { layerzero_xent_bwd(x.data(), y.data(), &g, dx.data(), c.n, c.k, c.s); });
        // Reference in double: the composite's formulas.
        double L = 0, C = 0, maxd = 0;
        for (unsigned i = 0; i < c.n; ++i) {
            const float* r = &x[i * c.k]; double m = r[0]; unsigned arg = 0;
            for (unsigned j = 1; j < c.k; ++j) if (r[j] > m) { m = r[j]; arg = j; }
            double e = 0, sum = 0; for (unsigned j = 0; j < c.k; ++j) { e += exp(r[j] - m); sum += r[j]; }
            double lse = m + log(e);
            L += (1 - c.s) * (lse - r[y[i]]) + c.s * (lse - sum / c.k);
            C += arg == y[i];
            for (unsigned j = 0; j < c.k; ++j) {
                double p = exp(r[j] - m) / e, t = (j == y[i] ? 1 - c.s : 0) + c.s / c.k;
                maxd = fmax(maxd, fabs(dx[i * c.k + j] - g * (p - t) / c.n));
            }
        }
        L /= c.n;
        bool ok = fabs(loss - L) <= 1e-5 * fmax(1, fabs(L)) && correct == C && maxd <= 1e-7;
        bad += !ok;
        printf("%ux%u s=%.2f: loss %.7f ref %.7f | correct %.0f ref %.0f | max grad diff %.2e %s\n", c.n, c.k, c.s, loss, L, correct, C, maxd, ok ? "ok" : "BAD");
    }
    // Bad label: NaN loss and NaN gradient row.
    std::vector<float> x(40, 0.1f); std::vector<unsigned> y = {1, 2, 10, 3};
    float loss, correct, g = 1; std::vector<float> dx(40);
    run(1, 256, [&] { layerzero_xent_fwd(x.data(), y.data(), &loss, &correct, 4, 10, 0.f); });
    run(1, 128, [&] { layerzero_xent_bwd(x.data(), y.data(), &g, dx.data(), 4, 10, 0.f); });
    printf("bad label: loss %f, dx row 2 %f, dx row 0 %f\n", loss, dx[20], dx[0]);
    bad += !(std::isnan(loss) && std::isnan(dx[20]) && !std::isnan(dx[0]));
    return bad;
}
