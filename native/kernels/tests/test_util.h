// test_util.h — a tiny test harness for the native kernel tests (no framework needed).
//
// Kernels are launched through the emulator's PUBLIC C API (hpb_emu_launch), exactly as the
// C# backend does, but with compile-time typed argument lists generated from kernel_list.h:
//   launch<K::embedding_forward>(grid, block, shared_bytes, embcat, C, Xb, n, B, E);
#pragma once
#include <cmath>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "hpb_emu.h"
#include "step_state.h"

struct Dim {
    unsigned x = 1, y = 1, z = 1;
    Dim(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

// ---- one type per kernel, from the contract -------------------------------------------
namespace K {
#define HPB_KERNEL(kname, ...)                      \
    struct kname {                                  \
        static constexpr const char* name = #kname; \
        using fn = void(__VA_ARGS__);               \
    };
#include "kernel_list.h"
#undef HPB_KERNEL
}  // namespace K

template <class F>
struct Launcher;

template <class... P>
struct Launcher<void(P...)> {
    template <class... A>
    static int go(const char* name, Dim g, Dim b, unsigned shared, A... a) {
        static_assert(sizeof...(A) == sizeof...(P), "wrong number of kernel arguments");
        std::tuple<P...> values(static_cast<P>(a)...);
        return std::apply(
            [&](auto&... v) {
                void* args[] = {static_cast<void*>(&v)..., nullptr};
                return hpb_emu_launch(name, g.x, g.y, g.z, b.x, b.y, b.z, shared, args);
            },
            values);
    }
};

// ---- results ------------------------------------------------------------------------------
struct Stats {
    int passed = 0;
    int failed = 0;
};
Stats& stats();

#define CHECK(cond, ...)                                            \
    do {                                                            \
        if (cond) {                                                 \
            ++stats().passed;                                       \
        } else {                                                    \
            ++stats().failed;                                       \
            printf("FAIL %s:%d: %s — ", __FILE__, __LINE__, #cond); \
            printf(__VA_ARGS__);                                    \
            printf("\n");                                           \
            fflush(stdout);                                         \
        }                                                           \
    } while (0)

// Launches and CHECKs the return code; returns true on success.
template <class Kern, class... A>
bool launch(Dim g, Dim b, unsigned shared, A... a) {
    const int rc = Launcher<typename Kern::fn>::go(Kern::name, g, b, shared, a...);
    CHECK(rc == HPB_EMU_OK, "%s failed (%d): %s", Kern::name, rc, hpb_emu_last_error());
    return rc == HPB_EMU_OK;
}

template <class Kern, class... A>
int launch_rc(Dim g, Dim b, unsigned shared, A... a) {
    return Launcher<typename Kern::fn>::go(Kern::name, g, b, shared, a...);
}

inline unsigned ceil_div(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

// ---- data -----------------------------------------------------------------------------------
struct Rng {
    std::mt19937_64 gen;
    explicit Rng(uint64_t seed) : gen(seed) {}
    std::vector<float> normal(size_t count, float scale = 1.0f, float shift = 0.0f) {
        std::normal_distribution<float> d(0.0f, 1.0f);
        std::vector<float> v(count);
        for (auto& x : v) x = d(gen) * scale + shift;
        return v;
    }
    std::vector<int> ints(size_t count, int lo, int hi) {  // [lo, hi]
        std::uniform_int_distribution<int> d(lo, hi);
        std::vector<int> v(count);
        for (auto& x : v) x = d(gen);
        return v;
    }
};

// ---- comparison -------------------------------------------------------------------------------
// |got - want| <= atol + rtol*|want| elementwise; prints the worst element on failure.
template <class G, class W>
bool close(const char* what, const std::vector<G>& got, const std::vector<W>& want, double atol, double rtol) {
    if (got.size() != want.size()) {
        CHECK(false, "%s: size %zu vs %zu", what, got.size(), want.size());
        return false;
    }
    double worst = -1, maxdiff = 0;
    size_t worst_i = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        const double g = (double)got[i], w = (double)want[i];
        const double diff = fabs(g - w);
        const double excess = std::isnan(g) != std::isnan(w) ? INFINITY : diff - (atol + rtol * fabs(w));
        maxdiff = std::max(maxdiff, std::isnan(diff) ? 0.0 : diff);
        if (excess > worst) {
            worst = excess;
            worst_i = i;
        }
    }
    const bool ok = got.empty() || worst <= 0;
    CHECK(ok, "%s: element %zu got %.9g want %.9g (maxdiff %.3g, atol %.1g rtol %.1g)", what, worst_i,
          got.empty() ? 0.0 : (double)got[worst_i], got.empty() ? 0.0 : (double)want[worst_i], maxdiff, atol, rtol);
    return ok;
}

template <class T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && (a.empty() || memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// ---- guarded buffers ---------------------------------------------------------------------------
// A kernel buffer of `size` elements between two runs of kGuard guard words (bytes 0xA7). Outputs
// are pre-filled with NaN, so an element a kernel leaves unwritten shows up as NaN, and a write
// just before or after the buffer changes a guard word: values() CHECKs the guards.
template <class T>
struct Guarded {
    static constexpr size_t kGuard = 16;
    std::vector<T> store;
    size_t size;

    explicit Guarded(size_t count, T fill = std::numeric_limits<T>::quiet_NaN())
        : store(count + 2 * kGuard, fill), size(count) {
        memset(store.data(), 0xA7, kGuard * sizeof(T));
        memset(store.data() + kGuard + count, 0xA7, kGuard * sizeof(T));
    }
    explicit Guarded(const std::vector<T>& init) : Guarded(init.size()) {
        std::copy(init.begin(), init.end(), store.begin() + kGuard);
    }
    T* data() { return store.data() + kGuard; }
    const T* data() const { return store.data() + kGuard; }
    T& operator[](size_t i) { return store[kGuard + i]; }
    bool guards_intact() const {
        const unsigned char* p = reinterpret_cast<const unsigned char*>(store.data());
        const size_t g = kGuard * sizeof(T), tail = (kGuard + size) * sizeof(T);
        for (size_t b = 0; b < g; ++b)
            if (p[b] != 0xA7 || p[tail + b] != 0xA7) return false;
        return true;
    }
    // The elements, after CHECKing that no guard word was overwritten.
    std::vector<T> values(const char* what = "buffer") const {
        CHECK(guards_intact(), "%s: a kernel wrote outside the buffer's %zu elements", what, size);
        return std::vector<T>(store.begin() + kGuard, store.begin() + kGuard + size);
    }
};

// |got[i] - want[i]| <= tol * scale[i] (+1e-30) elementwise, NaN fails; prints the worst element.
template <class G>
bool close_scaled(const char* what, const std::vector<G>& got, const std::vector<double>& want,
                  const std::vector<double>& scale, double tol) {
    if (got.size() != want.size() || got.size() != scale.size()) {
        CHECK(false, "%s: sizes %zu / %zu / %zu", what, got.size(), want.size(), scale.size());
        return false;
    }
    double worst = 0;
    size_t worst_i = 0;
    bool ok = true;
    for (size_t i = 0; i < got.size(); ++i) {
        const double d = fabs((double)got[i] - want[i]);
        const double ratio = std::isnan(d) ? INFINITY : d / (tol * scale[i] + 1e-30);
        if (ratio > worst) {
            worst = ratio;
            worst_i = i;
        }
        if (!(ratio <= 1.0)) ok = false;
    }
    CHECK(ok, "%s: element %zu got %.9g want %.9g (%.3g x the tolerance %.1g x %.3g)", what, worst_i,
          got.empty() ? 0.0 : (double)got[worst_i], got.empty() ? 0.0 : want[worst_i], worst, tol,
          got.empty() ? 0.0 : scale[worst_i]);
    return ok;
}

// ---- test registry ------------------------------------------------------------------------------
struct TestCase {
    const char* group;
    const char* name;
    void (*fn)();
};
std::vector<TestCase>& registry();
struct Register {
    Register(const char* group, const char* name, void (*fn)()) { registry().push_back({group, name, fn}); }
};
// The activation codes of hpb_common.cuh (0 identity, 1 tanh, 2 relu, 3 sigmoid): their names, y = act(x),
// and act'(x)·dy written from the output y as the kernels do, generic over float (operation for operation
// the kernels' formula) and double (the references).
inline const char* const kActName[] = {"identity", "tanh", "relu", "sigmoid"};

template <class T>
T act_forward(T x, int act) {
    switch (act) {
        case 1:
            return std::tanh(x);
        case 2:
            return x > T(0) ? x : T(0);
        case 3:
            return T(1) / (T(1) + std::exp(-x));
        default:
            return x;
    }
}

template <class T>
T act_backward(T y, T dy, int act) {
    switch (act) {
        case 1:
            return (T(1) - y * y) * dy;
        case 2:
            return y > T(0) ? dy : T(0);
        case 3:
            return y * (T(1) - y) * dy;
        default:
            return dy;
    }
}

// The training step's state (step_state.h) as kernels read it after step_begin: step `current`
// (`next` still equal to it: the step's loss kernel advances it), its learning rate and AdamW terms,
// loss slot `slot`.
inline hpb_step step_at(unsigned long long current, float lr = 0.0f, float step_size = 0.0f, float bc2_sqrt = 1.0f,
                        unsigned slot = 0) {
    hpb_step s{};
    s.next = current;
    s.current = current;
    s.rows = 1;
    s.ring = 1;
    s.slot = slot;
    s.lr = lr;
    s.step_size = step_size;
    s.bc2_sqrt = bc2_sqrt;
    return s;
}

#define TEST(group, name)                                                             \
    static void test_##group##_##name();                                              \
    static Register register_##group##_##name(#group, #name, &test_##group##_##name); \
    static void test_##group##_##name()
