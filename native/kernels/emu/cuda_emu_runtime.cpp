// cuda_emu_runtime.cpp — the emulator's execution model.
//
// * A launch runs its blocks one after another (so `static` is a correct __shared__).
// * A block of T threads runs on T pool threads at once; worker r always plays thread rank r.
//   The pool grows to the largest block seen and is reused by every later launch.
// * A kernel the registry lists as barrier-free (no __syncthreads, warp intrinsic or shared
//   memory: the elementwise and grid-stride kernels) runs each block's threads one after another
//   on the launching thread instead: no thread can wait for another there, so the order is
//   unobservable, and a launch costs no wake-ups. Such a kernel that reaches a barrier, a warp
//   intrinsic or dynamic shared memory fails the launch with a message naming what it called.
// * __syncthreads is a real barrier over the block's live threads (threads that returned from
//   the kernel no longer count, as on Volta+ hardware); warp-synchronous intrinsics are real
//   barriers over the lanes of their mask with an exchange of values.
// * Everything CUDA leaves undefined that the emulator can see — a shuffle mask naming lanes
//   that don't exist or have exited, lanes of a warp in different warp intrinsics at once, a
//   deadlock (every live thread waiting and no barrier able to complete) — aborts the launch
//   with a message instead of hanging or inventing a value.
// * Synchronisation is a mutex per barrier (the block barrier, each warp) plus a per-thread
//   "parker" (an atomic flag + futex wait): the thread completing a barrier hands each waiter
//   its result and unparks it, so a waiter wakes exactly once and takes no lock again.
//   ThreadSanitizer therefore sees exactly the happens-before edges CUDA guarantees
//   (barriers, shuffles) and nothing more: a missing __syncthreads in a kernel is reported as
//   a data race on the __shared__ array.
// * Deadlock detection is exact: (live threads, blocked threads) is one 64-bit atomic, so the
//   thread whose update makes blocked == live knows that nobody is left to release anyone.
#include <linux/futex.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "cuda_emu.h"
#include "emu_launch.h"
#include "hpb_emu.h"

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace hpb_emu {
namespace {

struct EmuAbort {};  // unwinds a kernel thread once the launch has failed

enum WarpOpKind { kNone = 0, kSyncwarp = 1, kShuffle = 2, kBallot = 3 };

const char* kind_name(int kind) {
    switch (kind) {
        case kSyncwarp:
            return "__syncwarp";
        case kShuffle:
            return "__shfl_*_sync";
        case kBallot:
            return "__ballot/__any/__all_sync";
        default:
            return "?";
    }
}

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

// One thread sleeps in park() until another calls unpark() (a token: an unpark before the
// park is not lost).  Release/acquire on the token orders everything the unparker did
// before unpark() before everything the parked thread does after park().
//
// Sleeping is a raw futex on the token, NOT std::atomic::wait: libstdc++ implements that with
// a process-wide table of waiter counters updated with seq_cst read-modify-writes, which
// ThreadSanitizer sees as synchronisation between unrelated threads — enough to hide a
// missing __syncthreads.  Here the only synchronisation is the token itself.
struct Parker {
    std::atomic<uint32_t> token{0};
    void park() {
        while (token.exchange(0, std::memory_order_acquire) == 0)
            syscall(SYS_futex, reinterpret_cast<uint32_t*>(&token), FUTEX_WAIT_PRIVATE, 0u, nullptr, nullptr, 0);
    }
    void unpark() {
        token.store(1, std::memory_order_release);
        syscall(SYS_futex, reinterpret_cast<uint32_t*>(&token), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
    }
    void reset() { token.store(0, std::memory_order_relaxed); }
};
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "futex word");

// Per kernel-thread synchronisation slot (indexed by thread rank).
struct alignas(64) ThreadSlot {
    Parker parker;
    // Set (release) by the thread completing the barrier or warp operation this thread waits at, after it
    // wrote `result`; read (acquire) by the woken thread.  A thread can also be woken by an aborting launch
    // (fail() unparks everyone), so the park token alone does not order `result`: this flag does.
    std::atomic<bool> released{false};
    uint64_t result = 0;    // the value a warp operation hands back to this lane
};

struct WarpState {
    std::mutex m;
    unsigned exists = 0;    // lanes present in the block
    unsigned live = 0;      // lanes that have not returned from the kernel
    unsigned expected = 0;  // mask of the pending warp operation (0: none)
    unsigned arrived = 0;   // lanes that have arrived at it
    int kind = kNone;
    uint64_t bits[32]{};  // deposited values
    int src[32]{};        // lane each lane reads (-1: its own)
};

// counts = live << 32 | blocked.  Every access is RELAXED on purpose: only the atomicity of
// the read-modify-writes matters (deadlock detection reads the value its own RMW produced),
// and an acquire/release on one atomic that every thread touches would give
// ThreadSanitizer a happens-before edge between any two threads of the block — hiding
// exactly the missing-__syncthreads races the emulator exists to expose.
constexpr uint64_t kLiveOne = 1ull << 32;

struct BlockState {
    unsigned threads = 0;  // T
    std::atomic<uint64_t> counts{0};
    std::atomic<bool> aborted{false};
    std::mutex error_m;
    std::string error;
    // __syncthreads
    std::mutex bar_m;
    unsigned bar_arrived = 0;
    std::vector<unsigned> bar_waiters;
    WarpState warps[32];
    std::unique_ptr<ThreadSlot[]> slots;

    explicit BlockState(unsigned nthreads) : threads(nthreads), slots(new ThreadSlot[nthreads]) {
        bar_waiters.reserve(nthreads);
    }

    void reset() {
        counts.store((uint64_t)threads << 32, std::memory_order_relaxed);
        aborted.store(false, std::memory_order_relaxed);
        error.clear();
        bar_arrived = 0;
        bar_waiters.clear();
        for (unsigned w = 0; w < 32; ++w) {
            WarpState& ws = warps[w];
            const unsigned first = w * 32;
            unsigned mask = 0;
            if (first < threads) mask = (threads - first >= 32) ? 0xffffffffu : ((1u << (threads - first)) - 1u);
            ws.exists = ws.live = mask;
            ws.expected = ws.arrived = 0;
            ws.kind = kNone;
        }
        for (unsigned r = 0; r < threads; ++r) {
            slots[r].parker.reset();
            slots[r].released.store(false, std::memory_order_relaxed);
        }
    }

    // First failure wins; every parked thread is woken and unwinds.
    void abort(const std::string& message) {
        {
            std::lock_guard<std::mutex> lk(error_m);
            if (aborted.load(std::memory_order_relaxed)) return;
            error = message;
            aborted.store(true, std::memory_order_release);
        }
        for (unsigned r = 0; r < threads; ++r) slots[r].parker.unpark();
    }
};

struct Job {
    Thunk thunk;
    void** args;
    BlockState* block;
    void* dynamic_shared;
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
};

struct ThreadCtx {
    BlockState* block = nullptr;
    ThreadSlot* slot = nullptr;
    void* dynamic_shared = nullptr;
    unsigned rank = 0, lane = 0, warp = 0;
    bool sequential = false;  // a barrier-free kernel run on the launching thread
};
thread_local ThreadCtx tl_ctx;

[[noreturn]] void fail(BlockState& b, const std::string& message) {
    b.abort(message);
    throw EmuAbort{};
}

std::string describe_deadlock(BlockState& b, uint64_t counts) {
    // Called when nobody can move any more: reading the barrier states without their
    // locks is only for the message.
    std::string s = format("deadlock: all %u live threads of the block are waiting and no barrier can complete",
                           (unsigned)(counts >> 32));
    s += " - a __syncthreads or warp intrinsic not reached by every thread it needs";
    (void)b;
    return s;
}

// The calling thread registers as blocked (its barrier lock held) and then parks.  Returns
// normally when released; throws EmuAbort when the launch failed meanwhile.
void block_and_park(BlockState& b, std::unique_lock<std::mutex>& lk) {
    const uint64_t c = b.counts.fetch_add(1, std::memory_order_relaxed) + 1;
    if ((uint32_t)c == (uint32_t)(c >> 32)) {
        lk.unlock();
        fail(b, describe_deadlock(b, c));
    }
    lk.unlock();
    ThreadSlot& me = *tl_ctx.slot;
    me.parker.park();
    if (!me.released.load(std::memory_order_acquire)) throw EmuAbort{};
    me.released.store(false, std::memory_order_relaxed);
}

// Releases the threads waiting at __syncthreads (bar_m held).
void release_block_barrier_locked(BlockState& b) {
    const unsigned n = (unsigned)b.bar_waiters.size();
    for (unsigned r : b.bar_waiters) b.slots[r].released.store(true, std::memory_order_release);
    b.counts.fetch_sub(n, std::memory_order_relaxed);
    b.bar_arrived = 0;
    for (unsigned r : b.bar_waiters) b.slots[r].parker.unpark();
    b.bar_waiters.clear();
}

// ---------------------------------------------------------------------------------------
// Warp-synchronous operation: barrier over `mask` + exchange of one 64-bit value per lane.
// ---------------------------------------------------------------------------------------
uint64_t warp_op(unsigned mask, int kind, uint64_t bits, int src_lane) {
    ThreadCtx& c = tl_ctx;
    BlockState& b = *c.block;
    WarpState& w = b.warps[c.warp];
    const unsigned bit = 1u << c.lane;
    std::unique_lock<std::mutex> lk(w.m);
    if (b.aborted.load(std::memory_order_acquire)) throw EmuAbort{};
    const char* problem = nullptr;
    std::string message;
    if (!(mask & bit))
        message = format("lane %u of warp %u calls %s with mask 0x%08x, which does not include the lane", c.lane,
                         c.warp, kind_name(kind), mask);
    else if (mask & ~w.exists)
        message = format(
            "%s mask 0x%08x names lanes that do not exist: warp %u of this %u-thread block has lanes "
            "0x%08x (use whole warps, or a mask of the existing lanes)",
            kind_name(kind), mask, c.warp, b.threads, w.exists);
    else if (mask & ~w.live)
        message = format("%s mask 0x%08x in warp %u names lanes 0x%08x that have already returned", kind_name(kind),
                         mask, c.warp, mask & ~w.live);
    else if (src_lane >= 32 || (src_lane >= 0 && !(mask & (1u << src_lane))))
        message = format("lane %u of warp %u reads lane %d, which is not in the shuffle mask 0x%08x (undefined value)",
                         c.lane, c.warp, src_lane, mask);
    else if (w.arrived != 0 && (w.expected != mask || w.kind != kind))
        message = format(
            "divergent warp-synchronous calls in warp %u: lanes 0x%08x are in %s with mask 0x%08x while "
            "lane %u calls %s with mask 0x%08x",
            c.warp, w.arrived, kind_name(w.kind), w.expected, c.lane, kind_name(kind), mask);
    (void)problem;
    if (!message.empty()) {
        lk.unlock();
        fail(b, message);
    }
    if (w.arrived == 0) {
        w.expected = mask;
        w.kind = kind;
    }
    w.bits[c.lane] = bits;
    w.src[c.lane] = src_lane;
    w.arrived |= bit;
    if (w.arrived != mask) {
        block_and_park(b, lk);
        return c.slot->result;
    }

    // Last lane: compute every lane's result, release the others.
    unsigned ballot = 0;
    if (kind == kBallot)
        for (unsigned l = 0; l < 32; ++l)
            if ((mask & (1u << l)) && w.bits[l]) ballot |= 1u << l;
    const unsigned base = c.warp * 32;
    uint64_t own = 0;
    unsigned waiters = 0;
    for (unsigned l = 0; l < 32; ++l) {
        if (!(mask & (1u << l))) continue;
        const uint64_t r = (kind == kBallot) ? ballot : w.bits[w.src[l] >= 0 ? w.src[l] : (int)l];
        if (l == c.lane) {
            own = r;
        } else {
            b.slots[base + l].result = r;
            b.slots[base + l].released.store(true, std::memory_order_release);
            ++waiters;
        }
    }
    w.arrived = 0;
    w.expected = 0;
    w.kind = kNone;
    b.counts.fetch_sub(waiters, std::memory_order_relaxed);
    for (unsigned l = 0; l < 32; ++l)
        if ((mask & (1u << l)) && l != c.lane) b.slots[base + l].parker.unpark();
    return own;
}

// ---------------------------------------------------------------------------------------
// Thread pool
// ---------------------------------------------------------------------------------------
void run_thread(const Job& job, unsigned rank);

struct Completion {
    std::atomic<unsigned> finished{0};
    Parker parker;
};

class Pool {
 public:
    ~Pool() {
        for (auto& w : workers_) {
            w->quit.store(true, std::memory_order_release);
            w->parker.unpark();
        }
        for (auto& w : workers_) pthread_join(w->thread, nullptr);
    }

    // Grows the pool to n workers; false if the OS refuses a thread.
    bool ensure(unsigned n) {
        while (workers_.size() < n) {
            auto w = std::make_unique<Worker>();
            w->rank = (unsigned)workers_.size();
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setstacksize(&attr, 4u << 20);  // sanitizer builds want room
            const int rc = pthread_create(&w->thread, &attr, &Pool::main, w.get());
            pthread_attr_destroy(&attr);
            if (rc != 0) return false;
            workers_.push_back(std::move(w));
        }
        return true;
    }

    void dispatch(unsigned rank, const Job* job) {
        Worker& w = *workers_[rank];
        w.job = job;  // published by unpark (release)
        w.parker.unpark();
    }

    Completion completion;

 private:
    struct Worker {
        pthread_t thread{};
        Parker parker;
        const Job* job = nullptr;
        std::atomic<bool> quit{false};
        unsigned rank = 0;
    };

    static void* main(void* p) {
        Worker& w = *static_cast<Worker*>(p);
        for (;;) {
            w.parker.park();
            if (w.quit.load(std::memory_order_acquire)) return nullptr;
            const Job* job = w.job;
            w.job = nullptr;
            if (job) run_thread(*job, w.rank);
        }
    }

    std::vector<std::unique_ptr<Worker>> workers_;
};

Pool& pool() {
    static Pool instance;
    return instance;
}

void thread_exit(BlockState& b, unsigned lane, unsigned warp) {
    {
        std::lock_guard<std::mutex> bar_lock(b.bar_m);
        std::lock_guard<std::mutex> warp_lock(b.warps[warp].m);
        WarpState& w = b.warps[warp];
        const unsigned bit = 1u << lane;
        const uint64_t c = b.counts.fetch_sub(kLiveOne, std::memory_order_relaxed) - kLiveOne;
        const unsigned live = (unsigned)(c >> 32), blocked = (unsigned)c;
        w.live &= ~bit;
        if (!b.aborted.load(std::memory_order_acquire)) {
            if ((w.expected & bit) && !(w.arrived & bit)) {
                b.abort(format("lane %u of warp %u returned while the warp's %s with mask 0x%08x waits for it", lane,
                               warp, kind_name(w.kind), w.expected));
            } else if (b.bar_arrived > 0 && b.bar_arrived == live) {
                release_block_barrier_locked(b);  // exited threads no longer count (Volta+ behaviour)
            } else if (live > 0 && blocked == live) {
                b.abort(describe_deadlock(b, c));
            }
        }
    }
    Completion& done = pool().completion;
    done.finished.fetch_add(1, std::memory_order_acq_rel);
    done.parker.unpark();
}

void run_thread(const Job& job, unsigned rank) {
    const unsigned bx = job.block_dim.x, by = job.block_dim.y;
    threadIdx = uint3{rank % bx, (rank / bx) % by, rank / (bx * by)};
    blockIdx = job.block_idx;
    blockDim = job.block_dim;
    gridDim = job.grid_dim;
    ThreadCtx& c = tl_ctx;
    c.block = job.block;
    c.slot = &job.block->slots[rank];
    c.dynamic_shared = job.dynamic_shared;
    c.rank = rank;
    c.lane = rank & 31u;
    c.warp = rank >> 5;
    try {
        job.thunk(job.args);
    } catch (const EmuAbort&) {
    } catch (const std::exception& e) {
        job.block->abort(std::string("exception in kernel thread: ") + e.what());
    } catch (...) {
        job.block->abort("unknown exception in kernel thread");
    }
    BlockState& b = *job.block;
    c.block = nullptr;
    c.slot = nullptr;
    c.dynamic_shared = nullptr;
    thread_exit(b, rank & 31u, rank >> 5);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Hooks used by cuda_emu.h
// ---------------------------------------------------------------------------------------
// A barrier-free launch (run on one thread) that reaches a synchronisation point fails.
static void refuse_in_sequential(const char* what) {
    if (tl_ctx.sequential)
        fail(*tl_ctx.block, format("%s in a kernel the registry lists as barrier-free (registry.cpp: kBarrierFree)", what));
}

void syncthreads() {
    refuse_in_sequential("__syncthreads");
    BlockState& b = *tl_ctx.block;
    std::unique_lock<std::mutex> lk(b.bar_m);
    if (b.aborted.load(std::memory_order_acquire)) throw EmuAbort{};
    const unsigned live = (unsigned)(b.counts.load(std::memory_order_relaxed) >> 32);
    if (++b.bar_arrived == live) {
        release_block_barrier_locked(b);
        return;
    }
    b.bar_waiters.push_back(tl_ctx.rank);
    block_and_park(b, lk);
}

void syncwarp(unsigned mask) {
    refuse_in_sequential("__syncwarp");
    warp_op(mask, kSyncwarp, 0, -1);
}

uint64_t warp_shuffle(unsigned mask, uint64_t bits, int src_lane) {
    refuse_in_sequential("__shfl_*_sync");
    return warp_op(mask, kShuffle, bits, src_lane);
}

unsigned warp_ballot(unsigned mask, bool pred) {
    refuse_in_sequential("__ballot/__any/__all_sync");
    return (unsigned)warp_op(mask, kBallot, pred ? 1u : 0u, -1);
}

unsigned lane_id() { return tl_ctx.lane; }

void* dynamic_shared_memory() {
    refuse_in_sequential("dynamic shared memory");
    return tl_ctx.dynamic_shared;
}

// ---------------------------------------------------------------------------------------
// Launch
// ---------------------------------------------------------------------------------------
namespace {

// A barrier-free kernel: every block's threads, rank by rank, on the calling thread.
int launch_sequential(Thunk thunk, dim3 grid, dim3 block, unsigned shared_bytes, void** args, std::string* error,
                      unsigned T) {
    std::unique_ptr<unsigned char, void (*)(unsigned char*)> dyn(
        static_cast<unsigned char*>(::operator new(shared_bytes, std::align_val_t(16))),
        [](unsigned char* q) { ::operator delete(q, std::align_val_t(16)); });
    auto state = std::make_unique<BlockState>(T);
    ThreadCtx& c = tl_ctx;
    const ThreadCtx saved = c;
    const uint3 saved_thread = threadIdx, saved_block = blockIdx;
    const dim3 saved_block_dim = blockDim, saved_grid_dim = gridDim;
    blockDim = block;
    gridDim = grid;
    int rc = HPB_EMU_OK;
    for (unsigned z = 0; z < grid.z && rc == HPB_EMU_OK; ++z)
        for (unsigned y = 0; y < grid.y && rc == HPB_EMU_OK; ++y)
            for (unsigned x = 0; x < grid.x && rc == HPB_EMU_OK; ++x) {
                state->reset();
                blockIdx = uint3{x, y, z};
                for (unsigned r = 0; r < T && !state->aborted.load(std::memory_order_relaxed); ++r) {
                    threadIdx = uint3{r % block.x, (r / block.x) % block.y, r / (block.x * block.y)};
                    c.block = state.get();
                    c.slot = &state->slots[r];
                    c.dynamic_shared = dyn.get();
                    c.rank = r;
                    c.lane = r & 31u;
                    c.warp = r >> 5;
                    c.sequential = true;
                    try {
                        thunk(args);
                    } catch (const EmuAbort&) {
                    } catch (const std::exception& e) {
                        state->abort(std::string("exception in kernel thread: ") + e.what());
                    } catch (...) {
                        state->abort("unknown exception in kernel thread");
                    }
                }
                if (state->aborted.load(std::memory_order_acquire)) {
                    *error = format("kernel fault in block (%u,%u,%u) of grid (%u,%u,%u), block (%u,%u,%u): ", x, y, z,
                                    grid.x, grid.y, grid.z, block.x, block.y, block.z) +
                             state->error;
                    rc = HPB_EMU_ERROR_KERNEL_FAULT;
                }
            }
    c = saved;
    threadIdx = saved_thread;
    blockIdx = saved_block;
    blockDim = saved_block_dim;
    gridDim = saved_grid_dim;
    return rc;
}

}  // namespace

int launch(Thunk thunk, dim3 grid, dim3 block, unsigned shared_bytes, void** args, std::string* error,
           bool sequential) {
    static std::mutex launch_mutex;
    std::lock_guard<std::mutex> launch_lock(launch_mutex);

    const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0) {
        *error = format("bad launch configuration: grid (%u,%u,%u) block (%u,%u,%u) has a zero dimension", grid.x,
                        grid.y, grid.z, block.x, block.y, block.z);
        return HPB_EMU_ERROR_BAD_CONFIG;
    }
    if (threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) {
        *error = format("bad launch configuration: block (%u,%u,%u) exceeds 1024 threads or (1024,1024,64)", block.x,
                        block.y, block.z);
        return HPB_EMU_ERROR_BAD_CONFIG;
    }
    if (grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u) {
        *error =
            format("bad launch configuration: grid (%u,%u,%u) exceeds (2^31-1, 65535, 65535)", grid.x, grid.y, grid.z);
        return HPB_EMU_ERROR_BAD_CONFIG;
    }
    if (shared_bytes > HPB_EMU_MAX_DYNAMIC_SHARED) {
        *error = format("bad launch configuration: %u bytes of dynamic shared memory exceed the %u-byte default limit",
                        shared_bytes, HPB_EMU_MAX_DYNAMIC_SHARED);
        return HPB_EMU_ERROR_BAD_CONFIG;
    }
    const unsigned T = (unsigned)threads;
    if (sequential) return launch_sequential(thunk, grid, block, shared_bytes, args, error, T);
    Pool& p = pool();
    if (!p.ensure(T)) {
        *error = format("the host refused to create %u threads for one block", T);
        return HPB_EMU_ERROR_BAD_CONFIG;
    }

    // Exactly shared_bytes, so AddressSanitizer reports any access past the launch's request.
    std::unique_ptr<unsigned char, void (*)(unsigned char*)> dyn(
        static_cast<unsigned char*>(::operator new(shared_bytes, std::align_val_t(16))),
        [](unsigned char* q) { ::operator delete(q, std::align_val_t(16)); });
    auto state = std::make_unique<BlockState>(T);

    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                state->reset();
                memset(dyn.get(), 0xFF, shared_bytes);  // shared memory starts as garbage (NaN)
                const Job job{thunk, args, state.get(), dyn.get(), uint3{x, y, z}, block, grid};
                p.completion.finished.store(0, std::memory_order_relaxed);
                p.completion.parker.reset();
                for (unsigned r = 0; r < T; ++r) p.dispatch(r, &job);
                while (p.completion.finished.load(std::memory_order_acquire) != T) p.completion.parker.park();
                if (state->aborted.load(std::memory_order_acquire)) {
                    *error = format("kernel fault in block (%u,%u,%u) of grid (%u,%u,%u), block (%u,%u,%u): ", x, y, z,
                                    grid.x, grid.y, grid.z, block.x, block.y, block.z) +
                             state->error;
                    return HPB_EMU_ERROR_KERNEL_FAULT;
                }
            }
    return HPB_EMU_OK;
}

}  // namespace hpb_emu
