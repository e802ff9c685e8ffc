// reduce.cuh — warp and block reductions, all in a FIXED order (deterministic).
//
// Determinism argument: every reduction below combines values in an order fixed by the lane /
// warp / row index alone, never by timing, and uses no atomics.  Butterfly (xor) reductions
// leave the bitwise-same result in every lane, because each step combines the same two
// values on both sides with a commutative operation (a+b == b+a exactly in IEEE arithmetic).
// So for a fixed launch configuration the result is bitwise reproducible.
//
// Preconditions (all block-level functions):
//   * every thread of the block calls them (no early return before them);
//   * the block's thread count is a multiple of 32 (full warps: the shuffles use a full mask);
//   * 1-, 2- or 3-D blocks are fine: threads are ranked x-fastest, as the hardware does.
#pragma once
#include "hpb_common.cuh"

// ---------------------------------------------------------------------------------------
// Combine operators
// ---------------------------------------------------------------------------------------
struct SumOp {
    template <class T>
    __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};

struct MaxOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Online-softmax state: m = running max, s = sum of exp(x - m) over the values seen.
// The empty state is {-INFINITY, 0}.
struct MaxSum {
    float m;
    float s;
};

__device__ __forceinline__ MaxSum maxsum_empty() {
    MaxSum r;
    r.m = -INFINITY;
    r.s = 0.0f;
    return r;
}

// Adds one value x to the state (online max/sum).
__device__ __forceinline__ MaxSum maxsum_push(MaxSum a, float x) {
    if (x > a.m) {
        a.s = a.s * expf(a.m - x) + 1.0f;
        a.m = x;
    } else {
        a.s += expf(x - a.m);
    }
    return a;
}

struct MaxSumOp {
    // Symmetric in (a, b), so butterfly partners compute the bitwise-same state.
    __device__ __forceinline__ MaxSum operator()(MaxSum a, MaxSum b) const {
        MaxSum r;
        r.m = fmaxf(a.m, b.m);
        const float sa = (a.m == -INFINITY) ? 0.0f : a.s * expf(a.m - r.m);
        const float sb = (b.m == -INFINITY) ? 0.0f : b.s * expf(b.m - r.m);
        r.s = sa + sb;
        return r;
    }
};

// Arg-max with the smallest index winning ties (torch.max convention: first occurrence).
struct ArgMax {
    float v;
    int i;
};

struct ArgMaxOp {
    __device__ __forceinline__ ArgMax operator()(ArgMax a, ArgMax b) const {
        if (a.v > b.v) return a;
        if (b.v > a.v) return b;
        return (a.i <= b.i) ? a : b;  // equal values: smaller index
    }
};

// ---------------------------------------------------------------------------------------
// Shuffle helpers for 8-byte pairs: packed into one 64-bit shuffle (two SHFL instructions on
// the GPU either way; one exchange in the emulator).
// ---------------------------------------------------------------------------------------
__device__ __forceinline__ unsigned long long hpb_pack(float lo, unsigned hi) {
    return ((unsigned long long)hi << 32) | (unsigned long long)__float_as_uint(lo);
}

template <class T>
__device__ __forceinline__ T hpb_shfl_xor(T v, int lane_mask) {
    return __shfl_xor_sync(HPB_FULL_MASK, v, lane_mask);
}
template <>
__device__ __forceinline__ MaxSum hpb_shfl_xor<MaxSum>(MaxSum v, int lane_mask) {
    const unsigned long long u = __shfl_xor_sync(HPB_FULL_MASK, hpb_pack(v.m, __float_as_uint(v.s)), lane_mask);
    MaxSum r;
    r.m = __uint_as_float((unsigned)u);
    r.s = __uint_as_float((unsigned)(u >> 32));
    return r;
}
template <>
__device__ __forceinline__ ArgMax hpb_shfl_xor<ArgMax>(ArgMax v, int lane_mask) {
    const unsigned long long u = __shfl_xor_sync(HPB_FULL_MASK, hpb_pack(v.v, (unsigned)v.i), lane_mask);
    ArgMax r;
    r.v = __uint_as_float((unsigned)u);
    r.i = (int)(unsigned)(u >> 32);
    return r;
}

// ---------------------------------------------------------------------------------------
// Warp reductions
// ---------------------------------------------------------------------------------------

// Butterfly all-reduce over the 32 lanes (__shfl_xor_sync, strides 16,8,4,2,1):
// every lane returns the bitwise-same result.
template <class T, class Op>
__device__ __forceinline__ T warp_allreduce(T v, Op op) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = op(v, hpb_shfl_xor(v, offset));
    return v;
}

__device__ __forceinline__ float warp_reduce_sum(float v) { return warp_allreduce(v, SumOp()); }
__device__ __forceinline__ double warp_reduce_sum(double v) { return warp_allreduce(v, SumOp()); }
__device__ __forceinline__ float warp_reduce_max(float v) { return warp_allreduce(v, MaxOp()); }
__device__ __forceinline__ MaxSum warp_reduce_maxsum(MaxSum v) { return warp_allreduce(v, MaxSumOp()); }
__device__ __forceinline__ ArgMax warp_reduce_argmax(ArgMax v) { return warp_allreduce(v, ArgMaxOp()); }

// Tree reduction towards lane 0 (__shfl_down_sync): only lane 0's result is meaningful.
__device__ __forceinline__ float warp_reduce_sum_to_lane0(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(HPB_FULL_MASK, v, offset);
    return v;
}

// ---------------------------------------------------------------------------------------
// Block reductions (all threads get the result)
// ---------------------------------------------------------------------------------------
//
//   1. each warp butterfly-reduces its 32 values;
//   2. lane 0 of warp w stores the warp's value in partial[w];      -- __syncthreads (A)
//   3. EVERY warp reads partial[0..nwarps) (identity beyond) and butterfly-reduces them,
//      so every thread holds the bitwise-same block result without a broadcast step;
//   4. __syncthreads (B) so that a following call may overwrite partial[].
//
// Barrier (A) orders the writes of step 2 before the reads of step 3; barrier (B) orders
// the reads of step 3 before the next call's writes.  Remove either and ThreadSanitizer
// reports the race in the emulator (see README.md, "the __syncthreads experiment").
template <class T, class Op>
__device__ __forceinline__ T block_allreduce(T v, Op op, T identity) {
    __shared__ T partial[32];
    const unsigned rank = hpb_thread_rank();
    const unsigned lane = rank & 31u;
    const unsigned warp = rank >> 5;
    const unsigned nwarps = (hpb_block_threads() + 31u) >> 5;

    v = warp_allreduce(v, op);
    if (lane == 0) partial[warp] = v;
    __syncthreads();  // (A)
    T r = (lane < nwarps) ? partial[lane] : identity;
    r = warp_allreduce(r, op);
    __syncthreads();  // (B)
    return r;
}

__device__ __forceinline__ float block_reduce_sum(float v) { return block_allreduce(v, SumOp(), 0.0f); }
__device__ __forceinline__ double block_reduce_sum(double v) { return block_allreduce(v, SumOp(), 0.0); }
__device__ __forceinline__ float block_reduce_max(float v) { return block_allreduce(v, MaxOp(), -INFINITY); }
__device__ __forceinline__ MaxSum block_reduce_maxsum(MaxSum v) {
    return block_allreduce(v, MaxSumOp(), maxsum_empty());
}

// ---------------------------------------------------------------------------------------
// Block exclusive scan of ints (integer sums are exact, so any order would do; this one is
// fixed anyway).  Returns the exclusive prefix of v over thread ranks; *total = block sum.
// ---------------------------------------------------------------------------------------
__device__ __forceinline__ int block_exclusive_scan_int(int v, int* total) {
    __shared__ int warp_totals[32];
    const unsigned rank = hpb_thread_rank();
    const unsigned lane = rank & 31u;
    const unsigned warp = rank >> 5;
    const unsigned nwarps = (hpb_block_threads() + 31u) >> 5;

    int inclusive = v;  // Hillis-Steele inclusive scan inside the warp
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
        const int up = __shfl_up_sync(HPB_FULL_MASK, inclusive, offset);
        if ((int)lane >= offset) inclusive += up;
    }
    if (lane == 31) warp_totals[warp] = inclusive;
    __syncthreads();
    const int t = (lane < nwarps) ? warp_totals[lane] : 0;
    int t_inclusive = t;  // every warp scans the warp totals
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
        const int up = __shfl_up_sync(HPB_FULL_MASK, t_inclusive, offset);
        if ((int)lane >= offset) t_inclusive += up;
    }
    const int warp_offset = __shfl_sync(HPB_FULL_MASK, t_inclusive - t, (int)warp);
    *total = __shfl_sync(HPB_FULL_MASK, t_inclusive, 31);
    __syncthreads();
    return warp_offset + inclusive - v;
}

// ---------------------------------------------------------------------------------------
// Column reductions for 2-D blocks (blockDim.x columns × blockDim.y row slices)
// ---------------------------------------------------------------------------------------
//
// Thread (tx, ty) has summed rows ty, ty+by, ty+2by, ... of its column (fixed order) into
// `partial`.  This stores the partials in scratch[by][bx] (dynamic shared memory, bx*by*
// sizeof(T) bytes), and every thread then adds the by partials of ITS column in order
// ty' = 0, 1, ..., by-1, so all threads of a column hold the bitwise-same total.
// No warp shuffles: any bx*by <= 1024 works.  Every thread of the block must call it.
template <class T>
__device__ __forceinline__ T block_column_sum(T partial, T* scratch) {
    const unsigned tx = threadIdx.x, ty = threadIdx.y, bx = blockDim.x, by = blockDim.y;
    scratch[ty * bx + tx] = partial;
    __syncthreads();
    T total = scratch[tx];
    for (unsigned k = 1; k < by; ++k) total += scratch[k * bx + tx];
    __syncthreads();  // scratch may be reused by the caller's next reduction
    return total;
}

// The chunked column reduction's sweep (linear.cu's column_partial_sum, activation.cu's
// activation_backward_column_sum): for each chunk c of chunk_rows rows and each column, thread
// (tx, ty) folds rows r0+ty, r0+ty+by, ... in that order with acc = add(acc, row, col) from 0, then
// block_column_sum, and thread (tx, 0) writes partial[c*cols + col]. Grid-stride over column tiles
// in x and chunks in y, so the order never depends on the grid. `scratch`: bx*by floats of dynamic
// shared memory. Every thread of the block must call it.
template <class Add>
__device__ __forceinline__ void column_partials(int rows, int cols, int chunk_rows, float* partial, float* scratch,
                                                Add add) {
    const int chunks = hpb_chunk_count(rows, chunk_rows);
    const int by = (int)blockDim.y;
    // chunk and col0 are uniform across the block, so every thread takes part in every barrier
    for (int chunk = (int)blockIdx.y; chunk < chunks; chunk += (int)gridDim.y) {
        const int r0 = chunk * chunk_rows, r1 = hpb_chunk_end(rows, r0, chunk_rows);
        for (int col0 = (int)(blockIdx.x * blockDim.x); col0 < cols; col0 += (int)(gridDim.x * blockDim.x)) {
            const int col = col0 + (int)threadIdx.x;
            float acc = 0.0f;
            if (col < cols)
                for (int r = r0 + (int)threadIdx.y; r < r1; r += by) acc = add(acc, r, col);
            acc = block_column_sum(acc, scratch);
            if (col < cols && threadIdx.y == 0) partial[(size_t)chunk * cols + col] = acc;
        }
    }
}

// Finishing a chunked column reduction: partial[0*cols+col] + partial[1*cols+col] + ... in chunk
// order, in one float accumulator that starts at partial[col] (chunks >= 1).  One thread per column:
// no shuffles, no barriers, the same order on any grid.
__device__ __forceinline__ float column_chunk_sum(const float* partial, int chunks, int cols, size_t col) {
    float acc = partial[col];
    for (int c = 1; c < chunks; ++c) acc += partial[(size_t)c * cols + col];
    return acc;
}
