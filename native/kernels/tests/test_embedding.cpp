// test_embedding.cpp — embedding_forward (gather) and the three scatter-add backward paths.
#include <math.h>

#include "test_util.h"

namespace {

enum class Ids { Uniform, OneId, Skewed };
const char* ids_name(Ids p) { return p == Ids::Uniform ? "uniform" : p == Ids::OneId ? "one-id" : "skewed"; }

std::vector<int> make_ids(Rng& rng, size_t M, int V, Ids pattern) {
    std::vector<int> ids = rng.ints(M, 0, V - 1);
    if (pattern == Ids::OneId)
        for (auto& x : ids) x = V - 1;  // n*B repetitions of one id (the largest: all digits used)
    if (pattern == Ids::Skewed)
        for (size_t k = 0; k < M; k += 2) ids[k] = 0;  // like '.', the padding token
    return ids;
}

// dC in double, and the sum of |terms| per cell (the scale of the rounding error).
void scatter_ref(const std::vector<float>& demb, const std::vector<int>& Xb, int E, int V, std::vector<double>* dC,
                 std::vector<double>* abs_sum) {
    dC->assign((size_t)V * E, 0.0);
    abs_sum->assign((size_t)V * E, 0.0);
    for (size_t k = 0; k < Xb.size(); ++k)
        for (int e = 0; e < E; ++e) {
            (*dC)[(size_t)Xb[k] * E + e] += demb[k * E + e];
            (*abs_sum)[(size_t)Xb[k] * E + e] += fabs(demb[k * E + e]);
        }
}

// |got - want| <= 1e-6 * sqrt(M) * abs_sum + 1e-30: float summation of M terms.
bool scatter_close(const char* what, const std::vector<float>& got, const std::vector<double>& want,
                   const std::vector<double>& abs_sum, size_t M) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < got.size(); ++i)
        if (!(fabs(got[i] - want[i]) <= 1e-6 * sqrt((double)M) * abs_sum[i] + 1e-30)) {
            if (!bad) first = i;
            ++bad;
        }
    CHECK(bad == 0, "%s: %zu cells off, first %zu got %.9g want %.9g", what, bad, first, bad ? got[first] : 0.0,
          bad ? want[first] : 0.0);
    return bad == 0;
}

struct SortResult {
    std::vector<int> ids, rows;
};

// The deterministic large-V path, launched as the backend does (README.md, "embedding").
bool scatter_sorted(std::vector<float>& dC, const std::vector<float>& demb, const std::vector<int>& Xb, int E, int V,
                    unsigned tile, unsigned segment_grid_cap, SortResult* sorted, unsigned scan_threads = 256) {
    const int M = (int)Xb.size();
    const unsigned tiles = ceil_div(M, tile);
    std::vector<int> keys[2] = {std::vector<int>(M), std::vector<int>(M)};
    std::vector<int> vals[2] = {std::vector<int>(M), std::vector<int>(M)};
    std::vector<int> hist((size_t)256 * tiles);
    int passes = 1;
    while (passes < 4 && (V - 1) >> (8 * passes)) ++passes;
    const int* in_keys = Xb.data();
    const int* in_vals = nullptr;
    for (int pass = 0; pass < passes; ++pass) {
        const int shift = 8 * pass;
        int* out_keys = keys[pass & 1].data();
        int* out_vals = vals[pass & 1].data();
        if (!launch<K::embedding_sort_histogram>(Dim(tiles), Dim(tile), 0, hist.data(), in_keys, M, shift))
            return false;
        if (!launch<K::exclusive_scan_int>(Dim(1), Dim(scan_threads), 0, hist.data(), (int)hist.size())) return false;
        if (!launch<K::embedding_sort_scatter>(Dim(tiles), Dim(tile), 0, out_keys, out_vals, in_keys, in_vals,
                                               hist.data(), M, shift))
            return false;
        in_keys = out_keys;
        in_vals = out_vals;
    }
    std::fill(dC.begin(), dC.end(), 0.0f);
    const unsigned grid = std::min(ceil_div(M, 8), segment_grid_cap);
    if (!launch<K::embedding_backward_segments>(Dim(grid), Dim(256), 0, dC.data(), demb.data(), in_keys, in_vals, M, E))
        return false;
    if (sorted) {
        sorted->ids.assign(in_keys, in_keys + M);
        sorted->rows.assign(in_vals, in_vals + M);
    }
    return true;
}

void check_sorted(const SortResult& s, const std::vector<int>& Xb, const char* what) {
    size_t bad = 0;
    std::vector<char> seen(Xb.size(), 0);
    for (size_t p = 0; p < s.ids.size(); ++p) {
        const int k = s.rows[p];
        if (k < 0 || (size_t)k >= Xb.size() || seen[k] || Xb[k] != s.ids[p]) {
            ++bad;
            continue;
        }
        seen[k] = 1;
        if (p > 0 && (s.ids[p - 1] > s.ids[p] || (s.ids[p - 1] == s.ids[p] && s.rows[p - 1] >= k))) ++bad;
    }
    CHECK(bad == 0, "%s: radix sort output not a stable sort of the ids (%zu bad positions)", what, bad);
}

}  // namespace

TEST(embedding, forward_gather_exact) {
    Rng rng(1);
    for (int n : {2, 3, 31, 33, 1000})
        for (int V : {27, 1000, 50000})
            for (int BE : {0, 1}) {
                const int B = BE ? 3 : 1, E = BE ? 10 : 1;
                const std::vector<float> C = rng.normal((size_t)V * E);
                const std::vector<int> Xb = make_ids(rng, (size_t)n * B, V, Ids::Uniform);
                std::vector<float> embcat((size_t)n * B * E, -7.0f), want(embcat.size());
                for (size_t k = 0; k < Xb.size(); ++k)
                    for (int e = 0; e < E; ++e) want[k * E + e] = C[(size_t)Xb[k] * E + e];
                // a capped grid exercises the grid-stride loop
                launch<K::embedding_forward>(Dim(std::min(ceil_div(embcat.size(), 256), 5u)), Dim(256), 0,
                                             embcat.data(), C.data(), Xb.data(), n, B, E);
                CHECK(bitwise_equal(embcat, want), "embedding_forward n=%d V=%d B=%d E=%d", n, V, B, E);
            }
}

TEST(embedding, backward_all_paths) {
    Rng rng(2);
    const int B = 3, E = 10;
    for (int n : {2, 3, 31, 33, 1000})
        for (int V : {27, 1000, 50000})
            for (Ids pattern : {Ids::Uniform, Ids::OneId, Ids::Skewed}) {
                // every size with uniform ids; heavy repetition where it is heavy
                if (pattern != Ids::Uniform && n != 33 && n != 1000) continue;
                char what[128];
                snprintf(what, sizeof what, "n=%d V=%d %s", n, V, ids_name(pattern));
                const std::vector<int> Xb = make_ids(rng, (size_t)n * B, V, pattern);
                const std::vector<float> demb = rng.normal((size_t)n * B * E);
                std::vector<double> want, abs_sum;
                scatter_ref(demb, Xb, E, V, &want, &abs_sum);
                std::vector<float> dC((size_t)V * E);

                // atomic (caller zeroes)
                std::fill(dC.begin(), dC.end(), 0.0f);
                launch<K::embedding_backward_atomic>(Dim(std::min(ceil_div((size_t)n * B * E, 256), 8u)), Dim(256), 0,
                                                     dC.data(), demb.data(), Xb.data(), n, B, E);
                scatter_close((std::string("atomic ") + what).c_str(), dC, want, abs_sum, Xb.size());

                // dense (small V only: O(V*E*n*B)); garbage in dC must be overwritten
                std::vector<float> dense;
                if (V <= 1000) {
                    std::fill(dC.begin(), dC.end(), NAN);
                    launch<K::embedding_backward_dense>(Dim(std::min(ceil_div((size_t)V * E, 256), 16u)), Dim(256), 0,
                                                        dC.data(), demb.data(), Xb.data(), n, B, E, V);
                    scatter_close((std::string("dense ") + what).c_str(), dC, want, abs_sum, Xb.size());
                    dense = dC;
                }

                // sort-and-segment
                SortResult sorted;
                if (scatter_sorted(dC, demb, Xb, E, V, 256, 16, &sorted)) {
                    check_sorted(sorted, Xb, what);
                    scatter_close((std::string("sorted ") + what).c_str(), dC, want, abs_sum, Xb.size());
                    // both deterministic paths add in increasing k: bitwise the same
                    if (!dense.empty()) CHECK(bitwise_equal(dC, dense), "%s: sorted and dense paths differ", what);
                }
            }
}

struct SortCase {
    int n, B, E, V;
    unsigned tile, cap, scan_threads;
};

void check_sort_cases(Rng& rng, std::initializer_list<SortCase> cases) {
    for (const SortCase& c : cases) {
        char what[128];
        snprintf(what, sizeof what, "n=%d B=%d E=%d V=%d tile=%u scan=%u", c.n, c.B, c.E, c.V, c.tile, c.scan_threads);
        const std::vector<int> Xb = make_ids(rng, (size_t)c.n * c.B, c.V, Ids::Skewed);
        const std::vector<float> demb = rng.normal((size_t)c.n * c.B * c.E);
        std::vector<double> want, abs_sum;
        scatter_ref(demb, Xb, c.E, c.V, &want, &abs_sum);
        std::vector<float> dC((size_t)c.V * c.E);
        SortResult sorted;
        if (scatter_sorted(dC, demb, Xb, c.E, c.V, c.tile, c.cap, &sorted, c.scan_threads)) {
            check_sorted(sorted, Xb, what);
            scatter_close(what, dC, want, abs_sum, Xb.size());
        }
    }
}

// tiles of 32 and 64 threads, B = 1 and 8, E = 1 and 33 (more columns than lanes), a
// single-block segment grid, a 32-thread scan
TEST(embedding, sorted_path_other_tiles_and_shapes) {
    Rng rng(3);
    check_sort_cases(rng, {{33, 1, 1, 27, 32, 1, 32},
                           {31, 8, 33, 1000, 64, 3, 256},
                           {1000, 3, 1, 50000, 32, 1000, 64},
                           {2, 8, 33, 50000, 64, 1, 32}});
}

// tiles of 1024 threads and the 1024-thread scan the backend uses
TEST(large_blocks, embedding_sorted_path_1024) {
    Rng rng(5);
    check_sort_cases(rng, {{333, 3, 10, 50000, 1024, 16, 1024}, {3, 8, 10, 1000, 1024, 1, 1024}});
}

// The deterministic paths are bitwise reproducible: 20 runs, identical bits.
TEST(embedding, deterministic_20_runs) {
    Rng rng(4);
    const int B = 3, E = 10;
    for (int V : {27, 50000}) {
        const int n = 333;
        const std::vector<int> Xb = make_ids(rng, (size_t)n * B, V, Ids::Skewed);
        const std::vector<float> demb = rng.normal((size_t)n * B * E);
        std::vector<float> first((size_t)V * E), dC((size_t)V * E), dense_first;
        scatter_sorted(first, demb, Xb, E, V, 256, 8, nullptr);
        int differing = 0, dense_differing = 0;
        for (int run = 1; run < 20; ++run) {
            scatter_sorted(dC, demb, Xb, E, V, 256, 8, nullptr);
            differing += !bitwise_equal(dC, first);
        }
        CHECK(differing == 0, "sorted path V=%d: %d of 19 reruns differ bitwise", V, differing);
        if (V == 27) {
            for (int run = 0; run < 20; ++run) {
                launch<K::embedding_backward_dense>(Dim(2), Dim(128), 0, dC.data(), demb.data(), Xb.data(), n, B, E, V);
                if (run == 0)
                    dense_first = dC;
                else
                    dense_differing += !bitwise_equal(dC, dense_first);
            }
            CHECK(dense_differing == 0, "dense path: %d of 19 reruns differ bitwise", dense_differing);
        }
    }
}
