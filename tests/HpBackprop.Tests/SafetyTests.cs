using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Networks;

namespace HpBackprop.Tests;

/// <summary>
/// Issue #20 ("memory-safe at every entry point") through the library: every public entry point refuses, with a library
/// exception naming the argument, the row and the tensor, what would otherwise read or write outside a buffer, train on
/// garbage, or leave non-finite values in the parameters.
/// </summary>
[TestClass]
public sealed class SafetyTests
{
    private static Layer[] Stack(params object[] layers) => layers.Select(l => l as Layer ?? Layer.Parse((string)l)).ToArray();

    public static IEnumerable<object[]> BrokenLayers() =>
    [
        // batch norm whose In and Out differ: Step overflowed the heap (In > Out) or saved a checkpoint that cannot be loaded (In < Out)
        [Stack("linear:3x4", new Layer(LayerKind.BatchNorm, 4, 6), "linear:6x2"), "In = 4 and Out = 6"],
        [Stack("linear:3x6", new Layer(LayerKind.BatchNorm, 6, 4), "linear:4x2"), "In = 6 and Out = 4"],
        // an undefined kind ran as a sigmoid
        [Stack("linear:3x4", new Layer((LayerKind)42), "linear:4x2"), "42"],
        // an undefined batch-norm mode ran as the Bessel one
        [Stack("linear:3x4", new Layer(LayerKind.BatchNorm, 4, 4, false, (BatchNormMode)7), "linear:4x2"), "7"],
        // widths below 1
        [Stack("linear:3x4", Layer.Linear(4, 0)), "at least 1"],
        [Stack(Layer.Embedding(5, 0), "flatten", "linear:3x2"), "layer 0 (embedding:5x0): In = 5 and Out = 0; both must be at least 1"],
        [Stack(Layer.Embedding(0, 2), "flatten", "linear:6x2"), "layer 0 (embedding:0x2): In = 0 and Out = 2; both must be at least 1"],
        [Stack("linear:3x4", Layer.BatchNorm1d(-4), "linear:4x2"), "at least 1"],
    ];

    [TestMethod]
    [DynamicData(nameof(BrokenLayers))]
    public void ALayerThatBreaksTheInvariantsOfItsKindIsRefusedBeforeAnyWork(Layer[] layers, string expected)
    {
        var e = Assert.ThrowsExactly<StackException>(() =>
        {
            using var net = Network.Create(new Sequential(layers), new NetworkOptions { BatchSize = 4, InputWidth = layers[0].Kind == LayerKind.Embedding ? 3 : null });
        });
        StringAssert.Contains(e.Message, expected);
        StringAssert.Contains(e.Message, layers[0].Kind == LayerKind.Embedding ? "layer 0" : "layer 1");
    }

    [TestMethod]
    public void AnUndefinedLossIsRefusedNamingTheOption()
    {
        var e = Assert.ThrowsExactly<ArgumentException>(() => Network.Create(Sequential.Parse("linear:3x4,relu,linear:4x2"), new NetworkOptions { Loss = (LossKind)99 }));
        StringAssert.Contains(e.Message, "NetworkOptions.Loss = 99");
    }

    [TestMethod]
    public void AStackOfOnlyFlattenLayersIsRefusedWhenItIsCompiled()
    {
        // it used to compile to no op at all, and Step threw IndexOutOfRangeException
        var e = Assert.ThrowsExactly<StackException>(() => Network.Create(new Sequential(Layer.Flatten(), Layer.Flatten()), new NetworkOptions { InputWidth = 3, Loss = LossKind.Mean }));
        StringAssert.Contains(e.Message, "computes nothing");
    }

    private static Network Makemore(int n = 4, int threads = 1)
    {
        var net = Network.Create(Sequential.Makemore(7, 3, 4, 8), new NetworkOptions { BatchSize = n, Threads = threads });
        net.Initialize(1);
        return net;
    }

    [TestMethod]
    [DataRow(7)]
    [DataRow(-1)]
    [DataRow(2_000_000_000)]
    public void EvaluateCalibrateAndPredictRefuseAnIdOutsideTheTableNamingItsRowAndColumn(int bad)
    {
        using var net = Makemore();
        var ids = new int[5 * 3];
        ids[3 * 3 + 2] = bad;   // row 3, column 2
        var data = ExampleSet.FromIds(ids, 3, new int[5]);
        foreach (var call in new Action[] { () => net.Evaluate(data), () => net.Calibrate(data), () => net.Predict(ids, 5, new float[5 * 7]) })
        {
            var e = Assert.ThrowsExactly<ShapeException>(call);
            StringAssert.Contains(e.Message, $"id {bad} at row 3, column 2 is outside [0, 7)");
        }
        // the running statistics were not touched
        CollectionAssert.AreEqual(Enumerable.Repeat(1f, 8).ToArray(), net.Parameters.Value("3.running_var").ToArray());
    }

    [TestMethod]
    public void NonFiniteFeaturesAndTargetsAndBceTargetsOutsideZeroOneAreRefusedWithTheirRowAndColumn()
    {
        var stack = Sequential.Parse("linear:3x4,relu,linear:4x2");
        using var mse = Network.Create(stack, new NetworkOptions { BatchSize = 4, Loss = LossKind.Mse });
        using var bce = Network.Create(stack, new NetworkOptions { BatchSize = 4, Loss = LossKind.BceWithLogits });
        mse.Initialize(1);
        bce.Initialize(1);
        float[] before = mse.Parameters.Data.ToArray();
        var x = new float[4 * 3];
        var t = new float[4 * 2];
        x[1 * 3 + 2] = float.PositiveInfinity;
        // an Inf feature used to give a finite loss and leave Inf in the parameters
        var e1 = Assert.ThrowsExactly<ShapeException>(() => mse.Step(x, t));
        StringAssert.Contains(e1.Message, "features");
        StringAssert.Contains(e1.Message, "row 1, column 2");
        CollectionAssert.AreEqual(before, mse.Parameters.Data, "the parameters were not touched");
        x[1 * 3 + 2] = 0;
        t[2 * 2 + 1] = float.NaN;
        var e2 = Assert.ThrowsExactly<ShapeException>(() => mse.Step(x, t));
        StringAssert.Contains(e2.Message, "targets");
        StringAssert.Contains(e2.Message, "row 2, column 1");
        t[2 * 2 + 1] = 1.5f;
        var e3 = Assert.ThrowsExactly<ShapeException>(() => bce.ForwardBackward(x, t));
        StringAssert.Contains(e3.Message, "row 2, column 1");
        StringAssert.Contains(e3.Message, "[0, 1]");
        // the same through Evaluate and Predict
        x[0] = float.NaN;
        var e4 = Assert.ThrowsExactly<ShapeException>(() => mse.Evaluate(ExampleSet.FromFeatures(x, 3, new float[8], 2)));
        StringAssert.Contains(e4.Message, "row 0, column 0");
        var e5 = Assert.ThrowsExactly<ShapeException>(() => bce.Evaluate(ExampleSet.FromFeatures(new float[12], 3, t, 2)));
        StringAssert.Contains(e5.Message, "row 2, column 1");
        var e6 = Assert.ThrowsExactly<ShapeException>(() => mse.Predict(x, 4, new float[8]));
        StringAssert.Contains(e6.Message, "row 0, column 0");
    }

    [TestMethod]
    [DataRow("2.weight", float.NaN, "NaN")]
    [DataRow("0.weight", float.PositiveInfinity, "Infinity")]
    [DataRow("3.running_var", -1f, "negative")]
    [DataRow("3.running_mean", float.NaN, "NaN")]
    public void ACheckpointWithNonFiniteWeightsOrANegativeRunningVarianceIsRefusedNamingTheTensor(string tensor, float value, string expected)
    {
        using var dir = new TempDir();
        string path = dir.File("m.safetensors");
        using (var net = Makemore()) StackCheckpoint.Save(path, net, Vocabulary.FromCharacters(".abcdef"));
        var f = SafeTensorsFile.Read(path);
        var values = f[tensor].ToSingle();
        values[values.Length - 1] = value;
        f.Add(tensor, values, f[tensor].Shape);
        f.Save(path);
        var e = Assert.ThrowsExactly<SafeTensorsFormatException>(() => StackCheckpoint.Load(path).Network.Dispose());
        StringAssert.Contains(e.Message, $"tensor '{tensor}'");
        StringAssert.Contains(e.Message, expected);
    }

    [TestMethod]
    public void ABatchCountStoredAsAFloatScalarLoadsWhenWholeAndIsRefusedOtherwise()
    {
        // TorchSharp 0.107's BatchNorm1d built with a float dtype keeps num_batches_tracked in that dtype and saves it so
        using var dir = new TempDir();
        string path = dir.File("m.safetensors");
        using (var net = Makemore()) StackCheckpoint.Save(path, net, Vocabulary.FromCharacters(".abcdef"));
        var f = SafeTensorsFile.Read(path);
        f.Add("3.num_batches_tracked", (ReadOnlySpan<float>)[7f]);
        f.Save(path);
        using (var ok = StackCheckpoint.Load(path).Network) Assert.AreEqual(7L, ok.Parameters.BatchesTracked[0]);
        foreach (var (bad, expected) in new[] { (2.5f, "whole number"), (-1f, "whole number") })
        {
            f.Add("3.num_batches_tracked", (ReadOnlySpan<float>)[bad]);
            f.Save(path);
            var e = Assert.ThrowsExactly<SafeTensorsFormatException>(() => StackCheckpoint.Load(path).Network.Dispose());
            StringAssert.Contains(e.Message, "tensor '3.num_batches_tracked'");
            StringAssert.Contains(e.Message, expected);
        }
        f.Add("3.num_batches_tracked", (ReadOnlySpan<long>)[7L], 1);
        f.Save(path);
        var e2 = Assert.ThrowsExactly<SafeTensorsFormatException>(() => StackCheckpoint.Load(path).Network.Dispose());
        StringAssert.Contains(e2.Message, "scalar");
    }

    [TestMethod]
    public void LoadWithABatchOfOneOnABatchNormModelBlamesTheArgumentNotTheFile()
    {
        using var dir = new TempDir();
        string path = dir.File("m.safetensors");
        using (var net = Makemore()) StackCheckpoint.Save(path, net, Vocabulary.FromCharacters(".abcdef"));
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => StackCheckpoint.Load(path, batchSize: 1).Network.Dispose());
        Assert.AreEqual("batchSize", e.ParamName);
        StringAssert.Contains(e.Message, "layer 3 (batchnorm:8)");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => StackCheckpoint.Load(path, batchSize: 0).Network.Dispose());
        using var ok = StackCheckpoint.Load(path, batchSize: 2).Network;
        Assert.AreEqual(2, ok.BatchSize);
    }

    [TestMethod]
    public void StepCountMustNotBeNegative()
    {
        // -1 gave a NaN learning rate under the cosine schedule
        using var net = Network.Create(Sequential.Parse("linear:2x2"), new NetworkOptions { Loss = LossKind.Mse, Schedule = new CosineSchedule(0, 100, 0) });
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => net.StepCount = -1);
        Assert.AreEqual(0, net.StepCount);
        Assert.IsTrue(float.IsFinite(net.LearningRate));
    }

    [TestMethod]
    public void TheThreadCountIsBounded()
    {
        // 3,000 used to start 2,999 threads
        var e = Assert.ThrowsExactly<ArgumentException>(() => Network.Create(Sequential.Parse("linear:2x2"), new NetworkOptions { Loss = LossKind.Mse, Threads = 3000 }));
        StringAssert.Contains(e.Message, "NetworkOptions.Threads = 3000");
        StringAssert.Contains(e.Message, (4 * Environment.ProcessorCount).ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    [TestMethod]
    [DataRow(1)]
    [DataRow(2)]
    public void ADisposedNetworkThrowsObjectDisposedExceptionNamingItOnEveryThreadCount(int threads)
    {
        var net = Makemore(threads: threads);
        net.Dispose();
        net.Dispose();   // twice is fine
        var ids = new int[4 * 3];
        var data = ExampleSet.FromIds(ids, 3, new int[4]);
        foreach (var call in new Action[]
        {
            () => net.Step(ids, new int[4]), () => net.ForwardBackward(ids, new int[4]), () => net.Evaluate(data), () => net.Calibrate(data),
            () => net.Predict(ids, 4, new float[4 * 7]), () => net.Initialize(2), () => net.Fit(data, 3),
            () => net.Fit(data, new FitOptions { Steps = 3, Validation = data, Order = BatchOrder.Epochs }), () => net.PredictClasses(ids, 4, new int[4]),
            () => net.PullParameters(), () => net.PushParameters(),
        })
        {
            var e = Assert.ThrowsExactly<ObjectDisposedException>(call);
            StringAssert.Contains(e.ObjectName, "embedding:7x4,flatten,linear:12x8,batchnorm:8,tanh,linear:8x7");
        }
    }

    [TestMethod]
    public void TwoThreadsSteppingOneNetworkAreDetectedAndNamedInsteadOfRacing()
    {
        // a network is used by one thread at a time; a second thread entering while a step runs is refused (an interlocked flag), never a silent race
        using var net = Network.Create(Sequential.Parse("linear:64x256,relu,linear:256x256,relu,linear:256x10"), new NetworkOptions { BatchSize = 64 });
        net.Initialize(1);
        var x = new float[64 * 64];
        var y = new int[64];
        int refused = 0, other = 0;
        string? message = null;
        using var barrier = new Barrier(2);
        void Loop()
        {
            barrier.SignalAndWait();
            for (int i = 0; i < 4000 && Volatile.Read(ref refused) == 0; i++)
            {
                try { net.Step(x, y); }
                catch (InvalidOperationException e) { Interlocked.Increment(ref refused); message = e.Message; }
                catch (Exception) { Interlocked.Increment(ref other); }
            }
        }
        var a = new Thread(Loop);
        var b = new Thread(Loop);
        a.Start(); b.Start();
        a.Join(); b.Join();
        Assert.AreEqual(0, other, "only InvalidOperationException");
        Assert.IsTrue(refused > 0, "two threads stepped one network at once and nothing noticed");
        StringAssert.Contains(message, "linear:64x256,relu,linear:256x256,relu,linear:256x10");
        StringAssert.Contains(message, "one thread at a time");
        // the network is free again afterwards
        Assert.IsTrue(float.IsFinite(net.Step(x, y)));
    }

    [TestMethod]
    public void ACorpusLineLongerThanTheLimitIsRefusedNamingTheLine()
    {
        using var dir = new TempDir();
        string path = dir.File("long.txt");
        File.WriteAllText(path, "anna\n" + new string('a', Corpus.MaxLineBytes + 1) + "\nbob\n");
        var e = Assert.ThrowsExactly<CorpusException>(() => Corpus.Load(path));
        StringAssert.Contains(e.Message, ":2");
        StringAssert.Contains(e.Message, Corpus.MaxLineBytes.ToString("N0", System.Globalization.CultureInfo.InvariantCulture));
        Assert.IsTrue(e.Message.Length < 400, e.Message.Length.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    [TestMethod]
    public void ASecondThreadEnteringWhileAStepRunsIsRefusedDeterministically()
    {
        using var net = Makemore();
        var ids = new int[4 * 3];
        var cls = new int[4];
        Exception? seen = null;
        bool once = true;
        // while the first thread holds the network (inside its Step), a second thread calls Step, Evaluate and Predict
        net.Use.WhileHeld = () =>
        {
            if (!once) return;
            once = false;
            var t = new Thread(() =>
            {
                try { net.Step(ids, cls); }
                catch (Exception e) { seen = e; }
            });
            t.Start();
            t.Join();
        };
        Assert.IsTrue(float.IsFinite(net.Step(ids, cls)), "the first thread's step runs");
        Assert.IsInstanceOfType<InvalidOperationException>(seen);
        StringAssert.Contains(seen!.Message, "Network(embedding:7x4,flatten,linear:12x8,batchnorm:8,tanh,linear:8x7, n=4) is in use by another thread");
        net.Use.WhileHeld = null;
        Assert.IsTrue(float.IsFinite(net.Step(ids, cls)), "free again");
    }

    [TestMethod]
    public void ExamplesThatDoNotFitInMemoryAreRefusedWithTheBytesBeforeAnyAllocation()
    {
        var corpus = Corpus.FromLines(TempDir.SyntheticWords(3000, 4), "synthetic");
        long examples = Dataset.CountExamples(corpus.Words);
        using (MemoryBudget.Limit(1L << 30))
        {
            // a block of 100,000 ids: the contexts alone need examples × 100,001 × 4 bytes, over the 1 GiB budget
            var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => DataSplit.Create(corpus, 100_000));
            StringAssert.Contains(e.Message, "block size 100,000");
            StringAssert.Contains(e.Message, (examples * 100_001 * 4).ToString("N0", System.Globalization.CultureInfo.InvariantCulture) + " bytes");
            StringAssert.Contains(e.Message, "1,073,741,824");
        }
        // past .NET's array limit whatever the memory
        var e2 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Dataset.Build(corpus, Vocabulary.FromCorpus(corpus), 2_000_000));
        StringAssert.Contains(e2.Message, "array limit");
    }
}
