// hpb_common.cuh — included first by every kernel file.
//
// * nvcc (__CUDACC__): plain CUDA.
// * host compiler (-x c++): pulls in the emulation header emu/cuda_emu.h, so the very same
//   .cu text builds into libhpbackprop_kernels_emu.so.
//
// It also declares every kernel from kernel_list.h, so a definition whose parameter list
// drifts from the contract in kernel_list.h is a compile error on both toolchains
// ("conflicting declaration of C function").
#pragma once

#ifndef __CUDACC__
#include "emu/cuda_emu.h"
// Dynamic shared memory (the launch's shared_bytes), viewed as T[].
#define HPB_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::hpb_emu::dynamic_shared_memory())
#else
#define HPB_DYNAMIC_SHARED(T, name)                                   \
    extern __shared__ __align__(16) unsigned char hpb_dynamic_smem[]; \
    T* name = reinterpret_cast<T*>(hpb_dynamic_smem)
#endif

#include "step_state.h"

#define HPB_KERNEL(name, ...) extern "C" __global__ void name(__VA_ARGS__);
#include "kernel_list.h"
#undef HPB_KERNEL

#define HPB_FULL_MASK 0xffffffffu

// Linear thread index inside the block (x fastest), as the hardware numbers lanes.
__device__ __forceinline__ unsigned hpb_thread_rank() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
__device__ __forceinline__ unsigned hpb_block_threads() { return blockDim.x * blockDim.y * blockDim.z; }

// 1-D grid-stride loop bounds (64-bit so n*V beyond 2^31 is safe).
__device__ __forceinline__ size_t hpb_global_index() { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t hpb_global_stride() { return (size_t)gridDim.x * blockDim.x; }

__device__ __forceinline__ int hpb_min_int(int a, int b) { return a < b ? a : b; }

// ---------------------------------------------------------------------------------------
// Shared codes of the kernel ABI (issue 19's kernel spec): the `int act` and `int kind` arguments.
// ---------------------------------------------------------------------------------------
#define HPB_ACT_IDENTITY 0
#define HPB_ACT_TANH 1
#define HPB_ACT_RELU 2
#define HPB_ACT_SIGMOID 3

#define HPB_LOSS_MSE 1
#define HPB_LOSS_BCE_WITH_LOGITS 2
#define HPB_LOSS_MEAN 3

// y = act(x): identity x; tanh tanhf(x); relu x > 0 ? x : 0; sigmoid 1/(1+expf(-x)).
// An unknown code acts as identity (the host validates codes before launching).
__device__ __forceinline__ float hpb_act_forward(float x, int act) {
    switch (act) {
        case HPB_ACT_TANH:
            return tanhf(x);
        case HPB_ACT_RELU:
            return x > 0.0f ? x : 0.0f;
        case HPB_ACT_SIGMOID:
            return 1.0f / (1.0f + expf(-x));
        default:
            return x;
    }
}

// act'(x)*dy written from the OUTPUT y = act(x): identity dy; tanh (1-y*y)*dy; relu y > 0 ? dy : 0;
// sigmoid y*(1-y)*dy (the CPU's Cpu/Activations.cs, operation for operation).
__device__ __forceinline__ float hpb_act_backward(float y, float dy, int act) {
    switch (act) {
        case HPB_ACT_TANH:
            return (1.0f - y * y) * dy;
        case HPB_ACT_RELU:
            return y > 0.0f ? dy : 0.0f;
        case HPB_ACT_SIGMOID:
            return y * (1.0f - y) * dy;
        default:
            return dy;
    }
}

// Row chunks (the column reductions' unit of work, issue 19's kernel spec): chunk c covers rows
// [c*chunk_rows, min(rows, (c+1)*chunk_rows)); chunk_rows >= 1.
__device__ __forceinline__ int hpb_chunk_count(int rows, int chunk_rows) {
    return (int)(((long long)rows + chunk_rows - 1) / chunk_rows);
}
// End of the chunk that starts at row r0 < rows (no overflow for any chunk_rows).
__device__ __forceinline__ int hpb_chunk_end(int rows, int r0, int chunk_rows) {
    return rows - r0 > chunk_rows ? r0 + chunk_rows : rows;
}
