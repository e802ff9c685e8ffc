// dropout.cu — inverted dropout with a counter-based mask: nothing is stored between the forward and
// the backward; both recompute the mask from (seed, layer, step, element index).
//
//   mask(i)   = philox4x32_10(ctr = {i/4, 0, step_lo, step_hi}, key = {seed, layer})[i % 4] >= threshold
// where step = step->current, the optimiser step of the training step running (step_state.h).
//   forward   y[i]  = mask(i) ? x[i]*scale  : 0
//   backward  dx[i] = mask(i) ? dy[i]*scale : 0
// threshold = the host's round(P * 2^32) clamped to 2^32-1 (so an element is dropped with probability P;
// P = 0: threshold 0, every element kept), scale = 1/(1-P) as a float from the host.
// Philox4x32-10 (philox.cuh) gives 4 words per counter: one call per 4 consecutive elements, the
// mask of element i is word i%4 of counter i/4 whichever thread computes it, so the mask and the
// results do not depend on the grid.  Elementwise: y may alias x, dx may alias dy.
#include "hpb_common.cuh"
#include "philox.cuh"

// y[4g .. 4g+3] (those < count) from x, with the mask of counter g; no reduction.
__device__ __forceinline__ void dropout_apply(const float* in, float* out, int count, unsigned seed, unsigned layer,
                                              unsigned step_lo, unsigned step_hi, unsigned threshold, float scale) {
    const size_t groups = ((size_t)count + 3) / 4;
    for (size_t g = hpb_global_index(); g < groups; g += hpb_global_stride()) {
        const HpbPhilox4 r = hpb_philox4x32_10((unsigned)g, 0u, step_lo, step_hi, seed, layer);
        const size_t i0 = 4 * g;
        const int k_end = (size_t)count - i0 >= 4 ? 4 : (int)((size_t)count - i0);
#pragma unroll
        for (int k = 0; k < 4; ++k)
            if (k < k_end) out[i0 + k] = r.v[k] >= threshold ? in[i0 + k] * scale : 0.0f;
    }
}

// x [count]  ->  y [count] (may alias x)
// grid = ceil(ceil(count/4) / 256) (any, grid-stride over groups of 4 elements), block = 256 (any), shared = 0
extern "C" __global__ void dropout_forward(const float* x, float* y, int count, unsigned seed, unsigned layer,
                                           const hpb_step* step, unsigned threshold, float scale) {
    const unsigned long long t = step->current;
    dropout_apply(x, y, count, seed, layer, (unsigned)t, (unsigned)(t >> 32), threshold, scale);
}

// dy [count]  ->  dx [count] (may alias dy), the forward's mask recomputed
// grid = ceil(ceil(count/4) / 256) (any, grid-stride over groups of 4 elements), block = 256 (any), shared = 0
extern "C" __global__ void dropout_backward(const float* dy, float* dx, int count, unsigned seed, unsigned layer,
                                            const hpb_step* step, unsigned threshold, float scale) {
    const unsigned long long t = step->current;
    dropout_apply(dy, dx, count, seed, layer, (unsigned)t, (unsigned)(t >> 32), threshold, scale);
}
