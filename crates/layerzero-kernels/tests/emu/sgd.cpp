// Runs the multi-tensor SGD kernel of crates/layerzero-kernels/src/cuda/sgd.rs on the CPU: every
// (block, thread) of the launch in turn (the kernel has no shared memory or barriers), with the
// grid sgd.rs computes, against the per-parameter rule b ← μ·b + (g + λ·w), w ← w − lr·b.
// Checks the kernel's logic, not its launch. Run by tests/nvrtc_kernels_emulated.rs.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>
struct Dim { unsigned x, y, z; };
static Dim threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#include "sgd.cu.inc"

int main() {
    // Sizes as in tests/cuda.rs: one element, one past a grid-stride pass, many in between.
    std::vector<unsigned> sizes = {1, 2500000, 36864};
    for (unsigned i = 3; i < 64; ++i) sizes.push_back(16 + 97 * (i % 13) + 1024 * (i % 5));
    srand(2);
    auto rnd = [] { return rand() / (float)RAND_MAX * 2 - 1; };
    std::vector<std::vector<float>> w(64), g(64), b(64), w_ref, b_ref;
    SgdTable t;
    unsigned max_n = 0;
    for (unsigned i = 0; i < 64; ++i) {
        for (auto* v : {&w[i], &g[i], &b[i]}) { v->resize(sizes[i]); for (auto& x : *v) x = rnd(); }
        float decay = i % 3 == 0 ? 0.f : 5e-4f;
        t.p[i] = {w[i].data(), g[i].data(), b[i].data(), sizes[i], decay};
        if (sizes[i] > max_n) max_n = sizes[i];
    }
    w_ref = w; b_ref = b;
    const float lr = 0.1f, mom = 0.9f;
    const unsigned threads = 256;
    unsigned blocks_x = (max_n + 4 * threads - 1) / (4 * threads);
    blocks_x = blocks_x < 1 ? 1 : blocks_x > 1024 ? 1024 : blocks_x;
    blockDim = {threads, 1, 1}; gridDim = {blocks_x, 64, 1};
    for (unsigned by = 0; by < 64; ++by)
        for (unsigned bx = 0; bx < blocks_x; ++bx)
            for (unsigned tx = 0; tx < threads; ++tx) {
                blockIdx = {bx, by, 0}; threadIdx = {tx, 0, 0};
                layerzero_sgd_momentum_multi(t, lr, mom);
            }
    double maxd = 0;
    for (unsigned i = 0; i < 64; ++i)
        for (unsigned j = 0; j < sizes[i]; ++j) {
            float gg = g[i][j] + t.p[i].decay * w_ref[i][j];
            float bb = mom * b_ref[i][j] + gg;
            float ww = w_ref[i][j] - lr * bb;
            maxd = fmax(maxd, fmax(fabs(bb - b[i][j]), fabs(ww - w[i][j])));
        }
    printf("multi-tensor SGD: 64 parameters (1 to 2,500,000 elements), grid %u x 64: max diff %.2e %s\n",
           blocks_x, maxd, maxd <= 1e-6 ? "ok" : "BAD");
    return maxd <= 1e-6 ? 0 : 1;
}
