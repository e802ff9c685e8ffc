// layernorm.cu — layer normalisation over each row of x [n,F] (torch.nn.LayerNorm(F): the biased
// variance of the row, eps inside the square root, elementwise weight w and bias b [1,F]).
//
// Forward, per row (two-pass, centred):
//   mu    = sum(x)/F
//   var   = sum((x - mu)^2)/F
//   r     = 1/sqrtf(var + eps)                 (rstd)
//   y     = (x - mu)*r*w + b
// Backward, per row (xhat = (x - mu)*r, g = dy*w):
//   a     = sum(g)/F
//   c     = sum(g*xhat)/F
//   dx    = r*(g - a - xhat*c)
// Parameter gradients, per column (sums over the rows, chunked as every column reduction):
//   dw    = sum0(dy*xhat)
//   db    = sum0(dy)
//
// Row sums: one warp per row, lane l adds columns l, l+32, ... in order (a product accumulated with
// fmaf), then a butterfly (__shfl_xor_sync) sum that leaves the same bits in every lane (reduce.cuh).
// Column sums: a block per (column tile, row chunk) as column_partial_sum (linear.cu); the host
// finishes several chunks with column_finish_sum in chunk order.  The order depends on F, n,
// chunk_rows and the block shape only, never on the grid.  No atomics.
#include "reduce.cuh"

// x [n,F], w [1,F], b [1,F]  ->  y [n,F] (may alias x: each element is read, then written, by one lane),
// mean [n], rstd [n] (may be NULL: not written, e.g. in inference)
// One warp per row, warps loop over rows (grid-stride), so any grid works.
// grid = ceil(n / (block/32)) (any), block = 32*k (1-D, <= 1024; recommended 256 = 8 rows), shared = 0
extern "C" __global__ void __launch_bounds__(1024) layernorm_forward(const float* x, const float* w, const float* b,
                                                                     float* y, float* mean, float* rstd, int n, int F,
                                                                     float eps) {
    const int lane = (int)(threadIdx.x & 31u);
    const int warps_per_block = (int)(blockDim.x >> 5);
    const int row_stride = (int)gridDim.x * warps_per_block;
    const float nf = (float)F;
    for (int row = (int)blockIdx.x * warps_per_block + (int)(threadIdx.x >> 5); row < n; row += row_stride) {
        const float* xr = x + (size_t)row * F;  // the loop condition is uniform per warp
        float s = 0.0f;
        for (int c = lane; c < F; c += 32) s += xr[c];
        const float mu = warp_reduce_sum(s) / nf;
        float q = 0.0f;
        for (int c = lane; c < F; c += 32) {
            const float d = xr[c] - mu;
            q = fmaf(d, d, q);
        }
        const float r = 1.0f / sqrtf(warp_reduce_sum(q) / nf + eps);
        float* yr = y + (size_t)row * F;
        for (int c = lane; c < F; c += 32) yr[c] = (xr[c] - mu) * r * w[c] + b[c];
        if (lane == 0) {
            if (mean) mean[row] = mu;
            if (rstd) rstd[row] = r;
        }
    }
}

// dy [n,F], x [n,F], w [1,F], mean [n], rstd [n]  ->  dx [n,F]
// (dx may alias dy: each element is read, then written, by one lane)
// One warp per row, warps loop over rows (grid-stride), so any grid works.
// grid = ceil(n / (block/32)) (any), block = 32*k (1-D, <= 1024; recommended 256 = 8 rows), shared = 0
extern "C" __global__ void __launch_bounds__(1024) layernorm_backward(const float* dy, const float* x, const float* w,
                                                                      const float* mean, const float* rstd, float* dx,
                                                                      int n, int F) {
    const int lane = (int)(threadIdx.x & 31u);
    const int warps_per_block = (int)(blockDim.x >> 5);
    const int row_stride = (int)gridDim.x * warps_per_block;
    const float nf = (float)F;
    for (int row = (int)blockIdx.x * warps_per_block + (int)(threadIdx.x >> 5); row < n; row += row_stride) {
        const size_t base = (size_t)row * F;
        const float mu = mean[row], r = rstd[row];
        float sg = 0.0f, sgx = 0.0f;
        for (int c = lane; c < F; c += 32) {
            const float xhat = (x[base + c] - mu) * r;
            const float g = dy[base + c] * w[c];
            sg += g;
            sgx = fmaf(g, xhat, sgx);
        }
        const float a = warp_reduce_sum(sg) / nf;
        const float cc = warp_reduce_sum(sgx) / nf;
        for (int c = lane; c < F; c += 32) {
            const float xhat = (x[base + c] - mu) * r;
            const float g = dy[base + c] * w[c];
            dx[base + c] = r * (g - a - xhat * cc);
        }
    }
}

// dy [n,F], x [n,F], mean [n], rstd [n]  ->  partial_dw [chunks, F] = per-chunk sums of dy*xhat,
// partial_db [chunks, F] = of dy; chunks = ceil(n / chunk_rows).  With one chunk these are dw and db;
// otherwise column_finish_sum finishes each in chunk order.
// grid = (ceil(F / bx), chunks) (any: grid-stride over column tiles in x and over chunks in y),
// block = (bx, by) with bx*by <= 1024 (recommended (32, 8)), shared = bx*by*sizeof(float)
extern "C" __global__ void __launch_bounds__(1024) layernorm_param_partials(const float* dy, const float* x,
                                                                            const float* mean, const float* rstd, int n,
                                                                            int F, int chunk_rows, float* partial_dw,
                                                                            float* partial_db) {
    HPB_DYNAMIC_SHARED(float, scratch);
    const int chunks = hpb_chunk_count(n, chunk_rows);
    const int by = (int)blockDim.y;
    for (int chunk = (int)blockIdx.y; chunk < chunks; chunk += (int)gridDim.y) {  // uniform across the block
        const int r0 = chunk * chunk_rows, r1 = hpb_chunk_end(n, r0, chunk_rows);
        for (int col0 = (int)(blockIdx.x * blockDim.x); col0 < F; col0 += (int)(gridDim.x * blockDim.x)) {
            const int col = col0 + (int)threadIdx.x;
            float sdw = 0.0f, sdb = 0.0f;
            if (col < F)
                for (int r = r0 + (int)threadIdx.y; r < r1; r += by) {
                    const size_t i = (size_t)r * F + col;
                    const float d = dy[i];
                    sdw = fmaf(d, (x[i] - mean[r]) * rstd[r], sdw);
                    sdb += d;
                }
            sdw = block_column_sum(sdw, scratch);
            sdb = block_column_sum(sdb, scratch);
            if (col < F && threadIdx.y == 0) {
                partial_dw[(size_t)chunk * F + col] = sdw;
                partial_db[(size_t)chunk * F + col] = sdb;
            }
        }
    }
}
