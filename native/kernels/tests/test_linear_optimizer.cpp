// test_linear_optimizer.cpp — bias_add, the generic column reductions (column_partial_sum,
// column_finish_sum), axpy, and the optimisers (sgd_update, sgd_momentum_update, adamw_update).
#include <math.h>

#include "test_util.h"

TEST(linear_optimizer, bias_add_exact) {
    Rng rng(30);
    for (int rows : {2, 3, 31, 33, 1000})
        for (int cols : {1, 7, 27, 200, 513}) {
            std::vector<float> y = rng.normal((size_t)rows * cols), b = rng.normal(cols), want = y;
            for (size_t k = 0; k < want.size(); ++k) want[k] += b[k % cols];
            launch<K::bias_add>(Dim(std::min(ceil_div(y.size(), 256), 7u)), Dim(256), 0, y.data(), b.data(), rows,
                                cols);
            CHECK(bitwise_equal(y, want), "bias_add rows=%d cols=%d", rows, cols);
        }
}

namespace {

// v(r, col) of column_partial_sum, in double
double partial_term(const std::vector<float>& x, const float* center, int square, int r, int cols, int col) {
    double v = x[(size_t)r * cols + col];
    if (center) v = (double)x[(size_t)r * cols + col] - center[col];
    return square ? v * v : v;
}

struct ColumnRun {
    std::vector<float> partial, out;
};

// column_partial_sum (+ column_finish_sum when there are several chunks), as the host launches them.
ColumnRun column_sum_run(const std::vector<float>& x, const float* center, int square, int rows, int cols,
                         int chunk_rows, Dim blk, unsigned cap_x, unsigned cap_y, unsigned finish_grid) {
    const int chunks = (int)ceil_div(rows, chunk_rows);
    Guarded<float> partial((size_t)chunks * cols), out(cols);
    const Dim grid(std::min(ceil_div(cols, blk.x), cap_x), std::min((unsigned)chunks, cap_y));
    launch<K::column_partial_sum>(grid, blk, blk.x * blk.y * 4, x.data(), center, square, rows, cols, chunk_rows,
                                  partial.data());
    launch<K::column_finish_sum>(Dim(finish_grid), Dim(256), 0, partial.data(), chunks, cols, out.data());
    return {partial.values("partial"), out.values("out")};
}

}  // namespace

// Every variant (plain, centred, squared, centred and squared), chunk_rows from 1 to more than rows,
// odd block shapes and capped grids: each chunk's partial and the finished sum against double sums,
// relative to the sum of |terms| (float rounding of up to 1000 terms: ~sqrt(k) u, 2e-6 leaves room).
TEST(linear_optimizer, column_partial_sum_vs_double) {
    Rng rng(31);
    struct Case {
        int rows, cols, chunk_rows;
        Dim blk;  // small blocks where there are many chunks: the emulator pays per thread and barrier
    };
    const Case cases[] = {
        {2, 1, 1, Dim(32, 8)},        {2, 513, 2, Dim(64, 1)},      {3, 7, 2, Dim(8, 4)},
        {3, 200, 1000, Dim(7, 3)},    {31, 33, 3, Dim(16, 2)},      {31, 1, 7, Dim(32, 8)},
        {33, 7, 1, Dim(8, 4)},        {33, 513, 16, Dim(32, 4)},    {33, 200, 33, Dim(32, 8)},
        {1000, 1, 7, Dim(4, 4)},      {1000, 7, 3, Dim(8, 1)},      {1000, 33, 64, Dim(16, 4)},
        {1000, 200, 256, Dim(32, 8)}, {1000, 513, 999, Dim(32, 8)}, {1000, 33, 0x7fffffff, Dim(7, 3)}};
    for (const Case& cs : cases)
        for (int variant = 0; variant < 4; ++variant) {
            const int rows = cs.rows, cols = cs.cols, chunk_rows = cs.chunk_rows;
            const Dim blk = cs.blk;
            const std::vector<float> x = rng.normal((size_t)rows * cols, 1.0f, 5.0f);
            const std::vector<float> center_v = rng.normal(cols, 0.5f, 5.0f);
            const float* center = (variant & 1) ? center_v.data() : nullptr;
            const int square = variant >> 1;
            const int chunks = (int)ceil_div(rows, chunk_rows);
            std::vector<double> want_p((size_t)chunks * cols, 0), scale_p((size_t)chunks * cols, 0), want(cols, 0),
                scale(cols, 0);
            for (int r = 0; r < rows; ++r)
                for (int c = 0; c < cols; ++c) {
                    const double v = partial_term(x, center, square, r, cols, c);
                    const size_t p = (size_t)(r / chunk_rows) * cols + c;
                    want_p[p] += v, scale_p[p] += fabs(v), want[c] += v, scale[c] += fabs(v);
                }
            const ColumnRun run = column_sum_run(x, center, square, rows, cols, chunk_rows, blk, 3, 5, 2);
            char what[128];
            snprintf(what, sizeof what,
                     "column_partial_sum rows=%d cols=%d chunk_rows=%d center=%d square=%d block=(%u,%u)", rows, cols,
                     chunk_rows, center != nullptr, square, blk.x, blk.y);
            close_scaled(what, run.partial, want_p, scale_p, 2e-6);
            close_scaled((std::string(what) + " finished").c_str(), run.out, want, scale, 2e-6);
            // the same bits with the full grid (and, once per shape, again)
            const ColumnRun full = column_sum_run(x, center, square, rows, cols, chunk_rows, blk, 1u << 30, 65535, 1);
            CHECK(bitwise_equal(run.partial, full.partial) && bitwise_equal(run.out, full.out),
                  "%s: not bitwise the same over grids", what);
            if (variant == 3) {
                const ColumnRun again =
                    column_sum_run(x, center, square, rows, cols, chunk_rows, blk, 1u << 30, 65535, 1);
                CHECK(bitwise_equal(full.partial, again.partial) && bitwise_equal(full.out, again.out),
                      "%s: not bitwise the same in a second run", what);
            }
        }
}

TEST(large_blocks, column_partial_sum_32x32) {
    Rng rng(37);
    const int rows = 1000, cols = 40, chunk_rows = 300;
    const std::vector<float> x = rng.normal((size_t)rows * cols, 1.0f, 5.0f);
    std::vector<double> want(cols, 0), scale(cols, 0);
    for (size_t k = 0; k < x.size(); ++k) want[k % cols] += (double)x[k] * x[k], scale[k % cols] += (double)x[k] * x[k];
    const ColumnRun run = column_sum_run(x, nullptr, 1, rows, cols, chunk_rows, Dim(32, 32), 1u << 30, 65535, 1);
    close_scaled("column_partial_sum 1024 threads, squares", run.out, want, scale, 2e-6);
}

// The finish adds the chunks in order 0, 1, 2, ... in one float accumulator: bitwise a sequential
// float loop.
TEST(linear_optimizer, column_finish_sum_in_chunk_order) {
    Rng rng(33);
    for (int chunks : {1, 2, 7, 100})
        for (int cols : {1, 33, 513}) {
            const std::vector<float> partial = rng.normal((size_t)chunks * cols, 1.0f, 3.0f);
            std::vector<float> want(cols);
            for (int c = 0; c < cols; ++c) {
                float acc = partial[c];
                for (int k = 1; k < chunks; ++k) acc += partial[(size_t)k * cols + c];
                want[c] = acc;
            }
            for (unsigned grid : {ceil_div(cols, 256), 1u}) {
                Guarded<float> out(cols);
                launch<K::column_finish_sum>(Dim(grid), Dim(grid == 1 ? 32 : 256), 0, partial.data(), chunks, cols,
                                             out.data());
                CHECK(bitwise_equal(out.values("column_finish_sum"), want),
                      "column_finish_sum chunks=%d cols=%d grid %u", chunks, cols, grid);
            }
        }
}

// y += a*x: a product rounded, then a sum rounded (no FMA), as the CPU's TensorPrimitives.MultiplyAdd.
TEST(linear_optimizer, axpy_exact) {
    Rng rng(34);
    for (int count : {1, 7, 33, 1000, 11897}) {
        const std::vector<float> x = rng.normal(count), y0 = rng.normal(count);
        const float a = 2 * 0.0137f;
        std::vector<float> want(count);
        for (int i = 0; i < count; ++i) {
            const float prod = a * x[i];
            want[i] = y0[i] + prod;
        }
        for (unsigned grid : {ceil_div(count, 256), 2u}) {
            Guarded<float> y(y0);
            launch<K::axpy>(Dim(grid), Dim(256), 0, y.data(), x.data(), a, count);
            CHECK(bitwise_equal(y.values("axpy"), want), "axpy count=%d grid %u", count, grid);
        }
    }
}

TEST(linear_optimizer, sgd_update) {
    Rng rng(32);
    for (int count : {1, 31, 33, 1000, 11897}) {
        std::vector<float> p = rng.normal(count), g = rng.normal(count);
        std::vector<double> want(count);
        for (int i = 0; i < count; ++i) want[i] = (double)p[i] - 0.1 * (double)g[i];
        const hpb_step st = step_at(7, 0.1f);
        launch<K::sgd_update>(Dim(std::min(ceil_div(count, 256), 4u)), Dim(256), 0, p.data(), g.data(), &st, count);
        char what[48];
        snprintf(what, sizeof what, "sgd_update count=%d", count);
        close(what, p, want, 1e-7, 1e-6);
    }
}

// Three steps of SGD with momentum / weight decay / both / neither against a scalar float reference
// written from the formula (issue 19's kernel spec; the CPU's OptimizerKernels.Sgd): bitwise, since every
// operation is rounded as written and the last one is an fmaf on both sides.  And against double
// (torch.optim.SGD's math) within a few float roundings.
TEST(linear_optimizer, sgd_momentum_update) {
    Rng rng(35);
    const float lr = 0.05f, momentum = 0.9f;
    for (int count : {1, 33, 1000})
        for (int variant = 0; variant < 4; ++variant) {
            const bool with_v = variant & 1;
            const float wd = (variant & 2) ? 0.01f : 0.0f;
            std::vector<float> p_ref = rng.normal(count), v_ref(count, 0.0f);
            std::vector<double> p_d(p_ref.begin(), p_ref.end()), v_d(count, 0.0);
            Guarded<float> p(p_ref), v(count, 0.0f);
            char what[96];
            snprintf(what, sizeof what, "sgd_momentum_update count=%d momentum=%d wd=%g", count, with_v, wd);
            for (int step = 0; step < 3; ++step) {
                const std::vector<float> g = rng.normal(count);
                for (int i = 0; i < count; ++i) {
                    float gi = g[i];
                    if (wd != 0.0f) gi = gi + wd * p_ref[i];
                    if (with_v) {
                        gi = momentum * v_ref[i] + gi;
                        v_ref[i] = gi;
                    }
                    p_ref[i] = fmaf(gi, -lr, p_ref[i]);
                    double gd = g[i] + (double)wd * p_d[i];
                    if (with_v) gd = v_d[i] = (double)momentum * v_d[i] + gd;
                    p_d[i] -= (double)lr * gd;
                }
                const hpb_step st = step_at(step, lr);
                launch<K::sgd_momentum_update>(Dim(step == 1 ? 1u : ceil_div(count, 256)), Dim(256), 0, p.data(),
                                               g.data(), with_v ? v.data() : nullptr, count, &st, momentum, wd);
            }
            CHECK(bitwise_equal(p.values(what), p_ref), "%s: p differs from the float reference", what);
            if (with_v) CHECK(bitwise_equal(v.values(what), v_ref), "%s: v differs from the float reference", what);
            if (!with_v) {
                const std::vector<float> vv = v.values(what);
                CHECK(std::all_of(vv.begin(), vv.end(), [](float x) { return x == 0.0f; }), "%s: v written", what);
            }
            close(what, p.values(), p_d, 1e-6, 1e-5);
        }
}

// AdamW, three steps, the host constants computed in double as the backend does: bitwise against a
// scalar float reference with the CPU's operation order (OptimizerKernels.AdamW), and within float
// rounding of torch.optim.AdamW's math in double.
TEST(linear_optimizer, adamw_update) {
    Rng rng(36);
    const double lr = 1e-3, wd = 0.01, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    for (int count : {1, 33, 1000, 4097}) {
        std::vector<float> p_ref = rng.normal(count), m_ref(count, 0.0f), v_ref(count, 0.0f);
        std::vector<double> p_d(p_ref.begin(), p_ref.end()), m_d(count, 0.0), v_d(count, 0.0);
        Guarded<float> p(p_ref), m(count, 0.0f), v(count, 0.0f);
        char what[64];
        snprintf(what, sizeof what, "adamw_update count=%d", count);
        for (int t = 1; t <= 3; ++t) {
            const std::vector<float> g = rng.normal(count, 0.5f);
            // decay as the CPU computes it: from the float rate and weight decay, each product rounded
            const float decay = 1.0f - (float)lr * (float)wd, a1 = (float)(1 - beta1), a2 = (float)(1 - beta2);
            const float step_size = (float)(lr / (1 - pow(beta1, t))), bc2_sqrt = (float)sqrt(1 - pow(beta2, t));
            const float b1 = (float)beta1, b2 = (float)beta2, e = (float)eps;
            for (int i = 0; i < count; ++i) {
                const float pi = p_ref[i] * decay;
                const float mi = m_ref[i] * b1 + g[i] * a1;
                const float vi = v_ref[i] * b2 + g[i] * g[i] * a2;
                m_ref[i] = mi, v_ref[i] = vi;
                p_ref[i] = pi - step_size * (mi / (sqrtf(vi) / bc2_sqrt + e));
                p_d[i] *= 1 - lr * wd;
                m_d[i] = beta1 * m_d[i] + (1 - beta1) * g[i];
                v_d[i] = beta2 * v_d[i] + (1 - beta2) * (double)g[i] * g[i];
                p_d[i] -= lr / (1 - pow(beta1, t)) * m_d[i] / (sqrt(v_d[i]) / sqrt(1 - pow(beta2, t)) + eps);
            }
            const hpb_step st = step_at(t - 1, (float)lr, step_size, bc2_sqrt);
            launch<K::adamw_update>(Dim(t == 2 ? 1u : ceil_div(count, 256)), Dim(256), 0, p.data(), g.data(), m.data(),
                                    v.data(), count, &st, (float)wd, b1, b2, a1, a2, e);
        }
        CHECK(bitwise_equal(p.values(what), p_ref) && bitwise_equal(m.values(what), m_ref) &&
                  bitwise_equal(v.values(what), v_ref),
              "%s: p/m/v differ from the float reference", what);
        // |p| ~ 1 and each step moves p by ~lr: float rounding ~1e-7 per operation
        close(what, p.values(), p_d, 2e-6, 1e-6);
    }
}

// step_begin: the step `next` becomes `current` (next stays: the loss kernel advances it); the row of
// step t (t - base with stride 1, row 0 with stride 0) is copied into lr, step_size, bc2_sqrt; the
// loss slot is t % ring; a step with no row of its own sets fault.  Ten steps through a 4-row
// schedule: rows, then faults; sum_finish with the step advances next between them, as in a step.
TEST(linear_optimizer, step_begin) {
    for (unsigned stride : {0u, 1u}) {
        const unsigned rows = 4, ring = 3;
        const unsigned long long base = 0x100000005ull;  // above 2^32: the step's high word matters
        std::vector<unsigned long long> buf(8 + (rows * 3 + 1) / 2, 0);
        hpb_step* s = reinterpret_cast<hpb_step*>(buf.data());
        s->next = base;
        s->base = base;
        s->rows = rows;
        s->stride = stride;
        s->ring = ring;
        float* r = reinterpret_cast<float*>(s + 1);
        for (unsigned i = 0; i < rows * 3; ++i) r[i] = 0.5f + (float)i;
        const double partial = 1.0;
        float losses[3] = {0, 0, 0};
        for (int k = 0; k < 6; ++k) {
            launch<K::step_begin>(Dim(1), Dim(1), 0, s, (const unsigned*)nullptr, (const unsigned*)nullptr, 0, 0, 0,
                                  (unsigned*)nullptr, (unsigned*)nullptr, 0, (const float*)nullptr, 0, (float*)nullptr);
            const unsigned long long t = base + k;
            const unsigned row = stride ? std::min<unsigned>(k, rows - 1) : 0;
            CHECK(s->current == t && s->next == t, "stride %u step %d: current %llu next %llu", stride, k, s->current,
                  s->next);
            CHECK(s->lr == r[3 * row] && s->step_size == r[3 * row + 1] && s->bc2_sqrt == r[3 * row + 2],
                  "stride %u step %d: row %u not copied (lr %g)", stride, k, row, s->lr);
            CHECK(s->slot == t % ring, "stride %u step %d: slot %u, want %llu", stride, k, s->slot, t % ring);
            const bool fault = stride && k >= (int)rows;
            CHECK(s->fault == (fault ? 1u : 0u), "stride %u step %d: fault %u", stride, k, s->fault);
            launch<K::sum_finish>(Dim(1), Dim(32), 0, &partial, 1, 1.0, losses, s, 0);
            CHECK(s->next == t + 1, "stride %u step %d: the loss left next at %llu", stride, k, s->next);
        }
        // a step before the schedule's base has no row either
        s->fault = 0;
        s->next = base - 1;
        launch<K::step_begin>(Dim(1), Dim(1), 0, s, (const unsigned*)nullptr, (const unsigned*)nullptr, 0, 0, 0,
                              (unsigned*)nullptr, (unsigned*)nullptr, 0, (const float*)nullptr, 0, (float*)nullptr);
        CHECK(s->fault == 1u, "stride %u: a step before base did not fault", stride);
    }
}
