using System.Globalization;
using HpBackprop.IO;
using HpBackprop.Networks;
using HpBackprop.Reference;

namespace HpBackprop.Tests;

/// <summary>
/// <see cref="StackReference{T}"/> against PyTorch autograd: every expected tensor of every stack oracle
/// bundle (loss, out, every parameter gradient, grad.x, grad.y, running statistics after the step).
/// </summary>
[TestClass]
public sealed class StackReferenceParityTests
{
    public static IEnumerable<object[]> Cases => StackOracle.Cases.Select(c => new object[] { c });

    [TestMethod]
    public void TheOracleBundlesArePresent()
    {
        Assert.IsGreaterThanOrEqualTo(10, StackOracle.Cases.Length, $"one-step stack bundles in {StackOracle.Directory}");
        Assert.IsGreaterThanOrEqualTo(2, StackOracle.OptimCases.Length, $"optimiser bundles in {StackOracle.Directory}");
        foreach (string c in StackOracle.Cases.Concat(StackOracle.OptimCases))
            Assert.IsTrue(File.Exists(StackOracle.PathOf(c, "f32")), $"{c}: the f32 bundle is missing");
    }

    /// <summary>
    /// The double reference on the f64 bundle's inputs: every tensor within 1e-10 relative (max |diff| /
    /// max |expected|; near-zero bias gradients against the scale of their terms, see
    /// <see cref="StackOracle.NearZeroScale"/>). Both sides are float64 with different summation orders
    /// and library functions (exp, log, tanh): each value carries at most a few thousand roundings of
    /// 1.1e-16, so 1e-10 leaves a margin of about 1000 while a wrong formula is off by far more.
    /// </summary>
    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void DoubleReferenceMatchesFloat64Oracle(string name)
    {
        var b = StackOracle.Load(name, "f64");
        Assert.AreEqual(DType.F64, b.Precision);
        var e = b.ReadExpected();
        CollectionAssert.AreEquivalent(e.NearZero.ToArray(), StackOracle.NearZero(b.Stack).Select(s => "grad." + s).ToArray(), $"{name}: near-zero tensors (metadata vs the rule)");
        var r = b.ReferenceAs<double>().Run(b.InputAs<double>(), b.ParametersAs<double>(), b.BuffersAs<double>());
        var failures = new List<string>();
        var report = new List<string>();
        double worst = 0;
        foreach (var (t, expected, actual, scale) in StackOracle.Pairs(b, e, r, r))
        {
            double rel = StackOracle.Rel(expected, actual, scale);
            worst = Math.Max(worst, rel);
            report.Add($"{t} {rel:E1}");
            if (!(rel <= 1e-10)) failures.Add($"{t}: relative error {rel:E2}");
        }
        foreach (int i in b.Stack.BatchNormLayers())
            Assert.AreEqual(b.BatchesTracked.GetValueOrDefault(BatchNormBuffers<double>.TrackedName(i)) + 1, r.Buffers.BatchesTracked(i), $"{name}: num_batches_tracked of layer {i}");
        Console.WriteLine($"{name}: worst {worst:E2}; " + string.Join(", ", report));
        Assert.IsEmpty(failures, $"{name}: " + string.Join("; ", failures));
    }

    /// <summary>
    /// The tolerance of the float reference on one tensor of one case, derived from PyTorch's own float32
    /// error on that tensor: both are measured against the float64 oracle (the truth to 1e-10), and
    /// the reference may be at most <see cref="Float32Factor"/> times less accurate than PyTorch,
    /// with a floor of <see cref="Float32Floor"/> for tensors PyTorch happens to get (nearly) exact.
    /// See <see cref="FloatReferenceIsAsAccurateAsTorchFloat32"/> for why.
    /// </summary>
    internal static double Float32Tolerance(double torchError) => StackParity.Float32Tolerance(torchError);

    /// <summary>How much less accurate than PyTorch float32 the float reference may be.</summary>
    internal const double Float32Factor = StackParity.Float32Factor;

    /// <summary>32 units of float32 roundoff (2^-24 = 6.0e-8): 1.9e-6.</summary>
    internal const double Float32Floor = StackParity.Float32Floor;

    /// <summary>
    /// The float reference on the f32 bundle's inputs (the same values as the f64 bundle's). Rule, per
    /// case and tensor: <c>err_ref ≤ 8·max(err_torch, 32·2⁻²⁴)</c>, where <c>err_ref</c> and <c>err_torch</c>
    /// are the relative errors (as in the f64 test) of the float reference and of PyTorch's float32 run
    /// against the float64 oracle. Why: both round every operation to float, so their errors have the
    /// same causes (the conditioning of the case: long reductions, batch norm's 1/σ at n = 2, logits of
    /// ±50) and the same order of magnitude; they differ by summation order (PyTorch's BLAS and
    /// vectorised reductions sum in blocks, the reference sums sequentially, worse by up to √L for a
    /// length-L sum) and by library functions. A factor of 8 admits that difference; the floor covers
    /// tensors PyTorch computes almost exactly (e.g. grad.y of mse), where the reference still pays a
    /// few roundings per value and up to L·u for a sequential sum of L ≤ 32 terms. A near-zero bias
    /// gradient (a linear before a batch norm) is <c>sum0(dy)</c>: its error relative to <c>sum|dy|</c> is
    /// that of dy, which its weight gradient <c>dyᵀ·x</c> carries, so its err_torch is the larger of its own and
    /// the weight gradient's (at n = 2 PyTorch's autograd cancels it structurally to 3e-5 while the fused
    /// backward, like the seeds' §4 formula, leaves dy's 1e-3). A wrong formula is off
    /// by orders of magnitude more (see the break-the-formula list in the report). The direct difference
    /// |reference − torch f32| is printed too; it is at most err_ref + err_torch.
    /// </summary>
    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void FloatReferenceIsAsAccurateAsTorchFloat32(string name)
    {
        var b32 = StackOracle.Load(name, "f32");
        var b64 = StackOracle.Load(name, "f64");
        Assert.AreEqual(DType.F32, b32.Precision);
        var e32 = b32.ReadExpected();
        var e64 = b64.ReadExpected();
        var r64 = b64.ReferenceAs<double>().Run(b64.InputAs<double>(), b64.ParametersAs<double>(), b64.BuffersAs<double>());
        var r32 = b32.ReferenceAs<float>().Run(b32.InputAs<float>(), b32.ParametersAs<float>(), b32.BuffersAs<float>());
        var truth = StackOracle.Pairs(b64, e64, r64, r64);
        var ours = StackOracle.Pairs(b64, e64, r32, r64);     // float reference vs float64 truth
        var torch = StackOracle.Pairs(b32, e32, r64, r64);    // float64 reference (≈ truth) vs torch f32: torch's own error
        var failures = new List<string>();
        var report = new List<string>();
        var torchError = new Dictionary<string, double>(StringComparer.Ordinal);
        for (int i = 0; i < truth.Count; i++) torchError[truth[i].Name] = StackOracle.Rel(torch[i].Expected, truth[i].Expected, truth[i].Scale);
        var nearZero = StackOracle.NearZero(b64.Stack).Select(s => "grad." + s).ToHashSet();
        double worstRatio = 0;
        for (int i = 0; i < truth.Count; i++)
        {
            var (t, expected, _, scale) = truth[i];
            double errRef = StackOracle.Rel(expected, ours[i].Actual, scale);
            double errTorch = torchError[t];
            double direct = StackOracle.Rel(torch[i].Expected, ours[i].Actual, scale);
            // a near-zero bias gradient sum0(dy) inherits the relative error of dy, which its weight
            // gradient dyᵀ·x shows (PyTorch's autograd sums it to ≈ 0 structurally, the fused formula does not)
            if (nearZero.Contains(t)) errTorch = Math.Max(errTorch, torchError[t.Replace(".bias", ".weight", StringComparison.Ordinal)]);
            double tol = Float32Tolerance(errTorch);
            worstRatio = Math.Max(worstRatio, errRef / tol);
            report.Add(string.Create(CultureInfo.InvariantCulture, $"{t}: ref {errRef:E1} torch {errTorch:E1} |ref-torch| {direct:E1} tol {tol:E1}"));
            if (!(errRef <= tol)) failures.Add(string.Create(CultureInfo.InvariantCulture, $"{t}: float reference error {errRef:E2} > {tol:E2} (PyTorch float32: {errTorch:E2})"));
        }
        Console.WriteLine($"{name}: worst error/tolerance {worstRatio:F3}\n  " + string.Join("\n  ", report));
        Assert.IsEmpty(failures, $"{name}: " + string.Join("; ", failures));
    }
    public static IEnumerable<object[]> MakemoreCases => Oracle.Cases.Select(c => new object[] { c });

    /// <summary>
    /// The makemore MLP as a stack (<see cref="Sequential.Makemore"/>) on the exercise-1 oracle bundles:
    /// the stack reference in double gives the docs/makemore.md §3 loss, logits, dlogits, dhprebn and the seven
    /// parameter gradients (linear weights transposed: the stack keeps PyTorch's <c>[OUT,IN]</c>,
    /// docs/makemore.md §2 <c>[IN,OUT]</c>) within 1e-10, so the two references agree.
    /// </summary>
    [TestMethod]
    [DynamicData(nameof(MakemoreCases))]
    public void MakemoreStackMatchesExercise1Oracle(string name)
    {
        var b = Oracle.Load(name, "f64");
        var c = b.Config;
        var stack = Sequential.Makemore(c.VocabSize, c.BlockSize, c.EmbeddingSize, c.HiddenSize);
        var p = b.Parameters;
        int k = c.BlockSize * c.EmbeddingSize, h = c.HiddenSize, v = c.VocabSize;
        var parameters = new Dictionary<string, double[]>
        {
            ["0.weight"] = p["C"], ["2.weight"] = Transpose(p["W1"], k, h), ["2.bias"] = p["b1"],
            ["3.weight"] = p["bngain"], ["3.bias"] = p["bnbias"], ["5.weight"] = Transpose(p["W2"], h, v), ["5.bias"] = p["b2"],
        };
        var r = new StackReference<double>(stack, LossKind.CrossEntropy).Run(new StackInput<double>(c.BatchSize, Ids: b.Xb, Classes: b.Yb), parameters);
        var pairs = new (string Spec, double[] Actual)[]
        {
            ("loss", [r.Loss]), ("logits", r.Output), ("dlogits", r.LayerOutputGradients[5]!), ("dhprebn", r.LayerOutputGradients[2]!),
            ("dC", r.Gradients["0.weight"]), ("dW1", Transpose(r.Gradients["2.weight"], h, k)), ("db1", r.Gradients["2.bias"]),
            ("dbngain", r.Gradients["3.weight"]), ("dbnbias", r.Gradients["3.bias"]), ("dW2", Transpose(r.Gradients["5.weight"], v, h)), ("db2", r.Gradients["5.bias"]),
        };
        var failures = new List<string>();
        foreach (var (g, actual) in pairs)
        {
            double scale = Oracle.MaxAbs(b.File[Oracle.ScaleOf(g)].ToDouble());
            double rel = Oracle.MaxAbsDiff(actual, b.File[g].ToDouble()) / Math.Max(scale, 1e-300);
            if (!(rel <= 1e-10)) failures.Add($"{g}: {rel:E2}");
        }
        Assert.IsEmpty(failures, $"{name}: " + string.Join("; ", failures));
    }

    // [rows, cols] -> [cols, rows]
    private static double[] Transpose(double[] a, int rows, int cols)
    {
        var t = new double[a.Length];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
        return t;
    }
}
