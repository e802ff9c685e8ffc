// hpb_emu.h — the C API of libhpbackprop_kernels_emu.so (the host emulator of the HpBackprop
// CUDA kernels).  The C# device-runtime "emulator" implementation P/Invokes these.
//
// Device memory in the emulator is plain host memory: pass host pointers as kernel arguments.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define HPB_EMU_API __declspec(dllexport)
#else
#define HPB_EMU_API __attribute__((visibility("default")))
#endif

// Return codes of hpb_emu_launch.
#define HPB_EMU_OK 0
#define HPB_EMU_ERROR_UNKNOWN_KERNEL 1  // no kernel of that name
#define HPB_EMU_ERROR_BAD_CONFIG 2      // zero/oversized grid or block, too much shared memory
#define HPB_EMU_ERROR_BAD_ARGS 3        // args == NULL or an args[i] == NULL
#define HPB_EMU_ERROR_KERNEL_FAULT 4    // the kernel did something CUDA leaves undefined (see message)

// Runs kernel `kernel` over grid (gx,gy,gz) of blocks (bx,by,bz) with `shared_bytes` of dynamic
// shared memory.  `args` is exactly cuLaunchKernel's kernelParams: args[i] points to the value
// of the i-th kernel parameter.  Blocks run one after another; the threads of a block run
// concurrently on real OS threads.  Launches from several host threads are serialised.
// Returns HPB_EMU_OK or one of the codes above; the message is in hpb_emu_last_error().
HPB_EMU_API int hpb_emu_launch(const char* kernel, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                               unsigned bz, unsigned shared_bytes, void** args);

// Message of the last failed hpb_emu_launch on the calling thread ("" after a success).
HPB_EMU_API const char* hpb_emu_last_error(void);

// The kernels this library contains: count, i-th name (NULL when out of range), i-th
// parameter list as written in kernel_list.h (e.g. "float* params, const float* grads,
// float lr, int count"; NULL when out of range).
HPB_EMU_API int hpb_emu_kernel_count(void);
HPB_EMU_API const char* hpb_emu_kernel_name(int index);
HPB_EMU_API const char* hpb_emu_kernel_signature(int index);

// The byte size of each parameter of the i-th kernel (8 for a pointer or a double, 4 for an int,
// unsigned or float) into sizes[0 .. min(arity, capacity)); returns the arity, or -1 out of range.
HPB_EMU_API int hpb_emu_kernel_arg_sizes(int index, int* sizes, int capacity);

// Largest dynamic shared memory a launch may ask for (the CUDA default without opt-in: 48 KiB).
#define HPB_EMU_MAX_DYNAMIC_SHARED 49152u

#ifdef __cplusplus
}
#endif
