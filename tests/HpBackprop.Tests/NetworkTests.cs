using HpBackprop.Model;
using HpBackprop.Networks;

namespace HpBackprop.Tests;

/// <summary>The compiled CPU network (Networks.Network): the makemore stack against the double reference chain, allocation, threads, checks before work.</summary>
[TestClass]
public sealed class NetworkTests
{
    private static double RelErr(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        double d = 0, m = 0;
        for (int i = 0; i < expected.Length; i++) { d = Math.Max(d, Math.Abs(actual[i] - expected[i])); m = Math.Max(m, Math.Abs(expected[i])); }
        return d / Math.Max(m, 1e-30);
    }

    /// <summary>
    /// The makemore stack compiled from a <see cref="ParameterSet"/> (<see cref="HpBackprop.IO.StackCheckpoint.FromParameterSet(ParameterSet, NetworkOptions)"/>)
    /// against the double reference chain with makemore's parameters, every checked tensor by makemore name (the rows of the
    /// former comparison with the dedicated backend, and n = 300, which takes the row-block pipeline), with the
    /// tolerance and scales of <see cref="PropertyTests"/>.
    /// </summary>
    [TestMethod]
    [DataRow(32, 10, 200, 27)]
    [DataRow(50, 7, 33, 40)]
    [DataRow(2, 3, 16, 5)]
    [DataRow(300, 10, 64, 27)]
    public void MakemoreStackMatchesTheDoubleReferenceChain(int n, int e, int hidden, int vocab)
    {
        var cfg = new ModelConfig(vocab, 3, e, hidden, n);
        var p = TestModels.Initialized(cfg, 5);
        var (x, y) = TestModels.RandomBatch(new NormalRng(9), n, 3, vocab);
        var chain = new HpBackprop.Reference.ReferenceChain<double>(cfg, TestModels.ParametersAs<double>(p), x, y);
        using var net = new MakemoreNet(p);
        Assert.AreEqual(n >= 256 && System.Numerics.Vector.IsHardwareAccelerated, net.Net.Pipelined, string.Join("\n", net.Net.Plan));
        float loss = net.ForwardBackward(x, y);
        Assert.AreEqual(chain.Loss, loss, 1e-5 * Math.Max(1, Math.Abs(chain.Loss)), "loss");
        var errors = PropertyTests.CompareFused(net, g => chain[g], x);
        Console.WriteLine($"n{n} E{e} H{hidden} V{vocab}: " + string.Join("; ", errors.Select(r => $"{r.Name} {r.Relative:E2}")));
        var failures = errors.Where(r => !(r.Relative <= PropertyTests.FusedVsDoubleTolerance)).ToList();
        Assert.IsEmpty(failures, string.Join("; ", failures.Select(r => $"{r.Name}: {r.Relative:E2}")));
        // the forward buffers too, and dh where it is stored (op by op; the row-block pipeline keeps it per block)
        string[] more = ["embcat", "hprebn", "bnmeani", "bnvar", "bnvar_inv", "bnraw", "h", "logits"];
        foreach (string t in net.Net.Pipelined ? more : [.. more, "dh"])
        {
            double[] exp = chain[t];
            double rel = TestModels.RelativeError(TestModels.ToDouble(net.Intermediate(t)), exp, Oracle.MaxAbs(exp));
            Assert.IsTrue(rel <= PropertyTests.FusedVsDoubleTolerance, $"{t}: relative error {rel:E2}");
        }
    }

    public static IEnumerable<object[]> Stacks() =>
    [
        ["embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x27", "cross_entropy", "sgd:lr=0.1,momentum=0,weight_decay=0"],
        ["embedding:27x10,flatten,linear:30x100:nobias,batchnorm:100,tanh,linear:100x100:nobias,batchnorm:100:biased,relu,linear:100x27:nobias,batchnorm:27", "cross_entropy", "sgd:lr=0.1,momentum=0.9,weight_decay=0.01"],
        ["linear:64x256,relu,linear:256x256,relu,linear:256x10", "cross_entropy", "adamw:lr=0.001"],
        ["linear:13x7,sigmoid,linear:7x3", "mse", "adamw:lr=0.01"],
        ["linear:5x4,tanh,batchnorm:4,linear:4x2", "bce_with_logits", "sgd:lr=0.05,momentum=0.5,weight_decay=0"],
        ["linear:6x6,batchnorm:6:biased,sigmoid", "mean", "sgd:lr=0.01,momentum=0,weight_decay=0.1"],
    ];

    private static (Network Net, int[] Ids, float[] Features, int[] Classes, float[] Targets) Build(string layers, string loss, string opt, int n, int threads, int seed = 3)
    {
        var stack = Sequential.Parse(layers);
        var net = Network.Create(stack, new NetworkOptions { BatchSize = n, Loss = Losses.Parse(loss), Optimizer = Optimizer.Parse(opt), Threads = threads, L2 = 0.001f });
        net.Initialize(seed);
        var rng = new NormalRng(seed + 1);
        int w = net.InputWidth, k = net.OutputWidth;
        var ids = stack.TakesIds ? Enumerable.Range(0, n * w).Select(_ => rng.NextInt(stack.Layers[0].In)).ToArray() : [];
        var feats = stack.TakesIds ? [] : Enumerable.Range(0, n * w).Select(_ => (float)rng.Next()).ToArray();
        var t = Losses.Parse(loss).Targets();
        var cls = t == TargetKind.Classes ? Enumerable.Range(0, n).Select(_ => rng.NextInt(k)).ToArray() : [];
        var tg = t == TargetKind.Floats ? Enumerable.Range(0, n * k).Select(_ => loss == "mse" ? (float)rng.Next() : (float)rng.NextDouble()).ToArray() : [];
        return (net, ids, feats, cls, tg);
    }

    private static float StepOf((Network Net, int[] Ids, float[] Features, int[] Classes, float[] Targets) b) =>
        b.Net.Options.Loss.Targets() == TargetKind.Classes
            ? (b.Net.Stack.TakesIds ? b.Net.Step(b.Ids, b.Classes) : b.Net.Step(b.Features, b.Classes))
            : (b.Net.Stack.TakesIds ? b.Net.Step(b.Ids, (ReadOnlySpan<float>)b.Targets) : b.Net.Step(b.Features, (ReadOnlySpan<float>)b.Targets));

    [TestMethod]
    [DynamicData(nameof(Stacks))]
    public void StepAllocatesNothing(string layers, string loss, string opt)
    {
        foreach (int threads in new[] { 1, 2 })
        {
            var b = Build(layers, loss, opt, 300, threads);
            using var net = b.Net;
            // warm-up past the JIT's tiering (a method promoted in the background once allocated a few bytes on this thread
            // in a 2-thread run); a per-step allocation would still show in every one of the 10 measured steps
            for (int i = 0; i < 60; i++) StepOf(b);
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 10; i++) StepOf(b);
            Assert.AreEqual(0, GC.GetAllocatedBytesForCurrentThread() - before, $"bytes allocated by 10 steps of {layers} on {threads} thread(s)");
        }
    }

    [TestMethod]
    [DynamicData(nameof(Stacks))]
    public void StepsAreBitwiseTheSameOnOneAndTwoThreads(string layers, string loss, string opt)
    {
        var one = Build(layers, loss, opt, 600, 1);
        var two = Build(layers, loss, opt, 600, 2);
        using (one.Net) using (two.Net)
        {
            for (int i = 0; i < 5; i++) Assert.AreEqual(StepOf(one), StepOf(two), $"loss of step {i}");
            CollectionAssert.AreEqual(one.Net.Parameters.Data, two.Net.Parameters.Data, "parameters after 5 steps");
            CollectionAssert.AreEqual(one.Net.Parameters.Buffers, two.Net.Parameters.Buffers, "running statistics after 5 steps");
        }
    }

    [TestMethod]
    [DynamicData(nameof(Stacks))]
    public void TrainingLowersTheLossOnAFixedBatch(string layers, string loss, string opt)
    {
        var b = Build(layers, loss, opt, 64, 1);
        using var net = b.Net;
        float first = StepOf(b), last = first;
        for (int i = 0; i < 60; i++) last = StepOf(b);
        Assert.IsTrue(last < first, $"{layers} with {opt}: loss {first} → {last}");
        Assert.AreEqual(61, net.StepCount);
    }

    [TestMethod]
    [DataRow("embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x27", 32, 1)]
    [DataRow("linear:64x256,relu,linear:256x256,relu,linear:256x10", 600, 2)]
    public void PlainSgdInTheWeightGradientEpilogueEqualsAPassOverTheFlatBuffer(string layers, int n, int threads)
    {
        // plain SGD without L2 updates each linear weight in its gradient product's epilogue (after dx has read it);
        // the same steps as forward-backward followed by p -= lr·g over the flat buffer
        var stack = Sequential.Parse(layers);
        var sched = new StepSchedule(3, 0.5f);
        using var fused = Network.Create(stack, new NetworkOptions { BatchSize = n, Threads = threads, Optimizer = new HpBackprop.Networks.Sgd { LearningRate = 0.2f }, Schedule = sched });
        using var plain = Network.Create(stack, new NetworkOptions { BatchSize = n, Threads = threads });
        StringAssert.Contains(string.Join("\n", fused.Plan), "SGD in the weight-gradient epilogue");
        fused.Initialize(4); plain.Initialize(4);
        var rng = new NormalRng(8);
        int k = fused.OutputWidth;
        var cls = Enumerable.Range(0, n).Select(_ => rng.NextInt(k)).ToArray();
        var ids = stack.TakesIds ? Enumerable.Range(0, n * fused.InputWidth).Select(_ => rng.NextInt(stack.Layers[0].In)).ToArray() : [];
        var feats = stack.TakesIds ? [] : Enumerable.Range(0, n * fused.InputWidth).Select(_ => (float)rng.Next()).ToArray();
        for (int step = 0; step < 6; step++)
        {
            float lr = sched.At(step, 0.2f);
            float a = stack.TakesIds ? fused.Step(ids, cls) : fused.Step(feats, cls);
            float b = stack.TakesIds ? plain.ForwardBackward(ids, cls) : plain.ForwardBackward(feats, cls);
            HpBackprop.Cpu.Sgd.Update(plain.Parameters.Data, plain.Parameters.Grad, lr);
            Assert.AreEqual(b, a, 1e-5f * Math.Abs(b), $"loss of step {step}");
        }
        CollectionAssert.AreEqual(plain.Parameters.Grad, fused.Parameters.Grad, "the gradients are stored either way");
        Assert.IsTrue(RelErr(fused.Parameters.Data, plain.Parameters.Data) <= 1e-6, $"parameters after 6 steps: relative error {RelErr(fused.Parameters.Data, plain.Parameters.Data):E2}");
    }

    [TestMethod]
    public void TextFormRoundTrips()
    {
        const string text = "embedding:27x10,flatten,linear:30x200:nobias,batchnorm:200:biased,tanh,linear:200x27,relu,sigmoid";
        Assert.AreEqual(text, Sequential.Parse(text).ToString());
        Assert.AreEqual("embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x27", Sequential.Makemore(27).ToString());
        foreach (var s in new[] { "sgd:lr=0.1,momentum=0.9,weight_decay=0.01", "adamw:lr=0.01,beta1=0.9,beta2=0.999,eps=1E-08,weight_decay=0.01" })
            Assert.AreEqual(Optimizer.Parse(s), Optimizer.Parse(Optimizer.Parse(s).ToString()));
        foreach (var s in new[] { "constant", "step:at=10,factor=0.1", "cosine:warmup=5,total=20,min_lr=0" })
            Assert.AreEqual(s, Schedule.Parse(s).ToString());
    }

    [TestMethod]
    [DataRow("linear:3x4,relu,linaer:4x1", "layer 2")]
    [DataRow("linear:3x0", "whole numbers ≥ 1")]
    [DataRow("batchnorm:5:unbiased", "batchnorm:F or batchnorm:F:biased")]
    [DataRow("", "empty")]
    public void BadTextIsRefusedNamingTheLayer(string text, string expected)
    {
        var e = Assert.ThrowsExactly<FormatException>(() => Sequential.Parse(text));
        StringAssert.Contains(e.Message, expected);
    }

    [TestMethod]
    [DataRow("embedding:27x10,linear:30x200", 30, "add 'flatten'")]
    [DataRow("linear:3x4,relu,linear:5x1", null, "layer 2 (linear:5x1) takes 5 features but layer 1 (relu) gives 4")]
    [DataRow("linear:3x4,embedding:4x2", null, "must be the first layer")]
    [DataRow("embedding:27x10,flatten,linear:31x20", null, "cannot be inferred")]
    public void StacksThatDoNotFitAreRefusedNamingTheLayer(string text, int? width, string expected)
    {
        var e = Assert.ThrowsExactly<StackException>(() => Network.Create(Sequential.Parse(text), new NetworkOptions { InputWidth = width == null ? null : 3 }));
        StringAssert.Contains(e.Message, expected);
    }

    [TestMethod]
    public void BatchNormWithOneRowIsRefusedBeforeAnyWork()
    {
        var e = Assert.ThrowsExactly<StackException>(() => Network.Create(Sequential.Parse("linear:3x4,batchnorm:4"), new NetworkOptions { BatchSize = 1, Loss = LossKind.Mean }));
        StringAssert.Contains(e.Message, "layer 1 (batchnorm:4)");
    }

    [TestMethod]
    public void ClassIdOutOfRangeNamesTheRowAndTheLayer()
    {
        using var net = Network.Create(Sequential.Parse("linear:2x3"), new NetworkOptions { BatchSize = 2 });
        var e = Assert.ThrowsExactly<ShapeException>(() => net.ForwardBackward(new float[4], new int[] { 0, 3 }));
        StringAssert.Contains(e.Message, "class id 3 at row 1 is outside [0, 3)");
    }

    [TestMethod]
    public void ANetworkTooLargeIsRefusedWithTheBytesItNeeds()
    {
        // the makemore MLP at H = 4,300,000: W1 alone is 129 million floats; with n = 2 every size fits an int, the sum does not fit memory
        var stack = Sequential.Makemore(27, 3, 10, 4_300_000);
        var e = Assert.ThrowsExactly<StackException>(() => Network.Create(stack, new NetworkOptions { BatchSize = 2 }));
        StringAssert.Contains(e.Message, "bytes");
        // a batch so large that one buffer passes .NET's array limit
        var e2 = Assert.ThrowsExactly<StackException>(() => Network.Create(Sequential.Makemore(27), new NetworkOptions { BatchSize = 100_000_000 }));
        StringAssert.Contains(e2.Message, "layer 0");
    }
}
