// cross_entropy.cu — fused softmax cross-entropy, forward and backward in one pass per row.
//
// Per row i of logits [n,V], with m = max_j logits[i,j] and s = sum_j exp(logits[i,j] - m):
//   losses[i]  = log(s) + m - logits[i, Yb[i]]
//   dlogits[i] = (softmax(logits[i]) - onehot(Yb[i])) / n       (docs/makemore.md §4)
// m and s come from ONE read of the row (online max/sum: when a bigger value arrives the
// running sum is rescaled by exp(m_old - m_new)); a second read writes dlogits.
//
// dlogits may be the logits buffer itself (in place) or NULL (forward only, evaluation).
// losses may be NULL (backward only).  In place is race-free: column c is read and written
// by the same thread (c ≡ thread mod stride), and logits[i, Yb[i]] is read by the thread that
// owns that column before it overwrites it.  The mean loss is sum_reduce(losses, scale=1/n).
#include "reduce.cuh"

// Writes losses[row] / dlogits[row, :] from the row's reduced (m, s).  `lane` = this thread's
// column offset, `stride` = number of threads sharing the row, `target` = logits[row, y]
// (meaningful in the thread that owns column y).
__device__ __forceinline__ void ce_finish_row(const float* x, float* d, float* losses, int row, int y, float target,
                                              MaxSum ms, int lane, int stride, int n, int V) {
    if (losses && lane == y % stride) losses[row] = logf(ms.s) + ms.m - target;
    if (d) {
        const float inv_s = 1.0f / ms.s;
        const float nf = (float)n;
        for (int c = lane; c < V; c += stride) {
            const float p = expf(x[c] - ms.m) * inv_s;
            d[c] = (c == y ? p - 1.0f : p) / nf;
        }
    }
}

// logits [n,V], Yb [n]  ->  dlogits [n,V] (may alias logits, may be NULL), losses [n] (may be NULL)
// One warp per row: for small V (e.g. 27; fine up to a few thousand).  Warps loop over rows
// (grid-stride), so any grid works; one row per warp is grid = ceil(n / (blockDim.x/32)).
// grid = ceil(n / (blockDim.x/32)) (any), block = 32*k (1-D; recommended 256 = 8 rows), shared = 0
extern "C" __global__ void cross_entropy_warp(const float* logits, const int* Yb, float* dlogits, float* losses, int n,
                                              int V) {
    const int lane = (int)(threadIdx.x & 31u);
    const int warps_per_block = (int)(blockDim.x >> 5);
    const int row_stride = (int)gridDim.x * warps_per_block;
    for (int row = (int)blockIdx.x * warps_per_block + (int)(threadIdx.x >> 5); row < n; row += row_stride) {
        const float* x = logits + (size_t)row * V;  // the loop condition is uniform per warp
        const int y = Yb[row];
        const float target = (lane == y % 32) ? x[y] : 0.0f;

        MaxSum ms = maxsum_empty();
        for (int c = lane; c < V; c += 32) ms = maxsum_push(ms, x[c]);
        ms = warp_reduce_maxsum(ms);

        ce_finish_row(x, dlogits ? dlogits + (size_t)row * V : nullptr, losses, row, y, target, ms, lane, 32, n, V);
    }
}

// Same contract as cross_entropy_warp; one block per row: for large V (tens of thousands).
// grid = min(n, 65535) (grid-stride over rows), block = 32*k (1-D, <= 1024; recommended
// 256 for V ≈ 1e3, 1024 for V ≈ 5e4), shared = 0 (static 256 bytes for the reduction)
extern "C" __global__ void __launch_bounds__(1024) cross_entropy_block(const float* logits, const int* Yb, float* dlogits, float* losses, int n,
                                               int V) {
    const int t = (int)threadIdx.x;
    const int stride = (int)blockDim.x;
    for (int row = (int)blockIdx.x; row < n; row += (int)gridDim.x) {  // uniform across the block
        const float* x = logits + (size_t)row * V;
        const int y = Yb[row];
        const float target = (t == y % stride) ? x[y] : 0.0f;

        MaxSum ms = maxsum_empty();
        for (int c = t; c < V; c += stride) ms = maxsum_push(ms, x[c]);
        ms = block_reduce_maxsum(ms);

        ce_finish_row(x, dlogits ? dlogits + (size_t)row * V : nullptr, losses, row, y, target, ms, t, stride, n, V);
    }
}

// out[0] = scale * sum(x [count])   — single block, fixed order: thread t adds x[t],
// x[t+T], ... then block_reduce_sum (deterministic).  The loss: sum_reduce(losses, loss, n, 1/n).
// grid = 1, block = 32*k (<= 1024; recommended 1024 for large counts, 32..256 for n ≈ 32),
// shared = 0
extern "C" __global__ void __launch_bounds__(1024) sum_reduce(const float* x, float* out, int count, float scale) {
    float acc = 0.0f;
    for (int i = (int)threadIdx.x; i < count; i += (int)blockDim.x) acc += x[i];
    acc = block_reduce_sum(acc);
    if (threadIdx.x == 0) out[0] = scale * acc;
}
