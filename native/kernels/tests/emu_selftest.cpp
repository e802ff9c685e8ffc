// emu_selftest.cpp — the emulator itself: shuffle/ballot semantics, barriers with exited
// threads, shared memory, atomics, error reporting (deadlock, partial-warp masks, bad
// configurations), and the exported C API (names, unknown kernels, NULL args, the kernel
// table against the definitions in the .cu files).
//
// The probe kernels here are compiled against emu/cuda_emu.h and launched through the
// emulator's internal entry (hpb_emu::launch, from the static runtime library).
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "cuda_emu.h"
#include "emu_launch.h"
#include "test_util.h"

// Probes take one pointer argument.
using Probe = void (*)(void*);
template <Probe P>
static int run_probe(dim3 g, dim3 b, unsigned shared, void* data, std::string* error) {
    void* args[] = {&data};
    return hpb_emu::launch([](void** p) { P(*static_cast<void**>(p[0])); }, g, b, shared, args, error);
}

// ---- probes ---------------------------------------------------------------------------------

// out[rank*8 + k]: xor 1, xor 16, down 1, up 3, idx 5, xor 2 width 8, down 4 width 8, idx 3 width 8
static void probe_shuffles(void* p) {
    int* out = static_cast<int*>(p);
    const int r = (int)threadIdx.x;
    const int v = 1000 + r;
    int* o = out + r * 8;
    o[0] = __shfl_xor_sync(0xffffffffu, v, 1);
    o[1] = __shfl_xor_sync(0xffffffffu, v, 16);
    o[2] = __shfl_down_sync(0xffffffffu, v, 1);
    o[3] = __shfl_up_sync(0xffffffffu, v, 3);
    o[4] = __shfl_sync(0xffffffffu, v, 5);
    o[5] = __shfl_xor_sync(0xffffffffu, v, 2, 8);
    o[6] = __shfl_down_sync(0xffffffffu, v, 4, 8);
    o[7] = __shfl_sync(0xffffffffu, v, 3, 8);
}

static void probe_ballot(void* p) {
    unsigned* out = static_cast<unsigned*>(p);
    const unsigned r = threadIdx.x;
    const unsigned b = __ballot_sync(0xffffffffu, (r % 3) == 0);
    const int any = __any_sync(0xffffffffu, r == 40);
    const int all = __all_sync(0xffffffffu, r < 1000);
    if ((r & 31) == 0) {
        out[(r >> 5) * 3 + 0] = b;
        out[(r >> 5) * 3 + 1] = (unsigned)any;
        out[(r >> 5) * 3 + 2] = (unsigned)all;
    }
}

// Threads >= 40 return at once; the rest meet at __syncthreads (exited threads don't count).
static void probe_exit_then_barrier(void* p) {
    int* out = static_cast<int*>(p);
    __shared__ int s[64];
    const int r = (int)threadIdx.x;
    if (r >= 40) return;
    s[r] = r + 1;
    __syncthreads();
    int sum = 0;
    for (int i = 0; i < 40; ++i) sum += s[i];
    out[r] = sum;
}

// Lanes 0..15 of warp 0 wait at __syncthreads, lanes 16..31 at __syncwarp(full): deadlock.
static void probe_deadlock(void* p) {
    (void)p;
    if (threadIdx.x < 16)
        __syncthreads();
    else if (threadIdx.x < 32)
        __syncwarp(0xffffffffu);
}

// A 48-thread block: warp 1 has 16 lanes, a full-mask shuffle there is undefined.
static void probe_partial_warp(void* p) {
    float v = 1.0f;
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    static_cast<float*>(p)[threadIdx.x] = v;
}

// A lane leaves while its warp waits for it in a shuffle.
static void probe_lane_exits(void* p) {
    (void)p;
    if (threadIdx.x == 7) return;
    (void)__shfl_xor_sync(0xffffffffu, 1, 1);
}

// Dynamic shared memory: starts as 0xFF bytes, is exactly the launch's size, is per block.
static void probe_dynamic_shared(void* p) {
    int* out = static_cast<int*>(p);
    int* s = static_cast<int*>(hpb_emu::dynamic_shared_memory());
    const int r = (int)threadIdx.x;
    const int initial = s[r];
    __syncthreads();
    s[r] = (int)blockIdx.x * 100 + r;
    __syncthreads();
    out[blockIdx.x * 64 + r] = (initial == -1) ? s[63 - r] : -12345;
}

// 2-D block: threadIdx ranks x-fastest; blockIdx/gridDim in 3-D.
static void probe_indices(void* p) {
    unsigned* out = static_cast<unsigned*>(p);
    const unsigned rank = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    out[block * (blockDim.x * blockDim.y * blockDim.z) + rank] = block * 1000 + rank;
}

static void probe_atomics(void* p) {
    int* counter = static_cast<int*>(p);
    for (int i = 0; i < 100; ++i) atomicAdd(counter, 1);
    atomicAdd(reinterpret_cast<float*>(counter + 1), 0.5f);
}

// ---- tests -------------------------------------------------------------------------------------

TEST(selftest, shuffles) {
    std::vector<int> out(64 * 8, 0);
    std::string err;
    CHECK(run_probe<probe_shuffles>(dim3(1), dim3(64), 0, out.data(), &err) == HPB_EMU_OK, "%s", err.c_str());
    int bad = 0;
    for (int r = 0; r < 64; ++r) {
        const int lane = r & 31, base = 1000 + (r & ~31), own = 1000 + r;
        const int* o = &out[r * 8];
        const int seg = lane & ~7;
        const int want[8] = {
            base + (lane ^ 1), base + (lane ^ 16), lane + 1 < 32 ? own + 1 : own,      lane >= 3 ? own - 3 : own,
            base + 5,          base + (lane ^ 2),  (lane & 7) + 4 < 8 ? own + 4 : own, base + seg + 3};
        for (int k = 0; k < 8; ++k) bad += (o[k] != want[k]);
    }
    CHECK(bad == 0, "%d shuffle results differ from the CUDA semantics", bad);
}

TEST(selftest, ballot) {
    std::vector<unsigned> out(6, 0);
    std::string err;
    CHECK(run_probe<probe_ballot>(dim3(1), dim3(64), 0, out.data(), &err) == HPB_EMU_OK, "%s", err.c_str());
    unsigned want0 = 0, want1 = 0;
    for (unsigned l = 0; l < 32; ++l) {
        if (l % 3 == 0) want0 |= 1u << l;
        if ((l + 32) % 3 == 0) want1 |= 1u << l;
    }
    CHECK(out[0] == want0 && out[3] == want1, "ballot 0x%08x 0x%08x", out[0], out[3]);
    CHECK(out[1] == 0 && out[4] == 1, "any %u %u", out[1], out[4]);
    CHECK(out[2] == 1 && out[5] == 1, "all %u %u", out[2], out[5]);
}

TEST(selftest, exited_threads_do_not_block_syncthreads) {
    std::vector<int> out(64, 0);
    std::string err;
    CHECK(run_probe<probe_exit_then_barrier>(dim3(3), dim3(64), 0, out.data(), &err) == HPB_EMU_OK, "%s", err.c_str());
    CHECK(out[0] == 820 && out[39] == 820 && out[40] == 0, "got %d %d %d", out[0], out[39], out[40]);
}

TEST(selftest, deadlock_is_reported) {
    std::string err;
    const int rc = run_probe<probe_deadlock>(dim3(2), dim3(64), 0, nullptr, &err);
    CHECK(rc == HPB_EMU_ERROR_KERNEL_FAULT && err.find("deadlock") != std::string::npos, "rc %d: %s", rc, err.c_str());
}

TEST(selftest, partial_warp_mask_is_reported) {
    std::vector<float> out(64);
    std::string err;
    const int rc = run_probe<probe_partial_warp>(dim3(1), dim3(48), 0, out.data(), &err);
    CHECK(rc == HPB_EMU_ERROR_KERNEL_FAULT && err.find("do not exist") != std::string::npos, "rc %d: %s", rc,
          err.c_str());
    // ... and the emulator is usable afterwards.
    CHECK(run_probe<probe_partial_warp>(dim3(1), dim3(64), 0, out.data(), &err) == HPB_EMU_OK, "%s", err.c_str());
}

TEST(selftest, lane_exit_during_shuffle_is_reported) {
    std::string err;
    const int rc = run_probe<probe_lane_exits>(dim3(1), dim3(32), 0, nullptr, &err);
    CHECK(rc == HPB_EMU_ERROR_KERNEL_FAULT, "rc %d: %s", rc, err.c_str());
}

TEST(selftest, dynamic_shared_memory) {
    std::vector<int> out(3 * 64, 0);
    std::string err;
    CHECK(run_probe<probe_dynamic_shared>(dim3(3), dim3(64), 64 * sizeof(int), out.data(), &err) == HPB_EMU_OK, "%s",
          err.c_str());
    int bad = 0;
    for (int b = 0; b < 3; ++b)
        for (int r = 0; r < 64; ++r) bad += out[b * 64 + r] != b * 100 + 63 - r;
    CHECK(bad == 0, "%d dynamic shared memory values wrong (not refilled per block?)", bad);
}

TEST(selftest, indices_in_3d) {
    std::vector<unsigned> out(2 * 3 * 2 * 4 * 3 * 2, 0u);
    std::string err;
    CHECK(run_probe<probe_indices>(dim3(2, 3, 2), dim3(4, 3, 2), 0, out.data(), &err) == HPB_EMU_OK, "%s", err.c_str());
    int bad = 0;
    for (unsigned b = 0; b < 12; ++b)
        for (unsigned r = 0; r < 24; ++r) bad += out[b * 24 + r] != b * 1000 + r;
    CHECK(bad == 0, "%d wrong indices", bad);
}

// Barrier-free launches (the registry's kBarrierFree kernels run each block's threads on the calling thread): every
// thread of every block runs once with its own indices, and a barrier, a warp intrinsic or dynamic shared memory there
// fails the launch naming it (the emulator stays usable).
template <Probe P>
static int run_sequential(dim3 g, dim3 b, unsigned shared, void* data, std::string* error) {
    void* args[] = {&data};
    return hpb_emu::launch([](void** p) { P(*static_cast<void**>(p[0])); }, g, b, shared, args, error, true);
}

static void probe_syncwarp(void* p) {
    (void)p;
    __syncwarp(0xffffffffu);
}

static void probe_shuffle_one(void* p) {
    static_cast<int*>(p)[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}

TEST(selftest, barrier_free_kernels_run_on_the_calling_thread) {
    std::vector<unsigned> out(2 * 3 * 2 * 4 * 3 * 2, 0u);
    std::string err;
    CHECK(run_sequential<probe_indices>(dim3(2, 3, 2), dim3(4, 3, 2), 0, out.data(), &err) == HPB_EMU_OK, "%s",
          err.c_str());
    int bad = 0;
    for (unsigned b = 0; b < 12; ++b)
        for (unsigned r = 0; r < 24; ++r) bad += out[b * 24 + r] != b * 1000 + r;
    CHECK(bad == 0, "%d wrong indices", bad);
    int data[2] = {0, 0};
    CHECK(run_sequential<probe_atomics>(dim3(2), dim3(1024), 0, data, &err) == HPB_EMU_OK, "%s", err.c_str());
    CHECK(data[0] == 2 * 1024 * 100, "counter %d", data[0]);
    std::vector<int> ints(3 * 64, 0);
    int rc = run_sequential<probe_exit_then_barrier>(dim3(1), dim3(64), 0, ints.data(), &err);
    CHECK(rc == HPB_EMU_ERROR_KERNEL_FAULT && err.find("__syncthreads") != std::string::npos &&
              err.find("kBarrierFree") != std::string::npos,
          "rc %d: %s", rc, err.c_str());
    rc = run_sequential<probe_syncwarp>(dim3(1), dim3(32), 0, nullptr, &err);
    CHECK(rc == HPB_EMU_ERROR_KERNEL_FAULT && err.find("__syncwarp") != std::string::npos, "rc %d: %s", rc, err.c_str());
    rc = run_sequential<probe_shuffle_one>(dim3(1), dim3(32), 0, ints.data(), &err);
    CHECK(rc == HPB_EMU_ERROR_KERNEL_FAULT && err.find("__shfl") != std::string::npos, "rc %d: %s", rc, err.c_str());
    rc = run_sequential<probe_dynamic_shared>(dim3(1), dim3(64), 64 * sizeof(int), ints.data(), &err);
    CHECK(rc == HPB_EMU_ERROR_KERNEL_FAULT && err.find("dynamic shared memory") != std::string::npos, "rc %d: %s", rc,
          err.c_str());
    // and the threaded launches still work, indices and all
    CHECK(run_probe<probe_indices>(dim3(2, 3, 2), dim3(4, 3, 2), 0, out.data(), &err) == HPB_EMU_OK, "%s", err.c_str());
}

TEST(large_blocks, emu_atomics_1024_threads) {
    int data[2] = {0, 0};
    std::string err;
    CHECK(run_probe<probe_atomics>(dim3(2), dim3(1024), 0, data, &err) == HPB_EMU_OK, "%s", err.c_str());
    float f;
    memcpy(&f, &data[1], sizeof f);
    CHECK(data[0] == 2 * 1024 * 100 && f == 1024.0f, "counter %d float %g", data[0], f);
}

TEST(selftest, bad_configurations) {
    std::string err;
    CHECK(run_probe<probe_atomics>(dim3(0), dim3(32), 0, nullptr, &err) == HPB_EMU_ERROR_BAD_CONFIG, "grid 0");
    CHECK(run_probe<probe_atomics>(dim3(1), dim3(1025), 0, nullptr, &err) == HPB_EMU_ERROR_BAD_CONFIG, "1025 threads");
    CHECK(run_probe<probe_atomics>(dim3(1), dim3(32, 32, 2), 0, nullptr, &err) == HPB_EMU_ERROR_BAD_CONFIG, "2048");
    CHECK(run_probe<probe_atomics>(dim3(1, 70000), dim3(32), 0, nullptr, &err) == HPB_EMU_ERROR_BAD_CONFIG, "grid.y");
    CHECK(run_probe<probe_atomics>(dim3(1), dim3(32), 49153, nullptr, &err) == HPB_EMU_ERROR_BAD_CONFIG, "shared");
}

// ---- the exported C API --------------------------------------------------------------------------

TEST(selftest, api_errors) {
    float x = 0;
    float* px = &x;
    void* args[] = {&px, &px, nullptr, nullptr};
    CHECK(hpb_emu_launch("no_such_kernel", 1, 1, 1, 32, 1, 1, 0, args) == HPB_EMU_ERROR_UNKNOWN_KERNEL, "unknown");
    CHECK(std::string(hpb_emu_last_error()).find("no_such_kernel") != std::string::npos, "%s", hpb_emu_last_error());
    CHECK(hpb_emu_launch(nullptr, 1, 1, 1, 32, 1, 1, 0, args) == HPB_EMU_ERROR_UNKNOWN_KERNEL, "NULL name");
    CHECK(hpb_emu_launch("sgd_update", 1, 1, 1, 32, 1, 1, 0, nullptr) == HPB_EMU_ERROR_BAD_ARGS, "NULL args");
    CHECK(hpb_emu_launch("sgd_update", 1, 1, 1, 32, 1, 1, 0, args) == HPB_EMU_ERROR_BAD_ARGS, "NULL args[2]");
    hpb_step st = step_at(0, 0.5f);
    hpb_step* pst = &st;
    int count = 1;
    float g = 2.0f;
    float* pg = &g;
    void* good[] = {&px, &pg, &pst, &count};
    CHECK(hpb_emu_launch("sgd_update", 1, 1, 1, 2048, 1, 1, 0, good) == HPB_EMU_ERROR_BAD_CONFIG, "2048 threads");
    CHECK(hpb_emu_launch("sgd_update", 1, 1, 1, 32, 1, 1, 0, good) == HPB_EMU_OK, "%s", hpb_emu_last_error());
    CHECK(x == -1.0f && hpb_emu_last_error()[0] == 0, "x = %g", x);
    CHECK(hpb_emu_kernel_name(-1) == nullptr && hpb_emu_kernel_name(hpb_emu_kernel_count()) == nullptr, "range");
}

// The parameter sizes the C# graph capture copies: pointers and doubles 8, ints, unsigneds and floats 4.
TEST(selftest, kernel_arg_sizes) {
    int sizes[24];
    bool found_sum_finish = false, found_adamw = false;
    for (int i = 0; i < hpb_emu_kernel_count(); ++i) {
        const int arity = hpb_emu_kernel_arg_sizes(i, sizes, 24);
        CHECK(arity > 0 && arity <= 24, "%s: arity %d", hpb_emu_kernel_name(i), arity);
        const std::string name = hpb_emu_kernel_name(i);
        if (name == "sum_finish") {
            // const double* partial, int count, double scale, float* out, hpb_step* step, int accumulate
            const int want[] = {8, 4, 8, 8, 8, 4};
            CHECK(arity == 6 && std::equal(want, want + 6, sizes), "sum_finish sizes");
            found_sum_finish = true;
        }
        if (name == "adamw_update") {
            const int want[] = {8, 8, 8, 8, 4, 8, 4, 4, 4, 4, 4, 4};
            CHECK(arity == 12 && std::equal(want, want + 12, sizes), "adamw_update sizes");
            found_adamw = true;
        }
    }
    CHECK(found_sum_finish && found_adamw, "kernels not found");
    CHECK(hpb_emu_kernel_arg_sizes(-1, sizes, 16) == -1 && hpb_emu_kernel_arg_sizes(hpb_emu_kernel_count(), sizes, 16) == -1,
          "range");
    CHECK(hpb_emu_kernel_arg_sizes(0, sizes, 0) > 0, "capacity 0 still returns the arity");
}

// Every `extern "C" __global__ void [__launch_bounds__(...)] NAME(` in the .cu files is in the table, and vice versa.
TEST(selftest, kernel_table_matches_sources) {
    std::set<std::string> in_sources, in_table;
    const char* files[] = {"embedding.cu",  "batchnorm.cu", "cross_entropy.cu", "linear.cu",      "optimizer.cu",
                           "activation.cu", "layernorm.cu", "dropout.cu",       "atomic_chain.cu"};
    const std::regex def(R"(extern "C" __global__ void (?:__launch_bounds__\([^)]*\) )?(\w+)\()");
    for (const char* f : files) {
        std::ifstream in(std::string(HPB_KERNELS_DIR) + "/" + f);
        CHECK(in.good(), "cannot read %s", f);
        std::stringstream ss;
        ss << in.rdbuf();
        const std::string text = ss.str();
        for (std::sregex_iterator it(text.begin(), text.end(), def), end; it != end; ++it) in_sources.insert((*it)[1]);
    }
    for (int i = 0; i < hpb_emu_kernel_count(); ++i) {
        in_table.insert(hpb_emu_kernel_name(i));
        CHECK(hpb_emu_kernel_signature(i) && hpb_emu_kernel_signature(i)[0], "signature of %s", hpb_emu_kernel_name(i));
    }
    CHECK(in_sources == in_table, "%zu kernels defined in the .cu files, %zu in the emulator table", in_sources.size(),
          in_table.size());
    CHECK(in_table.size() >= 69, "only %zu kernels", in_table.size());
}
