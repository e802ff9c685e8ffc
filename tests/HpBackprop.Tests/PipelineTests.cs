using HpBackprop.Cpu;
using HpBackprop.Model;
using HpBackprop.Reference;

namespace HpBackprop.Tests;

/// <summary>
/// The row-block pipeline of large CPU steps (n ≥ <see cref="CpuBackend.PipelineMinRows"/>) against the
/// whole-matrix step it replaces, against double-precision statistics, across thread counts, and its
/// intermediates computed on request.
/// </summary>
[TestClass]
public sealed class PipelineTests
{
    private static (ParameterSet P, int[] X, int[] Y) Problem(ModelConfig cfg, int seed)
    {
        var p = TestModels.Initialized(cfg, seed);
        var (x, y) = TestModels.RandomBatch(new NormalRng(seed), cfg.BatchSize, cfg.BlockSize, cfg.VocabSize);
        return (p, x, y);
    }

    /// <summary>
    /// Shapes: a last block of 40 rows with H = 200 (a masked column tail), V = 100 (the scalar
    /// cross-entropy rows) with an exact number of blocks, and the benchmark's L widths.
    /// </summary>
    public static IEnumerable<object[]> Shapes() =>
    [
        [1000, 10, 200, 27],
        [256, 16, 64, 100],
        [320, 32, 1024, 27],
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
    [DynamicData(nameof(Shapes))]
    public void PipelinedStepMatchesTheWholeMatrixStep(int n, int e, int hidden, int vocab)
    {
        var cfg = new ModelConfig(vocab, 3, e, hidden, n);
        var (p1, x, y) = Problem(cfg, 21);
        var (p2, _, _) = Problem(cfg, 21);
        using var piped = new CpuBackend(p1);
        using var whole = new CpuBackend(p2) { PipelineEnabled = false };
        Assert.IsTrue(piped.Pipelined);
        Assert.IsFalse(whole.Pipelined);
        // three SGD steps, then a forward+backward whose buffers are compared
        for (int s = 0; s < 3; s++)
        {
            float l1 = piped.Step(x, y, 0.1f), l2 = whole.Step(x, y, 0.1f);
            Assert.AreEqual(l2, l1, 2e-6 * l2, $"loss at step {s}");
        }
        float a = piped.ForwardBackward(x, y), b = whole.ForwardBackward(x, y);
        Assert.AreEqual(b, a, 2e-6 * b, "loss");
        // Float rounding differs only in the order of the column sums (blocks of 64 rows combined, against one
        // pass in row order), compounded over three steps: measured ≤ 1.3e-6 relative to each tensor's largest
        // element; 2e-5 leaves room and still fails for any wrong term.
        foreach (var name in new[] { "embcat", "hprebn", "bnmeani", "bnvar", "bnvar_inv", "bnraw", "h", "logits", "dlogits", "dh", "dhprebn", "dembcat" })
            Assert.IsTrue(RelDiff(piped.Intermediate(name), whole.Intermediate(name)) <= 2e-5,
                $"{name}: {RelDiff(piped.Intermediate(name), whole.Intermediate(name)):E2}");
        foreach (var name in ParameterSet.Names)
        {
            // db1 is zero up to rounding (batch norm removes the bias): it is measured against dhprebn, as in the
            // parity table, and both sides are the noise of n cancelling terms, so the bound is n float roundings
            // (2n·2⁻²⁴; measured 2.2e-5 at n = 1000). A dropped or repeated block would leave O(1).
            double? scale = name == "b1" ? MaxAbs(whole.Intermediate(ParityTable.ScaleTensorOf("db1"))) : null;
            double r = RelDiff(p1.Gradient(name), p2.Gradient(name), scale);
            double bound = name == "b1" ? 2.0 * n / (1 << 24) : 2e-5;
            Assert.IsTrue(r <= bound, $"d{name}: {r:E2} > {bound:E2}");
            double v = RelDiff(p1.Value(name), p2.Value(name));
            Assert.IsTrue(v <= 2e-5, $"{name} after three steps: {v:E2}");
        }
    }

    [TestMethod]
    public void BlockStatisticsAgreeWithDoublePrecisionTwoPass()
    {
        // the blocks' sums and squared deviations combined (Chan's formula) against a two-pass in double
        var cfg = new ModelConfig(27, 3, 10, 200, 1000);
        var (p, x, y) = Problem(cfg, 5);
        using var cpu = new CpuBackend(p);
        cpu.ForwardBackward(x, y);
        var hp = cpu.Intermediate("hprebn");
        var mean = cpu.Intermediate("bnmeani");
        var variance = cpu.Intermediate("bnvar");
        int n = cfg.BatchSize, H = cfg.HiddenSize;
        for (int j = 0; j < H; j++)
        {
            double s = 0;
            for (int i = 0; i < n; i++) s += hp[i * H + j];
            double mu = s / n, q = 0;
            for (int i = 0; i < n; i++) q += (hp[i * H + j] - mu) * (hp[i * H + j] - mu);
            double v = q / (n - 1);
            Assert.AreEqual(mu, mean[j], 1e-6 * Math.Sqrt(v), $"mean of column {j}");
            Assert.AreEqual(v, variance[j], 1e-6 * v, $"variance of column {j}");
        }
    }

    [TestMethod]
    public void PipelinedStepIsBitwiseTheSameOnOneAndTwoThreads()
    {
        // 1000 rows: 16 blocks, the last one short, shared 8/8 on two threads
        var cfg = new ModelConfig(27, 3, 10, 200, 1000);
        var (p1, x, y) = Problem(cfg, 8);
        var (p2, _, _) = Problem(cfg, 8);
        using var one = new CpuBackend(p1, threads: 1);
        using var two = new CpuBackend(p2, threads: 2);
        for (int s = 0; s < 3; s++) Assert.AreEqual(one.Step(x, y, 0.1f), two.Step(x, y, 0.1f), $"loss at step {s}");
        CollectionAssert.AreEqual(p1.Data, p2.Data);
        CollectionAssert.AreEqual(p1.Grad, p2.Grad);
        CollectionAssert.AreEqual(one.Intermediate("dh").ToArray(), two.Intermediate("dh").ToArray());
    }

    [TestMethod]
    public void IntermediatesNotStoredByTheStepAreComputedOnRequest()
    {
        // after an SGD step, dh must still be dlogits·W2ᵀ with the W2 the step used, not the updated one
        var cfg = new ModelConfig(27, 3, 10, 200, 300);
        var (p, x, y) = Problem(cfg, 3);
        using var cpu = new CpuBackend(p);
        var w2Before = p.W2.ToArray();
        cpu.Step(x, y, 0.5f);
        CollectionAssert.AreNotEqual(w2Before, p.W2.ToArray());
        var dl = cpu.Intermediate("dlogits");
        var dh = cpu.Intermediate("dh").ToArray();
        int n = cfg.BatchSize, H = cfg.HiddenSize, V = cfg.VocabSize;
        for (int i = 0; i < n; i += 7)
            for (int j = 0; j < H; j++)
            {
                double s = 0;
                for (int v = 0; v < V; v++) s += (double)dl[i * V + v] * w2Before[j * V + v];
                Assert.AreEqual(s, dh[i * H + j], 1e-6, $"dh[{i},{j}]");
            }
        var hp = cpu.Intermediate("hprebn");
        var mean = cpu.Intermediate("bnmeani");
        var vi = cpu.Intermediate("bnvar_inv");
        var raw = cpu.Intermediate("bnraw");
        for (int i = 0; i < n; i++)
            for (int j = 0; j < H; j++) Assert.AreEqual((hp[i * H + j] - mean[j]) * vi[j], raw[i * H + j], $"bnraw[{i},{j}]");
    }

    [TestMethod]
    public void PipelinedStepAllocatesNothing()
    {
        foreach (int threads in new[] { 1, 2 })
        {
            var cfg = new ModelConfig(27, 3, 10, 200, 1000);
            var (p, x, y) = Problem(cfg, 11);
            using var cpu = new CpuBackend(p, threads);
            Assert.IsTrue(cpu.Pipelined);
            for (int i = 0; i < 3; i++) cpu.Step(x, y, 0.1f);
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 10; i++) cpu.Step(x, y, 0.1f);
            Assert.AreEqual(0, GC.GetAllocatedBytesForCurrentThread() - before, $"bytes allocated by 10 steps on {threads} thread(s)");
        }
    }
}
