using System.Globalization;
using System.Runtime.InteropServices;
using HpBackprop.Cli;
using HpBackprop.IO;
using HpBackprop.Networks;
using HpBackprop.Reference;

namespace HpBackprop.Tests;

/// <summary>
/// <c>grads</c> and <c>check</c> on layer stacks (docs/stacks.md) through <see cref="Program.Run"/>: the grads output of every
/// one-step stack bundle against PyTorch's expected tensors (f64: 1e-10; f32: the tests' derived per-tensor rule), the
/// check tables, and every input error exiting 2 with a message naming the file and the tensor or layer.
/// </summary>
[TestClass]
public sealed class StackGradsCliTests
{
    public static IEnumerable<object[]> Cases => StackOracle.Cases.Select(c => new object[] { c });

    public static IEnumerable<object[]> DeviceCases => StackOracle.Cases.SelectMany(c => new[] { new object[] { c, "cpu" }, [c, "emulator"] });

    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Program.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    /// <summary>Runs grads on a bundle of the stacks directory and returns the output file.</summary>
    private static SafeTensorsFile Grads(TempDir dir, string name, string precision, params string[] extra)
    {
        string outPath = dir.File($"{name}.{precision}.grads.safetensors");
        var (code, stdout, stderr) = Run(["grads", "--in", StackOracle.PathOf(name, precision), "--out", outPath, .. extra]);
        Assert.AreEqual(0, code, $"{name}.{precision}: {stderr}");
        StringAssert.Contains(stdout, "wrote ");
        return SafeTensorsFile.Read(outPath);
    }

    /// <summary>The names docs/stacks.md requires: loss, grad.{name} for every parameter, grad.x/grad.y for float x/y — no more, no fewer.</summary>
    private static void AssertNamesShapesAndDType(StackBundle b, SafeTensorsFile o, DType dtype)
    {
        var want = new List<(string, int[])> { ("loss", [1]) };
        want.AddRange(b.Stack.Parameters().Select(s => ("grad." + s.Name, s.Shape)));
        int k = b.Stack.Resolve(b.InputWidth)[^1].Width;
        if (b.Features != null) want.Add(("grad.x", [b.N, b.InputWidth]));
        if (b.Targets != null) want.Add(("grad.y", [b.N, k]));
        CollectionAssert.AreEquivalent(want.Select(w => w.Item1).ToArray(), o.Tensors.Keys.ToArray(), $"{b.Source}: tensors of the output");
        foreach (var (name, shape) in want)
        {
            Assert.AreEqual(dtype, o[name].DType, $"{b.Source}: {name}");
            CollectionAssert.AreEqual(shape, o[name].Shape, $"{b.Source}: shape of {name}");
        }
    }

    /// <summary>(name in the output, expected, scale) for loss, every parameter gradient, grad.x and grad.y; near-zero biases against their terms' scale.</summary>
    private static List<(string Name, double[] Expected, double Scale)> Expected(StackBundle b, StackResult<double> r64)
    {
        var e = b.ReadExpected();
        var nearZero = StackOracle.NearZero(b.Stack).ToHashSet();
        var list = new List<(string, double[], double)> { ("loss", [e.Loss], Math.Abs(e.Loss)) };
        foreach (var s in b.Stack.Parameters())
        {
            var g = e.Gradients[s.Name];
            list.Add(("grad." + s.Name, g, nearZero.Contains(s.Name) ? StackOracle.NearZeroScale(r64, s.Layer) : Oracle.MaxAbs(g)));
        }
        if (e.InputGradient is { } gx) list.Add(("grad.x", gx, Oracle.MaxAbs(gx)));
        if (e.TargetGradient is { } gy) list.Add(("grad.y", gy, Oracle.MaxAbs(gy)));
        return list;
    }

    /// <summary>
    /// F64 bundle → grads in double by the reference: every output tensor F64, within 1e-10 relative of PyTorch's
    /// float64 autograd (the reference parity test's rule). Catches an f64 input computed in float (errors ~1e-7), a
    /// parameter copied under the wrong name or layout, a missing or extra tensor, a wrong shape.
    /// </summary>
    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void GradsOnAnF64StackBundleMatchesTorchFloat64To1e10(string name)
    {
        using var dir = new TempDir();
        var b = StackOracle.Load(name, "f64");
        var o = Grads(dir, name, "f64");
        AssertNamesShapesAndDType(b, o, DType.F64);
        Assert.AreEqual("reference (double)", o.Metadata["path"]);
        var r64 = b.ReferenceAs<double>().Run(b.InputAs<double>(), b.ParametersAs<double>(), b.BuffersAs<double>());
        var failures = new List<string>();
        foreach (var (t, expected, scale) in Expected(b, r64))
        {
            double rel = StackOracle.Rel(expected, o[t].ToDouble(), scale);
            if (!(rel <= 1e-10)) failures.Add($"{t}: {rel:E2}");
        }
        Assert.IsEmpty(failures, $"{name}: " + string.Join("; ", failures));
    }

    /// <summary>
    /// F32 bundle → grads in float by the fast path (Network): every output tensor F32, and per tensor
    /// <c>err ≤ 8·max(err_torch, 32·2⁻²⁴)</c> where both errors are relative to PyTorch's float64 result on the same
    /// inputs (the float reference's rule in StackReferenceParityTests; a near-zero bias takes the larger of its own
    /// and its weight's err_torch). Catches a fast-path gradient wrong by more than float noise, parameters or running
    /// buffers copied wrongly into the network (transposed, by position), a dropped grad.x/grad.y, l2 or eps not passed.
    /// </summary>
    /// <remarks>The same on <c>--device emulator</c>: the GPU backend's kernels on the host, the same bound.</remarks>
    [TestMethod]
    [DynamicData(nameof(DeviceCases))]
    public void GradsOnAnF32StackBundleIsAsAccurateAsTorchFloat32(string name, string device)
    {
        if (device == "emulator") Devices.RequireEmulator();
        using var dir = new TempDir();
        var b32 = StackOracle.Load(name, "f32");
        var b64 = StackOracle.Load(name, "f64");
        var o = Grads(dir, name, "f32", "--device", device);
        AssertNamesShapesAndDType(b32, o, DType.F32);
        Assert.AreEqual("fast path (float)", o.Metadata["path"]);
        var r64 = b64.ReferenceAs<double>().Run(b64.InputAs<double>(), b64.ParametersAs<double>(), b64.BuffersAs<double>());
        var truth = Expected(b64, r64);
        var torch = Expected(b32, r64);
        var errTorch = new Dictionary<string, double>(StringComparer.Ordinal);
        for (int i = 0; i < truth.Count; i++) errTorch[truth[i].Name] = StackOracle.Rel(truth[i].Expected, torch[i].Expected, truth[i].Scale);
        var nearZero = StackOracle.NearZero(b64.Stack).Select(s => "grad." + s).ToHashSet();
        var failures = new List<string>();
        var report = new List<string>();
        foreach (var (t, expected, scale) in truth)
        {
            double err = StackOracle.Rel(expected, o[t].ToDouble(), scale);
            double et = errTorch[t];
            if (nearZero.Contains(t)) et = Math.Max(et, errTorch[t.Replace(".bias", ".weight", StringComparison.Ordinal)]);
            double tol = StackReferenceParityTests.Float32Tolerance(et);
            report.Add(string.Create(CultureInfo.InvariantCulture, $"{t}: {err:E1} (tol {tol:E1})"));
            if (!(err <= tol)) failures.Add(string.Create(CultureInfo.InvariantCulture, $"{t}: fast-path error {err:E2} > {tol:E2} (PyTorch float32: {et:E2})"));
        }
        Console.WriteLine($"{name} ({device}): " + string.Join(", ", report));
        Assert.IsEmpty(failures, $"{name} ({device}): " + string.Join("; ", failures));
    }

    /// <summary>An F64 bundle or --mode atomic runs the plain-loop reference on the CPU: on a GPU device that is refused, naming why.</summary>
    [TestMethod]
    public void AReferenceBundleOnAGpuDeviceIsRefusedNamingWhy()
    {
        using var dir = new TempDir();
        var (code, _, stderr) = Run("grads", "--in", StackOracle.PathOf("layernorm", "f64"), "--out", dir.File("o.safetensors"), "--device", "emulator");
        Assert.AreEqual(2, code, stderr);
        StringAssert.Contains(stderr, "F64");
        (code, _, stderr) = Run("grads", "--in", StackOracle.PathOf("layernorm", "f32"), "--out", dir.File("o.safetensors"), "--device", "cuda", "--mode", "atomic");
        Assert.AreEqual(2, code, stderr);
        StringAssert.Contains(stderr, "--mode atomic");
        Assert.IsFalse(File.Exists(dir.File("o.safetensors")));
    }

    /// <summary>--mode atomic on an F32 stack bundle runs the float reference: bitwise StackBundle.RunReference's output. Catches the mode being ignored.</summary>
    [TestMethod]
    public void GradsAtomicOnAnF32StackBundleIsTheFloatReference()
    {
        using var dir = new TempDir();
        var o = Grads(dir, "mlp_bce", "f32", "--mode", "atomic");
        Assert.AreEqual("reference (float)", o.Metadata["path"]);
        var expected = StackOracle.Load("mlp_bce", "f32").RunReference();
        foreach (var (name, t) in expected.Tensors)
            CollectionAssert.AreEqual(t.Data, o[name].Data, name);
    }

    /// <summary>
    /// check --layers on stacks of every kind (ids from a corpus, features; every loss; both batch-norm modes; l2): exit 0,
    /// a row for the loss and every parameter (state-dict names), x/y rows for float inputs/targets, the tolerance
    /// stated, every row within it, and one finite-difference line per parameter. Catches a parameter left out of the
    /// table, a fast path that disagrees with the reference, a tolerance that is not stated.
    /// </summary>
    [TestMethod]
    [DataRow("linear:4x16,batchnorm:16:biased,relu,linear:16x3,sigmoid", "mse", "8", false)]
    [DataRow("linear:5x8:nobias,tanh,linear:8x3", "bce_with_logits", "6", false)]
    [DataRow("linear:3x7,batchnorm:7,sigmoid,linear:7x4", "cross_entropy", "9", false)]
    [DataRow("batchnorm:6,tanh", "mean", "5", false)]
    [DataRow("embedding:VOCABx6,flatten,linear:18x12,batchnorm:12,tanh,linear:12xVOCAB", "cross_entropy", "16", true)]
    public void CheckLayersPrintsTheTableForEveryParameterAndFiniteDifferences(string layers, string loss, string batch, bool ids)
    {
        using var dir = new TempDir();
        var args = new List<string> { "check", "--loss", loss, "--batch", batch, "--seed", "5", "--l2", "0.01" };
        if (ids)
        {
            string data = dir.File("words.txt");
            var words = TempDir.SyntheticWords(200, 3).ToArray();
            File.WriteAllLines(data, words);
            int v = words.SelectMany(w => w).Distinct().Count() + 1;
            layers = layers.Replace("VOCAB", v.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal);
            args.AddRange(["--data", data]);
        }
        args.AddRange(["--layers", layers]);
        var (code, stdout, stderr) = Run([.. args]);
        Assert.AreEqual(0, code, stderr);
        var stack = Sequential.Parse(layers);
        var rows = stdout.Split('\n').Where(l => l.Contains(" | ", StringComparison.Ordinal)).Select(l => l.Split('|')[0].Trim()).ToList();
        var want = new List<string> { "name", "loss" };
        want.AddRange(stack.Parameters().Select(p => p.Name));
        if (!ids) want.Add("x");
        if (loss is "mse" or "bce_with_logits") want.Add("y");
        CollectionAssert.AreEqual(want, rows, stdout);
        StringAssert.Contains(stdout, "tol = 8·max(err_f32, 32·2⁻²⁴)");
        StringAssert.Contains(stdout, $"all {want.Count - 1} tensors within tolerance");
        foreach (var p in stack.Parameters())
            Assert.IsTrue(stdout.Split('\n').Any(l => l.TrimStart().StartsWith(p.Name + " ", StringComparison.Ordinal) && l.Contains("relative error", StringComparison.Ordinal)), $"finite-difference line of {p.Name}:\n{stdout}");
    }

    /// <summary>check --bundle on a stack bundle: f64 one table (reference), f32 two (reference, fast path), all within the stated tolerance.</summary>
    [TestMethod]
    [DataRow("l2_bn")]
    [DataRow("mlp_relu_sigmoid")]
    public void CheckBundleOnAStackBundlePrintsTheTablesWithinTolerance(string name)
    {
        var (c64, o64, e64) = Run("check", "--bundle", StackOracle.PathOf(name, "f64"));
        Assert.AreEqual(0, c64, e64);
        StringAssert.Contains(o64, "reference (double) vs PyTorch autograd (float64)");
        StringAssert.Contains(o64, "relerr ≤ 1e-10");
        Assert.AreEqual(1, CountOf(o64, "tensors within tolerance"), o64);
        var (c32, o32, e32) = Run("check", "--bundle", StackOracle.PathOf(name, "f32"));
        Assert.AreEqual(0, c32, e32);
        StringAssert.Contains(o32, "fast path on cpu (float) vs PyTorch autograd (float32)");
        Assert.AreEqual(2, CountOf(o32, "tensors within tolerance"), o32);
        foreach (var p in StackOracle.Load(name, "f32").Stack.Parameters()) StringAssert.Contains(o32, p.Name + " ");
    }

    private static int CountOf(string s, string what) => s.Split(what).Length - 1;

    /// <summary>A copy of a stack bundle with tensors replaced (or removed: null) and metadata changed.</summary>
    private static string Variant(TempDir dir, string what, string name, Action<SafeTensorsFile>? change = null, string? remove = null)
    {
        var src = SafeTensorsFile.Read(StackOracle.PathOf(name, "f32"));
        var f = new SafeTensorsFile();
        foreach (var (k, v) in src.Metadata) f.Metadata[k] = v;
        foreach (var (k, t) in src.Tensors)
        {
            if (k == remove) continue;
            switch (t.DType)
            {
                case DType.F32: f.Add(k, MemoryMarshal.Cast<byte, float>(t.Data), t.Shape); break;
                case DType.F64: f.Add(k, MemoryMarshal.Cast<byte, double>(t.Data), t.Shape); break;
                case DType.I32: f.Add(k, MemoryMarshal.Cast<byte, int>(t.Data), t.Shape); break;
                default: f.Add(k, MemoryMarshal.Cast<byte, long>(t.Data), t.Shape); break;
            }
        }
        change?.Invoke(f);
        string path = dir.File(what + ".safetensors");
        f.Save(path);
        return path;
    }

    private static long[] Longs(SafeTensor t) => MemoryMarshal.Cast<byte, long>(t.Data).ToArray();

    /// <summary>Each input error exits 2 before writing anything, with a message naming the file and the tensor or layer.</summary>
    [TestMethod]
    public void GradsRejectsStackBundlesThatDoNotFitWithTwoNamingFileAndTensor()
    {
        using var dir = new TempDir();
        void Expect(string path, params string[] mentions)
        {
            string outPath = dir.File("out.safetensors");
            var (code, _, stderr) = Run("grads", "--in", path, "--out", outPath);
            Assert.AreEqual(2, code, $"{Path.GetFileName(path)}: {stderr}");
            StringAssert.Contains(stderr, Path.GetFileName(path), "the message names the file");
            foreach (string m in mentions) StringAssert.Contains(stderr, m, Path.GetFileName(path));
            Assert.IsFalse(File.Exists(outPath), "nothing written");
        }
        Expect(Variant(dir, "missing", "makemore", remove: "2.weight"), "'2.weight'", "missing");
        Expect(Variant(dir, "shape", "makemore", f => f.Add("5.weight", new float[64 * 27], 64, 27)), "'5.weight'", "layer 5 (linear:64x27)", "[27, 64]");
        Expect(Variant(dir, "i64", "makemore", f => { var x = Longs(f["x"]); x[4] = 1L << 33; f.Add("x", x, 32, 3); }), "'x'", "32 bits");
        Expect(Variant(dir, "class", "makemore", f => { var y = Longs(f["y"]); y[3] = 27; f.Add("y", y, 32); }), "'y'", "class id 27", "layer 5");
        Expect(Variant(dir, "widths", "mlp_bce", f => f.Metadata["layers"] = f.Metadata["layers"].Replace("linear:", "linear:9", StringComparison.Ordinal)), "layer 0");
        Expect(Variant(dir, "n1", "bn_mse", f =>
        {
            f.Add("x", f["x"].ToSingle().AsSpan(0, 6), 1, 6);
            f.Add("y", f["y"].ToSingle().AsSpan(0, 6), 1, 6);
        }), "'x'", "layer 0 (batchnorm:6)", "at least 2");
    }

    /// <summary>--in and --out the same file: exit 2 before any work, the file untouched.</summary>
    [TestMethod]
    public void GradsWithTheSameFileForInAndOutExits2AndLeavesItAlone()
    {
        using var dir = new TempDir();
        string path = Variant(dir, "same", "linreg");
        byte[] before = File.ReadAllBytes(path);
        var (code, _, stderr) = Run("grads", "--in", path, "--out", Path.Combine(dir.Path, ".", "same.safetensors"));
        Assert.AreEqual(2, code, stderr);
        StringAssert.Contains(stderr, "--in and --out are the same file");
        CollectionAssert.AreEqual(before, File.ReadAllBytes(path));
    }

    /// <summary>--device cuda/emulator with a stack bundle: exit 2 naming the first layer the GPU backend does not run.</summary>
    /// <summary>check --layers errors speak in the options: a bad stack, a vocabulary that is not the corpus's, batch norm with --batch 1.</summary>
    [TestMethod]
    [DataRow("linear:3x8,linear:9x2", "", "--layers: layer 1")]
    [DataRow("embedding:99x6,flatten,linear:18x99", "", "has 99 ids but the corpus has a vocabulary of")]
    [DataRow("linear:3x8,batchnorm:8", "--batch=1", "--batch 1: layer 1 (batchnorm:8)")]
    [DataRow("linear:3x2", "--loss=hinge", "--loss: 'hinge' is not a loss")]
    public void CheckLayersRejectsWhatDoesNotFitWithTwo(string layers, string extra, string expected)
    {
        var args = new List<string> { "check", "--layers", layers };
        if (extra.Length > 0) args.AddRange(extra.Split('='));
        var (code, _, stderr) = Run([.. args]);
        Assert.AreEqual(2, code, stderr);
        StringAssert.Contains(stderr, expected);
    }
}
