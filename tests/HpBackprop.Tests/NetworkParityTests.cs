using System.Globalization;
using HpBackprop.IO;
using HpBackprop.Networks;
using HpBackprop.Reference;

namespace HpBackprop.Tests;

/// <summary>
/// The compiled CPU network (the fast path, float32) against PyTorch on every stack bundle and every optimiser
/// trajectory of tests/reference/stacks, with the tolerance rule of the float reference
/// (<see cref="StackReferenceParityTests.Float32Tolerance"/>): against the float64 result (the truth), the network's
/// relative error on each tensor is at most 8·max(PyTorch float32's own error on it, 32·2⁻²⁴).
/// </summary>
[TestClass]
public sealed class NetworkParityTests
{
    public static IEnumerable<object[]> Cases => StackOracle.Cases.Select(c => new object[] { c });
    public static IEnumerable<object[]> OptimCases => StackOracle.OptimCases.Select(c => new object[] { c });

    /// <summary>A network holding a bundle's parameters and running statistics.</summary>
    private static Network NetworkOf(Sequential stack, LossKind loss, double l2, double momentum, double eps, int n, int width,
        IReadOnlyDictionary<string, double[]> parameters, IReadOnlyDictionary<string, double[]> running, IReadOnlyDictionary<string, long> tracked,
        Optimizer? optimizer = null, Schedule? schedule = null, int seed = 42, long step = 0)
    {
        var net = Network.Create(stack, new NetworkOptions
        {
            BatchSize = n, Loss = loss, L2 = (float)l2, BatchNormMomentum = (float)momentum, Eps = (float)eps, InputWidth = width, InputGradients = true,
            Optimizer = optimizer ?? new Sgd(), Schedule = schedule ?? Schedule.Constant, Seed = seed,
        });
        net.StepCount = step;
        foreach (var (name, v) in parameters) Copy(v, net.Parameters.Value(name));
        foreach (var (name, v) in running) Copy(v, net.Parameters.Value(name));
        var bns = stack.BatchNormLayers();
        for (int j = 0; j < bns.Count; j++)
            if (tracked.TryGetValue(bns[j].ToString(CultureInfo.InvariantCulture) + ".num_batches_tracked", out long t)) net.Parameters.BatchesTracked[j] = t;
        return net;
    }

    private static void Copy(double[] from, Span<float> to)
    {
        Assert.AreEqual(from.Length, to.Length);
        for (int i = 0; i < from.Length; i++) to[i] = (float)from[i];
    }

    private static float Step(Network net, StackInput<float> x, bool update)
    {
        if (x.Ids != null)
            return x.Classes != null ? (update ? net.Step(x.Ids, x.Classes) : net.ForwardBackward(x.Ids, x.Classes))
                : (update ? net.Step(x.Ids, (ReadOnlySpan<float>)(x.Targets ?? [])) : net.ForwardBackward(x.Ids, (ReadOnlySpan<float>)(x.Targets ?? [])));
        return x.Classes != null ? (update ? net.Step(x.Features, x.Classes) : net.ForwardBackward(x.Features, x.Classes))
            : (update ? net.Step(x.Features, (ReadOnlySpan<float>)(x.Targets ?? [])) : net.ForwardBackward(x.Features, (ReadOnlySpan<float>)(x.Targets ?? [])));
    }

    private static double[] D(ReadOnlySpan<float> a) { var o = new double[a.Length]; for (int i = 0; i < a.Length; i++) o[i] = a[i]; return o; }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void NetworkIsAsAccurateAsTorchFloat32(string name)
    {
        var b32 = StackOracle.Load(name, "f32");
        var b64 = StackOracle.Load(name, "f64");
        var e32 = b32.ReadExpected();
        var e64 = b64.ReadExpected();
        var r64 = b64.ReferenceAs<double>().Run(b64.InputAs<double>(), b64.ParametersAs<double>(), b64.BuffersAs<double>());
        using var net = NetworkOf(b32.Stack, b32.Loss, b32.L2, b32.BatchNormMomentum, b32.Eps, b32.N, b32.InputWidth, b32.Parameters, b32.RunningStatistics, b32.BatchesTracked,
            seed: b32.Seed, step: b32.Step);
        float loss = Step(net, b32.InputAs<float>(), update: false);
        var nearZero = StackOracle.NearZero(b64.Stack).ToHashSet();
        var rows = new List<(string Name, double[] Truth, double[] Torch32, double[] Ours, double Scale)>
        {
            ("loss", [e64.Loss], [e32.Loss], [loss], Math.Abs(e64.Loss)),
            ("out", e64.Out, e32.Out, D(net.Output), Oracle.MaxAbs(e64.Out)),
        };
        foreach (var (g, truth) in e64.Gradients)
        {
            double scale = nearZero.Contains(g) ? StackOracle.NearZeroScale(r64, int.Parse(g.AsSpan(0, g.IndexOf('.')), CultureInfo.InvariantCulture)) : Oracle.MaxAbs(truth);
            rows.Add(("grad." + g, truth, e32.Gradients[g], D(net.Parameters.Gradient(g)), scale));
        }
        if (e64.InputGradient is { } gx) rows.Add(("grad.x", gx, e32.InputGradient!, D(net.InputGradient), Oracle.MaxAbs(gx)));
        if (e64.TargetGradient is { } gy) rows.Add(("grad.y", gy, e32.TargetGradient!, D(net.TargetGradient), Oracle.MaxAbs(gy)));
        foreach (var (a, truth) in e64.After) rows.Add(("after." + a, truth, e32.After[a], D(net.Parameters.Value(a)), Oracle.MaxAbs(truth)));
        var errs = rows.ToDictionary(r => r.Name, r => (Ours: StackOracle.Rel(r.Truth, r.Ours, r.Scale), Torch: StackOracle.Rel(r.Truth, r.Torch32, r.Scale)));
        var failures = new List<string>();
        var report = new List<string>();
        foreach (var r in rows)
        {
            double errTorch = errs[r.Name].Torch;
            // a near-zero bias gradient inherits dy's relative error, which its weight gradient shows (see the float reference's test)
            if (r.Name.StartsWith("grad.", StringComparison.Ordinal) && nearZero.Contains(r.Name[5..]))
                errTorch = Math.Max(errTorch, errs[r.Name.Replace(".bias", ".weight", StringComparison.Ordinal)].Torch);
            double tol = StackReferenceParityTests.Float32Tolerance(errTorch), err = errs[r.Name].Ours;
            report.Add(string.Create(CultureInfo.InvariantCulture, $"{r.Name}: network {err:E1} torch {errTorch:E1} tol {tol:E1}"));
            if (!(err <= tol)) failures.Add(string.Create(CultureInfo.InvariantCulture, $"{r.Name}: network error {err:E2} > {tol:E2} (PyTorch float32: {errTorch:E2})"));
        }
        Console.WriteLine($"{name}:\n  " + string.Join("\n  ", report));
        Assert.IsEmpty(failures, $"{name}: " + string.Join("; ", failures));
        // num_batches_tracked counts the training forward
        var bns = b32.Stack.BatchNormLayers();
        for (int j = 0; j < bns.Count; j++) Assert.AreEqual(1, net.Parameters.BatchesTracked[j], $"{bns[j]}.num_batches_tracked");
    }

    [TestMethod]
    [DynamicData(nameof(OptimCases))]
    public void NetworkTrajectoryIsAsAccurateAsTorchFloat32(string name)
    {
        var b32 = StackTrajectoryBundle.Load(StackOracle.PathOf(name, "f32"));
        var b64 = StackTrajectoryBundle.Load(StackOracle.PathOf(name, "f64"));
        using var net = NetworkOf(b32.Stack, b32.Loss, b32.L2, b32.BatchNormMomentum, b32.Eps, b32.N, b32.InputWidth, b32.Parameters, b32.RunningStatistics,
            b32.BatchesTracked, b32.Optimizer, b32.Schedule, b32.Seed, b32.Step);
        var losses = new double[b32.Steps];
        for (int s = 0; s < b32.Steps; s++)
        {
            if (b32.ExpectedLearningRates is { } lr) Assert.AreEqual(lr[s], net.LearningRate, 1e-6 * Math.Abs(lr[s]) + 1e-12, $"learning rate of step {s}");
            losses[s] = Step(net, b32.InputAs<float>(s), update: true);
        }
        Assert.AreEqual(b32.Steps, net.StepCount);
        var failures = new List<string>();
        var report = new List<string>();
        void Check(string what, double[] truth, double[] torch32, double[] ours)
        {
            double scale = Oracle.MaxAbs(truth);
            double err = StackOracle.Rel(truth, ours, scale), errTorch = StackOracle.Rel(truth, torch32, scale);
            double tol = StackReferenceParityTests.Float32Tolerance(errTorch);
            report.Add(string.Create(CultureInfo.InvariantCulture, $"{what}: network {err:E1} torch {errTorch:E1} tol {tol:E1}"));
            if (!(err <= tol)) failures.Add(string.Create(CultureInfo.InvariantCulture, $"{what}: network error {err:E2} > {tol:E2} (PyTorch float32: {errTorch:E2})"));
        }
        Check("losses", b64.ExpectedLosses, b32.ExpectedLosses, losses);
        foreach (var s in net.Parameters.Parameters) Check("final." + s.Name, b64.ExpectedFinal(s.Name), b32.ExpectedFinal(s.Name), D(net.Parameters.Value(s.Name)));
        foreach (var s in net.Parameters.RunningStatistics) Check("final." + s.Name, b64.ExpectedFinal(s.Name), b32.ExpectedFinal(s.Name), D(net.Parameters.Value(s.Name)));
        var bns = b32.Stack.BatchNormLayers();
        for (int j = 0; j < bns.Count; j++)
            Assert.AreEqual((long)b32.ExpectedFinal($"{bns[j]}.num_batches_tracked")[0], net.Parameters.BatchesTracked[j], "num_batches_tracked");
        Console.WriteLine($"{name} ({b32.Optimizer}, {b32.Schedule}):\n  " + string.Join("\n  ", report));
        Assert.IsEmpty(failures, $"{name}: " + string.Join("; ", failures));
    }
}
