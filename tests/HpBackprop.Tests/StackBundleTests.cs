using HpBackprop.IO;
using HpBackprop.Networks;
using HpBackprop.Reference;

namespace HpBackprop.Tests;

/// <summary>
/// The grads interchange for stacks (<see cref="StackBundle"/>: read, check, run the reference, write)
/// and the bad inputs of docs/stacks.md: each a clear exception naming the problem, never a NaN.
/// </summary>
[TestClass]
public sealed class StackBundleTests
{
    private const string Mlp = "embedding:7x3,flatten,linear:6x5,batchnorm:5,tanh,linear:5x4";

    /// <summary>A valid grads-interchange input for <paramref name="layers"/>: random parameters (F64 or F32), x, y.</summary>
    private static SafeTensorsFile MakeInput(string layers, string loss, int n, int width, bool f64, int seed = 1)
    {
        var stack = Sequential.Parse(layers);
        var lossKind = Losses.Parse(loss);
        var r = new StackReference<double>(stack, lossKind, width);
        var rng = new Random(seed);
        var p = StackTestData.Parameters(stack, rng);
        var x = StackTestData.Input(r, n, rng);
        var f = new SafeTensorsFile();
        f.Metadata["layers"] = layers;
        f.Metadata["loss"] = loss;
        void Put(string name, double[] v, int[] shape) { if (f64) f.Add(name, v.AsSpan(), shape); else f.Add(name, v.Select(d => (float)d).ToArray().AsSpan(), shape); }
        foreach (var s in stack.Parameters()) Put(s.Name, p[s.Name], s.Shape);
        if (x.Ids is { } ids) f.Add("x", ids.Select(i => (long)i).ToArray().AsSpan(), n, width);
        if (x.Features is { } xf) Put("x", xf, [n, width]);
        if (x.Classes is { } c) f.Add("y", c.Select(i => (long)i).ToArray().AsSpan(), n);
        if (x.Targets is { } t) Put("y", t, [n, r.OutputWidth]);
        return f;
    }

    private static StackBundle Parse(SafeTensorsFile f) => StackBundle.From(SafeTensorsFile.Parse(f.ToBytes(), "input.safetensors"), "input.safetensors");

    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void GradsOutputHasEveryGradientInTheInputsPrecision(bool f64)
    {
        using var dir = new TempDir();
        string path = dir.File("in.safetensors");
        MakeInput("linear:4x5,batchnorm:5:biased,relu,linear:5x3", "mse", 6, 4, f64).Save(path);
        var b = StackBundle.Load(path);
        Assert.AreEqual(f64 ? DType.F64 : DType.F32, b.Precision);
        var o = b.RunReference();
        string outPath = dir.File("out.safetensors");
        o.Save(outPath);
        var back = SafeTensorsFile.Read(outPath);
        var expectedNames = new[] { "loss", "grad.0.weight", "grad.0.bias", "grad.1.weight", "grad.1.bias", "grad.3.weight", "grad.3.bias", "grad.x", "grad.y" };
        CollectionAssert.AreEquivalent(expectedNames, back.Tensors.Keys.ToArray());
        foreach (var t in back.Tensors.Values) Assert.AreEqual(b.Precision, t.DType, t.Name);
        CollectionAssert.AreEqual(new[] { 1 }, back["loss"].Shape);
        CollectionAssert.AreEqual(new[] { 5, 4 }, back["grad.0.weight"].Shape);
        CollectionAssert.AreEqual(new[] { 6, 4 }, back["grad.x"].Shape);
        CollectionAssert.AreEqual(new[] { 6, 3 }, back["grad.y"].Shape);
        var r = b.ReferenceAs<double>().Run(b.InputAs<double>(), b.ParametersAs<double>(), b.BuffersAs<double>());
        if (f64) CollectionAssert.AreEqual(r.Gradients["0.weight"], back["grad.0.weight"].ToDouble());
        Assert.AreEqual(r.Loss, back["loss"].ToDouble()[0], f64 ? 0 : 1e-6 * Math.Abs(r.Loss));
    }

    [TestMethod]
    public void IdsStackOutputHasNoGradX()
    {
        var b = Parse(MakeInput(Mlp, "cross_entropy", 6, 2, true));
        var o = b.RunReference();
        Assert.IsFalse(o.Contains("grad.x"));
        Assert.IsFalse(o.Contains("grad.y"));
        CollectionAssert.AreEqual(new[] { 7, 3 }, o["grad.0.weight"].Shape);
        Assert.AreEqual(0.001, b.BatchNormMomentum);
        Assert.AreEqual(0.0, b.L2);
    }

    [TestMethod]
    [DataRow("batchnorm:4")]
    [DataRow("batchnorm:4:biased")]
    public void OneRowUnderBatchNormIsAnErrorNamingTheLayer(string bn)
    {
        var stack = Sequential.Parse($"linear:3x4,{bn},tanh,linear:4x2");
        var r = new StackReference<double>(stack, LossKind.Mse);
        var p = StackTestData.Parameters(stack, new Random(3));
        var input = new StackInput<double>(1, Features: [0.1, -0.2, 0.3], Targets: [0.5, 0.5]);
        var e = Assert.ThrowsExactly<StackException>(() => r.Run(input, p));
        StringAssert.Contains(e.Message, $"layer 1 ({bn})");
        StringAssert.Contains(e.Message, "n = 1");
        // inference takes one row: the running statistics, not the batch's
        var z = r.Forward(input, p, null, training: false);
        Assert.IsTrue(z.All(double.IsFinite));
        Assert.ThrowsExactly<StackException>(() => r.Forward(input, p, null, training: true));
    }

    [TestMethod]
    public void ClassIdOutOfRangeIsAnErrorNamingTheLastLayer()
    {
        var stack = Sequential.Parse(Mlp);
        var r = new StackReference<double>(stack, LossKind.CrossEntropy);
        var p = StackTestData.Parameters(stack, new Random(4));
        var e = Assert.ThrowsExactly<StackException>(() => r.Run(new StackInput<double>(2, Ids: [1, 2, 3, 4], Classes: [0, 4]), p));
        StringAssert.Contains(e.Message, "class id 4 at row 1 is outside [0, 4)");
        StringAssert.Contains(e.Message, "layer 5 (linear:5x4)");
        // and in a file
        var f = MakeInput(Mlp, "cross_entropy", 3, 2, true);
        f.Add("y", new long[] { 0, 1, -1 }.AsSpan(), 3);
        var e2 = Assert.ThrowsExactly<StackException>(() => Parse(f));
        StringAssert.Contains(e2.Message, "input.safetensors");
        StringAssert.Contains(e2.Message, "class id -1 at row 2");
        // an embedding id out of range
        var e3 = Assert.ThrowsExactly<StackException>(() => r.Run(new StackInput<double>(2, Ids: [1, 2, 7, 4], Classes: [0, 1]), p));
        StringAssert.Contains(e3.Message, "layer 0 (embedding:7x3): id 7 at [1, 0] is outside [0, 7)");
    }

    [TestMethod]
    public void WrongParameterShapeNamesTensorLayerAndBothShapes()
    {
        var f = MakeInput(Mlp, "cross_entropy", 3, 2, true);
        f.Add("2.weight", new double[30].AsSpan(), 6, 5); // transposed: PyTorch's layout is [OUT, IN] = [5, 6]
        var e = Assert.ThrowsExactly<StackException>(() => Parse(f));
        StringAssert.Contains(e.Message, "input.safetensors: tensor '2.weight' has shape [6, 5] but layer 2 (linear:6x5) needs [5, 6]");
        // and to the reference directly
        var stack = Sequential.Parse(Mlp);
        var p = StackTestData.Parameters(stack, new Random(5));
        p["3.weight"] = new double[4];
        var e2 = Assert.ThrowsExactly<StackException>(() => new StackReference<double>(stack, LossKind.CrossEntropy).Run(new StackInput<double>(2, Ids: [1, 2, 3, 4], Classes: [0, 1]), p));
        StringAssert.Contains(e2.Message, "layer 3 (batchnorm:5): '3.weight' has 4 elements but the layer needs [5]");
        // a missing parameter is a format error naming the tensor
        var g = MakeInput(Mlp, "cross_entropy", 3, 2, true);
        var h = new SafeTensorsFile();
        foreach (var (k, v) in g.Metadata) h.Metadata[k] = v;
        foreach (var t in g.Tensors.Values.Where(t => t.Name != "5.bias")) h.Add(t.Name, t.ToDouble().AsSpan(), t.Shape);
        h.Add("x", g["x"].ToInt32().Select(i => (long)i).ToArray().AsSpan(), g["x"].Shape);
        h.Add("y", g["y"].ToInt32().Select(i => (long)i).ToArray().AsSpan(), g["y"].Shape);
        var e3 = Assert.ThrowsExactly<SafeTensorsFormatException>(() => Parse(h));
        StringAssert.Contains(e3.Message, "input.safetensors");
        StringAssert.Contains(e3.Message, "tensor '5.bias' (layer 5 (linear:5x4)) is missing");
    }

    [TestMethod]
    public void LinearAfterEmbeddingWithoutFlattenIsAnError()
    {
        var stack = Sequential.Parse("embedding:7x3,linear:6x5");
        var e = Assert.ThrowsExactly<StackException>(() => new StackReference<double>(stack, LossKind.Mean, 2));
        StringAssert.Contains(e.Message, "layer 1 (linear:6x5)");
        StringAssert.Contains(e.Message, "flatten");
        var f = new SafeTensorsFile();
        f.Metadata["layers"] = "embedding:7x3,linear:6x5";
        f.Metadata["loss"] = "mean";
        f.Add("x", new long[] { 1, 2, 3, 4 }.AsSpan(), 2, 2);
        f.Add("0.weight", new double[21].AsSpan(), 7, 3);
        f.Add("1.weight", new double[30].AsSpan(), 5, 6);
        f.Add("1.bias", new double[5].AsSpan(), 5);
        var e2 = Assert.ThrowsExactly<StackException>(() => Parse(f));
        StringAssert.Contains(e2.Message, "input.safetensors");
        StringAssert.Contains(e2.Message, "flatten");
    }

    [TestMethod]
    public void I64IdBeyondInt32IsAFormatErrorNamingFileAndTensor()
    {
        var f = MakeInput(Mlp, "cross_entropy", 3, 2, true);
        f.Add("x", new long[] { 1, 2, 3, 1L << 32, 0, 1 }.AsSpan(), 3, 2);
        var e = Assert.ThrowsExactly<SafeTensorsFormatException>(() => Parse(f));
        StringAssert.Contains(e.Message, "input.safetensors");
        StringAssert.Contains(e.Message, "tensor 'x'");
        StringAssert.Contains(e.Message, "4294967296");
        // within int32, I64 ids are fine
        f.Add("x", new long[] { 1, 2, 3, 4, 0, 1 }.AsSpan(), 3, 2);
        CollectionAssert.AreEqual(new[] { 1, 2, 3, 4, 0, 1 }, Parse(f).Ids);
    }

    [TestMethod]
    public void OtherFileProblemsAreNamed()
    {
        // metadata missing
        var f = MakeInput("linear:4x2", "mse", 3, 4, true);
        f.Metadata.Remove("layers");
        StringAssert.Contains(Assert.ThrowsExactly<SafeTensorsFormatException>(() => Parse(f)).Message, "metadata 'layers' is missing");
        // mixed precision
        f = MakeInput("linear:4x2", "mse", 3, 4, true);
        f.Add("0.bias", new float[2].AsSpan(), 2);
        StringAssert.Contains(Assert.ThrowsExactly<SafeTensorsFormatException>(() => Parse(f)).Message, "one precision");
        // F32 running buffers (as checkpoints (docs/stacks.md) keep them) in an F64 input are fine
        f = MakeInput("linear:4x3,batchnorm:3", "mse", 3, 4, true);
        f.Add("1.running_mean", new float[] { 0.5f, 0, 0 }.AsSpan(), 3);
        var withBuffers = Parse(f);
        Assert.AreEqual(DType.F64, withBuffers.Precision);
        Assert.AreEqual(0.5, withBuffers.BuffersAs<double>().RunningMean(1)[0]);
        Assert.AreEqual(1.0, withBuffers.BuffersAs<double>().RunningVar(1)[0]);
        // float x for a stack on ids
        f = MakeInput(Mlp, "cross_entropy", 3, 2, true);
        f.Add("x", new double[6].AsSpan(), 3, 2);
        StringAssert.Contains(Assert.ThrowsExactly<StackException>(() => Parse(f)).Message, "layer 0 (embedding:7x3) takes ids");
        // targets for the mean loss
        f = MakeInput("linear:4x2", "mean", 3, 4, true);
        f.Add("y", new double[6].AsSpan(), 3, 2);
        StringAssert.Contains(Assert.ThrowsExactly<StackException>(() => Parse(f)).Message, "takes no targets");
        // mse targets of the wrong width
        f = MakeInput("linear:4x2", "mse", 3, 4, true);
        f.Add("y", new double[9].AsSpan(), 3, 3);
        StringAssert.Contains(Assert.ThrowsExactly<StackException>(() => Parse(f)).Message, "needs [3, 2]");
        // x of the wrong width
        f = MakeInput("linear:4x2", "mse", 3, 4, true);
        f.Add("x", new double[9].AsSpan(), 3, 3);
        StringAssert.Contains(Assert.ThrowsExactly<StackException>(() => Parse(f)).Message, "layer 0 (linear:4x2) takes 4 features");
        // a bad loss name
        f = MakeInput("linear:4x2", "mse", 3, 4, true);
        f.Metadata["loss"] = "hinge";
        StringAssert.Contains(Assert.ThrowsExactly<SafeTensorsFormatException>(() => Parse(f)).Message, "'hinge' is not a loss");
    }

    /// <summary>
    /// Inference with running statistics equal to the batch's (momentum 1 makes the running update copy
    /// the batch mean and unbiased variance) gives the Bessel training output; <see cref="StackReference{T}.Forward"/>
    /// in training mode is <see cref="StackReference{T}.Run"/>'s output.
    /// </summary>
    [TestMethod]
    public void InferenceWithBatchStatisticsEqualsBesselTraining()
    {
        var stack = Sequential.Parse("linear:3x4,batchnorm:4,tanh,linear:4x2,batchnorm:2");
        var r = new StackReference<double>(stack, LossKind.Mean) { BatchNormMomentum = 1 };
        var rng = new Random(9);
        var p = StackTestData.Parameters(stack, rng);
        var x = StackTestData.Input(r, 6, rng);
        var run = r.Run(x, p);
        var eval = r.Forward(x, p, run.Buffers, training: false);
        Assert.AreEqual(0, Oracle.MaxAbsDiff(run.Output, eval), 1e-14);
        CollectionAssert.AreEqual(run.Output, r.Forward(x, p, null, training: true));
        Assert.AreEqual(1, run.Buffers.BatchesTracked(1));
        Assert.AreEqual(1, run.Buffers.BatchesTracked(4));
        // the default momentum moves the running statistics by 0.001 of the way
        var slow = new StackReference<double>(stack, LossKind.Mean).Run(x, p);
        Assert.AreEqual(0.999 * 0 + 0.001 * run.Buffers.RunningMean(1)[0], slow.Buffers.RunningMean(1)[0], 1e-17);
        Assert.AreEqual(0.999 * 1 + 0.001 * run.Buffers.RunningVar(1)[0], slow.Buffers.RunningVar(1)[0], 1e-15);
    }
}
