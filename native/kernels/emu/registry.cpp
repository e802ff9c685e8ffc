// registry.cpp — the exported C API of libhpbackprop_kernels_emu.so: launch a kernel by name
// with cuLaunchKernel-style arguments.
//
// The table is generated from kernel_list.h (the same list that declares the prototypes
// every .cu file is checked against), so it cannot drift from the kernels.
#include <string.h>

#include <array>
#include <string>
#include <type_traits>
#include <utility>

#include "../hpb_common.cuh"
#include "emu_launch.h"
#include "hpb_emu.h"

namespace {

template <class... A, size_t... I>
void call_unpacked(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    // args[i] points to the value of parameter i (cuLaunchKernel's kernelParams).
    kernel(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

template <class... A>
constexpr int arity(void (*)(A...)) {
    return (int)sizeof...(A);
}

template <class... A>
constexpr std::array<int, sizeof...(A)> arg_sizes(void (*)(A...)) {
    return {(int)sizeof(A)...};
}

// The byte size of each parameter, so that a caller can copy argument values (the C# emulator's graph
// capture records a launch's arguments as the driver does).
template <auto Kernel>
constexpr auto kArgSizes = arg_sizes(Kernel);

template <auto Kernel>
void thunk(void** args) {
    call_unpacked(Kernel, args, std::make_index_sequence<arity(Kernel)>{});
}

struct KernelEntry {
    const char* name;
    hpb_emu::Thunk thunk;
    int arity;
    const char* signature;
    const int* arg_sizes;
};

#define HPB_KERNEL(name, ...) {#name, &thunk<&name>, arity(&name), #__VA_ARGS__, kArgSizes<&name>.data()},
const KernelEntry kKernels[] = {
#include "../kernel_list.h"
};
#undef HPB_KERNEL
constexpr int kKernelCount = (int)(sizeof kKernels / sizeof kKernels[0]);

// The kernels with no __syncthreads, warp intrinsic or shared memory (elementwise and grid-stride):
// the runtime runs each block's threads one after another on the launching thread (emu_launch.h),
// which costs no thread wake-ups. A kernel listed here that reaches a barrier fails its launch, so a
// wrong entry cannot go unnoticed; a kernel left out only runs slower.
constexpr const char* kBarrierFree[] = {
    "embedding_forward", "embedding_backward_atomic", "embedding_backward_dense", "embedding_backward_segments",
    "batchnorm_finish_mean", "batchnorm_finish_var", "batchnorm_normalize", "batchnorm_backward_dx",
    "batchnorm_inference", "bias_add", "column_finish_sum", "axpy", "step_begin", "sgd_update",
    "sgd_momentum_update", "adamw_update", "activation_forward", "activation_backward", "dropout_forward",
    "dropout_backward", "chain_norm_logits", "chain_counts", "chain_counts_sum_inv", "chain_probs",
    "chain_logprobs", "chain_losses", "chain_dlogprobs", "chain_dprobs", "chain_dcounts_sum", "chain_dcounts",
    "chain_dnorm_logits", "chain_bnmeani", "chain_bndiff", "chain_bndiff2", "chain_bnvar", "chain_bnvar_inv",
    "chain_bnraw", "chain_hpreact", "chain_h", "chain_dhpreact", "chain_dbngain", "chain_dbnraw", "chain_dbnbias",
    "chain_dbnvar_inv", "chain_dbnvar", "chain_dbndiff2", "chain_dbndiff", "chain_dbnmeani", "chain_dhprebn",
};

struct BarrierFree {
    bool of[kKernelCount] = {};
    std::string error;  // a listed name that is no kernel: every launch fails with it
    BarrierFree() {
        for (const char* name : kBarrierFree) {
            int found = -1;
            for (int i = 0; i < kKernelCount; ++i)
                if (strcmp(kKernels[i].name, name) == 0) found = i;
            if (found < 0) error = std::string("registry.cpp: kBarrierFree names '") + name + "', which is no kernel";
            else of[found] = true;
        }
    }
};
const BarrierFree kSequential;

thread_local std::string tl_last_error;

int fail(int code, std::string message) {
    tl_last_error = std::move(message);
    return code;
}

}  // namespace

extern "C" {

HPB_EMU_API int hpb_emu_launch(const char* kernel, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                               unsigned bz, unsigned shared_bytes, void** args) {
    tl_last_error.clear();
    if (!kernel) return fail(HPB_EMU_ERROR_UNKNOWN_KERNEL, "kernel name is NULL");
    const KernelEntry* entry = nullptr;
    for (const KernelEntry& e : kKernels)
        if (strcmp(e.name, kernel) == 0) entry = &e;
    if (!entry) return fail(HPB_EMU_ERROR_UNKNOWN_KERNEL, std::string("unknown kernel '") + kernel + "'");
    if (entry->arity > 0 && !args)
        return fail(HPB_EMU_ERROR_BAD_ARGS,
                    std::string(kernel) + ": args is NULL but the kernel takes (" + entry->signature + ")");
    for (int i = 0; i < entry->arity; ++i)
        if (!args[i])
            return fail(HPB_EMU_ERROR_BAD_ARGS, std::string(kernel) + ": args[" + std::to_string(i) +
                                                    "] is NULL (each entry must point to an argument value)");
    if (!kSequential.error.empty()) return fail(HPB_EMU_ERROR_UNKNOWN_KERNEL, kSequential.error);
    std::string error;
    const int rc = hpb_emu::launch(entry->thunk, dim3(gx, gy, gz), dim3(bx, by, bz), shared_bytes, args, &error,
                                   kSequential.of[entry - kKernels]);
    if (rc != HPB_EMU_OK) return fail(rc, std::string(kernel) + ": " + error);
    return HPB_EMU_OK;
}

HPB_EMU_API const char* hpb_emu_last_error(void) { return tl_last_error.c_str(); }

HPB_EMU_API int hpb_emu_kernel_count(void) { return kKernelCount; }

HPB_EMU_API const char* hpb_emu_kernel_name(int index) {
    return (index >= 0 && index < kKernelCount) ? kKernels[index].name : nullptr;
}

HPB_EMU_API const char* hpb_emu_kernel_signature(int index) {
    return (index >= 0 && index < kKernelCount) ? kKernels[index].signature : nullptr;
}

HPB_EMU_API int hpb_emu_kernel_arg_sizes(int index, int* sizes, int capacity) {
    if (index < 0 || index >= kKernelCount) return -1;
    const KernelEntry& e = kKernels[index];
    for (int i = 0; i < e.arity && i < capacity; ++i) sizes[i] = e.arg_sizes[i];
    return e.arity;
}

}  // extern "C"
