// batchnorm.cu — batch normalisation (Bessel-corrected) fused with the tanh that follows it.
//
// Forward (docs/makemore.md §2), per column c of hprebn [n,H]:
//   bnmeani   = (1/n) * sum0(hprebn)
//   bndiff    = hprebn - bnmeani
//   bnvar     = (1/(n-1)) * sum0(bndiff^2)          two-pass (centred), Bessel-corrected
//   bnvar_inv = (bnvar + eps)^-0.5
//   bnraw     = bndiff * bnvar_inv
//   hpreact   = bngain * bnraw + bnbias
//   h         = tanh(hpreact)
// Backward (docs/makemore.md §4), from dh straight to dhprebn:
//   dhpreact  = (1 - h^2) * dh
//   dbngain   = sum0(bnraw * dhpreact)
//   dbnbias   = sum0(dhpreact)
//   dhprebn   = bngain*bnvar_inv/n * (n*dhpreact - sum0(dhpreact) - n/(n-1)*bnraw*sum0(dhpreact*bnraw))
//
// Column reductions: a block owns blockDim.x adjacent columns (no atomics, no other block
// touches them).  Thread (tx, ty) adds rows ty, ty+by, ... of column blockIdx.x*bx+tx in that
// order, then block_column_sum adds the by partials in order (reduce.cuh).  Fixed order →
// bitwise reproducible for a fixed block shape.  Warps read 32 adjacent floats of one row:
// coalesced.  n = 1 has no variance (1/(n-1)): the caller rejects it before launching.
#include "reduce.cuh"

// hprebn [n,H], bngain [1,H], bnbias [1,H]  ->  bnmeani [1,H], bnvar [1,H], bnvar_inv [1,H],
// bnraw [n,H], h [n,H]
// grid = ceil(H / bx) (any: grid-stride over column tiles), block = (bx, by) with bx*by <= 1024 (recommended (32, 8)),
// shared = bx*by*sizeof(float)
extern "C" __global__ void __launch_bounds__(1024) batchnorm_forward(const float* hprebn, const float* bngain, const float* bnbias,
                                             float* bnmeani, float* bnvar, float* bnvar_inv, float* bnraw, float* h,
                                             int n, int H, float eps) {
    HPB_DYNAMIC_SHARED(float, scratch);
    const int by = (int)blockDim.y;
    // grid-stride over tiles of blockDim.x columns: a grid capped below ceil(H/bx) still covers
    // every column (col0 is uniform across the block, so every thread reaches every barrier)
    for (int col0 = (int)(blockIdx.x * blockDim.x); col0 < H; col0 += (int)(gridDim.x * blockDim.x)) {
        const int col = col0 + (int)threadIdx.x;
        const bool active = col < H;

        float acc = 0.0f;
        if (active)
            for (int r = (int)threadIdx.y; r < n; r += by) acc += hprebn[(size_t)r * H + col];
        const float mean = block_column_sum(acc, scratch) / (float)n;

        float acc2 = 0.0f;
        if (active)
            for (int r = (int)threadIdx.y; r < n; r += by) {
                const float d = hprebn[(size_t)r * H + col] - mean;
                acc2 += d * d;
            }
        const float var = block_column_sum(acc2, scratch) / (float)(n - 1);
        const float var_inv = 1.0f / sqrtf(var + eps);

        if (!active) continue;  // after the tile's last barrier; later tiles are inactive too
        if (threadIdx.y == 0) {
            bnmeani[col] = mean;
            bnvar[col] = var;
            bnvar_inv[col] = var_inv;
        }
        const float gain = bngain[col], bias = bnbias[col];
        for (int r = (int)threadIdx.y; r < n; r += by) {
            const size_t i = (size_t)r * H + col;
            const float raw = (hprebn[i] - mean) * var_inv;
            bnraw[i] = raw;
            h[i] = tanhf(gain * raw + bias);
        }
    }
}

// dh [n,H], h [n,H], bnraw [n,H], bngain [1,H], bnvar_inv [1,H]
//   ->  dhprebn [n,H], dbngain [1,H], dbnbias [1,H]   (all overwritten)
// grid = ceil(H / bx) (any: grid-stride over column tiles), block = (bx, by) with bx*by <= 1024 (recommended (32, 8)),
// shared = bx*by*sizeof(float)
extern "C" __global__ void __launch_bounds__(1024) batchnorm_backward(const float* dh, const float* h, const float* bnraw,
                                              const float* bngain, const float* bnvar_inv, float* dhprebn,
                                              float* dbngain, float* dbnbias, int n, int H) {
    HPB_DYNAMIC_SHARED(float, scratch);
    const int by = (int)blockDim.y;
    for (int col0 = (int)(blockIdx.x * blockDim.x); col0 < H; col0 += (int)(gridDim.x * blockDim.x)) {  // grid-stride over column tiles
        const int col = col0 + (int)threadIdx.x;
        const bool active = col < H;

        float sum_d = 0.0f, sum_dr = 0.0f;
        if (active)
            for (int r = (int)threadIdx.y; r < n; r += by) {
                const size_t i = (size_t)r * H + col;
                const float hv = h[i];
                const float dhpreact = (1.0f - hv * hv) * dh[i];
                sum_d += dhpreact;
                sum_dr += dhpreact * bnraw[i];
            }
        sum_d = block_column_sum(sum_d, scratch);    // sum0(dhpreact)
        sum_dr = block_column_sum(sum_dr, scratch);  // sum0(dhpreact * bnraw)

        if (!active) continue;  // after the tile's last barrier
        if (threadIdx.y == 0) {
            dbngain[col] = sum_dr;
            dbnbias[col] = sum_d;
        }
        const float nf = (float)n;
        const float coef = bngain[col] * bnvar_inv[col] / nf;
        const float bessel = nf / (float)(n - 1);
        for (int r = (int)threadIdx.y; r < n; r += by) {
            const size_t i = (size_t)r * H + col;
            const float hv = h[i];
            const float dhpreact = (1.0f - hv * hv) * dh[i];
            dhprebn[i] = coef * (nf * dhpreact - sum_d - bessel * bnraw[i] * sum_dr);
        }
    }
}

// Inference with fixed (calibrated) statistics:
// hprebn [n,H], bnmean [1,H], bnvar [1,H], bngain [1,H], bnbias [1,H]  ->  h [n,H]
// h = tanh(bngain * (hprebn - bnmean) * (bnvar + eps)^-0.5 + bnbias)
// grid = ceil(n*H / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void batchnorm_inference(const float* hprebn, const float* bnmean, const float* bnvar,
                                               const float* bngain, const float* bnbias, float* h, int n, int H,
                                               float eps) {
    const size_t total = (size_t)n * H;
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride()) {
        const int col = (int)(i % (size_t)H);
        const float var_inv = 1.0f / sqrtf(bnvar[col] + eps);
        const float raw = (hprebn[i] - bnmean[col]) * var_inv;
        h[i] = tanhf(bngain[col] * raw + bnbias[col]);
    }
}

// Running statistics during training (the alternative to calibration, makemore style):
// running_mean [1,H] = (1 - momentum) * running_mean + momentum * bnmeani [1,H]
// running_var  [1,H] = (1 - momentum) * running_var  + momentum * bnvar [1,H]
// grid = ceil(H / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void batchnorm_running_update(float* running_mean, float* running_var, const float* bnmeani,
                                                    const float* bnvar, float momentum, int H) {
    const float keep = 1.0f - momentum;
    for (size_t c = hpb_global_index(); c < (size_t)H; c += hpb_global_stride()) {
        running_mean[c] = keep * running_mean[c] + momentum * bnmeani[c];
        running_var[c] = keep * running_var[c] + momentum * bnvar[c];
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
extern "C" __global__ void __launch_bounds__(1024) batchnorm_calib_accumulate(const float* hprebn, int n, int H, const float* center,
                                                      double* sum, double* sumsq) {
    HPB_DYNAMIC_SHARED(double, scratch);
    const int by = (int)blockDim.y;
    for (int col0 = (int)(blockIdx.x * blockDim.x); col0 < H; col0 += (int)(gridDim.x * blockDim.x)) {  // grid-stride over column tiles
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
