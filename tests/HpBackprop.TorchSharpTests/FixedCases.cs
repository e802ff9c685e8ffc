using HpBackprop.Networks;
using NSeq = HpBackprop.Networks.Sequential;

namespace HpBackprop.TorchSharpTests;

/// <summary>
/// The fixed cases: every layer (both batch-norm modes, layer norm, dropout with the library's mask), every loss, the L2
/// penalty, both optimisers with and without momentum and weight decay, the three schedules, and the awkward sizes of the
/// PyTorch oracle (tests/reference/stack_oracle.py: n = 2, odd widths, a 1,000-id vocabulary, logits near ±50, repeated
/// ids, the lecture's deep stack). Each runs one step (loss, out, every gradient, grad.x/grad.y, running statistics,
/// the parameters after the step, eval outputs and loss, calibration) and a trajectory.
/// </summary>
internal static class FixedCases
{
    private const string Deep = "embedding:27x10,flatten,linear:30x100:nobias,batchnorm:100,tanh,linear:100x100:nobias,batchnorm:100,tanh,"
        + "linear:100x100:nobias,batchnorm:100,tanh,linear:100x100:nobias,batchnorm:100,tanh,linear:100x100:nobias,batchnorm:100,tanh,"
        + "linear:100x27:nobias,batchnorm:27";

    private static ParityCase C(string name, string layers, LossKind loss, int n, int width, int seed) =>
        new(name, NSeq.Parse(layers), loss, n, width, seed);

    private static readonly AdamW Adam = new() { LearningRate = 0.01f, WeightDecay = 0.01f };
    private static readonly Sgd Momentum = new() { LearningRate = 0.1f, Momentum = 0.9f, WeightDecay = 0.01f };

    public static readonly ParityCase[] All =
    [
        // the makemore MLP and its variants
        C("makemore", "embedding:27x10,flatten,linear:30x64,batchnorm:64,tanh,linear:64x27", LossKind.CrossEntropy, 32, 3, 2001),
        C("makemore_biased", "embedding:27x10,flatten,linear:30x64,batchnorm:64:biased,tanh,linear:64x27", LossKind.CrossEntropy, 32, 3, 2002) with { Optimizer = Momentum },
        C("deep", Deep, LossKind.CrossEntropy, 32, 3, 2003) with { Optimizer = Adam, Schedule = new CosineSchedule(5, 20, 0) },
        C("n2", "embedding:27x10,flatten,linear:30x13,batchnorm:13,tanh,linear:13x27", LossKind.CrossEntropy, 2, 3, 2004),
        C("n2_biased", "linear:7x5,batchnorm:5:biased,sigmoid,linear:5x3", LossKind.BceWithLogits, 2, 7, 2005),
        C("odd", "linear:7x13,batchnorm:13,relu,linear:13x33:nobias,batchnorm:33:biased,sigmoid,linear:33x5", LossKind.Mse, 17, 7, 2006) with { BnMomentum = 0.1f, Optimizer = Momentum },
        C("wide_vocab", "embedding:1000x3,flatten,linear:6x1000", LossKind.CrossEntropy, 12, 2, 2007) with { Optimizer = Adam },
        C("big_logits", "embedding:27x10,flatten,linear:30x64,batchnorm:64,tanh,linear:64x27", LossKind.CrossEntropy, 32, 3, 2008)
            with { WeightScale = new Dictionary<int, float> { [5] = 24f } },
        C("repeated_ids", "embedding:5x4,flatten,linear:12x6,tanh,linear:6x5", LossKind.CrossEntropy, 40, 3, 2021) with { IdRange = 3, Optimizer = Momentum },
        // the L2 penalty
        C("l2", "linear:6x9,tanh,linear:9x4", LossKind.Mse, 16, 6, 2009) with { L2 = 1 },
        C("l2_bn", "embedding:27x10,flatten,linear:30x16:nobias,batchnorm:16,tanh,linear:16x27", LossKind.CrossEntropy, 16, 3, 2010) with { L2 = 0.001 },
        // the drills: one layer and one loss at a time
        C("linreg", "linear:4x2", LossKind.Mse, 20, 4, 2011) with { Schedule = new StepSchedule(10, 0.1f) },
        C("logreg", "linear:5x1", LossKind.BceWithLogits, 24, 5, 2012) with { Optimizer = Adam },
        C("mlp_relu_sigmoid", "linear:6x10,relu,linear:10x8,sigmoid,linear:8x3", LossKind.Mse, 16, 6, 2013) with { Optimizer = Adam, Schedule = new CosineSchedule(0, 20, 0.001f) },
        C("mlp_bce", "linear:5x8,tanh,linear:8x8,relu,linear:8x3", LossKind.BceWithLogits, 16, 5, 2014) with { Optimizer = Momentum, Schedule = new StepSchedule(10, 0.5f) },
        C("softmax_reg", "linear:9x4", LossKind.CrossEntropy, 30, 9, 2015),
        C("linear_sigmoid_mean", "linear:5x3,sigmoid", LossKind.Mean, 8, 5, 2016),
        C("bn_sigmoid_mean", "batchnorm:6,sigmoid", LossKind.Mean, 10, 6, 2017),
        C("bn_mse", "batchnorm:6", LossKind.Mse, 10, 6, 2018),
        C("bn_biased_mse", "batchnorm:6:biased", LossKind.Mse, 10, 6, 2019) with { Optimizer = Adam },
        C("tanh_mean", "linear:7x7:nobias,tanh", LossKind.Mean, 9, 7, 2020),
        C("relu_mse", "linear:6x12,relu,linear:12x2", LossKind.Mse, 24, 6, 2030),
        C("sigmoid_bce", "linear:4x6,sigmoid,linear:6x2", LossKind.BceWithLogits, 20, 4, 2031),
        // layer norm and dropout
        C("layernorm", "linear:6x12,layernorm:12,tanh,linear:12x3", LossKind.Mse, 10, 6, 2022) with { Optimizer = Adam },
        C("layernorm_ids", "embedding:27x8,flatten,linear:24x32,layernorm:32,relu,linear:32x27", LossKind.CrossEntropy, 16, 3, 2023) with { Optimizer = Momentum },
        C("layernorm_mean", "layernorm:9,sigmoid", LossKind.Mean, 7, 9, 2024),
        C("dropout", "linear:6x16,relu,dropout:0.25,linear:16x3", LossKind.Mse, 12, 6, 2025) with { DropoutSeed = 7, Step = 3 },
        C("dropout_bn", "embedding:27x8,flatten,dropout:0.1,linear:24x32,batchnorm:32,tanh,dropout:0.5,linear:32x27", LossKind.CrossEntropy, 16, 3, 2026)
            with { DropoutSeed = 11, Step = 123456789012 },
        C("ln_dropout_adamw", "linear:5x16,layernorm:16,tanh,dropout:0.2,linear:16x3", LossKind.Mse, 16, 5, 3005)
            with { DropoutSeed = 5, Optimizer = Adam, Schedule = new CosineSchedule(5, 20, 0) },
        // optimisers and schedules (the oracle's trajectories)
        C("bn_sgd", "embedding:27x6,flatten,linear:18x16,batchnorm:16,tanh,linear:16x27", LossKind.CrossEntropy, 16, 3, 3001) with { BnMomentum = 0.1f, Optimizer = Momentum },
        C("mlp_adamw_cosine", "linear:5x12,tanh,linear:12x3", LossKind.Mse, 16, 5, 3002) with { Optimizer = Adam, Schedule = new CosineSchedule(5, 20, 0) },
        C("mlp_sgd_step", "linear:5x12,relu,linear:12x3", LossKind.Mse, 16, 5, 3003) with { L2 = 0.01, Schedule = new StepSchedule(10, 0.1f) },
        C("bn_adamw", "linear:6x10:nobias,batchnorm:10:biased,sigmoid,linear:10x4", LossKind.BceWithLogits, 16, 6, 3004) with { Optimizer = Adam },
    ];
}
