// atomic_chain.cu — exercise 1 (docs/makemore.md §2/§3): cross-entropy and batch norm as the chain of
// small "atomic" operations, one kernel per named tensor, forward and backward.
//
// These exist to be compared with (and benchmarked against) the fused kernels of
// cross_entropy.cu and batchnorm.cu: same names, same formulas, one launch per line of the
// page.  Each kernel is named chain_<tensor it writes>.  The order of launches that computes
// the whole chain is listed in README.md ("atomic chain").
//
// Three launch shapes (all 1-D, shared = 0):
//   elementwise  grid-stride over `count` (or n*V / n*H) elements: grid = ceil(count/256) (any),
//                block = 256 (any)
//   row          one warp per row (row max / row sums; __shfl_down_sync tree to lane 0 for
//                the sums, butterfly for the max), warps loop over rows:
//                grid = ceil(n / (blockDim.x/32)) (any), block = 32*k (recommended 256)
//   column       one thread per column, rows added in order 0..n-1: grid = ceil(cols/256),
//                block = 256 (any)
// All reductions have a fixed order: the chain is deterministic too.
#include "reduce.cuh"

// ---------------------------------------------------------------------------------------
// Shared shapes
// ---------------------------------------------------------------------------------------

// One warp per row, warps loop over rows (grid-stride; uniform per warp):
//   for (int row = chain_first_row(); row < n; row += chain_row_stride())
__device__ __forceinline__ int chain_lane() { return (int)(threadIdx.x & 31u); }
__device__ __forceinline__ int chain_first_row() { return (int)(blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)); }
__device__ __forceinline__ int chain_row_stride() { return (int)(gridDim.x * (blockDim.x >> 5)); }

__device__ __forceinline__ int chain_column() { return (int)(blockIdx.x * blockDim.x + threadIdx.x); }

// =======================================================================================
// Cross-entropy, forward
// =======================================================================================

// logit_maxes [n,1] = max over columns of logits [n,V]                      (row)
extern "C" __global__ void chain_logit_maxes(const float* logits, float* logit_maxes, int n, int V) {
    const int lane = chain_lane();
    for (int row = chain_first_row(); row < n; row += chain_row_stride()) {
        float m = -INFINITY;
        for (int c = lane; c < V; c += 32) m = fmaxf(m, logits[(size_t)row * V + c]);
        m = warp_reduce_max(m);
        if (lane == 0) logit_maxes[row] = m;
    }
}

// norm_logits [n,V] = logits [n,V] - logit_maxes [n,1]                       (elementwise)
extern "C" __global__ void chain_norm_logits(const float* logits, const float* logit_maxes, float* norm_logits, int n,
                                             int V) {
    const size_t total = (size_t)n * V;
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride())
        norm_logits[i] = logits[i] - logit_maxes[i / (size_t)V];
}

// counts [count] = exp(norm_logits [count])                                  (elementwise)
extern "C" __global__ void chain_counts(const float* norm_logits, float* counts, int count) {
    for (size_t i = hpb_global_index(); i < (size_t)count; i += hpb_global_stride()) counts[i] = expf(norm_logits[i]);
}

// counts_sum [n,1] = sum1(counts [n,V])                                      (row)
extern "C" __global__ void chain_counts_sum(const float* counts, float* counts_sum, int n, int V) {
    const int lane = chain_lane();
    for (int row = chain_first_row(); row < n; row += chain_row_stride()) {
        float s = 0.0f;
        for (int c = lane; c < V; c += 32) s += counts[(size_t)row * V + c];
        s = warp_reduce_sum_to_lane0(s);  // only lane 0 writes
        if (lane == 0) counts_sum[row] = s;
    }
}

// counts_sum_inv [n,1] = counts_sum [n,1] ^ -1                               (elementwise)
extern "C" __global__ void chain_counts_sum_inv(const float* counts_sum, float* counts_sum_inv, int n) {
    for (size_t i = hpb_global_index(); i < (size_t)n; i += hpb_global_stride()) counts_sum_inv[i] = 1.0f / counts_sum[i];
}

// probs [n,V] = counts [n,V] * counts_sum_inv [n,1]                          (elementwise)
extern "C" __global__ void chain_probs(const float* counts, const float* counts_sum_inv, float* probs, int n, int V) {
    const size_t total = (size_t)n * V;
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride())
        probs[i] = counts[i] * counts_sum_inv[i / (size_t)V];
}

// logprobs [count] = log(probs [count])                                      (elementwise)
extern "C" __global__ void chain_logprobs(const float* probs, float* logprobs, int count) {
    for (size_t i = hpb_global_index(); i < (size_t)count; i += hpb_global_stride()) logprobs[i] = logf(probs[i]);
}

// losses [n] = -logprobs [n,V] at (i, Yb[i]);  loss = sum_reduce(losses, scale = 1/n)   (elementwise)
extern "C" __global__ void chain_losses(const float* logprobs, const int* Yb, float* losses, int n, int V) {
    for (size_t i = hpb_global_index(); i < (size_t)n; i += hpb_global_stride())
        losses[i] = -logprobs[i * (size_t)V + Yb[i]];
}

// =======================================================================================
// Cross-entropy, backward
// =======================================================================================

// dlogprobs [n,V] = zeros; dlogprobs[i, Yb[i]] = -1/n                        (elementwise)
extern "C" __global__ void chain_dlogprobs(float* dlogprobs, const int* Yb, int n, int V) {
    const size_t total = (size_t)n * V;
    const float g = -1.0f / (float)n;
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride()) {
        const size_t row = i / (size_t)V;
        dlogprobs[i] = ((int)(i - row * V) == Yb[row]) ? g : 0.0f;
    }
}

// dprobs [count] = dlogprobs [count] / probs [count]                          (elementwise)
extern "C" __global__ void chain_dprobs(const float* dlogprobs, const float* probs, float* dprobs, int count) {
    for (size_t i = hpb_global_index(); i < (size_t)count; i += hpb_global_stride()) dprobs[i] = dlogprobs[i] / probs[i];
}

// dcounts_sum_inv [n,1] = sum1(counts [n,V] * dprobs [n,V])                  (row)
extern "C" __global__ void chain_dcounts_sum_inv(const float* counts, const float* dprobs, float* dcounts_sum_inv, int n,
                                                 int V) {
    const int lane = chain_lane();
    for (int row = chain_first_row(); row < n; row += chain_row_stride()) {
        float s = 0.0f;
        for (int c = lane; c < V; c += 32) {
            const size_t i = (size_t)row * V + c;
            s += counts[i] * dprobs[i];
        }
        s = warp_reduce_sum_to_lane0(s);  // only lane 0 writes
        if (lane == 0) dcounts_sum_inv[row] = s;
    }
}

// dcounts_sum [n,1] = -counts_sum [n,1]^-2 * dcounts_sum_inv [n,1]          (elementwise)
extern "C" __global__ void chain_dcounts_sum(const float* counts_sum, const float* dcounts_sum_inv, float* dcounts_sum,
                                             int n) {
    for (size_t i = hpb_global_index(); i < (size_t)n; i += hpb_global_stride()) {
        const float cs = counts_sum[i];
        dcounts_sum[i] = -dcounts_sum_inv[i] / (cs * cs);
    }
}

// dcounts [n,V] = counts_sum_inv [n,1] * dprobs [n,V] + dcounts_sum [n,1]   (elementwise; two paths add)
extern "C" __global__ void chain_dcounts(const float* counts_sum_inv, const float* dprobs, const float* dcounts_sum,
                                         float* dcounts, int n, int V) {
    const size_t total = (size_t)n * V;
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride()) {
        const size_t row = i / (size_t)V;
        dcounts[i] = counts_sum_inv[row] * dprobs[i] + dcounts_sum[row];
    }
}

// dnorm_logits [count] = counts [count] * dcounts [count]                    (elementwise)
extern "C" __global__ void chain_dnorm_logits(const float* counts, const float* dcounts, float* dnorm_logits, int count) {
    for (size_t i = hpb_global_index(); i < (size_t)count; i += hpb_global_stride())
        dnorm_logits[i] = counts[i] * dcounts[i];
}

// dlogit_maxes [n,1] = -sum1(dnorm_logits [n,V])   (≈ 0)                     (row)
extern "C" __global__ void chain_dlogit_maxes(const float* dnorm_logits, float* dlogit_maxes, int n, int V) {
    const int lane = chain_lane();
    for (int row = chain_first_row(); row < n; row += chain_row_stride()) {
        float s = 0.0f;
        for (int c = lane; c < V; c += 32) s += dnorm_logits[(size_t)row * V + c];
        s = warp_reduce_sum_to_lane0(s);  // only lane 0 writes
        if (lane == 0) dlogit_maxes[row] = -s;
    }
}

// dlogits [n,V] = dnorm_logits [n,V] + onehot(argmax_row(logits [n,V])) * dlogit_maxes [n,1]
// (argmax: first index of the row maximum)                                   (row)
extern "C" __global__ void chain_dlogits(const float* logits, const float* dnorm_logits, const float* dlogit_maxes,
                                         float* dlogits, int n, int V) {
    const int lane = chain_lane();
    for (int row = chain_first_row(); row < n; row += chain_row_stride()) {
        ArgMax best;
        best.v = -INFINITY;
        best.i = V;  // loses every tie against a real column
        for (int c = lane; c < V; c += 32) {
            ArgMax a;
            a.v = logits[(size_t)row * V + c];
            a.i = c;
            best = ArgMaxOp()(best, a);
        }
        best = warp_reduce_argmax(best);
        const float g = dlogit_maxes[row];
        for (int c = lane; c < V; c += 32) {
            const size_t i = (size_t)row * V + c;
            dlogits[i] = dnorm_logits[i] + (c == best.i ? g : 0.0f);
        }
    }
}

// =======================================================================================
// Batch norm (+ tanh), forward
// =======================================================================================

// bnmeani [1,H] = (1/n) * sum0(hprebn [n,H])                                 (column)
extern "C" __global__ void chain_bnmeani(const float* hprebn, float* bnmeani, int n, int H) {
    const int col = chain_column();
    if (col >= H) return;
    float s = 0.0f;
    for (int r = 0; r < n; ++r) s += hprebn[(size_t)r * H + col];
    bnmeani[col] = s / (float)n;
}

// bndiff [n,H] = hprebn [n,H] - bnmeani [1,H]                                (elementwise)
extern "C" __global__ void chain_bndiff(const float* hprebn, const float* bnmeani, float* bndiff, int n, int H) {
    const size_t total = (size_t)n * H;
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride())
        bndiff[i] = hprebn[i] - bnmeani[i % (size_t)H];
}

// bndiff2 [count] = bndiff [count]^2                                         (elementwise)
extern "C" __global__ void chain_bndiff2(const float* bndiff, float* bndiff2, int count) {
    for (size_t i = hpb_global_index(); i < (size_t)count; i += hpb_global_stride()) bndiff2[i] = bndiff[i] * bndiff[i];
}

// bnvar [1,H] = (1/(n-1)) * sum0(bndiff2 [n,H])   (Bessel)                   (column)
extern "C" __global__ void chain_bnvar(const float* bndiff2, float* bnvar, int n, int H) {
    const int col = chain_column();
    if (col >= H) return;
    float s = 0.0f;
    for (int r = 0; r < n; ++r) s += bndiff2[(size_t)r * H + col];
    bnvar[col] = s / (float)(n - 1);
}

// bnvar_inv [1,H] = (bnvar [1,H] + eps)^-0.5                                 (elementwise)
extern "C" __global__ void chain_bnvar_inv(const float* bnvar, float* bnvar_inv, int H, float eps) {
    for (size_t i = hpb_global_index(); i < (size_t)H; i += hpb_global_stride())
        bnvar_inv[i] = 1.0f / sqrtf(bnvar[i] + eps);
}

// bnraw [n,H] = bndiff [n,H] * bnvar_inv [1,H]                               (elementwise)
extern "C" __global__ void chain_bnraw(const float* bndiff, const float* bnvar_inv, float* bnraw, int n, int H) {
    const size_t total = (size_t)n * H;
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride()) bnraw[i] = bndiff[i] * bnvar_inv[i % (size_t)H];
}

// hpreact [n,H] = bngain [1,H] * bnraw [n,H] + bnbias [1,H]                  (elementwise)
extern "C" __global__ void chain_hpreact(const float* bngain, const float* bnraw, const float* bnbias, float* hpreact,
                                         int n, int H) {
    const size_t total = (size_t)n * H;
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride()) {
        const size_t c = i % (size_t)H;
        hpreact[i] = bngain[c] * bnraw[i] + bnbias[c];
    }
}

// h [count] = tanh(hpreact [count])                                          (elementwise)
extern "C" __global__ void chain_h(const float* hpreact, float* h, int count) {
    for (size_t i = hpb_global_index(); i < (size_t)count; i += hpb_global_stride()) h[i] = tanhf(hpreact[i]);
}

// =======================================================================================
// Batch norm (+ tanh), backward
// =======================================================================================

// dhpreact [count] = (1 - h^2) * dh                                          (elementwise)
extern "C" __global__ void chain_dhpreact(const float* h, const float* dh, float* dhpreact, int count) {
    for (size_t i = hpb_global_index(); i < (size_t)count; i += hpb_global_stride()) {
        const float hv = h[i];
        dhpreact[i] = (1.0f - hv * hv) * dh[i];
    }
}

// dbngain [1,H] = sum0(bnraw [n,H] * dhpreact [n,H])                         (column)
extern "C" __global__ void chain_dbngain(const float* bnraw, const float* dhpreact, float* dbngain, int n, int H) {
    const int col = chain_column();
    if (col >= H) return;
    float s = 0.0f;
    for (int r = 0; r < n; ++r) {
        const size_t i = (size_t)r * H + col;
        s += bnraw[i] * dhpreact[i];
    }
    dbngain[col] = s;
}

// dbnraw [n,H] = bngain [1,H] * dhpreact [n,H]                               (elementwise)
extern "C" __global__ void chain_dbnraw(const float* bngain, const float* dhpreact, float* dbnraw, int n, int H) {
    const size_t total = (size_t)n * H;
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride()) dbnraw[i] = bngain[i % (size_t)H] * dhpreact[i];
}

// dbnbias [1,H] = sum0(dhpreact [n,H])                                       (column)
extern "C" __global__ void chain_dbnbias(const float* dhpreact, float* dbnbias, int n, int H) {
    const int col = chain_column();
    if (col >= H) return;
    float s = 0.0f;
    for (int r = 0; r < n; ++r) s += dhpreact[(size_t)r * H + col];
    dbnbias[col] = s;
}

// dbnvar_inv [1,H] = sum0(bndiff [n,H] * dbnraw [n,H])                       (column)
extern "C" __global__ void chain_dbnvar_inv(const float* bndiff, const float* dbnraw, float* dbnvar_inv, int n, int H) {
    const int col = chain_column();
    if (col >= H) return;
    float s = 0.0f;
    for (int r = 0; r < n; ++r) {
        const size_t i = (size_t)r * H + col;
        s += bndiff[i] * dbnraw[i];
    }
    dbnvar_inv[col] = s;
}

// dbnvar [1,H] = -0.5 * (bnvar [1,H] + eps)^-1.5 * dbnvar_inv [1,H]          (elementwise)
extern "C" __global__ void chain_dbnvar(const float* bnvar, const float* dbnvar_inv, float* dbnvar, int H, float eps) {
    for (size_t i = hpb_global_index(); i < (size_t)H; i += hpb_global_stride())
        dbnvar[i] = -0.5f * powf(bnvar[i] + eps, -1.5f) * dbnvar_inv[i];
}

// dbndiff2 [n,H] = (1/(n-1)) * dbnvar [1,H]   (broadcast)                    (elementwise)
extern "C" __global__ void chain_dbndiff2(const float* dbnvar, float* dbndiff2, int n, int H) {
    const size_t total = (size_t)n * H;
    const float bessel = 1.0f / (float)(n - 1);
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride()) dbndiff2[i] = bessel * dbnvar[i % (size_t)H];
}

// dbndiff [n,H] = bnvar_inv [1,H] * dbnraw [n,H] + 2 * bndiff [n,H] * dbndiff2 [n,H]  (two paths add)
extern "C" __global__ void chain_dbndiff(const float* bnvar_inv, const float* dbnraw, const float* bndiff,
                                         const float* dbndiff2, float* dbndiff, int n, int H) {
    const size_t total = (size_t)n * H;
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride())
        dbndiff[i] = bnvar_inv[i % (size_t)H] * dbnraw[i] + 2.0f * bndiff[i] * dbndiff2[i];
}

// dbnmeani [1,H] = -sum0(dbndiff [n,H])                                      (column)
extern "C" __global__ void chain_dbnmeani(const float* dbndiff, float* dbnmeani, int n, int H) {
    const int col = chain_column();
    if (col >= H) return;
    float s = 0.0f;
    for (int r = 0; r < n; ++r) s += dbndiff[(size_t)r * H + col];
    dbnmeani[col] = -s;
}

// dhprebn [n,H] = dbndiff [n,H] + (1/n) * dbnmeani [1,H]   (two paths add)   (elementwise)
extern "C" __global__ void chain_dhprebn(const float* dbndiff, const float* dbnmeani, float* dhprebn, int n, int H) {
    const size_t total = (size_t)n * H;
    const float inv_n = 1.0f / (float)n;
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride())
        dhprebn[i] = dbndiff[i] + inv_n * dbnmeani[i % (size_t)H];
}
