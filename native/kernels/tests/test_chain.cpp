// test_chain.cpp — the exercise-1 chain (atomic_chain.cu), launched in the order documented
// in README.md, against the double reference AND against the fused kernels.
#include <math.h>

#include "test_util.h"

namespace {

const float kEps = 1e-5f;
using Vec = std::vector<float>;

double max_abs(const std::vector<double>& v) {
    double m = 0;
    for (double x : v) m = std::max(m, fabs(x));
    return m;
}
double max_abs(const Vec& v) {
    double m = 0;
    for (float x : v) m = std::max(m, (double)fabs(x));
    return m;
}

Dim elem_grid(size_t count) { return Dim(std::min(ceil_div(count, 256), 6u)); }
Dim row_grid(int n) { return Dim(ceil_div(n, 8)); }
Dim col_grid(int cols) { return Dim(ceil_div(cols, 256)); }
const Dim kBlock(256);

// loss[0] = mean of losses: sum_partials (chunks of 256) + sum_finish(1/n), as the backend launches them
void mean_loss(const Vec& losses, Vec& loss) {
    const int n = (int)losses.size(), chunks = (int)ceil_div(n, 256);
    std::vector<double> partial(chunks);
    launch<K::sum_partials>(Dim(chunks), kBlock, 0, losses.data(), n, 256, 0, partial.data());
    launch<K::sum_finish>(Dim(1), kBlock, 0, partial.data(), chunks, 1.0 / n, loss.data(), (hpb_step*)nullptr, 0);
}

}  // namespace

TEST(chain, cross_entropy_chain_vs_fused) {
    Rng rng(40);
    for (int n : {2, 3, 31, 33, 1000})
        for (int V : {27, 1000, 50000}) {
            if (V == 50000 && n != 2) continue;
            if (V == 1000 && n != 3 && n != 33) continue;
            const size_t NV = (size_t)n * V;
            const Vec logits = rng.normal(NV, 3.0f);
            const std::vector<int> Yb = rng.ints(n, 0, V - 1);

            Vec logit_maxes(n), norm_logits(NV), counts(NV), counts_sum(n), counts_sum_inv(n), probs(NV), logprobs(NV),
                losses(n), loss(1);
            launch<K::chain_logit_maxes>(row_grid(n), kBlock, 0, logits.data(), logit_maxes.data(), n, V);
            launch<K::chain_norm_logits>(elem_grid(NV), kBlock, 0, logits.data(), logit_maxes.data(),
                                         norm_logits.data(), n, V);
            launch<K::chain_counts>(elem_grid(NV), kBlock, 0, norm_logits.data(), counts.data(), (int)NV);
            launch<K::chain_counts_sum>(row_grid(n), kBlock, 0, counts.data(), counts_sum.data(), n, V);
            launch<K::chain_counts_sum_inv>(elem_grid(n), kBlock, 0, counts_sum.data(), counts_sum_inv.data(), n);
            launch<K::chain_probs>(elem_grid(NV), kBlock, 0, counts.data(), counts_sum_inv.data(), probs.data(), n, V);
            launch<K::chain_logprobs>(elem_grid(NV), kBlock, 0, probs.data(), logprobs.data(), (int)NV);
            launch<K::chain_losses>(elem_grid(n), kBlock, 0, logprobs.data(), Yb.data(), losses.data(), n, V);
            mean_loss(losses, loss);

            Vec dlogprobs(NV), dprobs(NV), dcounts_sum_inv(n), dcounts_sum(n), dcounts(NV), dnorm_logits(NV),
                dlogit_maxes(n), dlogits(NV);
            launch<K::chain_dlogprobs>(elem_grid(NV), kBlock, 0, dlogprobs.data(), Yb.data(), n, V);
            launch<K::chain_dprobs>(elem_grid(NV), kBlock, 0, dlogprobs.data(), probs.data(), dprobs.data(), (int)NV);
            launch<K::chain_dcounts_sum_inv>(row_grid(n), kBlock, 0, counts.data(), dprobs.data(),
                                             dcounts_sum_inv.data(), n, V);
            launch<K::chain_dcounts_sum>(elem_grid(n), kBlock, 0, counts_sum.data(), dcounts_sum_inv.data(),
                                         dcounts_sum.data(), n);
            launch<K::chain_dcounts>(elem_grid(NV), kBlock, 0, counts_sum_inv.data(), dprobs.data(), dcounts_sum.data(),
                                     dcounts.data(), n, V);
            launch<K::chain_dnorm_logits>(elem_grid(NV), kBlock, 0, counts.data(), dcounts.data(), dnorm_logits.data(),
                                          (int)NV);
            launch<K::chain_dlogit_maxes>(row_grid(n), kBlock, 0, dnorm_logits.data(), dlogit_maxes.data(), n, V);
            launch<K::chain_dlogits>(row_grid(n), kBlock, 0, logits.data(), dnorm_logits.data(), dlogit_maxes.data(),
                                     dlogits.data(), n, V);

            // double reference of the named tensors
            std::vector<double> r_maxes(n), r_probs(NV), r_dlogits(NV), r_losses(n);
            double r_loss = 0;
            for (int i = 0; i < n; ++i) {
                double m = -INFINITY, s = 0;
                for (int j = 0; j < V; ++j) m = std::max(m, (double)logits[(size_t)i * V + j]);
                for (int j = 0; j < V; ++j) s += exp(logits[(size_t)i * V + j] - m);
                r_maxes[i] = m;
                for (int j = 0; j < V; ++j) {
                    const double p = exp(logits[(size_t)i * V + j] - m) / s;
                    r_probs[(size_t)i * V + j] = p;
                    r_dlogits[(size_t)i * V + j] = (p - (j == Yb[i])) / n;
                }
                r_losses[i] = -log(r_probs[(size_t)i * V + Yb[i]]);
                r_loss += r_losses[i] / n;
            }
            char what[64];
            snprintf(what, sizeof what, "chain CE n=%d V=%d", n, V);
            const std::string w = what;
            close((w + " logit_maxes").c_str(), logit_maxes, r_maxes, 0, 0);
            close((w + " probs").c_str(), probs, r_probs, 1e-7, 1e-5);
            close((w + " losses").c_str(), losses, r_losses, 2e-5, 2e-5);
            close((w + " loss").c_str(), loss, std::vector<double>{r_loss}, 2e-5, 2e-5);
            close((w + " dlogits").c_str(), dlogits, r_dlogits, 1e-7 / n, 1e-3);
            CHECK(max_abs(dlogit_maxes) < 1e-7 * sqrt((double)V) / n, "%s dlogit_maxes not ~0: %g", what,
                  max_abs(dlogit_maxes));

            // fused vs chain
            Vec f_dlogits(NV), f_losses(n), f_loss(1);
            launch<K::cross_entropy_warp>(Dim(ceil_div(n, 8)), kBlock, 0, logits.data(), Yb.data(), f_dlogits.data(),
                                          f_losses.data(), n, V);
            mean_loss(f_losses, f_loss);
            close((w + " fused vs chain dlogits").c_str(), f_dlogits, dlogits, 1e-7 / n, 1e-3);
            close((w + " fused vs chain loss").c_str(), f_loss, loss, 2e-5, 2e-5);
        }
}

TEST(chain, batchnorm_chain_vs_fused) {
    Rng rng(41);
    const int shapes[][2] = {{2, 513}, {2, 1}, {3, 200}, {31, 1}, {31, 513}, {33, 200}, {1000, 1}, {1000, 200}};
    for (const auto& shape : shapes) {
        const int n = shape[0], H = shape[1];
        const size_t NH = (size_t)n * H;
        Vec hprebn = rng.normal(NH, 2.0f);
        const Vec offset = rng.normal(H, 3.0f);
        for (size_t k = 0; k < NH; ++k) hprebn[k] += offset[k % H];
        const Vec bngain = rng.normal(H, 0.1f, 1.0f), bnbias = rng.normal(H, 0.1f), dh = rng.normal(NH, 0.1f);

        Vec bnmeani(H), bndiff(NH), bndiff2(NH), bnvar(H), bnvar_inv(H), bnraw(NH), hpreact(NH), h(NH);
        launch<K::chain_bnmeani>(col_grid(H), kBlock, 0, hprebn.data(), bnmeani.data(), n, H);
        launch<K::chain_bndiff>(elem_grid(NH), kBlock, 0, hprebn.data(), bnmeani.data(), bndiff.data(), n, H);
        launch<K::chain_bndiff2>(elem_grid(NH), kBlock, 0, bndiff.data(), bndiff2.data(), (int)NH);
        launch<K::chain_bnvar>(col_grid(H), kBlock, 0, bndiff2.data(), bnvar.data(), n, H);
        launch<K::chain_bnvar_inv>(elem_grid(H), kBlock, 0, bnvar.data(), bnvar_inv.data(), H, kEps);
        launch<K::chain_bnraw>(elem_grid(NH), kBlock, 0, bndiff.data(), bnvar_inv.data(), bnraw.data(), n, H);
        launch<K::chain_hpreact>(elem_grid(NH), kBlock, 0, bngain.data(), bnraw.data(), bnbias.data(), hpreact.data(),
                                 n, H);
        launch<K::chain_h>(elem_grid(NH), kBlock, 0, hpreact.data(), h.data(), (int)NH);

        Vec dhpreact(NH), dbngain(H), dbnraw(NH), dbnbias(H), dbnvar_inv(H), dbnvar(H), dbndiff2(NH), dbndiff(NH),
            dbnmeani(H), dhprebn(NH);
        launch<K::chain_dhpreact>(elem_grid(NH), kBlock, 0, h.data(), dh.data(), dhpreact.data(), (int)NH);
        launch<K::chain_dbngain>(col_grid(H), kBlock, 0, bnraw.data(), dhpreact.data(), dbngain.data(), n, H);
        launch<K::chain_dbnraw>(elem_grid(NH), kBlock, 0, bngain.data(), dhpreact.data(), dbnraw.data(), n, H);
        launch<K::chain_dbnbias>(col_grid(H), kBlock, 0, dhpreact.data(), dbnbias.data(), n, H);
        launch<K::chain_dbnvar_inv>(col_grid(H), kBlock, 0, bndiff.data(), dbnraw.data(), dbnvar_inv.data(), n, H);
        launch<K::chain_dbnvar>(elem_grid(H), kBlock, 0, bnvar.data(), dbnvar_inv.data(), dbnvar.data(), H, kEps);
        launch<K::chain_dbndiff2>(elem_grid(NH), kBlock, 0, dbnvar.data(), dbndiff2.data(), n, H);
        launch<K::chain_dbndiff>(elem_grid(NH), kBlock, 0, bnvar_inv.data(), dbnraw.data(), bndiff.data(),
                                 dbndiff2.data(), dbndiff.data(), n, H);
        launch<K::chain_dbnmeani>(col_grid(H), kBlock, 0, dbndiff.data(), dbnmeani.data(), n, H);
        launch<K::chain_dhprebn>(elem_grid(NH), kBlock, 0, dbndiff.data(), dbnmeani.data(), dhprebn.data(), n, H);

        // double reference (docs/makemore.md §3, term by term)
        std::vector<double> r_mean(H), r_var(H), r_h(NH), r_dhprebn(NH), r_dbngain(H), r_dbnbias(H);
        for (int c = 0; c < H; ++c) {
            double s = 0, q = 0;
            for (int i = 0; i < n; ++i) s += hprebn[(size_t)i * H + c];
            const double mean = s / n;
            for (int i = 0; i < n; ++i) q += pow(hprebn[(size_t)i * H + c] - mean, 2);
            const double var = q / (n - 1), inv = 1 / sqrt(var + (double)kEps);
            r_mean[c] = mean;
            r_var[c] = var;
            double sd = 0, sdr = 0;
            std::vector<double> dp(n), raw(n);
            for (int i = 0; i < n; ++i) {
                const size_t k = (size_t)i * H + c;
                raw[i] = (hprebn[k] - mean) * inv;
                r_h[k] = tanh(bngain[c] * raw[i] + bnbias[c]);
                dp[i] = (1 - r_h[k] * r_h[k]) * dh[k];
                sd += dp[i];
                sdr += dp[i] * raw[i];
            }
            r_dbngain[c] = sdr;
            r_dbnbias[c] = sd;
            for (int i = 0; i < n; ++i)
                r_dhprebn[(size_t)i * H + c] =
                    bngain[c] * inv / n * (n * dp[i] - sd - (double)n / (n - 1) * raw[i] * sdr);
        }
        char what[64];
        snprintf(what, sizeof what, "chain BN n=%d H=%d", n, H);
        const std::string w = what;
        close((w + " bnmeani").c_str(), bnmeani, r_mean, 1e-4, 1e-5);
        close((w + " bnvar").c_str(), bnvar, r_var, 1e-5, 2e-5);
        close((w + " h").c_str(), h, r_h, 5e-5, 5e-5);
        close((w + " dbngain").c_str(), dbngain, r_dbngain, 1e-4 * max_abs(r_dbngain) + 1e-7, 1e-4);
        close((w + " dbnbias").c_str(), dbnbias, r_dbnbias, 1e-4 * max_abs(r_dbnbias) + 1e-7, 1e-4);
        close((w + " dhprebn").c_str(), dhprebn, r_dhprebn, 2e-4 * max_abs(r_dhprebn) + 1e-7, 2e-3);

        // fused vs chain
        Vec f_mean(H), f_var(H), f_var_inv(H), f_raw(NH), f_h(NH), f_dhprebn(NH), f_dbngain(H), f_dbnbias(H);
        const unsigned smem = 32 * 8 * sizeof(float);
        // the makemore configuration: tanh (act 1), Bessel (biased 0), no running statistics, no dprev_bias
        launch<K::batchnorm_forward>(Dim(ceil_div(H, 32)), Dim(32, 8), smem, hprebn.data(), bngain.data(),
                                     bnbias.data(), f_mean.data(), f_var.data(), f_var_inv.data(), f_raw.data(),
                                     f_h.data(), (float*)nullptr, (float*)nullptr, n, H, kEps, 0.0f, 1, 0,
                                     (const float*)nullptr);
        launch<K::batchnorm_backward>(Dim(ceil_div(H, 32)), Dim(32, 8), smem, dh.data(), f_h.data(), f_raw.data(),
                                      bngain.data(), f_var_inv.data(), f_dhprebn.data(), f_dbngain.data(),
                                      f_dbnbias.data(), (float*)nullptr, n, H, 1, 0);
        close((w + " fused vs chain h").c_str(), f_h, h, 5e-5, 5e-5);
        close((w + " fused vs chain bnraw").c_str(), f_raw, bnraw, 1e-4, 1e-4);
        close((w + " fused vs chain dhprebn").c_str(), f_dhprebn, dhprebn, 2e-4 * max_abs(dhprebn) + 1e-7, 2e-3);
        close((w + " fused vs chain dbngain").c_str(), f_dbngain, dbngain, 1e-4 * max_abs(dbngain) + 1e-7, 1e-4);
        close((w + " fused vs chain dbnbias").c_str(), f_dbnbias, dbnbias, 1e-4 * max_abs(dbnbias) + 1e-7, 1e-4);
    }
}
