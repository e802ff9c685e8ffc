using System.Collections.Concurrent;
using HpBackprop.Cpu;
using HpBackprop.Cuda;
using HpBackprop.Cuda.Native;
using HpBackprop.Cuda.Runtime;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Model;

namespace HpBackprop.Tests;

/// <summary>
/// The CUDA backend on a device runtime: <see cref="CudaBackendTests"/> runs these on the kernel
/// emulator, <see cref="CudaBackendDriverTests"/> on the real driver (reported as not run —
/// inconclusive — where there is no GPU).
/// </summary>
public abstract class CudaBackendTestsBase
{
    /// <summary>Run on the real CUDA driver instead of the emulator.</summary>
    protected abstract bool OnDriver { get; }

    private IDeviceRuntime Open() => Devices.Open(OnDriver);

    private string Runtime => OnDriver ? "driver" : "emulator";

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
    public void HundredStepsMatchTheCpuBackend()
    {
        string runtime = Runtime;
        var (split, pCpu) = Setup(32, 64, 5);
        var pGpu = new ParameterSet(pCpu.Config);
        pGpu.CopyFrom(pCpu);
        var batches = Batches(split.Train, 32, 100, 9);
        using var cpu = new MakemoreNet(pCpu, new Networks.NetworkOptions { Schedule = new Networks.StepSchedule(50, 0.1f) });
        using var gpu = new CudaBackend(pGpu, Open(), ownsRuntime: true);
        for (int s = 0; s < 100; s++)
        {
            float lr = cpu.Net.LearningRate;
            float a = cpu.Step(batches[2 * s], batches[2 * s + 1]);
            float b = gpu.Step(batches[2 * s], batches[2 * s + 1], lr);
            Assert.AreEqual(a, b, 1e-5 * Math.Abs(a), $"loss at step {s}: cpu {a}, {runtime} {b}");
        }
        gpu.PullParameters();
        pCpu = cpu.ToParameterSet();
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
        cpu.Net.Calibrate(Networks.ExampleSet.FromWords(split.Train));
        gpu.Calibrate(split.Train);
        pCpu = cpu.ToParameterSet();
        for (int c = 0; c < pCpu.Config.HiddenSize; c++)
        {
            Assert.AreEqual(pCpu.RunningMean[c], pGpu.RunningMean[c], 1e-4 * Math.Max(1, Math.Abs(pCpu.RunningMean[c])), "calibrated mean");
            Assert.AreEqual(pCpu.RunningVar[c], pGpu.RunningVar[c], 1e-4 * Math.Max(1, pCpu.RunningVar[c]), "calibrated var");
        }
        float ec = cpu.Net.Evaluate(Networks.ExampleSet.FromWords(split.Dev)), eg = gpu.Evaluate(split.Dev);
        Assert.AreEqual(ec, eg, 1e-4 * ec, "dev loss");
        var lc = new float[pCpu.Config.VocabSize]; var lg = new float[pCpu.Config.VocabSize];
        cpu.Net.Predict([0, 0, 0], 1, lc, raw: true);
        gpu.InferLogits([0, 0, 0], 1, lg);
        for (int j = 0; j < lc.Length; j++) Assert.AreEqual(lc[j], lg[j], 1e-4 * Math.Max(1, Math.Abs(lc[j])), $"logit {j}");
    }

    [TestMethod]
    public void StepsAreBitwiseReproducible()
    {
        int[] Bits(ParameterSet p) => Array.ConvertAll(p.Data, BitConverter.SingleToInt32Bits);
        int[]? first = null;
        for (int run = 0; run < 2; run++)
        {
            var (split, p) = Setup(64, 40, 3);
            var batches = Batches(split.Train, 64, 20, 4);
            using var gpu = new CudaBackend(p, Open(), ownsRuntime: true);
            for (int s = 0; s < 20; s++) gpu.Step(batches[2 * s], batches[2 * s + 1], 0.1f);
            gpu.PullParameters();
            if (first == null) first = Bits(p);
            else CollectionAssert.AreEqual(first, Bits(p), "two runs with one seed differ");
        }
    }

    [TestMethod]
    public void AtomicScatterAgreesWithTheDeterministicOne()
    {
        var (split, p1) = Setup(64, 40, 8);
        var p2 = new ParameterSet(p1.Config);
        p2.CopyFrom(p1);
        var batches = Batches(split.Train, 64, 1, 1);
        using var det = new CudaBackend(p1, Open(), ScatterMode.Deterministic, ownsRuntime: true);
        using var atom = new CudaBackend(p2, Open(), ScatterMode.Atomic, ownsRuntime: true);
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
    [DataRow("large")]
    public void GradientsMatchTheOracle(string name)
    {
        var bundle = Oracle.Load(name, "f32");
        var p = new ParameterSet(bundle.Config);
        bundle.CopyTo(p);
        using var gpu = new CudaBackend(p, Open(), ownsRuntime: true);
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
            using var cpu = new MakemoreNet(p1);
            using var gpu = new CudaBackend(p2, Open(), ownsRuntime: true);
            float a = cpu.ForwardBackward(x, y), b = gpu.ForwardBackward(x, y);
            Assert.AreEqual(a, b, 1e-5 * a, $"V={v} loss");
            foreach (string g in new[] { "C", "W1", "W2", "b2", "bngain" })
            {
                var ga = cpu.Gradient(g); var gb = p2.Gradient(g).ToArray();
                double scale = ga.Max(t => Math.Abs((double)t));
                for (int i = 0; i < ga.Length; i++) Assert.AreEqual(ga[i], gb[i], ParityTests.Float32Tolerance * scale, $"V={v} d{g}[{i}]");
            }
        }
    }

    [TestMethod]
    public void AStepAllocatesNothingOnTheManagedHeap()
    {
        var (split, p) = Setup(32, 24, 1);
        using var gpu = new CudaBackend(p, Open(), ownsRuntime: true);
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
        using var gpu = new CudaBackend(p, Open(), ownsRuntime: true);
        var batches = Batches(split.Train, 32, 1, 1);
        gpu.StepWithoutLoss(batches[0], batches[1], 0.1f);
        Assert.AreEqual(18, gpu.LaunchesPerStep);
    }

    [TestMethod]
    public void ABackendBuiltOnOneThreadTrainsOnAnother()
    {
        // The driver's current context is per thread: a backend created here and stepped on a new
        // thread must make its context current there (CUDA_ERROR_INVALID_CONTEXT otherwise), and
        // give bitwise the same parameters as the same steps on this thread.
        var (split, p1) = Setup(32, 24, 6);
        var p2 = new ParameterSet(p1.Config);
        p2.CopyFrom(p1);
        var batches = Batches(split.Train, 32, 4, 2);
        using var here = new CudaBackend(p1, Open(), ownsRuntime: true);
        using var there = new CudaBackend(p2, Open(), ownsRuntime: true);
        for (int s = 0; s < 4; s++) here.Step(batches[2 * s], batches[2 * s + 1], 0.1f);
        here.PullParameters();
        Exception? error = null;
        var worker = new Thread(() =>
        {
            try
            {
                for (int s = 0; s < 4; s++) there.Step(batches[2 * s], batches[2 * s + 1], 0.1f);
                there.PullParameters();
            }
            catch (Exception e) { error = e; }
        });
        worker.Start();
        worker.Join();
        Assert.IsNull(error, $"a step on a second thread failed: {error}");
        CollectionAssert.AreEqual(Array.ConvertAll(p1.Data, BitConverter.SingleToInt32Bits), Array.ConvertAll(p2.Data, BitConverter.SingleToInt32Bits),
            "the steps on the second thread gave other parameters");
    }
}

/// <summary>The CUDA backend on the kernel emulator (no GPU needed).</summary>
[TestClass]
public sealed class CudaBackendTests : CudaBackendTestsBase
{
    /// <inheritdoc />
    protected override bool OnDriver => false;

    [TestMethod]
    public void EveryKernelOfTheBackendIsInTheEmbeddedPtxAndTheEmulator()
    {
        var ptx = string.Concat(EmbeddedPtx.All().Select(m => System.Text.Encoding.UTF8.GetString(m.Ptx)));
        using var emu = new EmulatorRuntime();
        Assert.IsTrue(emu.KernelNames.Count >= 20, string.Join(",", emu.KernelNames));
        foreach (string k in emu.KernelNames) StringAssert.Contains(ptx, ".entry " + k + "(", $"kernel {k} is missing from the embedded PTX");
    }
}

/// <summary>The CUDA backend on the real driver and cuBLAS; not run (inconclusive) without a GPU.</summary>
[TestClass]
[TestCategory(Devices.DriverCategory)]
public sealed class CudaBackendDriverTests : CudaBackendTestsBase
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
}

/// <summary>
/// The pieces of the driver path that can be checked without a GPU: the probe, the cuBLAS
/// resolver and the per-thread context binding, against a stand-in libcuda
/// (<c>libhpb_fake_cuda.so</c>, built with the emulator: cuInit answers CUDA_ERROR_NO_DEVICE).
/// </summary>
[TestClass]
public sealed class CudaDriverPathTests
{
    private static string FakeDriver => Path.Combine(AppContext.BaseDirectory, "libhpb_fake_cuda.so");

    private static bool IsMapped(string path) => File.ReadAllLines("/proc/self/maps").Any(l => l.EndsWith(" " + path, StringComparison.Ordinal));

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
        StringAssert.Contains(e.Message, "--device cpu");
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
        StringAssert.Contains(e.Message, "--device cpu");
    }
}
