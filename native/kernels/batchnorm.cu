// batchnorm.cu — batch normalisation over the rows of x [n,F], fused with the activation that follows it
// (act: 0 identity, 1 tanh, 2 relu, 3 sigmoid), in two modes (biased: 0 = Bessel, the lecture's
// variance over n-1; 1 = PyTorch BatchNorm1d's training mode, the variance over n).
//
// Forward (docs/makemore.md §2), per column:
//   mean     = (1/n) * sum0(x)
//   var      = sum0((x - mean)^2) / (n-1)   (Bessel)   or   / n   (biased)       two-pass (centred)
//   var_inv  = 1/sqrtf(var + eps)
//   raw      = (x - mean) * var_inv
//   y        = act(gain * raw + bias)
//   running  (training, when running_mean != NULL):  keep = 1 - momentum
//            running_mean = keep*running_mean + momentum*mean
//            running_var  = keep*running_var  + momentum*var_unbiased,   var_unbiased = biased ? var*n/(n-1) : var
// Backward (docs/makemore.md §4), from dy straight to dx; c = n/(n-1) (Bessel) or 1 (biased):
//   d          = act'(y) * dy                   (act' from the output: 1, 1-y^2, y > 0, y(1-y))
//   dgain      = sum0(d * raw)
//   dbias      = sum0(d)
//   dx         = gain*var_inv/n * (n*d - sum0(d) - c*raw*sum0(d*raw))
//   dprev_bias = sum0(dx)                        (optional: the bias gradient of the linear before)
// Inference (fixed statistics): y = act(gain * (x - mean) * 1/sqrtf(var + eps) + bias).
//
// Two launch paths, chosen by the host (issue 19's kernel spec; chunk_rows default 256):
//   n <= chunk_rows  one kernel per direction (batchnorm_forward, batchnorm_backward): a block owns bx
//                    adjacent columns and all n rows;
//   n >  chunk_rows  the column sums are split by row chunks, a block per (column tile, row chunk), and
//                    finished in chunk order:
//     forward:  column_partial_sum(x, NULL, 0) -> batchnorm_finish_mean -> column_partial_sum(x, mean, 1)
//               -> batchnorm_finish_var -> batchnorm_normalize
//     backward: batchnorm_backward_partials -> column_finish_sum x2 (dbias, dgain) -> batchnorm_backward_dx
//               [-> column_partial_sum(dx) -> column_finish_sum: dprev_bias]
// Both paths share the formulas below (bn_* helpers) and the summation inside a chunk: thread (tx, ty)
// adds rows r0+ty, r0+ty+by, ... in order (a product accumulated with fmaf), then block_column_sum adds
// the by slices in order (reduce.cuh).  So with one chunk the two paths give bitwise the same results;
// with several, the order is fixed by n, chunk_rows and the block shape: never by the grid or the GPU.
// No atomics.  n = 1 has no variance (and no n/(n-1)): the caller rejects it before launching.
#include "reduce.cuh"

// ---- the formulas, shared by both paths ---------------------------------------------------------

__device__ __forceinline__ float bn_variance(float sum_sq, int n, int biased) {
    return sum_sq / (float)(biased ? n : n - 1);
}

__device__ __forceinline__ float bn_var_inv(float var, float eps) { return 1.0f / sqrtf(var + eps); }

// The running statistics of column col (training): the unbiased variance in both modes.
__device__ __forceinline__ void bn_running_update(float* running_mean, float* running_var, int col, float m, float v,
                                                  int n, float momentum, int biased) {
    const float keep = 1.0f - momentum;
    const float var_unbiased = biased ? v * ((float)n / (float)(n - 1)) : v;
    running_mean[col] = keep * running_mean[col] + momentum * m;
    running_var[col] = keep * running_var[col] + momentum * var_unbiased;
}

// raw and y of one element.
__device__ __forceinline__ float bn_raw(float x, float m, float vi) { return (x - m) * vi; }
__device__ __forceinline__ float bn_out(float raw, float gain, float bias, int act) {
    return hpb_act_forward(gain * raw + bias, act);
}

// dx of one element: coef = gain*var_inv/n, nf = n, c = n/(n-1) or 1.
__device__ __forceinline__ float bn_bessel(int n, int biased) { return biased ? 1.0f : (float)n / (float)(n - 1); }
__device__ __forceinline__ float bn_dx(float d, float raw, float coef, float nf, float sum_d, float c, float sum_dr) {
    return coef * (nf * d - sum_d - c * raw * sum_dr);
}

// ---- n <= chunk_rows: one kernel per direction -------------------------------------------------

// x [n,F], gain [1,F], bias [1,F]  ->  mean, var (the one used to normalise), var_inv [1,F], raw [n,F]
// (may be NULL: not written), y [n,F]; running_mean/running_var [1,F] updated when running_mean != NULL.
// in_bias [1,F] (NULL: none): the bias of the linear before, added to x in place as x is first read
// (x = x + in_bias, bias_add's bits), so the batch norm of x W^T + b needs no bias_add of its own.
// grid = ceil(F / bx) (any: grid-stride over column tiles), block = (bx, by) with bx*by <= 1024
// (recommended (32, 8)), shared = bx*by*sizeof(float)
extern "C" __global__ void __launch_bounds__(1024, 1) batchnorm_forward(float* x, const float* gain,
                                                                        const float* bias, float* mean, float* var,
                                                                        float* var_inv, float* raw, float* y,
                                                                        float* running_mean, float* running_var, int n,
                                                                        int F, float eps, float momentum, int act,
                                                                        int biased, const float* in_bias) {
    HPB_DYNAMIC_SHARED(float, scratch);
    const int by = (int)blockDim.y;
    // grid-stride over tiles of blockDim.x columns: a grid capped below ceil(F/bx) still covers
    // every column (col0 is uniform across the block, so every thread reaches every barrier)
    for (int col0 = (int)(blockIdx.x * blockDim.x); col0 < F; col0 += (int)(gridDim.x * blockDim.x)) {
        const int col = col0 + (int)threadIdx.x;
        const bool active = col < F;

        float acc = 0.0f;
        if (active)
            for (int r = (int)threadIdx.y; r < n; r += by) {
                const size_t i = (size_t)r * F + col;
                float v = x[i];
                if (in_bias) {
                    v = v + in_bias[col];  // bias_add's sum, kept: the linear's output is x W^T + b
                    x[i] = v;              // this thread reads element i again below, nobody else does
                }
                acc += v;
            }
        const float m = block_column_sum(acc, scratch) / (float)n;

        float acc2 = 0.0f;
        if (active)
            for (int r = (int)threadIdx.y; r < n; r += by) {
                const float d = x[(size_t)r * F + col] - m;
                acc2 = fmaf(d, d, acc2);
            }
        const float v = bn_variance(block_column_sum(acc2, scratch), n, biased);
        const float vi = bn_var_inv(v, eps);

        if (!active) continue;  // after the tile's last barrier; later tiles are inactive too
        if (threadIdx.y == 0) {
            mean[col] = m;
            var[col] = v;
            var_inv[col] = vi;
            if (running_mean) bn_running_update(running_mean, running_var, col, m, v, n, momentum, biased);
        }
        const float g = gain[col], b = bias[col];
        for (int r = (int)threadIdx.y; r < n; r += by) {
            const size_t i = (size_t)r * F + col;
            const float rw = bn_raw(x[i], m, vi);
            if (raw) raw[i] = rw;
            y[i] = bn_out(rw, g, b, act);
        }
    }
}

// dy [n,F], y [n,F] (the forward's output), raw [n,F], gain [1,F], var_inv [1,F]
//   ->  dx [n,F] (may alias dy: each element is read, then written, by the same thread), dgain [1,F],
//       dbias [1,F], and dprev_bias [1,F] = sum0(dx) when dprev_bias != NULL (all overwritten)
// grid = ceil(F / bx) (any: grid-stride over column tiles), block = (bx, by) with bx*by <= 1024
// (recommended (32, 8)), shared = bx*by*sizeof(float)
extern "C" __global__ void __launch_bounds__(1024) batchnorm_backward(const float* dy, const float* y, const float* raw,
                                                                      const float* gain, const float* var_inv,
                                                                      float* dx, float* dgain, float* dbias,
                                                                      float* dprev_bias, int n, int F, int act,
                                                                      int biased) {
    HPB_DYNAMIC_SHARED(float, scratch);
    const int by = (int)blockDim.y;
    const float nf = (float)n, c = bn_bessel(n, biased);
    for (int col0 = (int)(blockIdx.x * blockDim.x); col0 < F;
         col0 += (int)(gridDim.x * blockDim.x)) {  // grid-stride over column tiles
        const int col = col0 + (int)threadIdx.x;
        const bool active = col < F;

        float sum_d = 0.0f, sum_dr = 0.0f;
        if (active)
            for (int r = (int)threadIdx.y; r < n; r += by) {
                const size_t i = (size_t)r * F + col;
                const float d = hpb_act_backward(y[i], dy[i], act);
                sum_d += d;
                sum_dr = fmaf(d, raw[i], sum_dr);
            }
        sum_d = block_column_sum(sum_d, scratch);    // sum0(d)
        sum_dr = block_column_sum(sum_dr, scratch);  // sum0(d * raw)

        float sum_dx = 0.0f;
        if (active) {
            if (threadIdx.y == 0) {
                dgain[col] = sum_dr;
                dbias[col] = sum_d;
            }
            const float coef = gain[col] * var_inv[col] / nf;
            for (int r = (int)threadIdx.y; r < n; r += by) {
                const size_t i = (size_t)r * F + col;
                const float v = bn_dx(hpb_act_backward(y[i], dy[i], act), raw[i], coef, nf, sum_d, c, sum_dr);
                dx[i] = v;
                sum_dx += v;
            }
        }
        if (dprev_bias) {  // uniform: every thread of the block takes this barrier or none does
            sum_dx = block_column_sum(sum_dx, scratch);
            if (active && threadIdx.y == 0) dprev_bias[col] = sum_dx;
        }
    }
}

// ---- n > chunk_rows: the chunked path ----------------------------------------------------------

// partial [chunks, F] (column_partial_sum(x, NULL, 0, n, F, chunk_rows))  ->  mean [1,F] = (chunk-ordered sum)/n
// grid = ceil(F / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void batchnorm_finish_mean(const float* partial, int chunks, int n, int F, float* mean) {
    for (size_t col = hpb_global_index(); col < (size_t)F; col += hpb_global_stride())
        mean[col] = column_chunk_sum(partial, chunks, F, col) / (float)n;
}

// partial [chunks, F] (column_partial_sum(x, mean, 1, n, F, chunk_rows)), mean [1,F]
//   ->  var, var_inv [1,F]; running_mean/running_var [1,F] updated when running_mean != NULL
//   (exactly as batchnorm_forward)
// grid = ceil(F / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void batchnorm_finish_var(const float* partial, int chunks, int n, int F, float eps,
                                                float momentum, int biased, const float* mean, float* var,
                                                float* var_inv, float* running_mean, float* running_var) {
    for (size_t col = hpb_global_index(); col < (size_t)F; col += hpb_global_stride()) {
        const float v = bn_variance(column_chunk_sum(partial, chunks, F, col), n, biased);
        const float vi = bn_var_inv(v, eps);
        var[col] = v;
        var_inv[col] = vi;
        if (running_mean) bn_running_update(running_mean, running_var, (int)col, mean[col], v, n, momentum, biased);
    }
}

// x [n,F], mean, var_inv, gain, bias [1,F]  ->  raw [n,F] (may be NULL: not written), y [n,F]
// (y may alias x: elementwise)
// grid = ceil(n*F / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void batchnorm_normalize(const float* x, const float* mean, const float* var_inv,
                                               const float* gain, const float* bias, float* raw, float* y, int n, int F,
                                               int act) {
    const size_t total = (size_t)n * F;
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride()) {
        const int col = (int)(i % (size_t)F);
        const float rw = bn_raw(x[i], mean[col], var_inv[col]);
        if (raw) raw[i] = rw;
        y[i] = bn_out(rw, gain[col], bias[col], act);
    }
}

// dy, y, raw [n,F]  ->  partial_d [chunks, F] = per-chunk sums of d, partial_dr [chunks, F] = of d*raw
// (d = act'(y)*dy); chunks = ceil(n / chunk_rows).  With one chunk these are dbias and dgain.
// grid = (ceil(F / bx), chunks) (any: grid-stride over column tiles in x and over chunks in y),
// block = (bx, by) with bx*by <= 1024 (recommended (32, 8)), shared = bx*by*sizeof(float)
extern "C" __global__ void __launch_bounds__(1024) batchnorm_backward_partials(const float* dy, const float* y,
                                                                               const float* raw, int n, int F,
                                                                               int chunk_rows, int act,
                                                                               float* partial_d, float* partial_dr) {
    HPB_DYNAMIC_SHARED(float, scratch);
    const int chunks = hpb_chunk_count(n, chunk_rows);
    const int by = (int)blockDim.y;
    for (int chunk = (int)blockIdx.y; chunk < chunks; chunk += (int)gridDim.y) {  // uniform across the block
        const int r0 = chunk * chunk_rows, r1 = hpb_chunk_end(n, r0, chunk_rows);
        for (int col0 = (int)(blockIdx.x * blockDim.x); col0 < F; col0 += (int)(gridDim.x * blockDim.x)) {
            const int col = col0 + (int)threadIdx.x;
            float sum_d = 0.0f, sum_dr = 0.0f;
            if (col < F)
                for (int r = r0 + (int)threadIdx.y; r < r1; r += by) {
                    const size_t i = (size_t)r * F + col;
                    const float d = hpb_act_backward(y[i], dy[i], act);
                    sum_d += d;
                    sum_dr = fmaf(d, raw[i], sum_dr);
                }
            sum_d = block_column_sum(sum_d, scratch);
            sum_dr = block_column_sum(sum_dr, scratch);
            if (col < F && threadIdx.y == 0) {
                partial_d[(size_t)chunk * F + col] = sum_d;
                partial_dr[(size_t)chunk * F + col] = sum_dr;
            }
        }
    }
}

// dy, y, raw [n,F], gain, var_inv [1,F], sum_d = dbias, sum_dr = dgain [1,F] (finished)
//   ->  dx [n,F] (may alias dy: elementwise, each element read then written by one thread)
// grid = ceil(n*F / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void batchnorm_backward_dx(const float* dy, const float* y, const float* raw, const float* gain,
                                                 const float* var_inv, const float* sum_d, const float* sum_dr,
                                                 float* dx, int n, int F, int act, int biased) {
    const size_t total = (size_t)n * F;
    const float nf = (float)n, c = bn_bessel(n, biased);
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride()) {
        const int col = (int)(i % (size_t)F);
        const float coef = gain[col] * var_inv[col] / nf;
        dx[i] = bn_dx(hpb_act_backward(y[i], dy[i], act), raw[i], coef, nf, sum_d[col], c, sum_dr[col]);
    }
}

// ---- inference and calibration -----------------------------------------------------------------

// Inference with fixed (running or calibrated) statistics:
// x [n,F], mean, var, gain, bias [1,F]  ->  y [n,F] = act(gain * (x - mean) * 1/sqrtf(var + eps) + bias)
// (y may alias x: elementwise)
// grid = ceil(n*F / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void batchnorm_inference(const float* x, const float* mean, const float* var, const float* gain,
                                               const float* bias, float* y, int n, int F, float eps, int act) {
    const size_t total = (size_t)n * F;
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride()) {
        const int col = (int)(i % (size_t)F);
        y[i] = bn_out(bn_raw(x[i], mean[col], bn_var_inv(var[col], eps)), gain[col], bias[col], act);
    }
}

// Calibration over the training set, one chunk of rows per launch (double accumulation):
// hprebn [n,H] (one chunk), center [1,H] or NULL (= 0)
//   ->  sum [1,H] += sum0(hprebn - center),  sumsq [1,H] += sum0((hprebn - center)^2)
// Pass 1 (center = NULL) over all chunks: mean = sum / N.  Pass 2 (center = mean):
// var = (sumsq - sum^2/N) / (N-1)  (sum is ~0 there; the term corrects its rounding).
// Chunks in a fixed order → the statistics are bitwise reproducible.
// grid = ceil(H / bx) (any: grid-stride over column tiles), block = (bx, by) with bx*by <= 1024 (recommended (32, 32)),
// shared = bx*by*sizeof(double)
extern "C" __global__ void __launch_bounds__(1024) batchnorm_calib_accumulate(const float* hprebn, int n, int H,
                                                                              const float* center, double* sum,
                                                                              double* sumsq) {
    HPB_DYNAMIC_SHARED(double, scratch);
    const int by = (int)blockDim.y;
    for (int col0 = (int)(blockIdx.x * blockDim.x); col0 < H;
         col0 += (int)(gridDim.x * blockDim.x)) {  // grid-stride over column tiles
        const int col = col0 + (int)threadIdx.x;
        const bool active = col < H;

        double s = 0.0, q = 0.0;
        if (active) {
            const double c = center ? (double)center[col] : 0.0;
            for (int r = (int)threadIdx.y; r < n; r += by) {
                const double d = (double)hprebn[(size_t)r * H + col] - c;
                s += d;
                q += d * d;
            }
        }
        s = block_column_sum(s, scratch);
        q = block_column_sum(q, scratch);
        if (active && threadIdx.y == 0) {
            sum[col] += s;
            sumsq[col] += q;
        }
    }
}
