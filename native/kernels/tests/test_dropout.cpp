// test_dropout.cpp — Philox4x32-10 (philox.cuh) against Random123's known answers, and the dropout
// kernels: the mask is exactly the host's Philox of (element/4, step; seed, layer), it drops a
// fraction P of the elements, the backward applies the forward's mask, in place and any grid.
#include <math.h>

#include "philox.cuh"
#include "test_util.h"

TEST(dropout, philox_known_answers) {
    struct Kat {
        unsigned ctr[4], key[2], out[4];
    };
    const Kat kats[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
        {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
         {0xffffffffu, 0xffffffffu},
         {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
        {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
         {0xa4093822u, 0x299f31d0u},
         {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
    };
    for (const Kat& k : kats) {
        const HpbPhilox4 r = hpb_philox4x32_10(k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3], k.key[0], k.key[1]);
        CHECK(r.v[0] == k.out[0] && r.v[1] == k.out[1] && r.v[2] == k.out[2] && r.v[3] == k.out[3],
              "philox4x32_10(ctr %08x..., key %08x %08x) = %08x %08x %08x %08x, want %08x %08x %08x %08x", k.ctr[0],
              k.key[0], k.key[1], r.v[0], r.v[1], r.v[2], r.v[3], k.out[0], k.out[1], k.out[2], k.out[3]);
    }
}

namespace {

// The host's threshold: round(P * 2^32) clamped to 2^32 - 1.
unsigned threshold_of(double p) {
    const double t = nearbyint(p * 4294967296.0);
    return t >= 4294967295.0 ? 0xffffffffu : (unsigned)t;
}

bool kept(size_t i, unsigned seed, unsigned layer, unsigned step_lo, unsigned step_hi, unsigned threshold) {
    const HpbPhilox4 r = hpb_philox4x32_10((unsigned)(i / 4), 0u, step_lo, step_hi, seed, layer);
    return r.v[i % 4] >= threshold;
}

struct Params {
    unsigned seed, layer, step_lo, step_hi;
    double p;
};

unsigned long long step_of(const Params& q) { return (unsigned long long)q.step_hi << 32 | q.step_lo; }

std::vector<float> forward(const std::vector<float>& x, const Params& q, unsigned grid, unsigned block) {
    Guarded<float> y(x.size());
    const float scale = (float)(1.0 / (1.0 - q.p));
    const hpb_step st = step_at(step_of(q));
    launch<K::dropout_forward>(Dim(grid), Dim(block), 0, x.data(), y.data(), (int)x.size(), q.seed, q.layer, &st,
                               threshold_of(q.p), scale);
    return y.values("dropout y");
}

}  // namespace

// y = x*scale where the host's Philox keeps element i, 0 elsewhere, for counts that are not multiples
// of 4 and grids from one block up; in place the same bits; the backward applies the same mask.
TEST(dropout, mask_is_the_host_philox) {
    Rng rng(70);
    const Params params[] = {{1234u, 0u, 0u, 0u, 0.1},
                             {0xdeadbeefu, 3u, 77u, 0u, 0.5},
                             {7u, 1u, 0xfffffffeu, 5u, 0.9},
                             {42u, 2u, 9u, 1u, 0.0}};
    for (const Params& q : params)
        for (int count : {1, 2, 3, 4, 5, 7, 33, 1000, 4099}) {
            const std::vector<float> x = rng.normal(count, 1.0f, 0.5f);
            const std::vector<float> dy = rng.normal(count);
            const float scale = (float)(1.0 / (1.0 - q.p));
            const unsigned thr = threshold_of(q.p);
            std::vector<float> want(count), want_dx(count);
            for (int i = 0; i < count; ++i) {
                const bool k = kept(i, q.seed, q.layer, q.step_lo, q.step_hi, thr);
                want[i] = k ? x[i] * scale : 0.0f;
                want_dx[i] = k ? dy[i] * scale : 0.0f;
            }
            char what[96];
            snprintf(what, sizeof what, "dropout P=%g seed=%08x layer=%u step=%u:%u count=%d", q.p, q.seed, q.layer,
                     q.step_hi, q.step_lo, count);
            const unsigned groups = ceil_div(count, 4);
            CHECK(bitwise_equal(forward(x, q, ceil_div(groups, 256), 256), want), "%s: forward", what);
            CHECK(bitwise_equal(forward(x, q, 1, 32), want), "%s: forward, one block of 32", what);
            Guarded<float> inplace(x), dx(count), dx_in(dy);
            const hpb_step st = step_at(step_of(q));
            launch<K::dropout_forward>(Dim(2), Dim(64), 0, (const float*)inplace.data(), inplace.data(), count, q.seed,
                                       q.layer, &st, thr, scale);
            CHECK(bitwise_equal(inplace.values(what), want), "%s: in place", what);
            launch<K::dropout_backward>(Dim(ceil_div(groups, 256)), Dim(256), 0, dy.data(), dx.data(), count, q.seed,
                                        q.layer, &st, thr, scale);
            launch<K::dropout_backward>(Dim(3), Dim(32), 0, (const float*)dx_in.data(), dx_in.data(), count, q.seed,
                                        q.layer, &st, thr, scale);
            CHECK(bitwise_equal(dx.values(what), want_dx), "%s: backward", what);
            CHECK(bitwise_equal(dx_in.values(what), want_dx), "%s: backward in place", what);
        }
}

// The kept fraction is 1-P within 5 standard deviations (binomial, sqrt(P(1-P)/count)); two layers,
// or two steps, give different masks (they agree on a fraction P^2 + (1-P)^2, not 1); P = 0 keeps all.
TEST(dropout, mask_statistics) {
    const int count = 200003;
    const std::vector<float> ones(count, 1.0f);
    for (double p : {0.1, 0.5, 0.9}) {
        const Params a{99u, 0u, 5u, 0u, p}, b{99u, 1u, 5u, 0u, p}, c{99u, 0u, 6u, 0u, p};
        const std::vector<float> ya = forward(ones, a, 8, 256), yb = forward(ones, b, 8, 256),
                                 yc = forward(ones, c, 8, 256);
        size_t keep = 0, agree_layer = 0, agree_step = 0;
        for (int i = 0; i < count; ++i) {
            keep += ya[i] != 0.0f;
            agree_layer += (ya[i] != 0.0f) == (yb[i] != 0.0f);
            agree_step += (ya[i] != 0.0f) == (yc[i] != 0.0f);
        }
        const double sd = sqrt(p * (1 - p) / count);
        const double frac = (double)keep / count;
        CHECK(fabs(frac - (1 - p)) < 5 * sd, "P=%g: kept %.5f, want %.5f +- %.5f", p, frac, 1 - p, 5 * sd);
        const double agree = p * p + (1 - p) * (1 - p), sd2 = sqrt(agree * (1 - agree) / count);
        CHECK(fabs((double)agree_layer / count - agree) < 5 * sd2 && fabs((double)agree_step / count - agree) < 5 * sd2,
              "P=%g: masks of two layers / steps agree on %.5f / %.5f, want %.5f", p, (double)agree_layer / count,
              (double)agree_step / count, agree);
        // the four words of one counter are used for four consecutive elements: check each lane's rate
        for (int lane = 0; lane < 4; ++lane) {
            size_t kl = 0, nl = 0;
            for (int i = lane; i < count; i += 4) kl += ya[i] != 0.0f, ++nl;
            const double fl = (double)kl / nl, sdl = sqrt(p * (1 - p) / nl);
            CHECK(fabs(fl - (1 - p)) < 5 * sdl, "P=%g word %d: kept %.5f", p, lane, fl);
        }
    }
    const std::vector<float> y0 = forward(ones, {1u, 0u, 0u, 0u, 0.0}, 8, 256);
    CHECK(bitwise_equal(y0, ones), "P = 0 must keep every element unchanged");
}
