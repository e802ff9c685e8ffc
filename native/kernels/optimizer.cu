// optimizer.cu — plain SGD over the flat parameter buffer (docs/makemore.md §5).
//
//   params -= lr * grads      (all parameters and gradients live in one flat buffer each)
#include "hpb_common.cuh"

// params [count] -= lr * grads [count]
// grid = ceil(count / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void sgd_update(float* params, const float* grads, float lr, int count) {
    for (size_t i = hpb_global_index(); i < (size_t)count; i += hpb_global_stride()) params[i] -= lr * grads[i];
}
