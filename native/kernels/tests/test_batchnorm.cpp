// test_batchnorm.cpp — fused batch norm (+tanh) forward/backward, inference and calibration
// against a scalar double reference of docs/makemore.md §2/§4.
#include <math.h>

#include "test_util.h"

namespace {

const float kEps = 1e-5f;

struct BnRef {
    std::vector<double> mean, var, var_inv, raw, h;  // forward
    std::vector<double> dhprebn, dbngain, dbnbias;   // backward
};

BnRef bn_ref(const std::vector<float>& x, const std::vector<float>& gain, const std::vector<float>& bias,
             const std::vector<float>& dh, int n, int H) {
    BnRef r;
    r.mean.assign(H, 0);
    r.var.assign(H, 0);
    r.var_inv.assign(H, 0);
    r.raw.assign((size_t)n * H, 0);
    r.h.assign((size_t)n * H, 0);
    r.dhprebn.assign((size_t)n * H, 0);
    r.dbngain.assign(H, 0);
    r.dbnbias.assign(H, 0);
    for (int c = 0; c < H; ++c) {
        double s = 0;
        for (int i = 0; i < n; ++i) s += x[(size_t)i * H + c];
        const double mean = s / n;
        double q = 0;
        for (int i = 0; i < n; ++i) q += (x[(size_t)i * H + c] - mean) * (x[(size_t)i * H + c] - mean);
        const double var = q / (n - 1);
        const double inv = 1.0 / sqrt(var + (double)kEps);
        r.mean[c] = mean;
        r.var[c] = var;
        r.var_inv[c] = inv;
        double sd = 0, sdr = 0;
        for (int i = 0; i < n; ++i) {
            const size_t k = (size_t)i * H + c;
            r.raw[k] = (x[k] - mean) * inv;
            r.h[k] = tanh(gain[c] * r.raw[k] + bias[c]);
            const double dp = (1 - r.h[k] * r.h[k]) * dh[k];
            sd += dp;
            sdr += dp * r.raw[k];
        }
        r.dbngain[c] = sdr;
        r.dbnbias[c] = sd;
        for (int i = 0; i < n; ++i) {
            const size_t k = (size_t)i * H + c;
            const double dp = (1 - r.h[k] * r.h[k]) * dh[k];
            r.dhprebn[k] = gain[c] * inv / n * (n * dp - sd - (double)n / (n - 1) * r.raw[k] * sdr);
        }
    }
    return r;
}

double max_abs(const std::vector<double>& v) {
    double m = 0;
    for (double x : v) m = std::max(m, fabs(x));
    return m;
}

struct BnInputs {
    std::vector<float> x, gain, bias, dh;
};

BnInputs bn_inputs(Rng& rng, int n, int H) {
    BnInputs in;
    in.x = rng.normal((size_t)n * H, 2.0f);
    const std::vector<float> offset = rng.normal(H, 3.0f);  // columns far from zero mean
    for (size_t k = 0; k < in.x.size(); ++k) in.x[k] += offset[k % H];
    in.gain = rng.normal(H, 0.1f, 1.0f);
    in.bias = rng.normal(H, 0.1f);
    in.dh = rng.normal((size_t)n * H, 0.1f);
    return in;
}

}  // namespace

TEST(batchnorm, forward_backward_vs_double) {
    Rng rng(10);
    const Dim shapes[] = {Dim(32, 8), Dim(16, 3), Dim(64, 4), Dim(7, 1)};
    int shape_i = 0;
    for (int n : {2, 3, 31, 33, 1000})
        for (int H : {1, 200, 513}) {
            const Dim blk = shapes[shape_i++ % 4];
            char what[96];
            snprintf(what, sizeof what, "n=%d H=%d block=(%u,%u)", n, H, blk.x, blk.y);
            const BnInputs in = bn_inputs(rng, n, H);
            const BnRef ref = bn_ref(in.x, in.gain, in.bias, in.dh, n, H);
            std::vector<float> mean(H), var(H), var_inv(H), raw((size_t)n * H), h((size_t)n * H);
            const unsigned grid = ceil_div(H, blk.x);
            const unsigned smem = blk.x * blk.y * sizeof(float);
            launch<K::batchnorm_forward>(Dim(grid), blk, smem, in.x.data(), in.gain.data(), in.bias.data(), mean.data(),
                                         var.data(), var_inv.data(), raw.data(), h.data(), n, H, kEps);
            const std::string w = what;
            close((w + " bnmeani").c_str(), mean, ref.mean, 2e-5 * 5, 1e-5);
            close((w + " bnvar").c_str(), var, ref.var, 1e-5, 2e-5);
            close((w + " bnvar_inv").c_str(), var_inv, ref.var_inv, 1e-5, 2e-5);
            close((w + " bnraw").c_str(), raw, ref.raw, 5e-5, 5e-5);
            close((w + " h").c_str(), h, ref.h, 5e-5, 5e-5);

            std::vector<float> dhprebn((size_t)n * H), dbngain(H), dbnbias(H);
            launch<K::batchnorm_backward>(Dim(grid), blk, smem, in.dh.data(), h.data(), raw.data(), in.gain.data(),
                                          var_inv.data(), dhprebn.data(), dbngain.data(), dbnbias.data(), n, H);
            close((w + " dhprebn").c_str(), dhprebn, ref.dhprebn, 1e-4 * max_abs(ref.dhprebn) + 1e-7, 1e-3);
            close((w + " dbngain").c_str(), dbngain, ref.dbngain, 1e-4 * max_abs(ref.dbngain) + 1e-7, 1e-4);
            close((w + " dbnbias").c_str(), dbnbias, ref.dbnbias, 1e-4 * max_abs(ref.dbnbias) + 1e-7, 1e-4);

            // Each column of dhprebn sums to ~0 (the gradient cannot move the batch mean), relative
            // to the size of the terms that cancel: sum_i |bngain*bnvar_inv*dhpreact_i|.
            double worst = 0;
            for (int c = 0; c < H; ++c) {
                double s = 0, a = 0;
                for (int i = 0; i < n; ++i) {
                    const size_t k = (size_t)i * H + c;
                    s += dhprebn[k];
                    a += fabs(in.gain[c] * ref.var_inv[c] * (1 - ref.h[k] * ref.h[k]) * in.dh[k]);
                }
                worst = std::max(worst, fabs(s) / (a + 1e-30));
            }
            CHECK(worst < 1e-4, "%s: a column of dhprebn sums to %g of its magnitude", what, worst);
        }
}

TEST(batchnorm, deterministic) {
    Rng rng(11);
    const int n = 1000, H = 200;
    const BnInputs in = bn_inputs(rng, n, H);
    std::vector<float> out[2][8];
    for (int run = 0; run < 2; ++run) {
        auto& o = out[run];
        o[0].resize(H), o[1].resize(H), o[2].resize(H), o[3].resize((size_t)n * H), o[4].resize((size_t)n * H);
        o[5].resize((size_t)n * H), o[6].resize(H), o[7].resize(H);
        launch<K::batchnorm_forward>(Dim(7), Dim(32, 8), 32 * 8 * 4, in.x.data(), in.gain.data(), in.bias.data(),
                                     o[0].data(), o[1].data(), o[2].data(), o[3].data(), o[4].data(), n, H, kEps);
        launch<K::batchnorm_backward>(Dim(7), Dim(32, 8), 32 * 8 * 4, in.dh.data(), o[4].data(), o[3].data(),
                                      in.gain.data(), o[2].data(), o[5].data(), o[6].data(), o[7].data(), n, H);
    }
    int differing = 0;
    for (int k = 0; k < 8; ++k) differing += !bitwise_equal(out[0][k], out[1][k]);
    CHECK(differing == 0, "%d of 8 batch-norm outputs differ between two identical runs", differing);
}

TEST(batchnorm, inference_fixed_statistics) {
    Rng rng(12);
    for (int n : {2, 33, 1000})
        for (int H : {1, 200, 513}) {
            const BnInputs in = bn_inputs(rng, n, H);
            const std::vector<float> mean = rng.normal(H, 2.0f), var0 = rng.normal(H, 1.0f);
            std::vector<float> var(H);
            for (int c = 0; c < H; ++c) var[c] = var0[c] * var0[c] + 0.01f;
            std::vector<double> want((size_t)n * H);
            for (size_t k = 0; k < want.size(); ++k) {
                const int c = (int)(k % H);
                want[k] = tanh(in.gain[c] * (in.x[k] - mean[c]) / sqrt(var[c] + (double)kEps) + in.bias[c]);
            }
            std::vector<float> h((size_t)n * H);
            launch<K::batchnorm_inference>(Dim(std::min(ceil_div(h.size(), 256), 9u)), Dim(256), 0, in.x.data(),
                                           mean.data(), var.data(), in.gain.data(), in.bias.data(), h.data(), n, H,
                                           kEps);
            char what[64];
            snprintf(what, sizeof what, "batchnorm_inference n=%d H=%d", n, H);
            close(what, h, want, 1e-5, 1e-5);
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
    Rng rng(13);
    check_calibration(rng, {1, 200, 513}, Dim(32, 8), {333, 1, 333, 333});  // awkward chunks, fixed order
}

TEST(large_blocks, batchnorm_calibration_32x32) {
    Rng rng(15);
    check_calibration(rng, {33}, Dim(32, 32), {1000});
}

TEST(batchnorm, running_update) {
    Rng rng(14);
    for (int H : {1, 200, 513}) {
        std::vector<float> mean = rng.normal(H), var = rng.normal(H, 1.0f, 2.0f);
        const std::vector<float> bm = rng.normal(H), bv = rng.normal(H, 1.0f, 2.0f);
        std::vector<double> want_mean(H), want_var(H);
        for (int c = 0; c < H; ++c) {
            want_mean[c] = (1 - 0.001) * mean[c] + 0.001 * bm[c];
            want_var[c] = (1 - 0.001) * var[c] + 0.001 * bv[c];
        }
        launch<K::batchnorm_running_update>(Dim(ceil_div(H, 256)), Dim(256), 0, mean.data(), var.data(), bm.data(),
                                            bv.data(), 0.001f, H);
        close("running mean", mean, want_mean, 1e-6, 1e-6);
        close("running var", var, want_var, 1e-6, 1e-6);
    }
}
