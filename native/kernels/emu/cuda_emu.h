// cuda_emu.h — host C++ stand-ins for the CUDA built-ins the HpBackprop kernels use.
//
// Included (through hpb_common.cuh) only when the .cu files are compiled by a host C++
// compiler (`-x c++`, no __CUDACC__).  The .cu files themselves are not changed: every
// CUDA-ism they use is provided here with host semantics:
//
//   threadIdx/blockIdx/blockDim/gridDim  thread_local variables set by the launcher
//   __global__/__device__/__host__       empty
//   __shared__                           `static` (blocks run one after another, so a
//                                        function-local static is exactly one block's copy)
//   dynamic shared memory                HPB_DYNAMIC_SHARED(T, name) (see hpb_common.cuh):
//                                        a per-launch heap buffer of exactly shared_bytes
//                                        (ASan sees overruns), filled with 0xFF (NaN) per block
//   __syncthreads/__syncwarp             real barriers between real threads
//   __shfl_*_sync, __ballot_sync, ...    real exchanges between the lanes of a warp, with
//                                        mask checks (partial warps, exited lanes, divergent
//                                        masks are reported as errors, not silently "worked")
//   atomicAdd                            std::atomic_ref (ThreadSanitizer understands it)
//   math intrinsics                      their IEEE host equivalents
//
// Each block's threads run CONCURRENTLY on a pool of OS threads, so a missing
// __syncthreads is a data race that ThreadSanitizer reports.
#pragma once

#ifdef __CUDACC__
#error "cuda_emu.h is for host builds only"
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <atomic>
#include <cmath>
#include <type_traits>

// ---------------------------------------------------------------------------------------
// Qualifiers
// ---------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static

// ---------------------------------------------------------------------------------------
// Built-in variables
// ---------------------------------------------------------------------------------------
struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
constexpr int warpSize = 32;

// ---------------------------------------------------------------------------------------
// Runtime hooks (emu/cuda_emu_runtime.cpp)
// ---------------------------------------------------------------------------------------
namespace hpb_emu {

// Block barrier (bar.sync 0): every live thread of the block must arrive.
void syncthreads();
// Warp barrier over the lanes in `mask` (the calling lane must be in it).
void syncwarp(unsigned mask);
// Every lane in `mask` deposits `bits`; returns the bits deposited by `src_lane`
// (src_lane < 0: the caller's own value, after still taking part in the exchange).
uint64_t warp_shuffle(unsigned mask, uint64_t bits, int src_lane);
// Every lane in `mask` deposits `pred`; returns the mask of lanes whose pred was true.
unsigned warp_ballot(unsigned mask, bool pred);
// The calling thread's lane id (linear thread index within the block, mod 32).
unsigned lane_id();
// Base address of this launch's dynamic shared memory (shared_bytes of the launch).
void* dynamic_shared_memory();

template <class T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof(T));
    return b;
}

template <class T>
inline T from_bits(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof(T));
    return v;
}

}  // namespace hpb_emu

// ---------------------------------------------------------------------------------------
// Synchronisation
// ---------------------------------------------------------------------------------------
inline void __syncthreads() { hpb_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { hpb_emu::syncwarp(mask); }

// ---------------------------------------------------------------------------------------
// Warp shuffles (CUDA Programming Guide semantics, including `width` segments)
// ---------------------------------------------------------------------------------------
template <class T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize) {
    const int lane = (int)hpb_emu::lane_id();
    const int src = (lane & ~(width - 1)) + (srcLane & (width - 1));
    return hpb_emu::from_bits<T>(hpb_emu::warp_shuffle(mask, hpb_emu::to_bits(var), src));
}

template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    const int lane = (int)hpb_emu::lane_id();
    const int src = ((lane & (width - 1)) >= (int)delta) ? lane - (int)delta : -1;
    return hpb_emu::from_bits<T>(hpb_emu::warp_shuffle(mask, hpb_emu::to_bits(var), src));
}

template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    const int lane = (int)hpb_emu::lane_id();
    const int src = ((lane & (width - 1)) + (int)delta < width) ? lane + (int)delta : -1;
    return hpb_emu::from_bits<T>(hpb_emu::warp_shuffle(mask, hpb_emu::to_bits(var), src));
}

template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize) {
    const int lane = (int)hpb_emu::lane_id();
    int src = lane ^ laneMask;
    // A lane may read from its own or an earlier width-segment, never from a later one.
    if ((src & ~(width - 1)) > (lane & ~(width - 1))) src = -1;
    return hpb_emu::from_bits<T>(hpb_emu::warp_shuffle(mask, hpb_emu::to_bits(var), src));
}

inline unsigned __ballot_sync(unsigned mask, int pred) { return hpb_emu::warp_ballot(mask, pred != 0); }
inline int __any_sync(unsigned mask, int pred) { return hpb_emu::warp_ballot(mask, pred != 0) != 0; }
inline int __all_sync(unsigned mask, int pred) { return (hpb_emu::warp_ballot(mask, pred != 0) & mask) == mask; }

// ---------------------------------------------------------------------------------------
// Atomics
// ---------------------------------------------------------------------------------------
template <class T>
inline T hpb_emu_atomic_add(T* address, T val) {
    return std::atomic_ref<T>(*address).fetch_add(val, std::memory_order_relaxed);
}
inline float atomicAdd(float* address, float val) { return hpb_emu_atomic_add(address, val); }
inline double atomicAdd(double* address, double val) { return hpb_emu_atomic_add(address, val); }
inline int atomicAdd(int* address, int val) { return hpb_emu_atomic_add(address, val); }
inline unsigned atomicAdd(unsigned* address, unsigned val) { return hpb_emu_atomic_add(address, val); }
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long val) {
    return hpb_emu_atomic_add(address, val);
}

// ---------------------------------------------------------------------------------------
// Math intrinsics (IEEE host versions; the GPU's fast intrinsics are within a few ulp)
// ---------------------------------------------------------------------------------------
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
// IEEE round-to-nearest arithmetic that nvcc never contracts into an FMA (on the host: plain float
// operations; CMakeLists.txt builds with -ffp-contract=off, so the host compiler fuses nothing either).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline int __float_as_int(float x) { return hpb_emu::from_bits<int>(hpb_emu::to_bits(x)); }
inline float __int_as_float(int x) { return hpb_emu::from_bits<float>(hpb_emu::to_bits(x)); }
inline unsigned __float_as_uint(float x) { return hpb_emu::from_bits<unsigned>(hpb_emu::to_bits(x)); }
inline float __uint_as_float(unsigned x) { return hpb_emu::from_bits<float>(hpb_emu::to_bits(x)); }

inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }

template <class T>
inline T __ldg(const T* p) {
    return *p;
}
