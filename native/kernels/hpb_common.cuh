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
#define HPB_DYNAMIC_SHARED(T, name)                                  \
    extern __shared__ __align__(16) unsigned char hpb_dynamic_smem[]; \
    T* name = reinterpret_cast<T*>(hpb_dynamic_smem)
#endif

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
