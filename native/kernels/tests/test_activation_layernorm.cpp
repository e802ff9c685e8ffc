// test_activation_layernorm.cpp — the standalone activations (activation_forward/backward) and layer
// norm (layernorm_forward/backward/param_partials) against double references; in place, NULL
// statistics, chunked parameter gradients, determinism over grids.
#include <math.h>

#include "test_util.h"

namespace {

// the derivative from the input x, in double
double act_derivative(double x, int act) {
    switch (act) {
        case 1:
            return 1 - tanh(x) * tanh(x);
        case 2:
            return x > 0 ? 1 : 0;
        case 3:
            return exp(-x) / ((1 + exp(-x)) * (1 + exp(-x)));
        default:
            return 1;
    }
}

}  // namespace

// Forward within a few ulp of double (glibc's tanhf/expf); backward bitwise the float formula and
// within float rounding of the derivative computed from x in double; y aliasing x and dx aliasing dy
// bitwise as out of place; a capped grid gives the same bits.
TEST(activation, forward_backward) {
    Rng rng(60);
    for (int act : {0, 1, 2, 3})
        for (int count : {1, 7, 33, 1000, 11897}) {
            std::vector<float> x = rng.normal(count, 3.0f);
            if (count >= 3) x[0] = 0.0f, x[1] = -0.0f, x[2] = 40.0f;  // relu's edge, sigmoid/tanh saturation
            const std::vector<float> dy = rng.normal(count);
            char what[64];
            snprintf(what, sizeof what, "activation %s count=%d", kActName[act], count);
            const std::string w = what;
            std::vector<double> want(count), want_dx(count);
            for (int i = 0; i < count; ++i) {
                want[i] = act_forward<double>(x[i], act);
                want_dx[i] = act_derivative(x[i], act) * dy[i];
            }
            const unsigned full = ceil_div(count, 256);
            Guarded<float> y(count), y2(count), inplace(x);
            Guarded<float> xs(x);
            launch<K::activation_forward>(Dim(full), Dim(256), 0, xs.data(), y.data(), count, act, (const float*)nullptr, 0);
            launch<K::activation_forward>(Dim(1), Dim(64), 0, xs.data(), y2.data(), count, act, (const float*)nullptr, 0);
            launch<K::activation_forward>(Dim(2), Dim(256), 0, inplace.data(), inplace.data(), count, act,
                                          (const float*)nullptr, 0);
            CHECK(bitwise_equal(xs.values(), x), "%s: x changed without a bias", what);
            const std::vector<float> yv = y.values(what);
            close((w + " y").c_str(), yv, want, 1e-7, 4e-7);
            CHECK(bitwise_equal(yv, y2.values()) && bitwise_equal(yv, inplace.values()),
                  "%s: another grid or in place differs", what);

            std::vector<float> want_bits(count);
            for (int i = 0; i < count; ++i) want_bits[i] = act_backward<float>(yv[i], dy[i], act);
            Guarded<float> dx(count), dx_in(dy);
            launch<K::activation_backward>(Dim(full), Dim(256), 0, yv.data(), dy.data(), dx.data(), count, act);
            launch<K::activation_backward>(Dim(1), Dim(96), 0, yv.data(), dx_in.data(), dx_in.data(), count, act);
            const std::vector<float> dxv = dx.values(what);
            CHECK(bitwise_equal(dxv, want_bits), "%s: dx differs from the float formula", what);
            CHECK(bitwise_equal(dxv, dx_in.values()), "%s: dx aliasing dy differs", what);
            close((w + " dx vs the derivative in double").c_str(), dxv, want_dx, 1e-6, 1e-5);
        }
}

// The fusion rows of a linear's bias (GPU): activation_forward with a bias is bitwise bias_add then activation_forward
// (x keeps x + b, y in place too); activation_backward_column_sum is bitwise activation_backward then column_partial_sum
// (every chunk's partial, dx in place too), at one chunk and several, with capped grids and odd block shapes.
TEST(activation, bias_and_bias_gradient_fused) {
    Rng rng(61);
    struct Case {
        int rows, cols, chunk_rows;
        Dim blk;
    };
    const Case cases[] = {{1, 1, 256, Dim(32, 8)},  {7, 33, 256, Dim(32, 8)}, {64, 256, 256, Dim(32, 8)},
                          {300, 10, 256, Dim(32, 8)}, {33, 7, 4, Dim(8, 4)},  {100, 65, 9, Dim(16, 2)}};
    for (int act : {0, 1, 2, 3})
        for (const Case& cs : cases) {
            const int rows = cs.rows, cols = cs.cols, count = rows * cols, chunks = (int)ceil_div(rows, cs.chunk_rows);
            char what[128];
            snprintf(what, sizeof what, "activation %s rows=%d cols=%d chunk_rows=%d", kActName[act], rows, cols,
                     cs.chunk_rows);
            const std::vector<float> x = rng.normal(count, 2.0f), b = rng.normal(cols), dy = rng.normal(count);
            // forward: the two kernels, then the fused one out of place and in place
            Guarded<float> x2(x), y2(count);
            launch<K::bias_add>(Dim(3), Dim(256), 0, x2.data(), b.data(), rows, cols);
            launch<K::activation_forward>(Dim(ceil_div(count, 256)), Dim(256), 0, x2.data(), y2.data(), count, act,
                                          (const float*)nullptr, 0);
            Guarded<float> x1(x), y1(count), inplace(x);
            launch<K::activation_forward>(Dim(2), Dim(64), 0, x1.data(), y1.data(), count, act, b.data(), cols);
            launch<K::activation_forward>(Dim(ceil_div(count, 256)), Dim(256), 0, inplace.data(), inplace.data(), count,
                                          act, b.data(), cols);
            const std::vector<float> yv = y2.values(what);
            CHECK(bitwise_equal(y1.values(what), yv), "%s: y differs from bias_add + activation_forward", what);
            CHECK(bitwise_equal(x1.values(what), x2.values(what)), "%s: x does not hold x + b", what);
            CHECK(bitwise_equal(inplace.values(what), yv), "%s: y in place differs", what);
            // backward: the two kernels, then the fused one out of place and dx aliasing dy
            Guarded<float> dx2(count), p2((size_t)chunks * cols);
            launch<K::activation_backward>(Dim(2), Dim(256), 0, yv.data(), dy.data(), dx2.data(), count, act);
            launch<K::column_partial_sum>(Dim(ceil_div(cols, cs.blk.x), chunks), cs.blk, cs.blk.x * cs.blk.y * 4,
                                          (const float*)dx2.data(), (const float*)nullptr, 0, rows, cols, cs.chunk_rows,
                                          p2.data());
            Guarded<float> dx1(count), p1((size_t)chunks * cols), dxi(dy), pi((size_t)chunks * cols);
            launch<K::activation_backward_column_sum>(Dim(ceil_div(cols, cs.blk.x), chunks), cs.blk,
                                                      cs.blk.x * cs.blk.y * 4, yv.data(), dy.data(), dx1.data(), act,
                                                      rows, cols, cs.chunk_rows, p1.data());
            launch<K::activation_backward_column_sum>(Dim(1, std::min(chunks, 2)), cs.blk, cs.blk.x * cs.blk.y * 4,
                                                      yv.data(), (const float*)dxi.data(), dxi.data(), act, rows, cols,
                                                      cs.chunk_rows, pi.data());
            const std::vector<float> dxv = dx2.values(what), pv = p2.values(what);
            CHECK(bitwise_equal(dx1.values(what), dxv), "%s: dx differs from activation_backward", what);
            CHECK(bitwise_equal(p1.values(what), pv), "%s: the partial sums differ from column_partial_sum", what);
            CHECK(bitwise_equal(dxi.values(what), dxv), "%s: dx aliasing dy differs", what);
            CHECK(bitwise_equal(pi.values(what), pv), "%s: a capped grid's partial sums differ", what);
            // and the sums are the sums (in double, within float rounding)
            std::vector<double> want((size_t)chunks * cols, 0), scale((size_t)chunks * cols, 0);
            for (int r = 0; r < rows; ++r)
                for (int c = 0; c < cols; ++c) {
                    const size_t p = (size_t)(r / cs.chunk_rows) * cols + c;
                    want[p] += dxv[(size_t)r * cols + c], scale[p] += fabs(dxv[(size_t)r * cols + c]);
                }
            close_scaled(what, pv, want, scale, 2e-6);
        }
}

namespace {

const float kLnEps = 1e-5f;

struct LnRef {
    std::vector<double> y, mean, rstd;
};

LnRef ln_forward_ref(const std::vector<double>& x, const std::vector<float>& w, const std::vector<float>& b, int n,
                     int F) {
    LnRef r;
    r.y.resize((size_t)n * F), r.mean.resize(n), r.rstd.resize(n);
    for (int i = 0; i < n; ++i) {
        double s = 0, q = 0;
        for (int c = 0; c < F; ++c) s += x[(size_t)i * F + c];
        const double mu = s / F;
        for (int c = 0; c < F; ++c) q += (x[(size_t)i * F + c] - mu) * (x[(size_t)i * F + c] - mu);
        const double rs = 1 / sqrt(q / F + (double)kLnEps);
        r.mean[i] = mu, r.rstd[i] = rs;
        for (int c = 0; c < F; ++c) r.y[(size_t)i * F + c] = (x[(size_t)i * F + c] - mu) * rs * w[c] + b[c];
    }
    return r;
}

// dx from given (float) statistics, with the size of its terms per element
void ln_backward_ref(const std::vector<float>& dy, const std::vector<float>& x, const std::vector<float>& w,
                     const std::vector<float>& mean, const std::vector<float>& rstd, int n, int F,
                     std::vector<double>* dx, std::vector<double>* scale) {
    dx->assign((size_t)n * F, 0), scale->assign((size_t)n * F, 0);
    for (int i = 0; i < n; ++i) {
        double sg = 0, sgx = 0, ag = 0, agx = 0;
        for (int c = 0; c < F; ++c) {
            const size_t k = (size_t)i * F + c;
            const double xhat = ((double)x[k] - mean[i]) * rstd[i], g = (double)dy[k] * w[c];
            sg += g, sgx += g * xhat, ag += fabs(g), agx += fabs(g * xhat);
        }
        for (int c = 0; c < F; ++c) {
            const size_t k = (size_t)i * F + c;
            const double xhat = ((double)x[k] - mean[i]) * rstd[i], g = (double)dy[k] * w[c];
            (*dx)[k] = rstd[i] * (g - sg / F - xhat * sgx / F);
            (*scale)[k] = rstd[i] * (fabs(g) + ag / F + fabs(xhat) * agx / F);
        }
    }
}

struct LnInputs {
    std::vector<float> x, w, b, dy;
};

LnInputs ln_inputs(Rng& rng, int n, int F) {
    LnInputs in;
    in.x = rng.normal((size_t)n * F, 2.0f);
    const std::vector<float> shift = rng.normal(n, 4.0f);  // rows far from zero mean
    for (size_t k = 0; k < in.x.size(); ++k) in.x[k] += shift[k / F];
    in.w = rng.normal(F, 0.2f, 1.0f);
    in.b = rng.normal(F, 0.3f);
    in.dy = rng.normal((size_t)n * F, 0.1f);
    return in;
}

// dw, db through layernorm_param_partials (+ column_finish_sum when there are several chunks)
void ln_params(const LnInputs& in, const float* mean, const float* rstd, int n, int F, int chunk_rows, Dim blk,
               unsigned cap_x, unsigned cap_y, Guarded<float>& dw, Guarded<float>& db) {
    const int chunks = (int)ceil_div(n, chunk_rows);
    Guarded<float> pw((size_t)chunks * F), pb((size_t)chunks * F);
    const Dim grid(std::min(ceil_div(F, blk.x), cap_x), std::min((unsigned)chunks, cap_y));
    launch<K::layernorm_param_partials>(grid, blk, blk.x * blk.y * 4, in.dy.data(), in.x.data(), mean, rstd, n, F,
                                        chunk_rows, chunks == 1 ? dw.data() : pw.data(),
                                        chunks == 1 ? db.data() : pb.data());
    if (chunks > 1) {
        launch<K::column_finish_sum>(Dim(2), Dim(256), 0, pw.data(), chunks, F, dw.data());
        launch<K::column_finish_sum>(Dim(2), Dim(256), 0, pb.data(), chunks, F, db.data());
    }
    pw.values("partial_dw"), pb.values("partial_db");
}

}  // namespace

TEST(layernorm, forward_backward_params_vs_double) {
    Rng rng(61);
    struct Case {
        int n, F;
        unsigned block, grid_cap;
        int chunk_rows;
    };
    // n = 1000 at three widths, once each (the emulator pays per warp shuffle: one warp per row); the
    // variants (NULL statistics, in place, other grids) at the smaller sizes
    const Case cases[] = {{2, 1, 32, 1, 1},       {2, 513, 64, 1, 2},       {3, 7, 96, 1, 2},
                          {3, 200, 32, 2, 3},     {31, 33, 256, 1, 7},      {31, 7, 64, 3, 31},
                          {33, 1, 32, 2, 5},      {33, 513, 128, 9, 16},    {33, 200, 64, 1, 33},
                          {1000, 1, 256, 4, 100}, {1000, 33, 256, 125, 64}, {1000, 513, 256, 3, 333}};
    for (const Case& cs : cases) {
        const int n = cs.n, F = cs.F;
        const LnInputs in = ln_inputs(rng, n, F);
        const LnRef ref = ln_forward_ref(std::vector<double>(in.x.begin(), in.x.end()), in.w, in.b, n, F);
        char what[96];
        snprintf(what, sizeof what, "layernorm n=%d F=%d block=%u grid<=%u chunk_rows=%d", n, F, cs.block, cs.grid_cap,
                 cs.chunk_rows);
        const std::string w = what;
        const unsigned grid = std::min(ceil_div(n, cs.block / 32), cs.grid_cap);
        Guarded<float> y((size_t)n * F), mean(n), rstd(n);
        launch<K::layernorm_forward>(Dim(grid), Dim(cs.block), 0, in.x.data(), in.w.data(), in.b.data(), y.data(),
                                     mean.data(), rstd.data(), n, F, kLnEps);
        const std::vector<float> yv = y.values(what), mv = mean.values(what), rv = rstd.values(what);
        double xs = 0;
        for (float v : in.x) xs = std::max(xs, (double)fabsf(v));
        close((w + " mean").c_str(), mv, ref.mean, 1e-6 * xs, 1e-6);
        close((w + " rstd").c_str(), rv, ref.rstd, 1e-6, 2e-5);
        close((w + " y").c_str(), yv, ref.y, 5e-5, 5e-5);

        const bool variants = n <= 33;
        // inference (mean/rstd NULL), in place (y = x) and another grid: bitwise the same y
        Guarded<float> y_inf((size_t)n * F), y_in(in.x);
        if (variants) {
            launch<K::layernorm_forward>(Dim(1), Dim(64), 0, in.x.data(), in.w.data(), in.b.data(), y_inf.data(),
                                         (float*)nullptr, (float*)nullptr, n, F, kLnEps);
            launch<K::layernorm_forward>(Dim(ceil_div(n, 8)), Dim(256), 0, (const float*)y_in.data(), in.w.data(),
                                         in.b.data(), y_in.data(), mean.data(), rstd.data(), n, F, kLnEps);
            CHECK(bitwise_equal(yv, y_inf.values()) && bitwise_equal(yv, y_in.values()) &&
                      bitwise_equal(mv, mean.values()) && bitwise_equal(rv, rstd.values()),
                  "%s: NULL statistics, in place or another grid change the forward", what);
        }

        // backward from the kernel's statistics
        std::vector<double> want_dx, dx_scale;
        ln_backward_ref(in.dy, in.x, in.w, mv, rv, n, F, &want_dx, &dx_scale);
        Guarded<float> dx((size_t)n * F), dx_in(in.dy);
        launch<K::layernorm_backward>(Dim(grid), Dim(cs.block), 0, in.dy.data(), in.x.data(), in.w.data(), mv.data(),
                                      rv.data(), dx.data(), n, F);
        if (variants)
            launch<K::layernorm_backward>(Dim(1), Dim(32), 0, (const float*)dx_in.data(), in.x.data(), in.w.data(),
                                          mv.data(), rv.data(), dx_in.data(), n, F);
        const std::vector<float> dxv = dx.values(what);
        close_scaled((w + " dx").c_str(), dxv, want_dx, dx_scale, 2e-5);
        if (variants) CHECK(bitwise_equal(dxv, dx_in.values()), "%s: dx aliasing dy (and another grid) differs", what);

        // dw, db: chunked, and with one chunk and full grids
        std::vector<double> want_dw(F, 0), want_db(F, 0), s_dw(F, 0), s_db(F, 0);
        for (int i = 0; i < n; ++i)
            for (int c = 0; c < F; ++c) {
                const size_t k = (size_t)i * F + c;
                const double t = (double)in.dy[k] * (((double)in.x[k] - mv[i]) * rv[i]);
                want_dw[c] += t, s_dw[c] += fabs(t), want_db[c] += in.dy[k], s_db[c] += fabs(in.dy[k]);
            }
        Guarded<float> dw(F), db(F), dw1(F), db1(F), dw2(F), db2(F);
        ln_params(in, mv.data(), rv.data(), n, F, cs.chunk_rows, Dim(16, 4), 2, 3, dw, db);
        close_scaled((w + " dw").c_str(), dw.values(what), want_dw, s_dw, 2e-6);
        close_scaled((w + " db").c_str(), db.values(what), want_db, s_db, 2e-6);
        if (variants) {
            ln_params(in, mv.data(), rv.data(), n, F, cs.chunk_rows, Dim(16, 4), 1u << 30, 65535, dw2, db2);
            ln_params(in, mv.data(), rv.data(), n, F, n, Dim(32, 8), 1u << 30, 65535, dw1, db1);
            close_scaled((w + " dw (one chunk)").c_str(), dw1.values(what), want_dw, s_dw, 2e-6);
            close_scaled((w + " db (one chunk)").c_str(), db1.values(what), want_db, s_db, 2e-6);
            CHECK(bitwise_equal(dw.values(), dw2.values()) && bitwise_equal(db.values(), db2.values()),
                  "%s: dw/db differ between grids", what);
        }
    }
}

// The reference backward itself against central differences of the double forward (so a formula
// shared by the kernel and the reference cannot be wrong in the same way): L = sum(dy * y(x)).
TEST(layernorm, reference_backward_is_the_gradient) {
    Rng rng(62);
    const int n = 3, F = 7;
    const LnInputs in = ln_inputs(rng, n, F);
    const std::vector<double> xd(in.x.begin(), in.x.end());
    const LnRef ref = ln_forward_ref(xd, in.w, in.b, n, F);
    std::vector<float> mean(n), rstd(n);
    for (int i = 0; i < n; ++i) mean[i] = (float)ref.mean[i], rstd[i] = (float)ref.rstd[i];
    std::vector<double> dx, scale;
    ln_backward_ref(in.dy, in.x, in.w, mean, rstd, n, F, &dx, &scale);
    double worst = 0;
    for (size_t k = 0; k < xd.size(); ++k) {
        const double h = 1e-4;
        std::vector<double> xp = xd, xm = xd;
        xp[k] += h, xm[k] -= h;
        const LnRef p = ln_forward_ref(xp, in.w, in.b, n, F), m = ln_forward_ref(xm, in.w, in.b, n, F);
        double lp = 0, lm = 0;
        for (size_t j = 0; j < xd.size(); ++j) lp += in.dy[j] * p.y[j], lm += in.dy[j] * m.y[j];
        worst = std::max(worst, fabs((lp - lm) / (2 * h) - dx[k]) / (scale[k] + 1e-12));
    }
    CHECK(worst < 1e-5, "layer-norm backward formula vs central differences: %.3g of the terms", worst);
}

TEST(large_blocks, layernorm_1024) {
    Rng rng(63);
    const int n = 40, F = 77;
    const LnInputs in = ln_inputs(rng, n, F);
    const LnRef ref = ln_forward_ref(std::vector<double>(in.x.begin(), in.x.end()), in.w, in.b, n, F);
    Guarded<float> y((size_t)n * F), mean(n), rstd(n), dw(F), db(F);
    launch<K::layernorm_forward>(Dim(2), Dim(1024), 0, in.x.data(), in.w.data(), in.b.data(), y.data(), mean.data(),
                                 rstd.data(), n, F, kLnEps);
    close("layernorm 1024 threads y", y.values(), ref.y, 5e-5, 5e-5);
    ln_params(in, mean.data(), rstd.data(), n, F, 7, Dim(32, 32), 1u << 30, 65535, dw, db);
    std::vector<double> want_db(F, 0);
    for (size_t k = 0; k < in.dy.size(); ++k) want_db[k % F] += in.dy[k];
    close("layernorm 1024 threads db", db.values(), want_db, 1e-6, 1e-5);
}
