// activation.cu — the standalone activation layers (those not fused into a batch norm), elementwise.
//
// act: 0 identity, 1 tanh, 2 relu, 3 sigmoid (hpb_common.cuh)
//   forward   y  = act(x):      x,  tanhf(x),  x > 0 ? x : 0,  1/(1+expf(-x))
//   backward  dx = act'(x)*dy, written from the output y:
//                               dy, (1-y*y)*dy, y > 0 ? dy : 0, y*(1-y)*dy
// No reductions: every element is read and written by one thread, so y may alias x and dx may alias
// dy (in place), and the results do not depend on the grid.
#include "hpb_common.cuh"

// x [count]  ->  y [count] = act(x)   (y may alias x)
// grid = ceil(count / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void activation_forward(const float* x, float* y, int count, int act) {
    for (size_t i = hpb_global_index(); i < (size_t)count; i += hpb_global_stride()) y[i] = hpb_act_forward(x[i], act);
}

// y [count] (the forward's output), dy [count]  ->  dx [count] = act'(y)*dy   (dx may alias dy)
// grid = ceil(count / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void activation_backward(const float* y, const float* dy, float* dx, int count, int act) {
    for (size_t i = hpb_global_index(); i < (size_t)count; i += hpb_global_stride())
        dx[i] = hpb_act_backward(y[i], dy[i], act);
}
