// test_cross_entropy.cpp — fused cross-entropy (warp-per-row and block-per-row) and its mean loss
// (sum_partials + sum_finish), against a double reference of docs/makemore.md §4.
#include <math.h>

#include "test_util.h"

namespace {

struct CeRef {
    std::vector<double> losses, dlogits;
    double loss = 0;
};

CeRef ce_ref(const std::vector<float>& logits, const std::vector<int>& Yb, int n, int V) {
    CeRef r;
    r.losses.resize(n);
    r.dlogits.resize((size_t)n * V);
    for (int i = 0; i < n; ++i) {
        const float* x = &logits[(size_t)i * V];
        double m = -INFINITY;
        for (int j = 0; j < V; ++j) m = std::max(m, (double)x[j]);
        double s = 0;
        for (int j = 0; j < V; ++j) s += exp(x[j] - m);
        r.losses[i] = log(s) + m - x[Yb[i]];
        r.loss += r.losses[i] / n;
        for (int j = 0; j < V; ++j) r.dlogits[(size_t)i * V + j] = (exp(x[j] - m) / s - (j == Yb[i])) / n;
    }
    return r;
}

struct Variant {
    const char* name;
    bool block;
    unsigned threads;
    unsigned grid_cap;
};

bool run_ce(const Variant& v, const float* logits, const int* Yb, float* dlogits, float* losses, int n, int V) {
    if (v.block)
        return launch<K::cross_entropy_block>(Dim(std::min((unsigned)n, v.grid_cap)), Dim(v.threads), 0, logits, Yb,
                                              dlogits, losses, n, V);
    return launch<K::cross_entropy_warp>(Dim(std::min(ceil_div(n, v.threads / 32), v.grid_cap)), Dim(v.threads), 0,
                                         logits, Yb, dlogits, losses, n, V);
}

}  // namespace

struct Case {
    Variant v;
    int n, V;
    bool all_modes;  // also in place, forward only, backward only
};
void check_case(Rng& rng, const Case& cs);

// Every n in {2,3,31,33,1000} and V in {27,1000,50000} through both kernels, block sizes from
// one warp up (1024 threads: group large_blocks), capped grids (grid-stride over rows); the
// emulator runs every thread for real, so the big shapes go where they matter.
TEST(cross_entropy, fused_vs_double) {
    Rng rng(20);
    const Case cases[] = {
        {{"warp/64", false, 64, 4}, 2, 27, true},       {{"warp/64", false, 64, 4}, 3, 27, true},
        {{"warp/256", false, 256, 1}, 31, 27, true},    {{"warp/32", false, 32, 3}, 33, 27, true},
        {{"warp/256", false, 256, 2}, 1000, 27, false}, {{"warp/64", false, 64, 2}, 3, 1000, true},
        {{"warp/128", false, 128, 2}, 33, 1000, false}, {{"warp/32", false, 32, 1}, 2, 50000, true},
        {{"block/32", true, 32, 2}, 2, 27, true},       {{"block/64", true, 64, 3}, 3, 27, true},
        {{"block/32", true, 32, 4}, 31, 27, false},     {{"block/64", true, 64, 64}, 33, 27, true},
        {{"block/32", true, 32, 2}, 1000, 27, false},   {{"block/256", true, 256, 3}, 3, 1000, true},
        {{"block/128", true, 128, 2}, 33, 1000, false}, {{"block/256", true, 256, 2}, 2, 50000, true},
        {{"block/256", true, 256, 1}, 3, 50000, false},
    };
    for (const Case& cs : cases) check_case(rng, cs);
}

TEST(large_blocks, cross_entropy_block_1024) {
    Rng rng(23);
    const Case cs{{"block/1024", true, 1024, 2}, 2, 50000, true};
    check_case(rng, cs);
}

void check_case(Rng& rng, const Case& cs) {
    {
        const Variant& v = cs.v;
        const int n = cs.n, V = cs.V;
        char what[96];
        snprintf(what, sizeof what, "%s n=%d V=%d", v.name, n, V);
        const std::vector<float> logits = rng.normal((size_t)n * V, 3.0f, 1.0f);
        std::vector<int> Yb = rng.ints(n, 0, V - 1);
        Yb[0] = V - 1;  // the last column: owned by the most "awkward" thread
        const CeRef ref = ce_ref(logits, Yb, n, V);
        const std::string w = what;

        std::vector<float> dlogits((size_t)n * V, NAN), losses(n, NAN);
        run_ce(v, logits.data(), Yb.data(), dlogits.data(), losses.data(), n, V);
        close((w + " losses").c_str(), losses, ref.losses, 2e-5, 2e-5);
        close((w + " dlogits").c_str(), dlogits, ref.dlogits, 1e-7 / n, 1e-4);

        // each row of dlogits sums to ~0
        double worst = 0;
        for (int i = 0; i < n; ++i) {
            double sum = 0;
            for (int j = 0; j < V; ++j) sum += dlogits[(size_t)i * V + j];
            worst = std::max(worst, fabs(sum) * n);
        }
        CHECK(worst < 1e-5, "%s: a dlogits row sums to %g/n", what, worst);

        // the mean loss: sum_partials (chunks of 256 losses) + sum_finish(scale = 1/n), blocks of 256
        const int chunks = (int)ceil_div(n, 256);
        Guarded<double> partial(chunks);
        Guarded<float> loss(1);
        launch<K::sum_partials>(Dim(chunks), Dim(256), 0, losses.data(), n, 256, 0, partial.data());
        launch<K::sum_finish>(Dim(1), Dim(256), 0, partial.data(), chunks, 1.0 / n, loss.data(), (hpb_step*)nullptr, 0);
        partial.values("partial");
        close((w + " loss").c_str(), loss.values("loss"), std::vector<double>{ref.loss}, 2e-5, 2e-5);

        if (!cs.all_modes) return;
        // in place: dlogits == logits, bitwise the same as out of place
        std::vector<float> inplace = logits, losses2(n, NAN);
        run_ce(v, inplace.data(), Yb.data(), inplace.data(), losses2.data(), n, V);
        CHECK(bitwise_equal(inplace, dlogits) && bitwise_equal(losses2, losses), "%s: in-place differs", what);

        // forward only (dlogits NULL) and backward only (losses NULL)
        std::vector<float> losses3(n, NAN), dlogits4((size_t)n * V, NAN);
        run_ce(v, logits.data(), Yb.data(), (float*)nullptr, losses3.data(), n, V);
        run_ce(v, logits.data(), Yb.data(), dlogits4.data(), (float*)nullptr, n, V);
        CHECK(bitwise_equal(losses3, losses) && bitwise_equal(dlogits4, dlogits), "%s: NULL outputs differ", what);
    }
}

TEST(cross_entropy, extreme_logits) {
    // Huge logits (exp would overflow without the max shift) and a row of equal values.
    const int n = 3, V = 27;
    std::vector<float> logits((size_t)n * V);
    for (int j = 0; j < V; ++j) {
        logits[j] = 80.0f + j;   // exp(107) overflows float
        logits[V + j] = -90.0f;  // all equal
        logits[2 * V + j] = (j == 5) ? 1e4f : -1e4f;
    }
    const std::vector<int> Yb = {26, 3, 5};
    const CeRef ref = ce_ref(logits, Yb, n, V);
    for (bool block : {false, true}) {
        std::vector<float> dlogits((size_t)n * V), losses(n);
        const Variant v{block ? "block" : "warp", block, 64, 8};
        run_ce(v, logits.data(), Yb.data(), dlogits.data(), losses.data(), n, V);
        close(block ? "extreme block losses" : "extreme warp losses", losses, ref.losses, 1e-5, 1e-5);
        close(block ? "extreme block dlogits" : "extreme warp dlogits", dlogits, ref.dlogits, 1e-8, 1e-4);
    }
}

TEST(cross_entropy, deterministic) {
    Rng rng(21);
    const int n = 33, V = 300;
    const std::vector<float> logits = rng.normal((size_t)n * V, 3.0f);
    const std::vector<int> Yb = rng.ints(n, 0, V - 1);
    for (bool block : {false, true}) {
        std::vector<float> d0((size_t)n * V), l0(n), d1((size_t)n * V), l1(n);
        const Variant v{"", block, 64, 4};
        run_ce(v, logits.data(), Yb.data(), d0.data(), l0.data(), n, V);
        int differing = 0;
        for (int run = 0; run < 5; ++run) {
            run_ce(v, logits.data(), Yb.data(), d1.data(), l1.data(), n, V);
            differing += !bitwise_equal(d0, d1) || !bitwise_equal(l0, l1);
        }
        CHECK(differing == 0, "cross_entropy_%s: %d of 5 reruns differ", block ? "block" : "warp", differing);
    }
}
