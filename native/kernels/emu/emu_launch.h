// emu_launch.h — the emulator's internal C++ launch entry (used by the registry in
// registry.cpp and by the emulator's own self-tests; the public C API is hpb_emu.h).
#pragma once
#include <string>

#include "cuda_emu.h"

namespace hpb_emu {

// A type-erased kernel: unpacks cuLaunchKernel-style args and calls the kernel.
using Thunk = void (*)(void** args);

// Runs `thunk` over the grid; returns HPB_EMU_OK or an HPB_EMU_ERROR_* code (hpb_emu.h) and
// then sets *error.  Thread-safe: launches are serialised.  `sequential`: the kernel has no
// barrier, warp intrinsic or shared memory, so each block's threads run one after another on the
// calling thread (a kernel that calls one of them anyway fails the launch, naming it).
int launch(Thunk thunk, dim3 grid, dim3 block, unsigned shared_bytes, void** args, std::string* error,
           bool sequential = false);

}  // namespace hpb_emu
