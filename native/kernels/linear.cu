// linear.cu — the non-GEMM parts of the linear layers (the matrix products go to cuBLAS), and the
// generic deterministic column reductions every layer's bias/statistics gradients use.
//
//   y = x @ W + b                                     (forward: bias_add)
//   db = sum0(dy)                                     (backward: column_partial_sum [+ column_finish_sum])
//   dW += 2*l2*W                                      (L2 gradient: axpy)
//
// Column reductions, deterministic at any n and on any GPU (issue 19's kernel spec, "determinism rule"):
//   partial[c, col] = sum over the rows r of chunk c = [c*chunk_rows, min(rows, (c+1)*chunk_rows)) of v(r, col)
//       v = x[r,col]                      (center NULL, square 0)
//       v = x[r,col] - center[col]        (center given, square 0)
//       v = (x[r,col] - center[col])^2    (center given, square 1; center NULL: x^2)
//   out[col] = partial[0, col] + partial[1, col] + ... + partial[chunks-1, col]   (in chunk order)
// Inside a chunk thread (tx, ty) adds rows r0+ty, r0+ty+by, ... in that order and block_column_sum adds
// the by slices in order ty = 0..by-1 (reduce.cuh). The order depends on the shape, chunk_rows and the
// block shape only: never on the grid (grid-stride loops) or the number of SMs. No atomics.
// With one chunk (rows <= chunk_rows) `partial` is the result: the host passes the output buffer.
#include "reduce.cuh"

// y [rows, cols] += b [1, cols]   (broadcast over rows)
// grid = ceil(rows*cols / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void bias_add(float* y, const float* b, int rows, int cols) {
    const size_t total = (size_t)rows * cols;
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride()) y[i] += b[i % (size_t)cols];
}

// x [rows, cols], center [1, cols] or NULL  ->  partial [chunks, cols], chunks = ceil(rows / chunk_rows)
// (overwritten).  A square is fused: fmaf(v, v, acc), on the GPU and in the emulator alike.
// grid = (ceil(cols / bx), chunks) (any: grid-stride over column tiles in x and over chunks in y),
// block = (bx, by) with bx*by <= 1024 (recommended (32, 8)), shared = bx*by*sizeof(float)
extern "C" __global__ void __launch_bounds__(1024) column_partial_sum(const float* x, const float* center, int square,
                                                                      int rows, int cols, int chunk_rows,
                                                                      float* partial) {
    HPB_DYNAMIC_SHARED(float, scratch);
    column_partials(rows, cols, chunk_rows, partial, scratch, [=](float acc, int r, int col) {
        const float v = center ? x[(size_t)r * cols + col] - center[col] : x[(size_t)r * cols + col];
        return square ? fmaf(v, v, acc) : acc + v;
    });
}

// partial [chunks, cols]  ->  out [1, cols] = partial[0] + partial[1] + ... (a float accumulator, chunk order)
// grid = ceil(cols / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void column_finish_sum(const float* partial, int chunks, int cols, float* out) {
    for (size_t col = hpb_global_index(); col < (size_t)cols; col += hpb_global_stride())
        out[col] = column_chunk_sum(partial, chunks, cols, col);
}

// y [count] += a * x [count]   (the L2 gradient dW += 2*l2*W).  Multiply, then add, each rounded
// (__fmul_rn/__fadd_rn: nvcc must not fuse them), as the CPU's TensorPrimitives.MultiplyAdd does.
// grid = ceil(count / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void axpy(float* y, const float* x, float a, int count) {
    for (size_t i = hpb_global_index(); i < (size_t)count; i += hpb_global_stride())
        y[i] = __fadd_rn(y[i], __fmul_rn(a, x[i]));
}
