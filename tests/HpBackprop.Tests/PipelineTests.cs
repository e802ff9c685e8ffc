using System.Runtime.Intrinsics.X86;
using HpBackprop.Model;
using HpBackprop.Networks;

namespace HpBackprop.Tests;

/// <summary>
/// The row-block pipeline (the compiled network's pattern for the training step of
/// <c>embedding, flatten, linear, batchnorm, ACT, linear</c> with cross-entropy at n ≥ 256 on AVX-512) against the
/// op-by-op step it replaces, against double-precision statistics, and across thread counts.
/// </summary>
[TestClass]
public sealed class PipelineTests
{
    private static (Network Net, int[] X, int[] Y) Problem(string layers, int n, int seed, string opt = "sgd:lr=0.1,momentum=0,weight_decay=0", int threads = 1, bool pipeline = true, float bnMomentum = 0.001f)
    {
        var stack = Sequential.Parse(layers);
        var net = Network.Create(stack, new NetworkOptions { BatchSize = n, Optimizer = Optimizer.Parse(opt), Threads = threads, BatchNormMomentum = bnMomentum });
        net.PipelineEnabled = pipeline;
        net.Initialize(seed);
        var (x, y) = TestModels.RandomBatch(new NormalRng(seed), n, net.InputWidth, stack.Layers[0].In);
        for (int i = 0; i < y.Length; i++) y[i] %= net.OutputWidth;
        return (net, x, y);
    }

    /// <summary>
    /// Shapes and variants: a last block of 40 rows with H = 200 (a masked column tail), V = 100 (the scalar
    /// cross-entropy rows) with an exact number of blocks, the benchmark's L widths, and the other activations,
    /// the biased batch-norm mode and linears without bias, dW1 summed as its transpose (K = 48 and K = 36, whose last 16-column
    /// tile is part-empty, with H a multiple of 32); plain SGD (updated inside the pipeline) and momentum/AdamW
    /// (updated by the optimiser's pass).
    /// </summary>
    public static IEnumerable<object[]> Cases() =>
    [
        ["embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x27", 1000, "sgd:lr=0.1,momentum=0,weight_decay=0"],
        ["embedding:100x16,flatten,linear:48x64,batchnorm:64,tanh,linear:64x100", 256, "sgd:lr=0.1,momentum=0,weight_decay=0"],
        ["embedding:27x12,flatten,linear:36x64,batchnorm:64,tanh,linear:64x27", 300, "sgd:lr=0.1,momentum=0,weight_decay=0"],
        ["embedding:27x32,flatten,linear:96x1024,batchnorm:1024,tanh,linear:1024x27", 320, "sgd:lr=0.1,momentum=0,weight_decay=0"],
        ["embedding:27x10,flatten,linear:30x200:nobias,batchnorm:200:biased,relu,linear:200x27", 300, "sgd:lr=0.1,momentum=0.9,weight_decay=0.01"],
        ["embedding:30x8,flatten,linear:40x50:nobias,batchnorm:50,sigmoid,linear:50x30:nobias", 700, "adamw:lr=0.01"], // no bias before batch norm: AdamW turns its pure-rounding gradient into ±lr steps,
    ];

    private static double MaxAbs(ReadOnlySpan<float> a)
    {
        double m = 0;
        foreach (float v in a) m = Math.Max(m, Math.Abs(v));
        return m;
    }

    private static double RelDiff(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, double? scale = null)
    {
        Assert.AreEqual(expected.Length, actual.Length);
        double d = 0;
        for (int i = 0; i < actual.Length; i++) d = Math.Max(d, Math.Abs((double)actual[i] - expected[i]));
        return d / Math.Max(scale ?? MaxAbs(expected), 1e-30);
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void PipelinedStepMatchesTheOpByOpStep(string layers, int n, string opt)
    {
        var (piped, x, y) = Problem(layers, n, 21, opt);
        var (ops, _, _) = Problem(layers, n, 21, opt, pipeline: false);
        using var _1 = piped;
        using var _2 = ops;
        Assert.IsTrue(piped.Pipelined, string.Join("\n", piped.Plan));
        Assert.IsFalse(ops.Pipelined);
        // three steps, then a forward+backward whose buffers are compared
        for (int s = 0; s < 3; s++)
        {
            float l1 = piped.Step(x, y), l2 = ops.Step(x, y);
            Assert.AreEqual(l2, l1, 2e-6 * l2, $"loss at step {s}");
        }
        float a = piped.ForwardBackward(x, y), b = ops.ForwardBackward(x, y);
        Assert.AreEqual(b, a, 2e-6 * b, "loss");
        // Float rounding differs in the order of the column sums (blocks of 64 rows combined, against one pass in row
        // order) and of the products, compounded over three steps: measured ≤ 1.3e-6 relative to each tensor's largest
        // element; 2e-5 leaves room and still fails for any wrong term.
        for (int k = 0; k < 4; k++)
        {
            Assert.IsTrue(RelDiff(piped.OpOutput(k), ops.OpOutput(k)) <= 2e-5, $"output of op {k}: {RelDiff(piped.OpOutput(k), ops.OpOutput(k)):E2}");
            if (k != 2) // dh is not stored whole by the pipeline
                Assert.IsTrue(RelDiff(piped.OpOutputGradient(k), ops.OpOutputGradient(k)) <= 2e-5, $"output gradient of op {k}");
        }
        foreach (var slot in ops.Parameters.Parameters)
        {
            // the bias of the linear before batch norm has a gradient of zero up to rounding (batch norm removes it): it
            // is measured against dhprebn, and both sides are the noise of n cancelling terms, so the bound is n float
            // roundings (2n·2⁻²⁴; measured 2.2e-5 at n = 1000). A dropped or repeated block would leave O(1).
            bool nearZero = slot.Name == "2.bias";
            double? scale = nearZero ? MaxAbs(ops.OpOutputGradient(1)) : null;
            double r = RelDiff(piped.Parameters.Gradient(slot.Name), ops.Parameters.Gradient(slot.Name), scale);
            double bound = nearZero ? 2.0 * n / (1 << 24) : 2e-5;
            Assert.IsTrue(r <= bound, $"gradient of {slot.Name}: {r:E2} > {bound:E2}");
            double v = RelDiff(piped.Parameters.Value(slot.Name), ops.Parameters.Value(slot.Name));
            Assert.IsTrue(v <= 2e-5, $"{slot.Name} after three steps: {v:E2}");
        }
        foreach (var slot in ops.Parameters.RunningStatistics)
            Assert.IsTrue(RelDiff(piped.Parameters.Value(slot.Name), ops.Parameters.Value(slot.Name)) <= 2e-6, slot.Name);
        CollectionAssert.AreEqual(ops.Parameters.BatchesTracked, piped.Parameters.BatchesTracked);
    }

    [TestMethod]
    [DataRow("embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x27")]
    [DataRow("embedding:27x10,flatten,linear:30x200,batchnorm:200:biased,tanh,linear:200x27")]
    public void BlockStatisticsAgreeWithDoublePrecisionTwoPass(string layers)
    {
        // with momentum 1 the running statistics are the batch's (the variance unbiased in both modes):
        // the blocks' sums and squared deviations combined (Chan's formula) against a two-pass in double
        var (net, x, y) = Problem(layers, 1000, 5, bnMomentum: 1f);
        using var _ = net;
        Assert.IsTrue(net.Pipelined);
        net.ForwardBackward(x, y);
        var hp = net.OpOutput(1);
        var mean = net.Parameters.Value("3.running_mean");
        var variance = net.Parameters.Value("3.running_var");
        int n = 1000, H = 200;
        for (int j = 0; j < H; j++)
        {
            double s = 0;
            for (int i = 0; i < n; i++) s += hp[i * H + j];
            double mu = s / n, q = 0;
            for (int i = 0; i < n; i++) q += (hp[i * H + j] - mu) * (hp[i * H + j] - mu);
            double v = q / (n - 1);
            Assert.AreEqual(mu, mean[j], 1e-6 * Math.Sqrt(v), $"mean of column {j}");
            Assert.AreEqual(v, variance[j], 2e-6 * v, $"variance of column {j}");
        }
    }

    [TestMethod]
    [DataRow("sgd:lr=0.1,momentum=0,weight_decay=0", "embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x27")]
    [DataRow("adamw:lr=0.01", "embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x27")]
    [DataRow("sgd:lr=0.1,momentum=0,weight_decay=0", "embedding:27x12,flatten,linear:36x64,batchnorm:64,tanh,linear:64x27")]
    public void PipelinedStepIsBitwiseTheSameOnOneAndTwoThreads(string opt, string layers)
    {
        // 1000 rows: 16 blocks, the last one short, shared 8/8 on two threads; the weight-gradient sums, the SGD steps and
        // (K = 36, H = 64) dW1's transposition are shared by ranges
        var (one, x, y) = Problem(layers, 1000, 8, opt, threads: 1);
        var (two, _, _) = Problem(layers, 1000, 8, opt, threads: 2);
        using var _1 = one;
        using var _2 = two;
        Assert.IsTrue(one.Pipelined && two.Pipelined);
        for (int s = 0; s < 3; s++) Assert.AreEqual(one.Step(x, y), two.Step(x, y), $"loss at step {s}");
        CollectionAssert.AreEqual(one.Parameters.Data, two.Parameters.Data);
        CollectionAssert.AreEqual(one.Parameters.Grad, two.Parameters.Grad);
        CollectionAssert.AreEqual(one.Parameters.Buffers, two.Parameters.Buffers);
    }

    [TestMethod]
    public void ThePlanNamesThePipelineOnlyWhereItApplies()
    {
        const string layers = "embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x27";
        using var large = Problem(layers, 256, 1).Net;
        using var small = Problem(layers, 255, 1).Net;
        using var mse = Network.Create(Sequential.Parse(layers), new NetworkOptions { BatchSize = 512, Loss = LossKind.Mse });
        StringAssert.Contains(large.Plan[0], "row-block pipeline");
        Assert.IsFalse(small.Pipelined || mse.Pipelined);
        Assert.IsFalse(small.Plan.Any(p => p.Contains("pipeline", StringComparison.Ordinal)));
    }

    [TestMethod]
    public void ThePipelinedNetworkHoldsNoBnrawBufferUntilItTrainsOpByOp()
    {
        const string layers = "embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x27";
        var (large, x, y) = Problem(layers, 256, 1);
        using var small = Problem(layers, 255, 1).Net;
        using var _ = large;
        Assert.IsFalse(large.BatchNormHoldsBnraw(2), "the pipeline recomputes bnraw; the [n,F] buffer is freed");
        Assert.IsTrue(small.BatchNormHoldsBnraw(2));
        large.Step(x, y);
        Assert.IsFalse(large.BatchNormHoldsBnraw(2));
        large.PipelineEnabled = false;
        large.Step(x, y);
        Assert.IsTrue(large.BatchNormHoldsBnraw(2), "an op-by-op training step allocates it again");
    }
}
