// activation.cu — the standalone activation layers (those not fused into a batch norm), elementwise.
//
// act: 0 identity, 1 tanh, 2 relu, 3 sigmoid (hpb_common.cuh)
//   forward   y  = act(x):      x,  tanhf(x),  x > 0 ? x : 0,  1/(1+expf(-x))
//   backward  dx = act'(x)*dy, written from the output y:
//                               dy, (1-y*y)*dy, y > 0 ? dy : 0, y*(1-y)*dy
// No reductions in the elementwise kernels: every element is read and written by one thread, so y may alias x and dx
// may alias dy (in place), and the results do not depend on the grid.
//
// The fusion rows "linear bias in the activation" and "linear bias gradient from the activation" (a linear with bias right
// before the activation, GPU training steps):
//   forward   v = x + b (b broadcast over the rows of `cols` columns), written back into x (the linear's output then
//             holds x·Wᵀ + b with bias_add's bits), and y = act(v)
//   backward  dx = act'(y)*dy and the per-chunk column sums of dx, the linear's bias gradient, in column_partial_sum's
//             order (linear.cu): bitwise activation_backward followed by column_partial_sum.
#include "reduce.cuh"

// x [count], bias [cols] or NULL  ->  y [count] = act(x + bias[i % cols])   (y may alias x; with a bias x + b is also
// written back into x, so count is rows*cols)
// grid = ceil(count / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void activation_forward(float* x, float* y, int count, int act, const float* bias, int cols) {
    for (size_t i = hpb_global_index(); i < (size_t)count; i += hpb_global_stride()) {
        if (bias) {
            const float v = x[i] + bias[i % (size_t)cols];
            x[i] = v;
            y[i] = hpb_act_forward(v, act);
        } else {
            y[i] = hpb_act_forward(x[i], act);
        }
    }
}

// y [count] (the forward's output), dy [count]  ->  dx [count] = act'(y)*dy   (dx may alias dy)
// grid = ceil(count / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void activation_backward(const float* y, const float* dy, float* dx, int count, int act) {
    for (size_t i = hpb_global_index(); i < (size_t)count; i += hpb_global_stride())
        dx[i] = hpb_act_backward(y[i], dy[i], act);
}

// y, dy [rows, cols]  ->  dx [rows, cols] = act'(y)*dy (may alias dy) and partial [chunks, cols], chunks =
// ceil(rows / chunk_rows): partial[c, col] = the sum of dx over the rows of chunk c, in column_partial_sum's order (thread
// (tx, ty) adds rows r0+ty, r0+ty+by, ..., then block_column_sum). The add is __fadd_rn: nvcc must not fuse act'(y)*dy
// into it, so the sum sees the dx that is stored. With one chunk `partial` is the bias gradient itself.
// grid = (ceil(cols / bx), chunks) (any: grid-stride over column tiles in x and over chunks in y),
// block = (bx, by) with bx*by <= 1024 (recommended (32, 8)), shared = bx*by*sizeof(float)
extern "C" __global__ void __launch_bounds__(1024) activation_backward_column_sum(const float* y, const float* dy, float* dx,
                                                                                  int act, int rows, int cols,
                                                                                  int chunk_rows, float* partial) {
    HPB_DYNAMIC_SHARED(float, scratch);
    column_partials(rows, cols, chunk_rows, partial, scratch, [=](float acc, int r, int col) {
        const size_t i = (size_t)r * cols + col;
        const float d = hpb_act_backward(y[i], dy[i], act);
        dx[i] = d;
        return __fadd_rn(acc, d);
    });
}
