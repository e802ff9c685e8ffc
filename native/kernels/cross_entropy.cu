// cross_entropy.cu — the losses: fused softmax cross-entropy (forward and backward in one pass per
// row), the regression losses on float targets, and the chunked double-precision sums that make
// a mean loss out of per-element terms.
//
// Cross-entropy, per row i of logits [n,V], with m = max_j logits[i,j] and s = sum_j exp(logits[i,j] - m):
//   losses[i]  = log(s) + m - logits[i, Yb[i]]
//   dlogits[i] = (softmax(logits[i]) - onehot(Yb[i])) / n       (docs/makemore.md §4)
// m and s come from ONE read of the row (online max/sum: when a bigger value arrives the
// running sum is rescaled by exp(m_old - m_new)); a second read writes dlogits.
// dlogits may be the logits buffer itself (in place) or NULL (forward only, evaluation).
// losses may be NULL (backward only).  In place is race-free: column c is read and written
// by the same thread (c ≡ thread mod stride), and logits[i, Yb[i]] is read by the thread that
// owns that column before it overwrites it.
//
// Regression losses (kind: 1 mse, 2 bce_with_logits, 3 mean) per element of z [count], targets t
// (float math as the CPU's Cpu/RegressionLosses.cs; the term in double):
//   mse   d = z - t;  term = (double)d*d;  dz = scale*d;  dt = -(scale*d)                   (scale = 2/count)
//   bce   term = max(z,0) - (double)z*t + log(1 + exp(-|z|))  (double);  e = expf(-|z|);
//         s = z >= 0 ? 1/(1+e) : e/(1+e);  dz = (s - t)*scale;  dt = -z*scale          (scale = 1/count)
//   mean  term = (double)z;  dz = scale                                                   (scale = 1/count)
//
// Sums (the mean loss, the L2 penalty): chunk b of `chunk` elements is summed by block b in double —
// thread t adds elements b*chunk + t, + blockDim, ... in order, then block_reduce_sum (reduce.cuh) — into
// partial[b]; sum_finish adds the partials in the same way in one block and scales.  The order depends
// on count, chunk and the block size (256) only, never on the grid or the GPU.  No atomics.
//   mean cross-entropy  = sum_partials(losses, n, chunk, 0) -> sum_finish(scale = 1/n)
//   regression loss     = regression_loss(..., partial)    -> sum_finish(scale = 1/count)
//   L2 penalty          = sum_partials(W, count, chunk, 1) -> sum_finish(scale = l2)
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

// The training step's loss of a classifier in one kernel where the batch fits one block (n <= 1024,
// V <= 2048): what bias_add, cross_entropy_warp, sum_partials, sum_finish and the last linear's
// column_partial_sum do, with the same bits for the first four:
//   logits [n,V] += bias [V] (in place, as bias_add; bias NULL: nothing added);  barrier
//   warp w takes rows w, w + 8, ... (as cross_entropy_warp: a row's bits do not depend on the grid)
//     -> dlogits [n,V], losses [n];  barrier
//   loss = (float)((1/n) * sum of (double)losses[r]) — thread t adds rows t, t + 256, ... then
//     block_reduce_sum (sum_partials' one chunk, which sum_finish only scales) — into ring[step->slot]
//   db [V] = sum over r = 0, 1, ..., n-1 of dlogits[r, j], in that order (float), one thread per column
//     (db NULL: not written; with bias and db NULL it is the training loss of a stack whose last step has no bias:
//     cross_entropy_warp, sum_partials and sum_finish in one kernel)
//   step->next = step->current + 1 (the loss kernel of a training step advances the step: step_begin)
// grid = 1, block = 256 (exactly: the order of the loss's sum), shared = 0
extern "C" __global__ void __launch_bounds__(256) cross_entropy_bias_loss(float* logits, const float* bias, const int* Yb,
                                                                          float* dlogits, float* losses, float* db,
                                                                          float* ring, hpb_step* step, int n, int V) {
    if (blockIdx.x != 0) return;  // uniform across the block
    const int t = (int)threadIdx.x;
    const size_t total = (size_t)n * V;
    if (bias)
        for (size_t i = (size_t)t; i < total; i += blockDim.x) logits[i] = logits[i] + bias[i % (size_t)V];
    __syncthreads();
    const int lane = t & 31;
    for (int row = t >> 5; row < n; row += (int)(blockDim.x >> 5)) {  // uniform per warp
        const float* x = logits + (size_t)row * V;
        const int y = Yb[row];
        const float target = (lane == y % 32) ? x[y] : 0.0f;
        MaxSum ms = maxsum_empty();
        for (int c = lane; c < V; c += 32) ms = maxsum_push(ms, x[c]);
        ms = warp_reduce_maxsum(ms);
        ce_finish_row(x, dlogits + (size_t)row * V, losses, row, y, target, ms, lane, 32, n, V);
    }
    __syncthreads();
    double acc = 0.0;
    for (int r = t; r < n; r += (int)blockDim.x) acc += (double)losses[r];
    acc = block_reduce_sum(acc);
    if (t == 0) {
        ring[step->slot] = (float)((1.0 / (double)n) * acc);
        step->next = step->current + 1;  // the step is done with `next` (step_begin read it)
    }
    if (db)
        for (int j = t; j < V; j += (int)blockDim.x) {
            float sum = 0.0f;
            for (int r = 0; r < n; ++r) sum += dlogits[(size_t)r * V + j];
            db[j] = sum;
        }
}

// Same contract as cross_entropy_warp; one block per row: for large V (tens of thousands).
// grid = min(n, 65535) (grid-stride over rows), block = 32*k (1-D, <= 1024; recommended
// 256 for V ≈ 1e3, 1024 for V ≈ 5e4), shared = 0 (static 256 bytes for the reduction)
extern "C" __global__ void __launch_bounds__(1024) cross_entropy_block(const float* logits, const int* Yb,
                                                                       float* dlogits, float* losses, int n, int V) {
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

// x [count]  ->  partial [ceil(count/chunk)]: partial[b] = sum over i in [b*chunk, min(count, (b+1)*chunk))
// of (double)x[i], or of its square when square != 0 (in double).
// grid = ceil(count / chunk) (any: grid-stride over the chunks), block = 32*k <= 1024 (256: the order
// the results are reproduced with), shared = 0 (static 256 bytes for the reduction)
extern "C" __global__ void __launch_bounds__(1024) sum_partials(const float* x, int count, int chunk, int square,
                                                                double* partial) {
    const int chunks = hpb_chunk_count(count, chunk);
    for (int b = (int)blockIdx.x; b < chunks; b += (int)gridDim.x) {  // uniform across the block
        const size_t i1 = (size_t)hpb_chunk_end(count, b * chunk, chunk);  // size_t: no overflow near 2^31
        double acc = 0.0;
        for (size_t i = (size_t)b * chunk + threadIdx.x; i < i1; i += blockDim.x) {
            const double v = (double)x[i];
            acc += square ? v * v : v;
        }
        acc = block_reduce_sum(acc);
        if (threadIdx.x == 0) partial[b] = acc;
    }
}

// partial [count] (count small: the number of chunks)  ->  v = (float)(scale * sum(partial)) into
// out[0] (step NULL) or into the training step's loss slot out[step->slot] (the loss ring), and then
// step->next = step->current + 1 (the loss kernel of a training step advances the step: step_begin
// reads `next` in every thread and so cannot); accumulate != 0 adds v to what is there in float (the
// L2 penalty onto the loss, as the host's loss + l2).
// thread t adds partial[t], partial[t + blockDim], ... in order, then block_reduce_sum (double).
// grid = 1 (further blocks do nothing), block = 32*k <= 1024 (256), shared = 0
extern "C" __global__ void __launch_bounds__(1024) sum_finish(const double* partial, int count, double scale,
                                                              float* out, hpb_step* step, int accumulate) {
    if (blockIdx.x != 0) return;  // uniform across the block
    double acc = 0.0;
    for (int i = (int)threadIdx.x; i < count; i += (int)blockDim.x) acc += partial[i];
    acc = block_reduce_sum(acc);
    if (threadIdx.x == 0) {
        float* dst = step ? out + step->slot : out;
        const float v = (float)(scale * acc);
        dst[0] = accumulate ? __fadd_rn(dst[0], v) : v;
        if (step) step->next = step->current + 1;  // the step's loss is in: it advances (step_begin)
    }
}

// z [count], t [count] (unused, may be NULL, for kind 3)  ->  dz [count], dt [count] (each may be NULL:
// not written; dt is never written for kind 3), partial [ceil(count/chunk)] = per-chunk sums of the
// loss terms (as sum_partials).  The host finishes with sum_finish(partial, chunks, 1.0/count, &loss).
// grid = ceil(count / chunk) (any: grid-stride over the chunks), block = 32*k <= 1024 (256),
// shared = 0 (static 256 bytes for the reduction)
extern "C" __global__ void __launch_bounds__(1024) regression_loss(const float* z, const float* t, float* dz, float* dt,
                                                                   int count, int kind, float scale, int chunk,
                                                                   double* partial) {
    const int chunks = hpb_chunk_count(count, chunk);
    for (int b = (int)blockIdx.x; b < chunks; b += (int)gridDim.x) {  // uniform across the block
        const size_t i1 = (size_t)hpb_chunk_end(count, b * chunk, chunk);  // size_t: no overflow near 2^31
        double acc = 0.0;
        for (size_t i = (size_t)b * chunk + threadIdx.x; i < i1; i += blockDim.x) {
            const float x = z[i];
            double term;
            if (kind == HPB_LOSS_MSE) {
                const float d = x - t[i];
                term = (double)d * d;
                if (dz) dz[i] = scale * d;
                if (dt) dt[i] = -(scale * d);
            } else if (kind == HPB_LOSS_BCE_WITH_LOGITS) {
                const float y = t[i];
                term = (double)fmaxf(x, 0.0f) - (double)x * y + log(1.0 + exp(-fabs((double)x)));
                if (dz) {
                    const float e = expf(-fabsf(x));  // sigmoid without overflow
                    const float s = x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
                    dz[i] = (s - y) * scale;
                }
                if (dt) dt[i] = -x * scale;
            } else {  // HPB_LOSS_MEAN
                term = (double)x;
                if (dz) dz[i] = scale;
            }
            acc += term;
        }
        acc = block_reduce_sum(acc);
        if (threadIdx.x == 0) partial[b] = acc;
    }
}
