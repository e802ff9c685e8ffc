using System.Globalization;
using System.Numerics;
using HpBackprop.IO;
using HpBackprop.Networks;
using HpBackprop.Reference;

namespace HpBackprop.Tests;

/// <summary>
/// 20 training steps of <see cref="StackReference{T}.TrainStep"/> with <see cref="ReferenceOptimizer{T}"/>
/// (SGD with momentum and weight decay, AdamW, step and cosine schedules) against the oracle's
/// <c>optim_*</c> trajectories of <c>torch.optim.SGD</c> / <c>torch.optim.AdamW</c>: the loss of every
/// step and every parameter and batch-norm buffer after the last one.
/// </summary>
[TestClass]
public sealed class StackOptimizerTests
{
    public static IEnumerable<object[]> Cases => StackOracle.OptimCases.Select(c => new object[] { c });

    private sealed record Trajectory(double[] Losses, double[] Rates, Dictionary<string, double[]> Final, Dictionary<string, long> Tracked);

    private static Trajectory Run<T>(StackTrajectoryBundle b) where T : IFloatingPointIeee754<T>
    {
        var reference = b.ReferenceAs<T>();
        var parameters = b.ParametersAs<T>();
        var buffers = b.BuffersAs<T>();
        var optimizer = new ReferenceOptimizer<T>(b.Optimizer, b.Schedule);
        var losses = new double[b.Steps];
        var rates = new double[b.Steps];
        for (int s = 0; s < b.Steps; s++)
        {
            rates[s] = optimizer.LearningRate(s);
            losses[s] = double.CreateChecked(reference.TrainStep(b.InputAs<T>(s), parameters, buffers, optimizer).Loss);
        }
        Assert.AreEqual(b.Steps, optimizer.Steps);
        var final = parameters.ToDictionary(kv => kv.Key, kv => StackOracle.D(kv.Value), StringComparer.Ordinal);
        foreach (var (name, v) in buffers.ByName) final[name] = StackOracle.D(v);
        var tracked = buffers.Layers.ToDictionary(BatchNormBuffers<T>.TrackedName, buffers.BatchesTracked);
        return new Trajectory(losses, rates, final, tracked);
    }

    private static string Path(string name, string precision) => StackOracle.PathOf(name, precision);

    /// <summary>
    /// Double precision: the losses, the learning rates and every final tensor within 1e-10 relative
    /// (max |diff| / max |expected|). Twenty steps of float64 rounding (≈1e-16 per operation, a few
    /// thousand operations per value, mildly amplified by the dynamics) stay far below it.
    /// </summary>
    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void DoubleTrajectoryMatchesFloat64Oracle(string name)
    {
        var b = StackTrajectoryBundle.Load(Path(name, "f64"));
        var t = Run<double>(b);
        var failures = new List<string>();
        var report = new List<string>();
        void Check(string what, double[] expected, double[] actual)
        {
            double rel = StackOracle.Rel(expected, actual, Oracle.MaxAbs(expected));
            report.Add($"{what} {rel:E1}");
            if (!(rel <= 1e-10)) failures.Add($"{what}: relative error {rel:E2}");
        }
        Check("losses", b.ExpectedLosses, t.Losses);
        if (b.ExpectedLearningRates is { } lr) Check("lr", lr, t.Rates);
        foreach (var (n, v) in t.Final) Check("final." + n, b.ExpectedFinal(n), v);
        foreach (var (n, c) in t.Tracked) Assert.AreEqual((long)b.ExpectedFinal(n)[0], c, $"{name}: final.{n}");
        Console.WriteLine($"{name} ({b.Optimizer}, {b.Schedule}): " + string.Join(", ", report));
        Assert.IsEmpty(failures, $"{name}: " + string.Join("; ", failures));
    }

    /// <summary>
    /// Single precision, with the rule of <see cref="StackReferenceParityTests.FloatReferenceIsAsAccurateAsTorchFloat32"/>:
    /// against the float64 trajectory, the float reference's relative error on each tensor (the losses,
    /// each final tensor) is at most 8·max(PyTorch float32's error on it, 32·2⁻²⁴). The two float runs
    /// round differently at every step, and both drift from the float64 trajectory by amounts that
    /// the dynamics amplify alike, so PyTorch's own drift measures what this case allows.
    /// </summary>
    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void FloatTrajectoryIsAsAccurateAsTorchFloat32(string name)
    {
        var b32 = StackTrajectoryBundle.Load(Path(name, "f32"));
        var b64 = StackTrajectoryBundle.Load(Path(name, "f64"));
        var t = Run<float>(b32);
        var failures = new List<string>();
        var report = new List<string>();
        double worstRatio = 0;
        void Check(string what, double[] truth, double[] torch32, double[] actual)
        {
            double scale = Oracle.MaxAbs(truth);
            double errRef = StackOracle.Rel(truth, actual, scale), errTorch = StackOracle.Rel(truth, torch32, scale);
            double tol = StackReferenceParityTests.Float32Tolerance(errTorch);
            worstRatio = Math.Max(worstRatio, errRef / tol);
            report.Add(string.Create(CultureInfo.InvariantCulture, $"{what}: ref {errRef:E1} torch {errTorch:E1} tol {tol:E1}"));
            if (!(errRef <= tol)) failures.Add(string.Create(CultureInfo.InvariantCulture, $"{what}: float reference error {errRef:E2} > {tol:E2} (PyTorch float32: {errTorch:E2})"));
        }
        Check("losses", b64.ExpectedLosses, b32.ExpectedLosses, t.Losses);
        foreach (var (n, v) in t.Final) Check("final." + n, b64.ExpectedFinal(n), b32.ExpectedFinal(n), v);
        foreach (var (n, c) in t.Tracked) Assert.AreEqual((long)b32.ExpectedFinal(n)[0], c, $"{name}: final.{n}");
        Console.WriteLine($"{name}: worst error/tolerance {worstRatio:F3}\n  " + string.Join("\n  ", report));
        Assert.IsEmpty(failures, $"{name}: " + string.Join("; ", failures));
    }

    /// <summary>The reference's double schedule and <see cref="Schedule.At"/> (float) agree to float rounding, at every step of a few schedules.</summary>
    [TestMethod]
    public void ScheduleInDoubleAgreesWithScheduleAt()
    {
        foreach (string text in new[] { "constant", "step:at=10,factor=0.1", "cosine:warmup=5,total=20,min_lr=0", "cosine:warmup=0,total=7,min_lr=0.001", "cosine:warmup=3,total=3,min_lr=0.01" })
        {
            var s = Schedule.Parse(text);
            for (long step = 0; step < 30; step++)
            {
                double exact = ReferenceOptimizer<double>.ScheduledRate(s, step, 0.1);
                float at = s.At(step, 0.1f);
                // float: lr and the factor each rounded to float (2^-24 relative), then the result: 3 roundings
                Assert.AreEqual(exact, at, 3 * 5.97e-8 * Math.Max(exact, 1e-3), $"{text} at step {step}");
            }
        }
        Assert.AreEqual(0.1, ReferenceOptimizer<double>.Exact(0.1f));
        Assert.AreEqual(1e-8, ReferenceOptimizer<double>.Exact(1e-8f));
    }

    /// <summary>
    /// Hand-checked single steps: SGD with momentum (v starts as g, then μ·v + g) and weight decay, and
    /// AdamW's first step (bias corrections make it <c>p·(1 − lr·wd) − lr·sign(g)</c> up to eps).
    /// </summary>
    [TestMethod]
    public void OneStepByHand()
    {
        var p = new Dictionary<string, double[]> { ["w"] = [1.0, -2.0] };
        var g = new Dictionary<string, double[]> { ["w"] = [0.5, 0.25] };
        var sgd = new ReferenceOptimizer<double>(new Sgd { LearningRate = 0.1f, Momentum = 0.9f, WeightDecay = 0.01f });
        sgd.Step(p, g);                                           // g' = g + 0.01 p = [0.51, 0.23]; v = g'
        Assert.AreEqual(1.0 - 0.1 * 0.51, p["w"][0], 1e-15);
        Assert.AreEqual(-2.0 - 0.1 * 0.23, p["w"][1], 1e-15);
        double p0 = p["w"][0];
        sgd.Step(p, g);                                           // v = 0.9·0.51 + (0.5 + 0.01·p0)
        Assert.AreEqual(p0 - 0.1 * (0.9 * 0.51 + 0.5 + 0.01 * p0), p["w"][0], 1e-15);

        var q = new Dictionary<string, double[]> { ["w"] = [1.0, -2.0] };
        var adamw = new ReferenceOptimizer<double>(new AdamW { LearningRate = 0.01f, WeightDecay = 0.1f });
        adamw.Step(q, g);
        Assert.AreEqual(1.0 * (1 - 0.001) - 0.01, q["w"][0], 1e-9);
        Assert.AreEqual(-2.0 * (1 - 0.001) - 0.01, q["w"][1], 1e-9);
    }
}
