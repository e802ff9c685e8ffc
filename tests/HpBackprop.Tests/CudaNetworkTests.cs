using System.Collections.Concurrent;
using HpBackprop.Cuda;
using HpBackprop.Cuda.Native;
using HpBackprop.Cuda.Runtime;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Networks;

namespace HpBackprop.Tests;

/// <summary>
/// <see cref="CudaNetwork"/> on a device runtime against the CPU <see cref="Network"/> of the same stack, options
/// and seed: <see cref="CudaNetworkTests"/> runs these on the kernel emulator, <see cref="CudaNetworkDriverTests"/>
/// on the real driver (reported as not run — inconclusive — where there is no GPU).
/// </summary>
/// <remarks>
/// Tolerances, relative to the largest magnitude of the CPU's tensor: both sides round every operation to float32
/// but sum in other orders (cuBLAS or the emulator's reference SGEMM vs the CPU's blocked GEMMs, warp trees vs
/// sequential loops), so they differ by rounding only. Measured on the emulator: gradients of one forward-backward
/// ≤ 6.9e-7 (V from 27 to 2,148, n from 3 to 32), parameters after 100 steps ≤ 1.3e-7, losses ≤ 1.3e-7, running
/// statistics ≤ 2.6e-7 of max(1, |x|), predictions ≤ 4.8e-7. The bounds are the suite's: gradients and parameters
/// <see cref="ParityTests.Float32Tolerance"/> (2e-4, which also covers cuBLAS's orders on a GPU: see its reasoning),
/// losses <see cref="LossTolerance"/> (1e-5), statistics, dev losses and predictions 1e-4 — two orders of magnitude
/// above what was measured, and one to three below what a wrong formula does (a rate, a transpose, an epsilon or a
/// momentum not passed through move these by 1e-2 and more).
/// </remarks>
public abstract class CudaNetworkTestsBase
{
    /// <summary>Run on the real CUDA driver instead of the emulator.</summary>
    protected abstract bool OnDriver { get; }

    /// <summary>Relative tolerance of a loss.</summary>
    internal const double LossTolerance = 1e-5;

    /// <summary>Tolerance of a running statistic, relative to max(1, |x|).</summary>
    internal const double StatisticTolerance = 1e-4;

    private string Runtime => OnDriver ? "driver" : "emulator";

    private CudaNetwork Gpu(Sequential stack, NetworkOptions options, ScatterMode scatter = ScatterMode.Deterministic) =>
        CudaNetwork.On(Devices.Open(OnDriver), stack, options, scatter, ownsRuntime: true);

    private static DataSplit Words(int seed) => DataSplit.Create(Corpus.FromLines(TempDir.SyntheticWords(300, 2), "synthetic"), 3, seed);

    private static NetworkOptions Options(int n, float lr = 0.1f, Schedule? schedule = null, float momentum = 0.001f, float eps = 1e-5f) =>
        new() { BatchSize = n, Optimizer = new Sgd { LearningRate = lr }, Schedule = schedule ?? Schedule.Constant, BatchNormMomentum = momentum, Eps = eps };

    /// <summary>Minibatches of <paramref name="n"/> rows with ids in [0, V) (every fifth id is 7: repeated ids), contexts not all equal.</summary>
    private static (int[] X, int[] Y)[] Batches(int n, int v, int count, int seed)
    {
        var rng = new NormalRng(seed);
        var o = new (int[], int[])[count];
        for (int k = 0; k < count; k++)
        {
            var (x, y) = TestModels.RandomBatch(rng, n, 3, v);
            for (int i = 0; i < x.Length; i += 5) x[i] = 7 % v;
            o[k] = (x, y);
        }
        return o;
    }

    /// <summary>max |actual − expected| / max |expected| (NaN counts as +∞).</summary>
    internal static double Relative(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        Assert.AreEqual(expected.Length, actual.Length, "length");
        double scale = 0, diff = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            scale = Math.Max(scale, Math.Abs((double)expected[i]));
            double d = Math.Abs((double)actual[i] - expected[i]);
            diff = double.IsNaN(d) ? double.PositiveInfinity : Math.Max(diff, d);
        }
        return diff == 0 ? 0 : diff / scale;
    }

    /// <summary>
    /// Every parameter (or gradient) of <paramref name="gpu"/> (pulled) against <paramref name="cpu"/>'s, by state-dict name: the
    /// names over <paramref name="tolerance"/> with their errors. The gradient of <c>2.bias</c> (the linear right before the batch norm)
    /// is Σ dhprebn over the rows, 0 but for rounding (a batch norm ignores a shift), so its error is measured against the terms it
    /// sums, max |dhprebn| (as <see cref="HpBackprop.Reference.ParityTable.ScaleTensorOf"/> does for db1).
    /// </summary>
    private static List<string> Compare(Network cpu, CudaNetwork gpu, bool gradients, double tolerance)
    {
        var failures = new List<string>();
        foreach (var slot in cpu.Parameters.Parameters)
        {
            double rel;
            if (!gradients) rel = Relative(cpu.Parameters.Value(slot.Name), gpu.Parameters.Value(slot.Name));
            else if (slot.Name == "2.bias")
            {
                var a = cpu.Parameters.Gradient(slot.Name); var b = gpu.Parameters.Gradient(slot.Name);
                double diff = 0;
                for (int i = 0; i < a.Length; i++) diff = Math.Max(diff, double.IsNaN(b[i]) ? double.PositiveInfinity : Math.Abs((double)a[i] - b[i]));
                rel = diff / gpu.Backend.Download("dhprebn").Max(x => Math.Abs((double)x));
            }
            else rel = Relative(cpu.Parameters.Gradient(slot.Name), gpu.Parameters.Gradient(slot.Name));
            if (!(rel <= tolerance)) failures.Add($"{(gradients ? "grad " : "")}{slot.Name}: {rel:E2}");
        }
        return failures;
    }

    private static void AssertStatistics(Network cpu, CudaNetwork gpu, string what)
    {
        foreach (var slot in cpu.Parameters.RunningStatistics)
        {
            var a = cpu.Parameters.Value(slot.Name); var b = gpu.Parameters.Value(slot.Name);
            for (int c = 0; c < a.Length; c++)
                Assert.AreEqual(a[c], b[c], StatisticTolerance * Math.Max(1, Math.Abs(a[c])), $"{what}: {slot.Name}[{c}]");
        }
        CollectionAssert.AreEqual(cpu.Parameters.BatchesTracked, gpu.Parameters.BatchesTracked, $"{what}: num_batches_tracked");
    }

    [TestMethod]
    [DataRow(32, 64, 27)]
    [DataRow(3, 8, 27)]
    [DataRow(24, 16, 300)]                                   // sorted scatter, two radix passes
    [DataRow(24, 16, CudaBackend.WarpCrossEntropyMaxV + 100)] // block cross-entropy
    public void ForwardBackwardMatchesTheCpuNetworkUnderEveryStateDictName(int n, int hidden, int v)
    {
        var stack = Sequential.Makemore(v, 3, 10, hidden);
        var options = Options(n, momentum: 0.1f, eps: 1e-2f);
        using var cpu = Network.Create(stack, options);
        using var gpu = Gpu(stack, options);
        cpu.Initialize(v + n);
        gpu.Initialize(v + n);
        var (x, y) = Batches(n, v, 1, n * 31 + v)[0];
        float a = cpu.ForwardBackward(x, y), b = gpu.ForwardBackward(x, y);
        Assert.AreEqual(a, b, LossTolerance * Math.Abs(a), $"loss: cpu {a}, {Runtime} {b}");
        gpu.PullParameters();
        var failures = Compare(cpu, gpu, gradients: true, ParityTests.Float32Tolerance);
        Assert.IsEmpty(failures, $"V={v} n={n} H={hidden}: " + string.Join("; ", failures));
        AssertStatistics(cpu, gpu, "after one training forward");
        Assert.AreEqual(0, gpu.StepCount, "ForwardBackward is not a step");
    }

    [TestMethod]
    public void FitMatchesTheCpuNetworkAndSoDoCalibrateEvaluateAndPredict()
    {
        // 100 steps of NetworkTraining.Fit (the same draws on both) under a step schedule, then the inference paths
        var split = Words(5);
        int v = split.Vocabulary.Size;
        var stack = Sequential.Makemore(v, 3, 10, 64);
        var options = Options(32, schedule: new StepSchedule(50, 0.1f), momentum: 0.05f);
        using var cpu = Network.Create(stack, options);
        using var gpu = Gpu(stack, options);
        cpu.Initialize(5);
        gpu.Initialize(5);
        var train = ExampleSet.FromWords(split.Train);
        float[] lc = cpu.Fit(train, 100, seed: 9), lg = gpu.Fit(train, 100, seed: 9);
        for (int s = 0; s < 100; s++) Assert.AreEqual(lc[s], lg[s], LossTolerance * Math.Abs(lc[s]), $"loss at step {s}: cpu {lc[s]}, {Runtime} {lg[s]}");
        Assert.AreEqual(100, gpu.StepCount);
        Assert.AreEqual(cpu.LearningRate, gpu.LearningRate);
        gpu.PullParameters();
        var failures = Compare(cpu, gpu, gradients: false, ParityTests.Float32Tolerance);
        Assert.IsEmpty(failures, "after 100 steps: " + string.Join("; ", failures));
        AssertStatistics(cpu, gpu, "running statistics after 100 steps");

        var dev = ExampleSet.FromWords(split.Dev);
        float ec = cpu.Evaluate(dev), eg = gpu.Evaluate(dev);
        Assert.AreEqual(ec, eg, 1e-4 * ec, "dev loss with the running statistics");
        cpu.Calibrate(train);
        gpu.Calibrate(train);
        gpu.PullParameters();
        AssertStatistics(cpu, gpu, "calibrated statistics");
        ec = cpu.Evaluate(dev); eg = gpu.Evaluate(dev);
        Assert.AreEqual(ec, eg, 1e-4 * ec, "dev loss after calibration");

        int rows = Math.Min(1500, split.Dev.Count); // more than one chunk of 1,024
        var ids = split.Dev.X.AsSpan(0, rows * 3);
        foreach (bool raw in new[] { false, true })
        {
            var pc = new float[rows * v]; var pg = new float[rows * v];
            cpu.Predict(ids, rows, pc, raw);
            gpu.Predict(ids, rows, pg, raw);
            double rel = Relative(pc, pg);
            Assert.IsTrue(rel <= 1e-4, $"predict (raw: {raw}): {rel:E2}");
            if (!raw) Assert.AreEqual(1.0, pg.AsSpan(0, v).ToArray().Sum(p => (double)p), 1e-5, "probabilities of a row sum to 1");
        }
    }

    [TestMethod]
    public void AStepUsesTheScheduledRateAndCountsSteps()
    {
        // p_after = p_before − rate·g: the rate is recovered by least squares over every parameter, by state-dict name
        int v = 27, n = 16;
        var stack = Sequential.Makemore(v, 3, 10, 24);
        var options = Options(n, lr: 0.5f, schedule: new StepSchedule(2, 0.25f));
        using var gpu = Gpu(stack, options);
        gpu.Initialize(3);
        var batches = Batches(n, v, 4, 8);
        float[] expected = [0.5f, 0.5f, 0.125f, 0.125f];
        for (int s = 0; s < 4; s++)
        {
            Assert.AreEqual(s, gpu.StepCount);
            Assert.AreEqual(expected[s], gpu.LearningRate, $"LearningRate before step {s}");
            gpu.ForwardBackward(batches[s].X, batches[s].Y);
            gpu.PullParameters();
            var before = (float[])gpu.Parameters.Data.Clone();
            var grad = (float[])gpu.Parameters.Grad.Clone();
            gpu.Step(batches[s].X, batches[s].Y);
            gpu.PullParameters();
            double num = 0, den = 0;
            for (int i = 0; i < grad.Length; i++) { num += ((double)before[i] - gpu.Parameters.Data[i]) * grad[i]; den += (double)grad[i] * grad[i]; }
            Assert.AreEqual(expected[s], num / den, 1e-4 * expected[s], $"rate of step {s}");
            CollectionAssert.AreEqual(grad, gpu.Parameters.Grad, $"step {s}: the gradients of the step are those of ForwardBackward on the same batch and parameters");
        }
        Assert.AreEqual(4, gpu.StepCount);
        gpu.StepCount = 0; // the schedule follows StepCount
        Assert.AreEqual(0.5f, gpu.LearningRate);
    }

    [TestMethod]
    public void InitializeGivesTheCpuNetworksValuesAndPushPullRoundTrips()
    {
        int v = 27;
        var stack = Sequential.Makemore(v, 3, 10, 24);
        var options = Options(8);
        using var cpu = Network.Create(stack, options);
        using var gpu = Gpu(stack, options);
        var (x, y) = Batches(8, v, 1, 1)[0];
        gpu.Initialize(1);
        gpu.Step(x, y); // something to clear
        gpu.Initialize(11);
        cpu.Initialize(11);
        gpu.PullParameters();
        CollectionAssert.AreEqual(cpu.Parameters.Data, gpu.Parameters.Data, "initial values");
        CollectionAssert.AreEqual(cpu.Parameters.Buffers, gpu.Parameters.Buffers, "initial running statistics");
        Assert.IsTrue(gpu.Parameters.Grad.All(g => g == 0), "Initialize clears the gradients on the device");
        Assert.AreEqual(0, gpu.StepCount);
        Assert.AreEqual(0, gpu.Parameters.BatchesTracked[0]);
        // distinct values everywhere, pushed, overwritten on the host, pulled back: bitwise the same (the transposes are inverse)
        var rng = new Random(4);
        var values = gpu.Parameters.Data.Select(_ => (float)rng.NextDouble()).ToArray();
        var stats = gpu.Parameters.Buffers.Select(_ => (float)rng.NextDouble() + 0.5f).ToArray();
        values.CopyTo(gpu.Parameters.Data, 0);
        stats.CopyTo(gpu.Parameters.Buffers, 0);
        gpu.Parameters.BatchesTracked[0] = 41;
        gpu.PushParameters();
        Array.Clear(gpu.Parameters.Data);
        Array.Clear(gpu.Parameters.Buffers);
        gpu.PullParameters();
        foreach (var slot in gpu.Parameters.Parameters)
            CollectionAssert.AreEqual(values.AsSpan(slot.Offset, slot.Length).ToArray(), gpu.Parameters.Value(slot.Name).ToArray(), slot.Name);
        foreach (var slot in gpu.Parameters.RunningStatistics)
            CollectionAssert.AreEqual(stats.AsSpan(slot.Offset, slot.Length).ToArray(), gpu.Parameters.Value(slot.Name).ToArray(), slot.Name);
        Assert.AreEqual(41, gpu.Parameters.BatchesTracked[0]);
        // and the pushed values are the ones the device computes with: the CPU network with them gives the same loss
        cpu.Parameters.CopyFrom(gpu.Parameters);
        float a = cpu.ForwardBackward(x, y), b = gpu.ForwardBackward(x, y);
        Assert.AreEqual(a, b, LossTolerance * Math.Abs(a), "loss after a push");
        Assert.AreEqual(42, cpu.Parameters.BatchesTracked[0]);
        gpu.PullParameters();
        Assert.AreEqual(42, gpu.Parameters.BatchesTracked[0]);
    }

    [TestMethod]
    public void StepsAreBitwiseReproducible()
    {
        var split = Words(3);
        var stack = Sequential.Makemore(split.Vocabulary.Size, 3, 10, 40);
        int[]? first = null;
        for (int run = 0; run < 2; run++)
        {
            using var gpu = Gpu(stack, Options(64));
            gpu.Initialize(3);
            gpu.Fit(ExampleSet.FromWords(split.Train), 20, seed: 4);
            gpu.PullParameters();
            var bits = Array.ConvertAll(gpu.Parameters.Data, BitConverter.SingleToInt32Bits);
            if (first == null) first = bits;
            else CollectionAssert.AreEqual(first, bits, "two runs with one seed differ");
        }
    }

    [TestMethod]
    public void AtomicScatterAgreesWithTheDeterministicOne()
    {
        var split = Words(8);
        var stack = Sequential.Makemore(split.Vocabulary.Size, 3, 10, 40);
        using var det = Gpu(stack, Options(64), ScatterMode.Deterministic);
        using var atom = Gpu(stack, Options(64), ScatterMode.Atomic);
        det.Initialize(8);
        atom.Initialize(8);
        var (x, y) = Batches(64, split.Vocabulary.Size, 1, 1)[0];
        det.ForwardBackward(x, y);
        atom.ForwardBackward(x, y);
        det.PullParameters();
        atom.PullParameters();
        double rel = Relative(det.Parameters.Gradient("0.weight"), atom.Parameters.Gradient("0.weight"));
        Assert.IsTrue(rel <= 1e-5, $"grad 0.weight: {rel:E2}");
    }

    [TestMethod]
    [DataRow("seed")]
    [DataRow("repeated")]
    [DataRow("vocab100")]
    [DataRow("bigLogits")]
    [DataRow("n2")]
    [DataRow("large")]
    public void GradientsMatchTheOracle(string name)
    {
        // the makemore bundle (makemore names, W1 [K,H]) into the state-dict layout through the CPU conversion
        var bundle = Oracle.Load(name, "f32");
        var p = new ParameterSet(bundle.Config);
        bundle.CopyTo(p);
        var c = bundle.Config;
        using var host = StackCheckpoint.FromParameterSet(p, c.BatchSize);
        using var gpu = Gpu(host.Stack, new NetworkOptions { BatchSize = c.BatchSize, Eps = (float)c.Eps });
        gpu.Parameters.CopyFrom(host.Parameters);
        gpu.PushParameters();
        float loss = gpu.ForwardBackward(bundle.Xb, bundle.Yb);
        Assert.AreEqual(bundle.File["loss"].ToDouble()[0], loss, 1e-5 * Math.Max(1, Math.Abs(loss)), "loss");
        gpu.PullParameters();
        var s = gpu.Parameters;
        var actual = new Dictionary<string, float[]>
        {
            ["dC"] = s.Gradient("0.weight").ToArray(), ["dW1"] = Transpose(s.Gradient("2.weight"), c.HiddenSize, c.ContextWidth),
            ["db1"] = s.Gradient("2.bias").ToArray(), ["dW2"] = Transpose(s.Gradient("5.weight"), c.VocabSize, c.HiddenSize),
            ["db2"] = s.Gradient("5.bias").ToArray(), ["dbngain"] = s.Gradient("3.weight").ToArray(), ["dbnbias"] = s.Gradient("3.bias").ToArray(),
            ["dlogits"] = gpu.Backend.Download("dlogits"), ["dhprebn"] = gpu.Backend.Download("dhprebn"),
        };
        foreach (string g in ParityTests.FusedChecked)
        {
            double rel = ParityTests.Relative(bundle, g, Array.ConvertAll(actual[g], x => (double)x));
            Assert.IsTrue(rel <= ParityTests.Float32Tolerance, $"{name} {g}: {rel:E2}");
        }
    }

    private static float[] Transpose(ReadOnlySpan<float> a, int rows, int cols)
    {
        var t = new float[a.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
        return t;
    }

    [TestMethod]
    public void AStepAllocatesNothingOnTheManagedHeap()
    {
        var stack = Sequential.Makemore(27, 3, 10, 24);
        using var gpu = Gpu(stack, Options(32, schedule: new StepSchedule(1, 0.1f)));
        gpu.Initialize(1);
        var batches = Batches(32, 27, 3, 1);
        gpu.Step(batches[0].X, batches[0].Y); // warm up (JIT, kernel handles)
        gpu.ForwardBackward(batches[0].X, batches[0].Y);
        long before = GC.GetAllocatedBytesForCurrentThread();
        gpu.Step(batches[1].X, batches[1].Y);
        gpu.ForwardBackward(batches[2].X, batches[2].Y);
        gpu.Step(batches[2].X, batches[2].Y);
        Assert.AreEqual(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [TestMethod]
    public void AStepIsEighteenLaunchesAndOneUpload()
    {
        // forward: gather, GEMM, bias, batch norm + tanh, GEMM, bias; cross-entropy + loss sum;
        // backward: 2 GEMMs + db2, batch-norm backward, 2 GEMMs + db1, scatter; SGD; running statistics.
        using var gpu = Gpu(Sequential.Makemore(27, 3, 10, 24), Options(32));
        gpu.Initialize(1);
        var (x, y) = Batches(32, 27, 1, 1)[0];
        gpu.Step(x, y);
        Assert.AreEqual(18, gpu.Backend.LaunchesPerStep);
    }

    [TestMethod]
    public void ANetworkBuiltOnOneThreadTrainsOnAnother()
    {
        // The driver's current context is per thread: a network created here and stepped on a new
        // thread must make its context current there (CUDA_ERROR_INVALID_CONTEXT otherwise), and
        // give bitwise the same parameters as the same steps on this thread.
        var stack = Sequential.Makemore(27, 3, 10, 24);
        var batches = Batches(32, 27, 4, 2);
        using var here = Gpu(stack, Options(32));
        using var there = Gpu(stack, Options(32));
        here.Initialize(6);
        there.Initialize(6);
        foreach (var (x, y) in batches) here.Step(x, y);
        here.PullParameters();
        Exception? error = null;
        var worker = new Thread(() =>
        {
            try
            {
                foreach (var (x, y) in batches) there.Step(x, y);
                there.PullParameters();
            }
            catch (Exception e) { error = e; }
        });
        worker.Start();
        worker.Join();
        Assert.IsNull(error, $"a step on a second thread failed: {error}");
        CollectionAssert.AreEqual(Array.ConvertAll(here.Parameters.Data, BitConverter.SingleToInt32Bits), Array.ConvertAll(there.Parameters.Data, BitConverter.SingleToInt32Bits),
            "the steps on the second thread gave other parameters");
    }

    [TestMethod]
    public void InputsThatDoNotFitAreRejectedNamingWhat()
    {
        using var gpu = Gpu(Sequential.Makemore(27, 3, 10, 8), Options(4));
        gpu.Initialize(1);
        int[] x = new int[12], y = new int[4];
        Assert.ThrowsExactly<ShapeException>(() => gpu.Step(x.AsSpan(0, 9), y));
        Assert.ThrowsExactly<ShapeException>(() => gpu.ForwardBackward(x, y.AsSpan(0, 3)));
        x[5] = 27;
        StringAssert.Contains(Assert.ThrowsExactly<ShapeException>(() => gpu.Step(x, y)).Message, "id 27");
        Assert.AreEqual(0, gpu.StepCount, "a rejected step is not counted");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => gpu.Evaluate(ExampleSet.FromIds(x, 3, y))).Message, "id 27");
        x[5] = 0;
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => gpu.Evaluate(ExampleSet.FromIds(x, 2, [0, 1, 2, 3, 4, 5]))).Message, "2 inputs per row");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => gpu.Evaluate(ExampleSet.FromFeatures(new float[12], 3, y))).Message, "takes ids");
        Assert.ThrowsExactly<ArgumentException>(() => gpu.Calibrate(ExampleSet.FromIds([1, 2, 3], 3, [0])));
        Assert.ThrowsExactly<ShapeException>(() => gpu.Predict(x, 3, new float[3 * 27]));
        Assert.ThrowsExactly<ShapeException>(() => gpu.Predict(x, 4, new float[3 * 27]));
        gpu.Predict([], 0, []); // nothing to do
    }
}

/// <summary><see cref="CudaNetwork"/> on the kernel emulator (no GPU needed), and its checks (no device at all).</summary>
[TestClass]
public sealed class CudaNetworkTests : CudaNetworkTestsBase
{
    /// <inheritdoc />
    protected override bool OnDriver => false;

    [TestMethod]
    public void EveryKernelOfTheBackendIsInTheEmbeddedPtxAndTheEmulator()
    {
        var ptx = string.Concat(EmbeddedPtx.All().Select(m => System.Text.Encoding.UTF8.GetString(m.Ptx)));
        Devices.RequireEmulator();
        using var emu = new EmulatorRuntime();
        Assert.IsTrue(emu.KernelNames.Count >= 20, string.Join(",", emu.KernelNames));
        foreach (string k in emu.KernelNames) StringAssert.Contains(ptx, ".entry " + k + "(", $"kernel {k} is missing from the embedded PTX");
    }

    private const string Makemore = "embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x27";

    [TestMethod]
    [DataRow("embedding:27x10,flatten,linear:30x200,relu,linear:200x27", "", "", "", 0f, "layer 3 (relu) is not supported on the GPU yet")]
    [DataRow("embedding:27x10,flatten,linear:30x200,batchnorm:200,relu,linear:200x27", "", "", "", 0f, "layer 4 (relu) is not supported on the GPU yet")]
    [DataRow("linear:3x8,tanh,linear:8x2", "", "", "", 0f, "layer 0 (linear:3x8) is not supported on the GPU yet")]
    [DataRow("embedding:27x10,flatten,linear:30x200:nobias,batchnorm:200,tanh,linear:200x27", "", "", "", 0f, "layer 2 (linear:30x200:nobias) is not supported")]
    [DataRow("embedding:27x10,flatten,linear:30x200,batchnorm:200:biased,tanh,linear:200x27", "", "", "", 0f, "layer 3 (batchnorm:200:biased) is not supported")]
    [DataRow("embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x27:nobias", "", "", "", 0f, "layer 5 (linear:200x27:nobias) is not supported")]
    [DataRow(Makemore + ",tanh", "", "", "", 0f, "layer 6 (tanh) is not supported on the GPU yet")]
    [DataRow("embedding:27x10,flatten,linear:30x27", "", "", "", 0f, "the stack ends after layer 2 (linear:30x27)")]
    [DataRow("embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x30", "", "", "", 0f, "layer 5 (linear:200x30) gives 30 outputs but the GPU needs one per id of layer 0 (embedding:27x10), 27")]
    [DataRow(Makemore, "", "", "mse", 0f, "the loss mse is not supported on the GPU yet")]
    [DataRow(Makemore, "adamw:lr=0.01", "", "", 0f, "the optimiser adamw:lr=0.01,")]
    [DataRow(Makemore, "sgd:lr=0.1,momentum=0.9", "", "", 0f, "the optimiser sgd:lr=0.1,momentum=0.9,weight_decay=0 is not supported on the GPU yet")]
    [DataRow(Makemore, "sgd:lr=0.1,weight_decay=0.01", "", "", 0f, "the optimiser sgd:lr=0.1,momentum=0,weight_decay=0.01 is not supported")]
    [DataRow(Makemore, "", "cosine:warmup=10,total=100", "", 0f, "the schedule cosine:warmup=10,total=100,min_lr=0 is not supported on the GPU yet")]
    [DataRow(Makemore, "", "", "", 0.001f, "NetworkOptions.L2 = 0.001 is not supported on the GPU yet")]
    [DataRow("embedding:27x10,flatten,linear:30x200,relu,linear:200x27", "adamw", "cosine:total=5", "mse", 0.5f, "layer 3 (relu)")] // the first that differs
    [DataRow(Makemore, "adamw", "cosine:total=5", "", 0.5f, "the optimiser adamw")]
    public void WhatTheGpuDoesNotRunIsAStackExceptionNamingTheFirstLayerOrSetting(string layers, string optimizer, string schedule, string loss, float l2, string expected)
    {
        var stack = Sequential.Parse(layers);
        var options = new NetworkOptions
        {
            BatchSize = 8, L2 = l2,
            Optimizer = optimizer.Length > 0 ? Optimizer.Parse(optimizer) : new Sgd(),
            Schedule = schedule.Length > 0 ? Schedule.Parse(schedule) : Schedule.Constant,
            Loss = loss.Length > 0 ? Losses.Parse(loss) : LossKind.CrossEntropy,
        };
        Network.Check(stack, options); // the CPU runs all of them
        string? why = CudaNetwork.FirstUnsupported(stack, options);
        Assert.IsNotNull(why);
        StringAssert.StartsWith(why, expected);
        // every factory throws it, before it touches a runtime (this one fails any call) or opens the driver (there is none here)
        Assert.AreEqual(why, Assert.ThrowsExactly<StackException>(() => CudaNetwork.On(new UntouchableRuntime(), stack, options)).Message);
        Assert.AreEqual(why, Assert.ThrowsExactly<StackException>(() => CudaNetwork.OnEmulator(stack, options)).Message);
        Assert.AreEqual(why, Assert.ThrowsExactly<StackException>(() => CudaNetwork.OnDevice(stack, options)).Message);
    }

    [TestMethod]
    public void TheMakemoreStackWithItsRecipeIsSupportedAndTheCpuChecksComeFirst()
    {
        var options = new NetworkOptions { BatchSize = 8, Schedule = new StepSchedule(100, 0.1f), Optimizer = new Sgd { LearningRate = 0.05f } };
        Assert.IsNull(CudaNetwork.FirstUnsupported(Sequential.Parse(Makemore), options));
        Assert.IsNull(CudaNetwork.FirstUnsupported(Sequential.Makemore(50, 5, 4, 16), options with { Schedule = Schedule.Constant, InputWidth = 5 }));
        // a stack that does not fit together: the CPU's message (Network.Check), not the GPU's
        var bad = Sequential.Parse("embedding:27x10,flatten,linear:40x200,batchnorm:200,tanh,linear:200x27");
        string cpu = Assert.ThrowsExactly<StackException>(() => Network.Check(bad, options with { InputWidth = 3 })).Message;
        Assert.AreEqual(cpu, Assert.ThrowsExactly<StackException>(() => CudaNetwork.On(new UntouchableRuntime(), bad, options with { InputWidth = 3 })).Message);
        // batch norm on one row: the CPU's message too
        cpu = Assert.ThrowsExactly<StackException>(() => Network.Check(Sequential.Parse(Makemore), options with { BatchSize = 1 })).Message;
        Assert.AreEqual(cpu, Assert.ThrowsExactly<StackException>(() => CudaNetwork.On(new UntouchableRuntime(), Sequential.Parse(Makemore), options with { BatchSize = 1 })).Message);
    }

    /// <summary>A device runtime that fails every call: proves that checks come before any allocation.</summary>
    private sealed unsafe class UntouchableRuntime : IDeviceRuntime
    {
        private static InvalidOperationException Touched() => new("the runtime was used before the checks finished");
        public string Name => throw Touched();
        public DeviceMemory Allocate(long bytes) => throw Touched();
        public void CopyToDevice(ulong dst, void* src, long bytes) => throw Touched();
        public void CopyToHost(void* dst, ulong src, long bytes) => throw Touched();
        public void CopyOnDevice(ulong dst, ulong src, long bytes) => throw Touched();
        public void Zero(ulong dst, long bytes) => throw Touched();
        public Kernel GetKernel(string name) => throw Touched();
        public void Launch(Kernel kernel, Dim3 grid, Dim3 block, uint sharedBytes, void** args) => throw Touched();
        public void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha, ulong a, int lda, ulong b, int ldb, float beta, ulong c, int ldc) => throw Touched();
        public void Synchronize() => throw Touched();
        public void Dispose() { }
    }
}

/// <summary><see cref="CudaNetwork"/> on the real driver and cuBLAS; not run (inconclusive) without a GPU.</summary>
[TestClass]
[TestCategory(Devices.DriverCategory)]
public sealed class CudaNetworkDriverTests : CudaNetworkTestsBase
{
    /// <inheritdoc />
    protected override bool OnDriver => true;

    [TestMethod]
    public void TheRuntimeNamesTheDeviceAndWhereCublasCameFrom()
    {
        Devices.RequireGpu();
        using var rt = new DriverRuntime();
        StringAssert.StartsWith(rt.Name, "cuda (");
        Assert.IsGreaterThanOrEqualTo(8, rt.ComputeCapability.Major, "the PTX is compute_80");
        StringAssert.Contains(rt.CublasLibrary, "libcublas.so.");
    }

    [TestMethod]
    public void OnDeviceNamesTheGpu()
    {
        Devices.RequireGpu();
        using var gpu = CudaNetwork.OnDevice(Sequential.Makemore(27), new NetworkOptions());
        StringAssert.StartsWith(gpu.Device, "cuda (");
    }
}

/// <summary>
/// The pieces of the driver path that can be checked without a GPU: the probe, the cuBLAS
/// resolver and the per-thread context binding, against a stand-in libcuda
/// (<c>libhpb_fake_cuda.so</c>, built with the emulator: cuInit answers CUDA_ERROR_NO_DEVICE).
/// </summary>
[TestClass]
public sealed class CudaDriverPathTests
{
    private static string FakeDriver => Devices.FakeDriver;

    private static bool IsMapped(string path) => File.ReadAllLines("/proc/self/maps").Any(l => l.EndsWith(" " + path, StringComparison.Ordinal));

    [TestMethod]
    public void AMissingDriverLibraryIsNamedWithTheRemedy()
    {
        string? why = CudaProbe.WhyUnavailable("libcuda-that-is-not-installed.so.1");
        Assert.IsNotNull(why);
        StringAssert.Contains(why, "no CUDA driver");
        StringAssert.Contains(why, "libcuda-that-is-not-installed.so.1");
        StringAssert.Contains(why, "train on the CPU (Network.Create)");
    }

    [TestMethod]
    public void TheProbeKeepsAnInitialisedDriverLoaded()
    {
        // Unloading libcuda after cuInit (and loading it again for the bindings) risks a crash at
        // exit and confuses compute-sanitizer: the probe must leave the library mapped.
        Assert.IsTrue(File.Exists(FakeDriver), FakeDriver + " is built with the emulator");
        string? why = CudaProbe.WhyUnavailable(FakeDriver);
        Assert.IsNotNull(why);
        StringAssert.Contains(why, "CUDA_ERROR_NO_DEVICE");
        StringAssert.Contains(why, FakeDriver, "the message names the library it probed");
        Assert.IsTrue(IsMapped(FakeDriver), "the probe unloaded the driver library after cuInit");
        Assert.AreEqual(why, CudaProbe.WhyUnavailable(FakeDriver), "a second probe answers the same");
    }

    [TestMethod]
    public void CublasIsSearchedNewestFirstInTheExplicitPathTheLoaderTheToolkitAndPyTorch()
    {
        using var dir = new TempDir();
        string explicitDir = Directory.CreateDirectory(dir.File("explicit")).FullName;
        string toolkit = Directory.CreateDirectory(Path.Combine(dir.File("cuda"), "lib64")).FullName;
        File.WriteAllText(Path.Combine(toolkit, "libcublas.so.13"), "");
        File.WriteAllText(Path.Combine(toolkit, "libcublas.so.12"), "");
        string venv = dir.File("venv");
        string wheel = Directory.CreateDirectory(Path.Combine(venv, "lib", "python3.12", "site-packages", "nvidia", "cu13", "lib")).FullName;
        File.WriteAllText(Path.Combine(wheel, "libcublas.so.13"), "");
        var env = new Dictionary<string, string>
        {
            ["HPB_CUBLAS_PATH"] = explicitDir + ":/opt/some/libcublas.so.13",
            ["CUDA_HOME"] = dir.File("cuda"),
            ["VIRTUAL_ENV"] = venv,
        };
        var order = Cublas.SearchOrder(v => env.GetValueOrDefault(v)).ToList();
        string[] expectedStart =
        [
            Path.Combine(explicitDir, "libcublas.so.13"), Path.Combine(explicitDir, "libcublas.so.12"), Path.Combine(explicitDir, "libcublas.so.11"),
            "/opt/some/libcublas.so.13",
            "libcublas.so.13", "libcublas.so.12", "libcublas.so.11",
            Path.Combine(toolkit, "libcublas.so.13"), Path.Combine(toolkit, "libcublas.so.12"),
        ];
        CollectionAssert.AreEqual(expectedStart, order.Take(expectedStart.Length).ToArray(), string.Join("\n", order));
        Assert.Contains(Path.Combine(wheel, "libcublas.so.13"), order, "PyTorch's CUDA 13 wheel directory (nvidia/cu13/lib)");
        Assert.IsFalse(order.Any(c => Path.IsPathRooted(c) && !c.StartsWith(explicitDir, StringComparison.Ordinal) && c != "/opt/some/libcublas.so.13" && !File.Exists(c)),
            "only existing files are listed from the toolkit and wheel directories");
    }

    [TestMethod]
    public void AMissingCublasIsACudaUnavailableExceptionThatSaysWhatToDo()
    {
        // a CudaUnavailableException (not DllNotFoundException) is what lets --device auto fall back to the CPU
        var e = Assert.ThrowsExactly<CudaUnavailableException>(() => Cublas.LoadFirst(["libcublas-not-here.so.13", "/no/such/dir/libcublas.so.13"]));
        StringAssert.Contains(e.Message, "libcublas-not-here.so.13");
        StringAssert.Contains(e.Message, "/no/such/dir/libcublas.so.13");
        StringAssert.Contains(e.Message, "HPB_CUBLAS_PATH");
        StringAssert.Contains(e.Message, "train on the CPU (Network.Create)");
    }

    [TestMethod]
    public void CublasOutsideTheLoaderPathIsFoundWithItsLtLibrary()
    {
        // CUDA 13 keeps libcublas.so.13 in the toolkit's lib64 or PyTorch's nvidia/cu13/lib, off the
        // loader's path: the resolver loads it by path, and libcublasLt.so.13 beside it first.
        using var dir = new TempDir();
        string lib = Directory.CreateDirectory(dir.File("lib")).FullName;
        File.Copy(FakeDriver, Path.Combine(lib, "libcublasLt.so.13"));
        File.Copy(FakeDriver, Path.Combine(lib, "libcublas.so.13"));
        var order = Cublas.SearchOrder(v => v == "HPB_CUBLAS_PATH" ? lib : null);
        var (handle, from) = Cublas.LoadFirst(order);
        Assert.AreNotEqual(0, handle);
        Assert.AreEqual(Path.Combine(lib, "libcublas.so.13"), from);
        Assert.IsTrue(IsMapped(Path.Combine(lib, "libcublasLt.so.13")), "libcublasLt.so.13 beside it was not loaded");
    }

    [TestMethod]
    public void TheContextIsMadeCurrentOncePerThread()
    {
        var calls = new ConcurrentQueue<(nint Context, int Thread)>();
        var binding = new ContextBinding(0x7e57_0c7a, c => { calls.Enqueue((c, Environment.CurrentManagedThreadId)); return 0; });
        binding.Ensure();
        binding.Ensure();
        Assert.HasCount(1, calls, "the second call on one thread must not set the context again");
        int other = 0;
        var t = new Thread(() => { binding.Ensure(); binding.Ensure(); other = Environment.CurrentManagedThreadId; });
        t.Start();
        t.Join();
        Assert.HasCount(2, calls, "a new thread must set the context (once)");
        Assert.AreEqual(other, calls.Last().Thread);
        Assert.AreEqual((nint)0x7e57_0c7a, calls.Last().Context);
        // another context on this thread in between: ours is set again
        new ContextBinding(0x7e57_0c7b, _ => 0).Ensure();
        binding.Ensure();
        Assert.HasCount(3, calls);
        // a new runtime binds whatever this thread did before (a released and retained primary context keeps its handle)
        binding.Bind();
        Assert.HasCount(4, calls);
    }

    [TestMethod]
    public void AFailedContextSwitchIsNotRemembered()
    {
        int calls = 0;
        var binding = new ContextBinding(0x7e57_0c7c, _ => ++calls == 1 ? 201 /* CUDA_ERROR_INVALID_CONTEXT */ : 0);
        var e = Assert.ThrowsExactly<CudaException>(binding.Ensure);
        StringAssert.Contains(e.Message, "cuCtxSetCurrent");
        binding.Ensure();
        Assert.AreEqual(2, calls, "after a failure the next call must try again");
    }

    [TestMethod]
    public void TheDriverRuntimeSaysWhyItCannotStart()
    {
        string? why = CudaProbe.WhyUnavailable();
        if (why == null) Assert.Inconclusive("not run: a CUDA device is present, so there is no error to check");
        var e = Assert.ThrowsExactly<CudaUnavailableException>(() => new DriverRuntime());
        StringAssert.Contains(e.Message, "libcuda.so.1");
        StringAssert.Contains(e.Message, "train on the CPU (Network.Create)");
    }
}
