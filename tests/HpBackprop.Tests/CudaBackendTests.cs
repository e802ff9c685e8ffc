using HpBackprop.Cpu;
using HpBackprop.Cuda;
using HpBackprop.Cuda.Runtime;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Model;

namespace HpBackprop.Tests;

/// <summary>
/// The CUDA backend on both device runtimes: every test runs on the kernel emulator, and again on
/// the real driver when a GPU is present (reported as not run — inconclusive — otherwise).
/// </summary>
[TestClass]
public sealed class CudaBackendTests
{
    public static IEnumerable<object[]> Runtimes => [["emulator"], ["driver"]];

    private static IDeviceRuntime Open(string runtime)
    {
        if (runtime == "emulator") return new EmulatorRuntime();
        string? why = CudaProbe.WhyUnavailable();
        if (why != null) Assert.Inconclusive("not run: needs a CUDA GPU (" + why + ")");
        return new DriverRuntime();
    }

    private static (DataSplit Split, ParameterSet P) Setup(int n, int hidden, int seed)
    {
        var corpus = Corpus.FromLines(TempDir.SyntheticWords(300, 2), "synthetic");
        var split = DataSplit.Create(corpus, 3, seed);
        var p = new ParameterSet(new ModelConfig(split.Vocabulary.Size, 3, 10, hidden, n));
        p.Initialize(seed);
        return (split, p);
    }

    private static int[][] Batches(Dataset d, int n, int steps, int seed)
    {
        var rng = new NormalRng(seed);
        var o = new int[steps * 2][];
        for (int s = 0; s < steps; s++)
        {
            var x = new int[n * d.BlockSize];
            var y = new int[n];
            d.DrawBatch(rng, x, y);
            o[2 * s] = x; o[2 * s + 1] = y;
        }
        return o;
    }

    [TestMethod]
    [DynamicData(nameof(Runtimes))]
    public void HundredStepsMatchTheCpuBackend(string runtime)
    {
        var (split, pCpu) = Setup(32, 64, 5);
        var pGpu = new ParameterSet(pCpu.Config);
        pGpu.CopyFrom(pCpu);
        var batches = Batches(split.Train, 32, 100, 9);
        using var cpu = new CpuBackend(pCpu);
        using var gpu = new CudaBackend(pGpu, Open(runtime), ownsRuntime: true);
        for (int s = 0; s < 100; s++)
        {
            float lr = s < 50 ? 0.1f : 0.01f;
            float a = cpu.Step(batches[2 * s], batches[2 * s + 1], lr);
            float b = gpu.Step(batches[2 * s], batches[2 * s + 1], lr);
            Assert.AreEqual(a, b, 1e-5 * Math.Abs(a), $"loss at step {s}: cpu {a}, {runtime} {b}");
        }
        gpu.PullParameters();
        foreach (var info in pCpu.Layout)
        {
            double scale = pCpu.Value(info.Name).ToArray().Max(x => Math.Abs((double)x));
            double diff = 0;
            var x1 = pCpu.Value(info.Name); var x2 = pGpu.Value(info.Name);
            for (int i = 0; i < x1.Length; i++) diff = Math.Max(diff, Math.Abs((double)x1[i] - x2[i]));
            Assert.IsTrue(diff / scale <= ParityTests.Float32Tolerance, $"{info.Name}: relative difference {diff / scale:E2} after 100 steps");
        }
        for (int c = 0; c < pCpu.Config.HiddenSize; c++)
        {
            Assert.AreEqual(pCpu.RunningMean[c], pGpu.RunningMean[c], 1e-4 * Math.Max(1, Math.Abs(pCpu.RunningMean[c])), "running mean");
            Assert.AreEqual(pCpu.RunningVar[c], pGpu.RunningVar[c], 1e-4 * Math.Max(1, pCpu.RunningVar[c]), "running var");
        }
        // evaluation, calibration and sampling logits on the device agree with the CPU too
        cpu.Calibrate(split.Train);
        gpu.Calibrate(split.Train);
        for (int c = 0; c < pCpu.Config.HiddenSize; c++)
        {
            Assert.AreEqual(pCpu.RunningMean[c], pGpu.RunningMean[c], 1e-4 * Math.Max(1, Math.Abs(pCpu.RunningMean[c])), "calibrated mean");
            Assert.AreEqual(pCpu.RunningVar[c], pGpu.RunningVar[c], 1e-4 * Math.Max(1, pCpu.RunningVar[c]), "calibrated var");
        }
        float ec = cpu.Evaluate(split.Dev), eg = gpu.Evaluate(split.Dev);
        Assert.AreEqual(ec, eg, 1e-4 * ec, "dev loss");
        var lc = new float[pCpu.Config.VocabSize]; var lg = new float[pCpu.Config.VocabSize];
        cpu.InferLogits([0, 0, 0], 1, lc);
        gpu.InferLogits([0, 0, 0], 1, lg);
        for (int j = 0; j < lc.Length; j++) Assert.AreEqual(lc[j], lg[j], 1e-4 * Math.Max(1, Math.Abs(lc[j])), $"logit {j}");
    }

    [TestMethod]
    [DynamicData(nameof(Runtimes))]
    public void StepsAreBitwiseReproducible(string runtime)
    {
        int[] Bits(ParameterSet p) => Array.ConvertAll(p.Data, BitConverter.SingleToInt32Bits);
        int[]? first = null;
        for (int run = 0; run < 2; run++)
        {
            var (split, p) = Setup(64, 40, 3);
            var batches = Batches(split.Train, 64, 20, 4);
            using var gpu = new CudaBackend(p, Open(runtime), ownsRuntime: true);
            for (int s = 0; s < 20; s++) gpu.Step(batches[2 * s], batches[2 * s + 1], 0.1f);
            gpu.PullParameters();
            if (first == null) first = Bits(p);
            else CollectionAssert.AreEqual(first, Bits(p), "two runs with one seed differ");
        }
    }

    [TestMethod]
    [DynamicData(nameof(Runtimes))]
    public void AtomicScatterAgreesWithTheDeterministicOne(string runtime)
    {
        var (split, p1) = Setup(64, 40, 8);
        var p2 = new ParameterSet(p1.Config);
        p2.CopyFrom(p1);
        var batches = Batches(split.Train, 64, 1, 1);
        using var det = new CudaBackend(p1, Open(runtime), ScatterMode.Deterministic, ownsRuntime: true);
        using var atom = new CudaBackend(p2, Open(runtime), ScatterMode.Atomic, ownsRuntime: true);
        det.ForwardBackward(batches[0], batches[1]);
        atom.ForwardBackward(batches[0], batches[1]);
        var a = p1.dC.ToArray(); var b = p2.dC.ToArray();
        double scale = a.Max(x => Math.Abs((double)x));
        for (int i = 0; i < a.Length; i++) Assert.AreEqual(a[i], b[i], 1e-5 * scale, $"dC[{i}]");
    }

    [TestMethod]
    [DataRow("seed")]
    [DataRow("repeated")]
    [DataRow("vocab100")]
    [DataRow("bigLogits")]
    [DataRow("n2")]
    public void GradientsMatchTheOracleOnTheEmulator(string name)
    {
        var bundle = Oracle.Load(name, "f32");
        var p = new ParameterSet(bundle.Config);
        bundle.CopyTo(p);
        using var gpu = CudaBackend.OnEmulator(p);
        float loss = gpu.ForwardBackward(bundle.Xb, bundle.Yb);
        Assert.AreEqual(bundle.File["loss"].ToDouble()[0], loss, 1e-5 * Math.Max(1, Math.Abs(loss)), "loss");
        foreach (string g in ParityTests.FusedChecked)
        {
            float[] actual = g is "dlogits" or "dhprebn" ? gpu.Download(g) : p.Gradient(g[1..]).ToArray();
            double rel = ParityTests.Relative(bundle, g, Array.ConvertAll(actual, x => (double)x));
            Assert.IsTrue(rel <= ParityTests.Float32Tolerance, $"{name} {g}: {rel:E2}");
        }
    }

    [TestMethod]
    public void LargeVocabularyTakesTheSortedScatterAndBlockCrossEntropy()
    {
        // V = 300 > DenseScatterMaxV and > 256: two radix passes; V is below the warp limit, so force a
        // second configuration with V above it as well.
        foreach (int v in new[] { 300, CudaBackend.WarpCrossEntropyMaxV + 100 })
        {
            var cfg = new ModelConfig(v, 2, 4, 16, 24);
            var p1 = new ParameterSet(cfg); p1.Initialize(v);
            var p2 = new ParameterSet(cfg); p2.CopyFrom(p1);
            var rng = new NormalRng(v);
            var x = new int[cfg.BatchSize * cfg.BlockSize]; var y = new int[cfg.BatchSize];
            for (int i = 0; i < x.Length; i++) x[i] = i % 5 == 0 ? 7 : rng.NextInt(v);  // id 7 repeats
            for (int i = 0; i < y.Length; i++) y[i] = rng.NextInt(v);
            using var cpu = new CpuBackend(p1);
            using var gpu = CudaBackend.OnEmulator(p2);
            float a = cpu.ForwardBackward(x, y), b = gpu.ForwardBackward(x, y);
            Assert.AreEqual(a, b, 1e-5 * a, $"V={v} loss");
            foreach (string g in new[] { "C", "W1", "W2", "b2", "bngain" })
            {
                var ga = p1.Gradient(g).ToArray(); var gb = p2.Gradient(g).ToArray();
                double scale = ga.Max(t => Math.Abs((double)t));
                for (int i = 0; i < ga.Length; i++) Assert.AreEqual(ga[i], gb[i], ParityTests.Float32Tolerance * scale, $"V={v} d{g}[{i}]");
            }
        }
    }

    [TestMethod]
    public void AMissingDriverLibraryIsNamedWithTheRemedy()
    {
        string? why = CudaProbe.WhyUnavailable("libcuda-that-is-not-installed.so.1");
        Assert.IsNotNull(why);
        StringAssert.Contains(why, "no CUDA driver");
        StringAssert.Contains(why, "libcuda-that-is-not-installed.so.1");
        StringAssert.Contains(why, "--device cpu");
    }

    [TestMethod]
    public void AStepAllocatesNothingOnTheManagedHeap()
    {
        var (split, p) = Setup(32, 24, 1);
        using var gpu = CudaBackend.OnEmulator(p);
        var batches = Batches(split.Train, 32, 3, 1);
        gpu.Step(batches[0], batches[1], 0.1f); // warm up (JIT, kernel handles)
        long before = GC.GetAllocatedBytesForCurrentThread();
        gpu.Step(batches[2], batches[3], 0.1f);
        gpu.StepWithoutLoss(batches[4], batches[5], 0.1f);
        Assert.AreEqual(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [TestMethod]
    public void AStepIsEighteenLaunchesAndOneUpload()
    {
        // forward: gather, GEMM, bias, batch norm + tanh, GEMM, bias; cross-entropy + loss sum;
        // backward: 2 GEMMs + db2, batch-norm backward, 2 GEMMs + db1, scatter; SGD; running statistics.
        var (split, p) = Setup(32, 24, 1);
        using var gpu = CudaBackend.OnEmulator(p);
        var batches = Batches(split.Train, 32, 1, 1);
        gpu.StepWithoutLoss(batches[0], batches[1], 0.1f);
        Assert.AreEqual(18, gpu.LaunchesPerStep);
    }

    [TestMethod]
    public void TheDriverRuntimeSaysWhyItCannotStart()
    {
        string? why = CudaProbe.WhyUnavailable();
        if (why == null) Assert.Inconclusive("not run: a CUDA device is present, so there is no error to check");
        var e = Assert.ThrowsExactly<CudaUnavailableException>(() => new DriverRuntime());
        StringAssert.Contains(e.Message, "libcuda.so.1");
        StringAssert.Contains(e.Message, "--device cpu");
    }

    [TestMethod]
    public void EveryKernelOfTheBackendIsInTheEmbeddedPtxAndTheEmulator()
    {
        var ptx = string.Concat(EmbeddedPtx.All().Select(m => System.Text.Encoding.UTF8.GetString(m.Ptx)));
        using var emu = new EmulatorRuntime();
        Assert.IsTrue(emu.KernelNames.Count >= 20, string.Join(",", emu.KernelNames));
        foreach (string k in emu.KernelNames) StringAssert.Contains(ptx, ".entry " + k + "(", $"kernel {k} is missing from the embedded PTX");
    }
}
