// race_canary.cpp — proves, in the ThreadSanitizer build, that the emulator still lets TSan see
// a missing __syncthreads.  ctest runs it with WILL_FAIL: it must die with a TSan report.
//
// The probe is the first half of a block reduction with barrier (A) deleted: lane 0 of each
// warp stores its warp's value in shared memory and every thread immediately reads the other
// warp's slot.  With the barrier the program is race-free (see selftest); without it TSan
// reports "data race ... partial".  If an emulator change ever adds hidden synchronisation
// between threads (it happened once: libstdc++'s atomic wait uses a process-wide seq_cst
// waiter table), this canary stops failing and the ctest entry turns red.
#include <stdio.h>

#include <string>

#include "cuda_emu.h"
#include "emu_launch.h"

static void racy_probe(void** args) {
    float* out = *static_cast<float**>(args[0]);
    __shared__ float partial[2];
    const unsigned warp = threadIdx.x >> 5, lane = threadIdx.x & 31u;
    if (lane == 0) partial[warp] = (float)warp + 1.0f;
    // __syncthreads();   <- deleted on purpose
    out[threadIdx.x] = partial[warp ^ 1u];
}

int main() {
    float out[64] = {};
    float* p = out;
    void* args[] = {&p};
    std::string error;
    for (int rep = 0; rep < 4; ++rep)
        if (hpb_emu::launch(&racy_probe, dim3(1), dim3(64), 0, args, &error) != 0) {
            printf("launch failed: %s\n", error.c_str());
            return 1;
        }
    printf("no race was reported\n");
    return 0;
}
