// optimizer.cu — the optimisers, one elementwise pass over the flat parameter, gradient and state
// buffers, in PyTorch's operation order (torch.optim.SGD, torch.optim.AdamW) and the CPU's
// (Cpu/OptimizerKernels.cs).
//
//   (lr, and AdamW's step_size and bc2_sqrt, come from the step's state: step_state.h)
//   sgd:            p -= lr * g                                                (docs/makemore.md §5)
//   sgd, momentum:  g' = g + wd*p (wd != 0);  v = momentum*v + g' (v != NULL);  p = fmaf(g', -lr, p)
//   adamw (step t): p' = p*(1 - lr*wd);  m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g*g;
//                   p = p' - lr/(1-beta1^t) * m/(sqrt(v)/sqrt(1-beta2^t) + eps)
// Where the CPU rounds a product before adding it, the kernels say so with __fmul_rn/__fadd_rn/
// __fdiv_rn/__fsqrt_rn (nvcc would otherwise fuse a*b+c into one FMA), and fmaf where the CPU fuses:
// then the GPU computes the CPU's bits.  No reductions: any grid gives the same results.
#include "hpb_common.cuh"
#include "philox.cuh"

// The first node of every training step: the step's state (step_state.h) and, when n > 0, its
// minibatch from a training set that stays on the device, and, when table != NULL, the embedding
// rows of the drawn ids.  So every later kernel of the step reads fixed addresses.
//   state (thread 0 of block 0): t = next becomes current, the step's schedule row (t - base, or row 0
//     with stride 0) is copied into lr, step_size and bc2_sqrt, and its loss slot is t % ring.  A
//     step without a row of its own (t < base, or t - base >= rows with stride 1) sets fault and
//     takes the last row: the host never lets that happen and checks the flag in its tests.  `next`
//     is not written here (every thread reads it): the step's loss kernel (sum_finish or
//     cross_entropy_bias_loss with a step) advances it to current + 1.
//   draw (n > 0): row r of x [n, xw] and y [n, yw] is example e of set_x [count, xw] and set_y
//     [count, yw], e = floor(w * count / 2^32) with w = word r % 4 of
//     philox({r/4, 1, t_lo, t_hi}, {step->draw_seed, 0xFFFFFFFF}) — Model/Philox.cs MinibatchDraw,
//     so the CPU draws the same rows.  Elements are copied as 4-byte words (ids, class ids and floats
//     alike); yw may be 0 (no targets).
//   gather (table != NULL, x holds ids in [0, rows of table): the set was checked on the host):
//     gathered [n, xw*e], gathered[r, c*e + k] = table[x[r, c] * e + k] — embedding_forward's rows,
//     from the drawn example directly.
// No reduction: any grid gives the same bits.
// grid = any (grid-stride over n*(xw + yw) + n*xw*e elements; 1 with n = 0), block = any (256), shared = 0
extern "C" __global__ void step_begin(hpb_step* step, const unsigned* set_x, const unsigned* set_y, int count, int xw,
                                      int yw, unsigned* x, unsigned* y, int n, const float* table, int e,
                                      float* gathered) {
    const unsigned long long t = step->next;
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        step->current = t;
        unsigned long long row = step->stride ? t - step->base : 0;
        if (t < step->base || row >= step->rows) {
            step->fault = 1;
            row = step->rows > 0 ? step->rows - 1 : 0;
        }
        const float* r = reinterpret_cast<const float*>(step + 1) + HPB_STEP_ROW_FLOATS * row;
        step->lr = r[0];
        step->step_size = r[1];
        step->bc2_sqrt = r[2];
        step->slot = (unsigned)(t % (step->ring > 0 ? step->ring : 1));
    }
    if (n <= 0) return;
    const unsigned seed = step->draw_seed;
    const size_t w = (size_t)xw + (size_t)yw, drawn = (size_t)n * w;
    const size_t total = drawn + (table ? (size_t)n * xw * e : 0);
    for (size_t i = hpb_global_index(); i < total; i += hpb_global_stride()) {
        int r, c;
        if (i < drawn) {
            r = (int)(i / w);
            c = (int)(i % w);
        } else {
            r = (int)((i - drawn) / ((size_t)xw * e));
            c = (int)((i - drawn) / (size_t)e % (size_t)xw);
        }
        const HpbPhilox4 b = hpb_philox4x32_10((unsigned)(r >> 2), 1u, (unsigned)t, (unsigned)(t >> 32), seed, 0xFFFFFFFFu);
        const size_t ex = (size_t)(((unsigned long long)b.v[r & 3] * (unsigned)count) >> 32);
        if (i >= drawn) {
            const size_t k = (i - drawn) % (size_t)e;
            gathered[i - drawn] = table[(size_t)set_x[ex * xw + c] * e + k];
        } else if (c < xw) {
            x[(size_t)r * xw + c] = set_x[ex * xw + c];
        } else {
            y[(size_t)r * yw + (c - xw)] = set_y[ex * yw + (c - xw)];
        }
    }
}

// params [count] -= lr * grads [count], lr = step->lr
// grid = ceil(count / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void sgd_update(float* params, const float* grads, const hpb_step* step, int count) {
    const float lr = step->lr;
    for (size_t i = hpb_global_index(); i < (size_t)count; i += hpb_global_stride()) params[i] -= lr * grads[i];
}

// p [count], g [count], v [count] (momentum buffer, zero before the first step; NULL: no momentum)
//   gi = g + weight_decay*p (when weight_decay != 0);  v = momentum*v + gi, gi = v (when v != NULL);
//   p = fmaf(gi, -lr, p),  lr = step->lr
// grid = ceil(count / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void sgd_momentum_update(float* p, const float* g, float* v, int count, const hpb_step* step,
                                               float momentum, float weight_decay) {
    const float lr = step->lr;
    for (size_t i = hpb_global_index(); i < (size_t)count; i += hpb_global_stride()) {
        const float pi = p[i];
        float gi = g[i];
        if (weight_decay != 0.0f) gi = __fadd_rn(gi, __fmul_rn(weight_decay, pi));
        if (v) {
            gi = __fadd_rn(__fmul_rn(momentum, v[i]), gi);
            v[i] = gi;
        }
        p[i] = fmaf(gi, -lr, pi);
    }
}

// p, g, m, v [count]; the host passes a1 = 1 - beta1, a2 = 1 - beta2 and writes into the step's schedule
// row, in double as the CPU does, step_size = (float)(lr/(1 - beta1^t)), bc2_sqrt = (float)sqrt(1 - beta2^t)
// (t = the 1-based step); decay = 1 - lr*weight_decay in float, as the CPU:
//   pi = p*decay;  mi = m*beta1 + g*a1;  vi = v*beta2 + (g*g)*a2;  m = mi;  v = vi;
//   p  = pi - step_size*(mi/(sqrt(vi)/bc2_sqrt + eps))           every operation rounded on its own
// grid = ceil(count / 256) (any, grid-stride), block = 256 (any), shared = 0
extern "C" __global__ void adamw_update(float* p, const float* g, float* m, float* v, int count, const hpb_step* step,
                                        float weight_decay, float beta1, float beta2, float a1, float a2, float eps) {
    const float decay = __fsub_rn(1.0f, __fmul_rn(step->lr, weight_decay));
    const float step_size = step->step_size, bc2_sqrt = step->bc2_sqrt;
    for (size_t i = hpb_global_index(); i < (size_t)count; i += hpb_global_stride()) {
        const float gi = g[i];
        const float pi = __fmul_rn(p[i], decay);
        const float mi = __fadd_rn(__fmul_rn(m[i], beta1), __fmul_rn(gi, a1));
        const float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(gi, gi), a2));
        m[i] = mi;
        v[i] = vi;
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        p[i] = __fsub_rn(pi, __fmul_rn(step_size, __fdiv_rn(mi, denom)));
    }
}
