// linear.cu — the non-GEMM parts of the two linear layers (the matrix products go to cuBLAS).
//
//   hprebn = embcat @ W1 + b1        logits = h @ W2 + b2          (forward: bias_add)
//   db1 = sum0(dhprebn)              db2 = sum0(dlogits)           (backward: column_sum)
//
// column_sum is deterministic: a block owns blockDim.x adjacent columns and adds their rows
// in a fixed order (see reduce.cuh, block_column_sum); no atomics.
#include "reduce.cuh"

// y [rows, cols] += b [1, cols]   (broadcast over rows)
// grid = ceil(rows*cols / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void bias_add(float* y, const float* b, int rows, int cols) {
    const size_t total = (size_t)rows * cols;
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride()) y[i] += b[i % (size_t)cols];
}

// out [1, cols] = sum0(x [rows, cols])   (overwritten)
// grid = ceil(cols / bx) (any: grid-stride over column tiles), block = (bx, by) with
// bx*by <= 1024 (recommended (32, 8)), shared = bx*by*sizeof(float)
extern "C" __global__ void __launch_bounds__(1024) column_sum(const float* x, float* out, int rows, int cols) {
    HPB_DYNAMIC_SHARED(float, scratch);
    // col0 is uniform across the block, so every thread takes part in every barrier
    for (int col0 = (int)(blockIdx.x * blockDim.x); col0 < cols; col0 += (int)(gridDim.x * blockDim.x)) {
        const int col = col0 + (int)threadIdx.x;
        float acc = 0.0f;
        if (col < cols)
            for (int r = (int)threadIdx.y; r < rows; r += (int)blockDim.y) acc += x[(size_t)r * cols + col];
        acc = block_column_sum(acc, scratch);
        if (col < cols && threadIdx.y == 0) out[col] = acc;
    }
}
