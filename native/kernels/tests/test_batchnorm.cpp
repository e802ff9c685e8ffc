// test_batchnorm.cpp — batch norm in both modes (Bessel, biased) with each activation (identity,
// tanh, relu, sigmoid): the single-chunk kernels (batchnorm_forward/backward) and the chunked path
// (column_partial_sum, batchnorm_finish_mean/var, batchnorm_normalize, batchnorm_backward_partials,
// column_finish_sum, batchnorm_backward_dx) against a scalar double reference and against each
// other; running statistics, NULL optional outputs, dx aliasing dy, determinism over grids;
// inference with fixed statistics; calibration.
#include <math.h>

#include "test_util.h"

namespace {

const float kEps = 1e-5f;
const float kMomentum = 0.1f;  // large enough that a wrong running update shows in float
struct BnInputs {
    std::vector<float> x, gain, bias, dy, rmean, rvar;
};

BnInputs bn_inputs(Rng& rng, int n, int F) {
    BnInputs in;
    in.x = rng.normal((size_t)n * F, 2.0f);
    const std::vector<float> offset = rng.normal(F, 3.0f);  // columns far from zero mean
    for (size_t k = 0; k < in.x.size(); ++k) in.x[k] += offset[k % F];
    in.gain = rng.normal(F, 0.1f, 1.0f);
    in.bias = rng.normal(F, 0.3f);
    in.dy = rng.normal((size_t)n * F, 0.1f);
    in.rmean = rng.normal(F, 1.0f);
    in.rvar = rng.normal(F, 0.2f, 2.0f);
    return in;
}

struct FwdRef {
    std::vector<double> mean, var, var_inv, raw, y, rmean, rvar;
};

FwdRef forward_ref(const BnInputs& in, int n, int F, int act, int biased) {
    FwdRef r;
    r.mean.assign(F, 0), r.var.assign(F, 0), r.var_inv.assign(F, 0), r.rmean.assign(F, 0), r.rvar.assign(F, 0);
    r.raw.assign((size_t)n * F, 0), r.y.assign((size_t)n * F, 0);
    for (int c = 0; c < F; ++c) {
        double s = 0;
        for (int i = 0; i < n; ++i) s += in.x[(size_t)i * F + c];
        const double mean = s / n;
        double q = 0;
        for (int i = 0; i < n; ++i) q += (in.x[(size_t)i * F + c] - mean) * (in.x[(size_t)i * F + c] - mean);
        const double var = q / (biased ? n : n - 1), unbiased = q / (n - 1);
        const double inv = 1.0 / sqrt(var + (double)kEps);
        r.mean[c] = mean, r.var[c] = var, r.var_inv[c] = inv;
        r.rmean[c] = (1 - (double)kMomentum) * in.rmean[c] + (double)kMomentum * mean;
        r.rvar[c] = (1 - (double)kMomentum) * in.rvar[c] + (double)kMomentum * unbiased;
        for (int i = 0; i < n; ++i) {
            const size_t k = (size_t)i * F + c;
            r.raw[k] = (in.x[k] - mean) * inv;
            r.y[k] = act_forward<double>(in.gain[c] * r.raw[k] + in.bias[c], act);
        }
    }
    return r;
}

// The backward from the kernel's own forward outputs (y, raw, var_inv), so that it is checked alone;
// *_scale: the size of the terms each result is made of (the rounding is relative to those).
struct BwdRef {
    std::vector<double> dx, dgain, dbias, dprev, dx_scale, dgain_scale, dbias_scale, dprev_scale;
};

BwdRef backward_ref(const std::vector<float>& dy, const std::vector<float>& y, const std::vector<float>& raw,
                    const std::vector<float>& gain, const std::vector<float>& var_inv, int n, int F, int act,
                    int biased) {
    BwdRef r;
    r.dx.assign((size_t)n * F, 0), r.dx_scale.assign((size_t)n * F, 0);
    for (auto* v : {&r.dgain, &r.dbias, &r.dprev, &r.dgain_scale, &r.dbias_scale, &r.dprev_scale}) v->assign(F, 0);
    const double c = biased ? 1.0 : (double)n / (n - 1);
    for (int col = 0; col < F; ++col) {
        double sd = 0, sdr = 0, ad = 0, adr = 0;
        for (int i = 0; i < n; ++i) {
            const size_t k = (size_t)i * F + col;
            const double d = act_backward<double>(y[k], dy[k], act);
            sd += d, sdr += d * raw[k], ad += fabs(d), adr += fabs(d * raw[k]);
        }
        r.dbias[col] = sd, r.dgain[col] = sdr, r.dbias_scale[col] = ad, r.dgain_scale[col] = adr;
        const double coef = (double)gain[col] * var_inv[col] / n;
        for (int i = 0; i < n; ++i) {
            const size_t k = (size_t)i * F + col;
            const double d = act_backward<double>(y[k], dy[k], act);
            r.dx[k] = coef * (n * d - sd - c * raw[k] * sdr);
            r.dx_scale[k] = fabs(coef) * (n * fabs(d) + ad + c * fabs(raw[k]) * adr);
            r.dprev[col] += r.dx[k];
            r.dprev_scale[col] += r.dx_scale[k];
        }
    }
    return r;
}

double max_abs(const std::vector<double>& v) {
    double m = 0;
    for (double x : v) m = std::max(m, fabs(x));
    return m;
}

std::vector<double> fill_like(const std::vector<double>& v, double value) {
    return std::vector<double>(v.size(), value);
}

// ---- the two launch paths, as the host runs them ----------------------------------------------------

struct Fwd {
    Guarded<float> mean, var, var_inv, raw, y, rmean, rvar;
    Fwd(const BnInputs& in, int n, int F)
        : mean(F), var(F), var_inv(F), raw((size_t)n * F), y((size_t)n * F), rmean(in.rmean), rvar(in.rvar) {}
};

struct Bwd {
    Guarded<float> dx, dgain, dbias, dprev;
    Bwd(int n, int F) : dx((size_t)n * F), dgain(F), dbias(F), dprev(F) {}
};

// Launch shapes: the column kernels' block and grid caps (x: column tiles, y: chunks), and the grid of
// the elementwise / per-column kernels (any: grid-stride).
struct Shape {
    Dim blk;
    unsigned cap_x = 1u << 30, cap_y = 65535;
    unsigned elem_grid = 5;
};

unsigned smem(const Shape& s) { return s.blk.x * s.blk.y * sizeof(float); }
Dim col_grid(const Shape& s, int F, int chunks) {
    return Dim(std::min(ceil_div(F, s.blk.x), s.cap_x), std::min((unsigned)chunks, s.cap_y));
}

void forward_single(const BnInputs& in, Fwd& o, int n, int F, int act, int biased, const Shape& s, bool running = true,
                    bool raw = true) {
    // x is written only with in_bias (NULL here)
    launch<K::batchnorm_forward>(col_grid(s, F, 1), s.blk, smem(s), const_cast<float*>(in.x.data()), in.gain.data(),
                                 in.bias.data(),
                                 o.mean.data(), o.var.data(), o.var_inv.data(), raw ? o.raw.data() : nullptr,
                                 o.y.data(), running ? o.rmean.data() : nullptr, running ? o.rvar.data() : nullptr, n,
                                 F, kEps, kMomentum, act, biased, (const float*)nullptr);
}

void forward_chunked(const BnInputs& in, Fwd& o, int n, int F, int act, int biased, int chunk_rows, const Shape& s,
                     bool running = true, bool raw = true) {
    const int chunks = (int)ceil_div(n, chunk_rows);
    Guarded<float> partial((size_t)chunks * F);
    const Dim eg(s.elem_grid), eb(256);
    launch<K::column_partial_sum>(col_grid(s, F, chunks), s.blk, smem(s), in.x.data(), (const float*)nullptr, 0, n, F,
                                  chunk_rows, partial.data());
    launch<K::batchnorm_finish_mean>(eg, eb, 0, partial.data(), chunks, n, F, o.mean.data());
    launch<K::column_partial_sum>(col_grid(s, F, chunks), s.blk, smem(s), in.x.data(), o.mean.data(), 1, n, F,
                                  chunk_rows, partial.data());
    launch<K::batchnorm_finish_var>(eg, eb, 0, partial.data(), chunks, n, F, kEps, kMomentum, biased, o.mean.data(),
                                    o.var.data(), o.var_inv.data(), running ? o.rmean.data() : nullptr,
                                    running ? o.rvar.data() : nullptr);
    launch<K::batchnorm_normalize>(eg, eb, 0, in.x.data(), o.mean.data(), o.var_inv.data(), in.gain.data(),
                                   in.bias.data(), raw ? o.raw.data() : nullptr, o.y.data(), n, F, act);
    partial.values("partial");
}

// dx_out: where dx goes (o.dx, or the dy buffer itself for the in-place variant)
void backward_single(const float* dy, const Fwd& f, const BnInputs& in, Bwd& o, float* dx_out, int n, int F, int act,
                     int biased, const Shape& s, bool dprev = true) {
    launch<K::batchnorm_backward>(col_grid(s, F, 1), s.blk, smem(s), dy, f.y.data(), f.raw.data(), in.gain.data(),
                                  f.var_inv.data(), dx_out, o.dgain.data(), o.dbias.data(),
                                  dprev ? o.dprev.data() : nullptr, n, F, act, biased);
}

void backward_chunked(const float* dy, const Fwd& f, const BnInputs& in, Bwd& o, float* dx_out, int n, int F, int act,
                      int biased, int chunk_rows, const Shape& s, bool dprev = true) {
    const int chunks = (int)ceil_div(n, chunk_rows);
    Guarded<float> pd((size_t)chunks * F), pdr((size_t)chunks * F), pdx((size_t)chunks * F);
    const Dim eg(s.elem_grid), eb(256);
    // with one chunk the partials are the results: the host passes dbias/dgain/dprev_bias directly
    float* d_out = chunks == 1 ? o.dbias.data() : pd.data();
    float* dr_out = chunks == 1 ? o.dgain.data() : pdr.data();
    launch<K::batchnorm_backward_partials>(col_grid(s, F, chunks), s.blk, smem(s), dy, f.y.data(), f.raw.data(), n, F,
                                           chunk_rows, act, d_out, dr_out);
    if (chunks > 1) {
        launch<K::column_finish_sum>(eg, eb, 0, pd.data(), chunks, F, o.dbias.data());
        launch<K::column_finish_sum>(eg, eb, 0, pdr.data(), chunks, F, o.dgain.data());
    }
    launch<K::batchnorm_backward_dx>(eg, eb, 0, dy, f.y.data(), f.raw.data(), in.gain.data(), f.var_inv.data(),
                                     o.dbias.data(), o.dgain.data(), dx_out, n, F, act, biased);
    if (dprev) {
        launch<K::column_partial_sum>(col_grid(s, F, chunks), s.blk, smem(s), (const float*)dx_out,
                                      (const float*)nullptr, 0, n, F, chunk_rows,
                                      chunks == 1 ? o.dprev.data() : pdx.data());
        if (chunks > 1) launch<K::column_finish_sum>(eg, eb, 0, pdx.data(), chunks, F, o.dprev.data());
    }
    pd.values("partial_d"), pdr.values("partial_dr"), pdx.values("partial_dx");
}

// Checks one forward against the references.  x - mean loses the bits of |mean| that its
// difference does not have (the columns sit far from 0; with n = 2 or 3 two values can be close):
// raw, y, var and var_inv are allowed u-sized errors of |mean|*var_inv on top of 5e-5.
void check_forward(const std::string& w, const Fwd& o, const FwdRef& ref, const BnInputs& in, int n, int F) {
    const double xs = max_abs(std::vector<double>(in.x.begin(), in.x.end()));
    std::vector<double> s_col(F), s_raw((size_t)n * F), s_y((size_t)n * F);
    for (int c = 0; c < F; ++c) s_col[c] = 1 + 0.02 * fabs(ref.mean[c]) * ref.var_inv[c];
    for (size_t k = 0; k < s_raw.size(); ++k) {
        const int c = (int)(k % F);
        s_raw[k] = 1 + fabs(ref.raw[k]) + 0.02 * fabs(ref.mean[c]) * ref.var_inv[c];
        s_y[k] = 1 + fabs(ref.y[k]) + fabs(in.gain[c]) * s_raw[k];
    }
    std::vector<double> s_var(F), s_vi(F);
    for (int c = 0; c < F; ++c) s_var[c] = ref.var[c] * s_col[c] + 1e-6, s_vi[c] = ref.var_inv[c] * s_col[c];
    close((w + " mean").c_str(), o.mean.values("mean"), ref.mean, 1e-6 * xs, 1e-6);
    close_scaled((w + " var").c_str(), o.var.values("var"), ref.var, s_var, 2e-5);
    close_scaled((w + " var_inv").c_str(), o.var_inv.values("var_inv"), ref.var_inv, s_vi, 2e-5);
    close_scaled((w + " raw").c_str(), o.raw.values("raw"), ref.raw, s_raw, 5e-5);
    close_scaled((w + " y").c_str(), o.y.values("y"), ref.y, s_y, 5e-5);
    close((w + " running_mean").c_str(), o.rmean.values("running_mean"), ref.rmean, 1e-6 * xs, 1e-6);
    std::vector<double> s_rvar(F);
    for (int c = 0; c < F; ++c) s_rvar[c] = fabs(ref.rvar[c]) + s_var[c];
    close_scaled((w + " running_var").c_str(), o.rvar.values("running_var"), ref.rvar, s_rvar, 2e-5);
}

// Float sums of up to 1000 terms: 2e-5 of the terms' magnitude (~ sqrt(n) u at n = 1000, with room);
// a dropped term, a wrong factor or a wrong derivative moves results by far more.
const double kSumTol = 2e-5;

void check_backward(const std::string& w, const Bwd& o, const BwdRef& ref, bool dprev = true) {
    close_scaled((w + " dx").c_str(), o.dx.values("dx"), ref.dx, ref.dx_scale, kSumTol);
    close_scaled((w + " dgain").c_str(), o.dgain.values("dgain"), ref.dgain, ref.dgain_scale, kSumTol);
    close_scaled((w + " dbias").c_str(), o.dbias.values("dbias"), ref.dbias, ref.dbias_scale, kSumTol);
    if (dprev)
        close_scaled((w + " dprev_bias").c_str(), o.dprev.values("dprev_bias"), ref.dprev, ref.dprev_scale, kSumTol);
}

std::string label(const char* path, int n, int F, int act, int biased, int chunk_rows, const Shape& s) {
    char buf[160];
    snprintf(buf, sizeof buf, "%s n=%d F=%d %s %s chunk_rows=%d block=(%u,%u)", path, n, F, kActName[act],
             biased ? "biased" : "bessel", chunk_rows, s.blk.x, s.blk.y);
    return buf;
}

// One case: the single-chunk kernels and the chunked path (chunk_rows), each vs the references, and vs
// each other (each within the tolerance of the reference, so within twice that of each other).
void check_case(Rng& rng, int n, int F, int act, int biased, int chunk_rows, const Shape& single,
                const Shape& chunked) {
    const BnInputs in = bn_inputs(rng, n, F);
    const FwdRef fref = forward_ref(in, n, F, act, biased);

    Fwd f1(in, n, F), f2(in, n, F);
    forward_single(in, f1, n, F, act, biased, single);
    forward_chunked(in, f2, n, F, act, biased, chunk_rows, chunked);
    const std::string w1 = label("single", n, F, act, biased, n, single);
    const std::string w2 = label("chunked", n, F, act, biased, chunk_rows, chunked);
    check_forward(w1, f1, fref, in, n, F);
    check_forward(w2, f2, fref, in, n, F);
    const std::vector<float> y1 = f1.y.values();
    close((w2 + " y vs single").c_str(), f2.y.values(), std::vector<double>(y1.begin(), y1.end()), 1e-4, 1e-4);

    // each backward from its own forward
    Bwd b1(n, F), b2(n, F);
    backward_single(in.dy.data(), f1, in, b1, b1.dx.data(), n, F, act, biased, single);
    backward_chunked(in.dy.data(), f2, in, b2, b2.dx.data(), n, F, act, biased, chunk_rows, chunked);
    check_backward(
        w1, b1, backward_ref(in.dy, f1.y.values(), f1.raw.values(), in.gain, f1.var_inv.values(), n, F, act, biased));
    check_backward(
        w2, b2, backward_ref(in.dy, f2.y.values(), f2.raw.values(), in.gain, f2.var_inv.values(), n, F, act, biased));

    // columns of dx sum to ~0 (the gradient cannot move the batch mean): dprev_bias relative to its terms
    const BwdRef r1 =
        backward_ref(in.dy, f1.y.values(), f1.raw.values(), in.gain, f1.var_inv.values(), n, F, act, biased);
    close_scaled((w1 + " dprev_bias ~ 0").c_str(), b1.dprev.values(), fill_like(r1.dprev, 0.0), r1.dprev_scale, 1e-4);
}

}  // namespace

// Every n in {2,3,31,33,1000} and F in {1,7,33,200,513}, both modes, all four activations (the big
// shapes with fewer combinations: the emulator runs every thread for real), chunk_rows 1, 2, 3, 7
// and larger, so the chunked path runs several chunks already at small n.
TEST(batchnorm, single_and_chunked_vs_double) {
    Rng rng(10);
    // small blocks at small sizes (the emulator pays per thread and barrier); (32, 8) below
    const Shape shapes[] = {{Dim(8, 4)}, {Dim(16, 3), 2, 3, 2}, {Dim(4, 2), 1u << 30, 2, 1}, {Dim(7, 1), 2, 65535, 3}};
    int case_i = 0;
    for (int n : {2, 3, 31, 33})
        for (int F : {1, 7, 33})
            for (int biased : {0, 1})
                for (int act : {0, 1, 2, 3}) {
                    static const int kChunkRows[] = {1, 2, 3, 7};
                    const int chunk_rows = kChunkRows[case_i % 4];
                    check_case(rng, n, F, act, biased, chunk_rows, shapes[case_i % 4], shapes[(case_i + 1) % 4]);
                    ++case_i;
                }
    struct Big {
        int n, F, chunk_rows;
        Shape single, chunked;
    };
    const Big bigs[] = {
        {2, 200, 1, {Dim(32, 8)}, {Dim(32, 1), 3, 65535, 4}},
        {3, 513, 2, {Dim(7, 1), 2}, {Dim(32, 2), 1u << 30, 1, 4}},
        {31, 200, 7, {Dim(16, 3), 3}, {Dim(32, 8), 2, 2, 4}},
        {33, 513, 16, {Dim(32, 8)}, {Dim(32, 2), 1u << 30, 65535, 8}},
        {1000, 1, 7, {Dim(32, 8)}, {Dim(8, 4), 1, 50, 2}},
        {1000, 7, 3, {Dim(8, 4)}, {Dim(8, 2), 1u << 30, 100, 3}},
        {1000, 33, 64, {Dim(32, 8), 1}, {Dim(32, 4), 1u << 30, 65535, 8}},
        {1000, 200, 256, {Dim(32, 8)}, {Dim(32, 8), 1u << 30, 65535, 8}},
        {1000, 513, 333, {Dim(16, 4), 5}, {Dim(32, 8), 7, 2, 8}},
    };
    int k = 0, entry = 0;  // both modes where F < 200, one (alternating) where F >= 200; activations in turn
    for (const Big& b : bigs) {
        for (int biased : {0, 1})
            if (b.F < 200 || biased == (entry & 1))
                check_case(rng, b.n, b.F, k++ % 4, biased, b.chunk_rows, b.single, b.chunked);
        ++entry;
    }
}

// With one chunk (chunk_rows >= n) the chunked path adds in exactly the single kernel's order: bitwise equal.
TEST(batchnorm, one_chunk_is_bitwise_the_single_kernel) {
    Rng rng(11);
    int k = 0;
    for (int n : {2, 33, 300})
        for (int F : {7, 200})
            for (int biased : {0, 1}) {
                const int act = k++ % 4;
                const Shape s{n == 300 ? Dim(32, 8) : Dim(16, 4), 3, 65535, 3};
                const BnInputs in = bn_inputs(rng, n, F);
                Fwd f1(in, n, F), f2(in, n, F);
                forward_single(in, f1, n, F, act, biased, s);
                forward_chunked(in, f2, n, F, act, biased, n + k, s);
                Bwd b1(n, F), b2(n, F);
                backward_single(in.dy.data(), f1, in, b1, b1.dx.data(), n, F, act, biased, s);
                backward_chunked(in.dy.data(), f2, in, b2, b2.dx.data(), n, F, act, biased, n, s);
                const std::string w = label("one chunk", n, F, act, biased, n, s);
                const bool same =
                    bitwise_equal(f1.mean.store, f2.mean.store) && bitwise_equal(f1.var.store, f2.var.store) &&
                    bitwise_equal(f1.var_inv.store, f2.var_inv.store) && bitwise_equal(f1.raw.store, f2.raw.store) &&
                    bitwise_equal(f1.y.store, f2.y.store) && bitwise_equal(f1.rmean.store, f2.rmean.store) &&
                    bitwise_equal(f1.rvar.store, f2.rvar.store);
                CHECK(same, "%s: forward differs between the single kernel and the one-chunk path", w.c_str());
                const bool bsame =
                    bitwise_equal(b1.dx.store, b2.dx.store) && bitwise_equal(b1.dgain.store, b2.dgain.store) &&
                    bitwise_equal(b1.dbias.store, b2.dbias.store) && bitwise_equal(b1.dprev.store, b2.dprev.store);
                CHECK(bsame, "%s: backward differs between the single kernel and the one-chunk path", w.c_str());
            }
}

// Optional outputs: running_mean NULL (no update), raw NULL (not written), dprev_bias NULL; the other
// outputs bitwise as with them.  dx aliasing dy: bitwise as out of place.
TEST(batchnorm, null_outputs_and_in_place) {
    Rng rng(12);
    const Shape s{Dim(16, 4), 2, 2, 3};
    for (int chunked : {0, 1})
        for (int biased : {0, 1}) {
            const int n = 33, F = 33, act = chunked * 2 + biased, chunk_rows = 5;
            const BnInputs in = bn_inputs(rng, n, F);
            const std::string w = label(chunked ? "chunked" : "single", n, F, act, biased, chunked ? chunk_rows : n, s);
            Fwd full(in, n, F), bare(in, n, F);
            auto fwd = [&](Fwd& o, bool running, bool raw) {
                if (chunked)
                    forward_chunked(in, o, n, F, act, biased, chunk_rows, s, running, raw);
                else
                    forward_single(in, o, n, F, act, biased, s, running, raw);
            };
            fwd(full, true, true);
            fwd(bare, false, false);
            CHECK(bitwise_equal(full.y.store, bare.y.store) && bitwise_equal(full.mean.store, bare.mean.store) &&
                      bitwise_equal(full.var_inv.store, bare.var_inv.store),
                  "%s: outputs change when running_mean and raw are NULL", w.c_str());
            CHECK(bitwise_equal(bare.rmean.values(), in.rmean) && bitwise_equal(bare.rvar.values(), in.rvar),
                  "%s: running statistics updated although running_mean is NULL", w.c_str());
            const std::vector<float> raw_bare = bare.raw.values("raw (NULL)");
            CHECK(std::all_of(raw_bare.begin(), raw_bare.end(), [](float v) { return std::isnan(v); }),
                  "%s: raw written although NULL was passed", w.c_str());

            Bwd b_full(n, F), b_bare(n, F);
            auto bwd = [&](const float* dy, Bwd& o, float* dx, bool dprev) {
                if (chunked)
                    backward_chunked(dy, full, in, o, dx, n, F, act, biased, chunk_rows, s, dprev);
                else
                    backward_single(dy, full, in, o, dx, n, F, act, biased, s, dprev);
            };
            bwd(in.dy.data(), b_full, b_full.dx.data(), true);
            bwd(in.dy.data(), b_bare, b_bare.dx.data(), false);
            CHECK(bitwise_equal(b_full.dx.store, b_bare.dx.store) &&
                      bitwise_equal(b_full.dgain.store, b_bare.dgain.store) &&
                      bitwise_equal(b_full.dbias.store, b_bare.dbias.store),
                  "%s: backward outputs change when dprev_bias is NULL", w.c_str());
            const std::vector<float> dp = b_bare.dprev.values("dprev_bias (NULL)");
            CHECK(std::all_of(dp.begin(), dp.end(), [](float v) { return std::isnan(v); }),
                  "%s: dprev_bias written although NULL was passed", w.c_str());

            Guarded<float> inplace(in.dy);  // dx = dy
            Bwd b_in(n, F);
            bwd(inplace.data(), b_in, inplace.data(), true);
            CHECK(bitwise_equal(inplace.values("dx = dy"), b_full.dx.values()) &&
                      bitwise_equal(b_in.dgain.store, b_full.dgain.store) &&
                      bitwise_equal(b_in.dbias.store, b_full.dbias.store) &&
                      bitwise_equal(b_in.dprev.store, b_full.dprev.store),
                  "%s: dx aliasing dy differs from out of place", w.c_str());
        }
}

// Two launches give the same bits; so do other grids (capped x and y: grid-stride over column tiles
// and chunks) with the same block shape and chunk_rows.
TEST(batchnorm, deterministic_over_runs_and_grids) {
    Rng rng(13);
    const int n = 60, F = 40, act = 1;
    const BnInputs in = bn_inputs(rng, n, F);
    for (int chunked : {0, 1})
        for (int biased : {0, 1}) {
            std::vector<std::vector<float>> first;
            int differing = 0;
            const Shape shapes[] = {{Dim(16, 4)}, {Dim(16, 4)}, {Dim(16, 4), 1, 1, 1}, {Dim(16, 4), 2, 3, 7}};
            for (const Shape& s : shapes) {
                Fwd f(in, n, F);
                Bwd b(n, F);
                if (chunked) {
                    forward_chunked(in, f, n, F, act, biased, 9, s);
                    backward_chunked(in.dy.data(), f, in, b, b.dx.data(), n, F, act, biased, 9, s);
                } else {
                    forward_single(in, f, n, F, act, biased, s);
                    backward_single(in.dy.data(), f, in, b, b.dx.data(), n, F, act, biased, s);
                }
                std::vector<std::vector<float>> all = {f.mean.values(),  f.var.values(),  f.var_inv.values(),
                                                       f.raw.values(),   f.y.values(),    f.rmean.values(),
                                                       f.rvar.values(),  b.dx.values(),   b.dgain.values(),
                                                       b.dbias.values(), b.dprev.values()};
                if (first.empty())
                    first = all;
                else
                    for (size_t k = 0; k < all.size(); ++k) differing += !bitwise_equal(first[k], all[k]);
            }
            CHECK(differing == 0, "%s %s: %d outputs differ between runs / grids", chunked ? "chunked" : "single",
                  biased ? "biased" : "bessel", differing);
        }
}

TEST(batchnorm, inference_fixed_statistics) {
    Rng rng(14);
    int k = 0;
    for (int n : {2, 33, 1000})
        for (int F : {1, 7, 513}) {
            const int act = k++ % 4;
            const BnInputs in = bn_inputs(rng, n, F);
            const std::vector<float> mean = rng.normal(F, 2.0f), var0 = rng.normal(F, 1.0f);
            std::vector<float> var(F);
            for (int c = 0; c < F; ++c) var[c] = var0[c] * var0[c] + 0.01f;
            std::vector<double> want((size_t)n * F);
            for (size_t i = 0; i < want.size(); ++i) {
                const int c = (int)(i % F);
                want[i] = act_forward<double>(in.gain[c] * (in.x[i] - mean[c]) / sqrt(var[c] + (double)kEps) + in.bias[c], act);
            }
            char what[64];
            snprintf(what, sizeof what, "batchnorm_inference n=%d F=%d %s", n, F, kActName[act]);
            std::vector<float> first;
            for (unsigned grid : {std::min(ceil_div(want.size(), 256), 9u), 1u}) {
                Guarded<float> y(want.size());
                launch<K::batchnorm_inference>(Dim(grid), Dim(256), 0, in.x.data(), mean.data(), var.data(),
                                               in.gain.data(), in.bias.data(), y.data(), n, F, kEps, act);
                const std::vector<float> got = y.values(what);
                if (first.empty()) {
                    close(what, got, want, 1e-5, 1e-5);
                    first = got;
                } else {
                    CHECK(bitwise_equal(first, got), "%s: grid %u differs", what, grid);
                }
            }
        }
}

// Two passes over chunks of the training set: mean, then Bessel variance about that mean.
static void check_calibration(Rng& rng, std::initializer_list<int> Hs, Dim blk, std::vector<int> chunks) {
    for (int H : Hs) {
        const int N = 1000;
        const BnInputs in = bn_inputs(rng, N, H);
        const unsigned smem = blk.x * blk.y * sizeof(double);
        std::vector<double> results[2];
        for (int run = 0; run < 2; ++run) {
            std::vector<double> sum(H, 0.0), sumsq(H, 0.0), sum2(H, 0.0), sumsq2(H, 0.0);
            int row = 0;
            for (int c : chunks) {
                launch<K::batchnorm_calib_accumulate>(Dim(ceil_div(H, 32)), blk, smem, in.x.data() + (size_t)row * H, c,
                                                      H, (const float*)nullptr, sum.data(), sumsq.data());
                row += c;
            }
            std::vector<float> mean(H);
            for (int k = 0; k < H; ++k) mean[k] = (float)(sum[k] / N);
            row = 0;
            for (int c : chunks) {
                launch<K::batchnorm_calib_accumulate>(Dim(ceil_div(H, 32)), blk, smem, in.x.data() + (size_t)row * H, c,
                                                      H, mean.data(), sum2.data(), sumsq2.data());
                row += c;
            }
            std::vector<double>& res = results[run];
            for (int k = 0; k < H; ++k) {
                res.push_back(sum[k] / N);
                res.push_back((sumsq2[k] - sum2[k] * sum2[k] / N) / (N - 1));
            }
        }
        std::vector<double> want;
        for (int k = 0; k < H; ++k) {
            double s = 0;
            for (int i = 0; i < N; ++i) s += in.x[(size_t)i * H + k];
            const double mean = s / N;
            double q = 0;
            for (int i = 0; i < N; ++i) q += (in.x[(size_t)i * H + k] - mean) * (in.x[(size_t)i * H + k] - mean);
            want.push_back(mean);
            want.push_back(q / (N - 1));
        }
        char what[64];
        snprintf(what, sizeof what, "calibration H=%d block=(%u,%u)", H, blk.x, blk.y);
        close(what, results[0], want, 1e-9, 1e-9);
        CHECK(bitwise_equal(results[0], results[1]), "%s not reproducible", what);
    }
}

TEST(batchnorm, calibration_two_passes) {
    Rng rng(15);
    check_calibration(rng, {1, 200, 513}, Dim(32, 8), {333, 1, 333, 333});  // awkward chunks, fixed order
}

TEST(large_blocks, batchnorm_calibration_32x32) {
    Rng rng(16);
    check_calibration(rng, {33}, Dim(32, 32), {1000});
}

// The single kernels and the column partials with 1024-thread blocks.
TEST(large_blocks, batchnorm_32x32) {
    Rng rng(17);
    check_case(rng, 1000, 33, 1, 0, 100, {Dim(32, 32)}, {Dim(32, 32), 1u << 30, 3, 4});
    check_case(rng, 33, 40, 3, 1, 7, {Dim(32, 32)}, {Dim(32, 32), 1, 65535, 4});
}
