// test_linear_optimizer.cpp — bias_add, column_sum (db1, db2) and sgd_update.
#include <math.h>

#include "test_util.h"

TEST(linear_optimizer, bias_add_exact) {
    Rng rng(30);
    for (int rows : {2, 3, 31, 33, 1000})
        for (int cols : {1, 27, 200, 513}) {
            std::vector<float> y = rng.normal((size_t)rows * cols), b = rng.normal(cols), want = y;
            for (size_t k = 0; k < want.size(); ++k) want[k] += b[k % cols];
            launch<K::bias_add>(Dim(std::min(ceil_div(y.size(), 256), 7u)), Dim(256), 0, y.data(), b.data(), rows,
                                cols);
            CHECK(bitwise_equal(y, want), "bias_add rows=%d cols=%d", rows, cols);
        }
}

TEST(linear_optimizer, column_sum_vs_double) {
    Rng rng(31);
    const Dim shapes[] = {Dim(32, 8), Dim(32, 32), Dim(8, 4), Dim(64, 1)};
    int shape_i = 0;
    for (int rows : {2, 3, 31, 33, 1000})
        for (int cols : {1, 27, 200, 513}) {
            const Dim blk = shapes[shape_i++ % 4];
            const std::vector<float> x = rng.normal((size_t)rows * cols, 1.0f, 0.5f);
            std::vector<double> want(cols, 0.0), scale(cols, 0.0);
            for (size_t k = 0; k < x.size(); ++k) {
                want[k % cols] += x[k];
                scale[k % cols] += fabs(x[k]);
            }
            std::vector<float> out(cols, NAN), again(cols, NAN);
            launch<K::column_sum>(Dim(ceil_div(cols, blk.x)), blk, blk.x * blk.y * 4, x.data(), out.data(), rows, cols);
            launch<K::column_sum>(Dim(ceil_div(cols, blk.x)), blk, blk.x * blk.y * 4, x.data(), again.data(), rows,
                                  cols);
            double worst = 0;
            for (int c = 0; c < cols; ++c) worst = std::max(worst, fabs(out[c] - want[c]) / (scale[c] * 1e-6));
            CHECK(worst <= 1.0, "column_sum rows=%d cols=%d block=(%u,%u): error %.3g x 1e-6 of sum|x|", rows, cols,
                  blk.x, blk.y, worst);
            CHECK(bitwise_equal(out, again), "column_sum rows=%d cols=%d not reproducible", rows, cols);
        }
}

TEST(linear_optimizer, sgd_update) {
    Rng rng(32);
    for (int count : {1, 31, 33, 1000, 11897}) {
        std::vector<float> p = rng.normal(count), g = rng.normal(count);
        std::vector<double> want(count);
        for (int i = 0; i < count; ++i) want[i] = (double)p[i] - 0.1 * (double)g[i];
        launch<K::sgd_update>(Dim(std::min(ceil_div(count, 256), 4u)), Dim(256), 0, p.data(), g.data(), 0.1f, count);
        char what[48];
        snprintf(what, sizeof what, "sgd_update count=%d", count);
        close(what, p, want, 1e-7, 1e-6);
    }
}
