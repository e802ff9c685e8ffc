// test_losses.cpp — the chunked double-precision sums (sum_partials, sum_finish) and the regression
// losses (regression_loss: mse, bce_with_logits, mean) with their gradients dz/dt.
#include <math.h>

#include "test_util.h"

namespace {

struct SumRun {
    std::vector<double> partial;
    float out;
};

SumRun sum_run(const std::vector<float>& x, int chunk, int square, double scale, unsigned grid_cap, unsigned threads,
               unsigned finish_threads) {
    const int count = (int)x.size();
    const int chunks = (int)ceil_div(count, chunk);
    Guarded<double> partial(chunks);
    Guarded<float> out(1);
    launch<K::sum_partials>(Dim(std::min((unsigned)chunks, grid_cap)), Dim(threads), 0, x.data(), count, chunk, square,
                            partial.data());
    launch<K::sum_finish>(Dim(1), Dim(finish_threads), 0, partial.data(), chunks, scale, out.data(), (hpb_step*)nullptr, 0);
    return {partial.values("partial"), out.values("out")[0]};
}

}  // namespace

// Partials in double: within 1e-12 of the double sum of |terms| (sums of a few thousand doubles);
// the finished, scaled, float result within 2 float roundings.  Capped grids (grid-stride over the
// chunks) give the same bits; so does a second run.
void check_sums(Rng& rng, std::initializer_list<int> counts, std::initializer_list<int> chunk_list, unsigned threads) {
    for (int count : counts)
        for (int chunk : chunk_list)
            for (int square : {0, 1}) {
                const std::vector<float> x = rng.normal(count, 1.0f, 2.0f);
                const int chunks = (int)ceil_div(count, chunk);
                std::vector<double> want_p(chunks, 0), scale_p(chunks, 0);
                double total = 0;
                for (int i = 0; i < count; ++i) {
                    const double v = square ? (double)x[i] * x[i] : x[i];
                    want_p[i / chunk] += v, scale_p[i / chunk] += fabs(v), total += v;
                }
                const double scale = square ? 0.01 : 1.0 / count;
                const SumRun run = sum_run(x, chunk, square, scale, 3, threads, threads);
                char what[96];
                snprintf(what, sizeof what, "sum_partials count=%d chunk=%d square=%d threads=%u", count, chunk, square,
                         threads);
                close_scaled(what, run.partial, want_p, scale_p, 1e-12);
                close((std::string(what) + " sum_finish").c_str(), std::vector<float>{run.out},
                      std::vector<double>{scale * total}, 0, 2.5e-7);
                const SumRun full = sum_run(x, chunk, square, scale, 1u << 30, threads, threads);
                CHECK(bitwise_equal(run.partial, full.partial) && run.out == full.out,
                      "%s: not bitwise the same over grids", what);
            }
}

TEST(losses, sum_partials_and_finish) {
    Rng rng(50);
    // (the emulator pays a few microseconds per thread and barrier: many chunks only at small counts)
    check_sums(rng, {1, 2, 3, 31, 33}, {1, 7, 256}, 32);
    check_sums(rng, {1000}, {256, 0x7fffffff}, 256);
    check_sums(rng, {182625}, {40000, 0x7fffffff}, 256);
}

TEST(large_blocks, sum_partials_1024) {
    Rng rng(51);
    check_sums(rng, {33, 182625}, {65536}, 1024);
}

// sum_finish alone: many partials, any block of whole warps; extra blocks write nothing.
TEST(losses, sum_finish_alone) {
    Rng rng(52);
    for (int count : {1, 5, 300, 5000})
        for (unsigned threads : {32u, 256u}) {
            std::vector<double> p(count);
            for (auto& v : p) v = rng.normal(1, 1e3f)[0];
            double s = 0;
            for (double v : p) s += v;
            Guarded<float> out(1);
            launch<K::sum_finish>(Dim(3), Dim(threads), 0, p.data(), count, 0.5, out.data(), (hpb_step*)nullptr, 0);
            char what[64];
            snprintf(what, sizeof what, "sum_finish count=%d threads=%u", count, threads);
            close(what, out.values(what), std::vector<double>{0.5 * s}, 1e-9, 2.5e-7);
        }
}

// The training step's loss goes to slot step->slot of the ring and nowhere else, and the step advances
// (next = current + 1); accumulate adds the second sum (the L2 penalty) to it in float, the host's
// loss + l2.
TEST(losses, sum_finish_into_the_ring) {
    const std::vector<double> loss = {1.25, 2.5, -0.125}, l2 = {0.0625, 0.03125};
    for (unsigned slot : {0u, 3u, 4u}) {
        Guarded<float> ring(5, -7.0f);
        hpb_step st = step_at(1000 + slot, 0.1f, 0.0f, 1.0f, slot);
        st.next = 0;  // the loss kernel advances the step: next = current + 1, once or twice alike
        launch<K::sum_finish>(Dim(1), Dim(32), 0, loss.data(), 3, 1.0 / 3, ring.data(), &st, 0);
        CHECK(st.next == 1001ull + slot, "slot %u: next %llu after the loss (want current + 1)", slot, st.next);
        launch<K::sum_finish>(Dim(1), Dim(32), 0, l2.data(), 2, 0.5, ring.data(), &st, 1);
        CHECK(st.next == 1001ull + slot && st.current == 1000ull + slot, "slot %u: the second sum moved the step", slot);
        const float want = (float)((1.25 + 2.5 - 0.125) / 3) + (float)(0.5 * (0.0625 + 0.03125));
        const std::vector<float> got = ring.values("ring");
        for (unsigned i = 0; i < 5; ++i)
            CHECK(got[i] == (i == slot ? want : -7.0f), "slot %u: ring[%u] = %.9g (want %.9g)", slot, i, got[i],
                  i == slot ? want : -7.0f);
    }
}

namespace {

const char* const kKindName[] = {"", "mse", "bce_with_logits", "mean"};

// The per-element float formulas of issue 19's kernel spec / Cpu/RegressionLosses.cs (scalar), and the
// loss terms in double.
struct LossRef {
    std::vector<float> dz, dt;  // float math as written: the kernel's bits
    std::vector<double> dz_d;   // from the math in double (sigma(z) - t etc.)
    double loss = 0;
};

LossRef loss_ref(const std::vector<float>& z, const std::vector<float>& t, int kind, float scale) {
    const size_t count = z.size();
    LossRef r;
    r.dz.assign(count, 0), r.dt.assign(count, 0), r.dz_d.assign(count, 0);
    double sum = 0;
    for (size_t i = 0; i < count; ++i) {
        const float x = z[i];
        if (kind == 1) {
            const float d = x - t[i];
            sum += (double)d * d;
            r.dz[i] = scale * d;
            r.dt[i] = -(scale * d);
            r.dz_d[i] = 2.0 / count * ((double)x - t[i]);
        } else if (kind == 2) {
            const float y = t[i];
            sum += std::max((double)x, 0.0) - (double)x * y + log1p(exp(-fabs((double)x)));
            const float e = expf(-fabsf(x));
            const float s = x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
            r.dz[i] = (s - y) * scale;
            r.dt[i] = -x * scale;
            r.dz_d[i] = (1 / (1 + exp(-(double)x)) - y) / count;
        } else {
            sum += x;
            r.dz[i] = scale;
            r.dz_d[i] = 1.0 / count;
        }
    }
    r.loss = sum / count;
    return r;
}

struct LossRun {
    std::vector<float> dz, dt;
    std::vector<double> partial;
    float loss;
};

LossRun loss_run(const std::vector<float>& z, const std::vector<float>* t, int kind, float scale, int chunk,
                 unsigned threads, unsigned grid_cap, bool want_dz, bool want_dt) {
    const int count = (int)z.size();
    const int chunks = (int)ceil_div(count, chunk);
    Guarded<float> dz(count), dt(count), loss(1);
    Guarded<double> partial(chunks);
    launch<K::regression_loss>(Dim(std::min((unsigned)chunks, grid_cap)), Dim(threads), 0, z.data(),
                               t ? t->data() : nullptr, want_dz ? dz.data() : nullptr, want_dt ? dt.data() : nullptr,
                               count, kind, scale, chunk, partial.data());
    launch<K::sum_finish>(Dim(1), Dim(256), 0, partial.data(), chunks, 1.0 / count, loss.data(), (hpb_step*)nullptr, 0);
    return {dz.values("dz"), dt.values("dt"), partial.values("partial"), loss.values("loss")[0]};
}

bool all_nan(const std::vector<float>& v) {
    return std::all_of(v.begin(), v.end(), [](float x) { return std::isnan(x); });
}

}  // namespace

// Every kind at counts n*width (n in {2,3,31,33,1000}, width in {1,7,33}) and several chunk sizes:
// dz/dt bitwise the float formulas (same libm on both sides), within float rounding of the math in
// double; the loss within 1e-6 of the double mean; NULL dz/dt (evaluation) leave the loss bitwise
// the same and write nothing; capped grids give the same bits.
TEST(losses, regression_loss_vs_formulas) {
    Rng rng(53);
    int k = 0;
    for (int kind : {1, 2, 3})
        for (int n : {2, 3, 31, 33, 1000})
            for (int width : {1, 7, 33}) {
                const int count = n * width;
                // chunks of 1 and 7 elements only where that makes few chunks, in blocks of 32 (any whole
                // warps work; the backend's 256 elsewhere): the emulator pays per thread and barrier
                static const int kChunks[] = {1, 7, 256, 100000};
                int chunk = count <= 100 ? kChunks[k++ % 4] : count <= 1000 ? kChunks[2 + k++ % 2] : 100000;
                if (chunk == 1 && count > 33) chunk = 3;
                const unsigned threads = chunk < 32 ? 32 : 256;
                std::vector<float> z = rng.normal(count, 3.0f), t = rng.normal(count, 1.0f);
                if (kind == 2) {
                    for (auto& y : t) y = y > 0 ? 1.0f : (y < -1.0f ? 0.0f : 0.25f);  // labels and a soft target
                    if (count >= 4) z[0] = 100.0f, z[1] = -100.0f, z[2] = 1e4f, z[3] = -0.0f;  // saturating logits
                }
                const float scale = kind == 1 ? 2.0f / count : 1.0f / count;
                const LossRef ref = loss_ref(z, t, kind, scale);
                char what[96];
                snprintf(what, sizeof what, "regression_loss %s count=%d chunk=%d", kKindName[kind], count, chunk);
                const std::string w = what;

                const std::vector<float>* tp = kind == 3 ? nullptr : &t;  // mean: t unused, NULL
                const LossRun run = loss_run(z, tp, kind, scale, chunk, threads, 2, true, true);
                CHECK(bitwise_equal(run.dz, ref.dz), "%s: dz differs from the float formula", what);
                if (kind != 3)
                    CHECK(bitwise_equal(run.dt, ref.dt), "%s: dt differs from the float formula", what);
                else
                    CHECK(all_nan(run.dt), "%s: dt written for the mean", what);
                // dz from the math: a few float roundings of 1/count-sized values (bce's expf: a few ulp)
                close((w + " dz vs double").c_str(), run.dz, ref.dz_d, 1e-6 / count, 1e-6);
                close((w + " loss").c_str(), std::vector<float>{run.loss}, std::vector<double>{ref.loss}, 1e-7, 1e-6);

                const LossRun eval = loss_run(z, tp, kind, scale, chunk, threads, 1u << 30, false, false);
                CHECK(bitwise_equal(eval.partial, run.partial) && eval.loss == run.loss,
                      "%s: the loss changes with dz/dt NULL or another grid", what);
                CHECK(all_nan(eval.dz) && all_nan(eval.dt), "%s: dz/dt written although NULL", what);
            }
}
