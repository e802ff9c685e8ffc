// test_util.h — a tiny test harness for the native kernel tests (no framework needed).
//
// Kernels are launched through the emulator's PUBLIC C API (hpb_emu_launch), exactly as the
// C# backend does, but with compile-time typed argument lists generated from kernel_list.h:
//   launch<K::embedding_forward>(grid, block, shared_bytes, embcat, C, Xb, n, B, E);
#pragma once

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <functional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "hpb_emu.h"

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
#define TEST(group, name)                                                             \
    static void test_##group##_##name();                                              \
    static Register register_##group##_##name(#group, #name, &test_##group##_##name); \
    static void test_##group##_##name()
