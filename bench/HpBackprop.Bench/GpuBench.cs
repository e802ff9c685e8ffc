using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using HpBackprop.Cuda;
using HpBackprop.Cuda.Runtime;
using HpBackprop.Model;

namespace HpBackprop.Bench;

/// <summary>
/// The GPU benchmarks (issue: CUDA backend): fused vs exercise-1 chain for cross-entropy and batch
/// norm, atomicAdd vs deterministic embedding scatter, and the full training step at the seed shape
/// and a large shape. <c>gpu</c> runs them with BenchmarkDotNet (in process: no SDK needed) on the first CUDA device and says
/// "no CUDA device" (exit 0) when there is none; <c>gpu --emulator</c> times the same launch
/// sequences on the host emulator (plain timing, small shapes: a check that they run, not a speed figure).
/// </summary>
internal static class GpuBench
{
    public static int Run(string[] args)
    {
        bool emulator = args.Contains("--emulator");
        if (!emulator)
        {
            string? why = CudaProbe.WhyUnavailable();
            if (why != null)
            {
                Console.WriteLine("no CUDA device: " + why);
                Console.WriteLine("The GPU benchmarks need an NVIDIA GPU; 'gpu --emulator' runs the same launch sequences on the host emulator.");
                return 0;
            }
            // In process: BenchmarkDotNet's default toolchain builds a child project with the .NET SDK,
            // which a GPU machine may not have (the published bench runs without it).
            var config = DefaultConfig.Instance.AddJob(Job.Default.WithToolchain(InProcessEmitToolchain.Instance));
            var rest = args.Where(a => a != "gpu").ToArray();
            BenchmarkRunner.Run<GpuBenchmarks>(config, rest);
            BenchmarkRunner.Run<GpuStepBenchmarks>(config, rest);
            return 0;
        }
        Console.WriteLine("| piece (emulator, n=32 H=64 V=27) | µs per call (host emulation; not a GPU figure) |");
        Console.WriteLine("|---|---|");
        var b = new GpuBenchmarks { Shape = "emu", OnEmulator = true };
        b.Setup();
        try
        {
            foreach (var (name, action) in new (string, Action)[]
            {
                ("cross-entropy fused", b.CrossEntropyFused), ("cross-entropy chain", b.CrossEntropyChain),
                ("batch norm fused (fwd+bwd)", b.BatchNormFused), ("batch norm chain (fwd+bwd)", b.BatchNormChain),
                ("scatter deterministic", b.ScatterDeterministic), ("scatter atomicAdd", b.ScatterAtomic),
                ("training step", b.TrainingStep),
            })
            {
                var (median, _) = Program.Time(action, 1.0, 5);
                Console.WriteLine($"| {name} | {median:F0} |");
            }
        }
        finally { b.Cleanup(); }
        return 0;
    }
}

/// <summary>
/// A training step on a CUDA device at every bench shape (S, M, L makemore; the deep stack; the float-feature MLP), as
/// <c>Fit</c> runs it with the set on the device, replayed as one captured graph or with every kernel launched on the
/// stream: µs per step over 100 steps (the losses read once, at the end, which waits for the device).
/// </summary>
public class GpuStepBenchmarks
{
    /// <summary>The shape (<see cref="StackBench.Get"/>).</summary>
    [Params("S", "M", "L", "deep", "mlp")]
    public string Shape { get; set; } = "S";

    /// <summary>graph: one cuGraphLaunch per step; stream: every kernel and product queued by the host.</summary>
    [Params("graph", "stream")]
    public string Launch { get; set; } = "graph";

    private const int StepsPerInvoke = 100, RunSteps = 1_000_000;
    private HpBackprop.Networks.Network _net = null!;
    private HpBackprop.Networks.ExampleSet _set = null!;
    private HpBackprop.Networks.TrainingRun _run = null!;

    /// <summary>The network on the first CUDA device and a set of 4,096 random examples.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var (layers, n) = StackBench.Get(Shape);
        var stack = HpBackprop.Networks.Sequential.Parse(layers);
        _net = CudaNetwork.OnDevice(stack, new HpBackprop.Networks.NetworkOptions { BatchSize = n, Optimizer = new HpBackprop.Networks.Sgd { LearningRate = 0.01f } });
        CudaNetwork.Backend(_net)!.UseGraphs = Launch == "graph";
        var rng = new Random(1);
        const int count = 4096;
        int w = _net.InputWidth, k = _net.OutputWidth;
        var classes = Enumerable.Range(0, count).Select(_ => rng.Next(k)).ToArray();
        _set = stack.TakesIds
            ? HpBackprop.Networks.ExampleSet.FromIds(Enumerable.Range(0, count * w).Select(_ => rng.Next(stack.Layers[0].In)).ToArray(), w, classes)
            : HpBackprop.Networks.ExampleSet.FromFeatures(Enumerable.Range(0, count * w).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(), w, classes);
        _run = new HpBackprop.Networks.TrainingRun(1, RunSteps);
        _net.Fit(_set, _run, untilStep: 2); // the first step launches its kernels, the second is captured
    }

    /// <summary>Frees the device memory.</summary>
    [GlobalCleanup]
    public void Cleanup() => _net.Dispose();

    /// <summary>100 training steps with the set on the device.</summary>
    [Benchmark(OperationsPerInvoke = StepsPerInvoke)]
    public void Steps()
    {
        // a run keeps a float per step: a new one (the network's step count goes on) when this one is full
        if (_run.Completed + StepsPerInvoke > _run.TotalSteps) _run = new HpBackprop.Networks.TrainingRun(1, RunSteps);
        _net.Fit(_set, _run, untilStep: _run.Completed + StepsPerInvoke);
    }
}

/// <summary>BenchmarkDotNet suite for a CUDA device (see <see cref="GpuBench"/>).</summary>
[MemoryDiagnoser]
public unsafe class GpuBenchmarks
{
    /// <summary>S = the seeds' shape (n=32, E=10, H=200); L = n=4096, E=32, H=1024.</summary>
    [Params("S", "L")]
    public string Shape { get; set; } = "S";

    internal bool OnEmulator { get; set; }

    private IDeviceRuntime _rt = null!;
    private HpBackprop.Networks.Network _step = null!, _atomicStep = null!;
    private readonly List<DeviceMemory> _mem = [];
    private int _n, _h, _v, _e, _b;
    private ulong logits, yb, xb, dlogits, losses, loss, hprebn, gain, bias, bnmeani, bnvar, bnvar_inv, bnraw, h, dh, dhprebn, dbngain, dbnbias, dembcat, dC;
    private ulong logit_maxes, norm_logits, counts, counts_sum, counts_sum_inv, probs, logprobs, dlogprobs, dprobs, dcounts_sum_inv, dcounts_sum, dcounts, dnorm_logits, dlogit_maxes;
    private ulong bndiff, bndiff2, hpreact, dhpreact, dbnraw, dbnvar_inv, dbnvar, dbndiff2, dbndiff, dbnmeani;
    private int[] _xb = [], _yb = [];
    private readonly Dictionary<string, Kernel> _k = [];

    [GlobalSetup]
    public void Setup()
    {
        (_n, _e, _h) = Shape switch { "S" => (32, 10, 200), "L" => (4096, 32, 1024), _ => (32, 10, 64) };
        _v = 27; _b = 3;
        _rt = OnEmulator ? new EmulatorRuntime() : new DriverRuntime();
        ulong A(long floats) { var m = _rt.Allocate(floats * 4); _mem.Add(m); return m.Pointer; }
        long nv = (long)_n * _v, nh = (long)_n * _h;
        logits = A(nv); yb = A(_n); xb = A(_n * _b); dlogits = A(nv); losses = A(_n); loss = A(1);
        hprebn = A(nh); gain = A(_h); bias = A(_h); bnmeani = A(_h); bnvar = A(_h); bnvar_inv = A(_h); bnraw = A(nh); h = A(nh);
        dh = A(nh); dhprebn = A(nh); dbngain = A(_h); dbnbias = A(_h); dembcat = A((long)_n * _b * _e); dC = A((long)_v * _e);
        logit_maxes = A(_n); norm_logits = A(nv); counts = A(nv); counts_sum = A(_n); counts_sum_inv = A(_n); probs = A(nv); logprobs = A(nv);
        dlogprobs = A(nv); dprobs = A(nv); dcounts_sum_inv = A(_n); dcounts_sum = A(_n); dcounts = A(nv); dnorm_logits = A(nv); dlogit_maxes = A(_n);
        bndiff = A(nh); bndiff2 = A(nh); hpreact = A(nh); dhpreact = A(nh); dbnraw = A(nh); dbnvar_inv = A(_h); dbnvar = A(_h); dbndiff2 = A(nh); dbndiff = A(nh); dbnmeani = A(_h);
        var rng = new NormalRng(1);
        Upload(logits, nv, () => (float)rng.Next() * 3);
        Upload(hprebn, nh, () => (float)rng.Next());
        Upload(dh, nh, () => (float)rng.Next() * 0.01f);
        Upload(dembcat, (long)_n * _b * _e, () => (float)rng.Next());
        Upload(gain, _h, () => 1 + 0.1f * (float)rng.Next());
        Upload(bias, _h, () => 0.1f * (float)rng.Next());
        _xb = new int[_n * _b]; _yb = new int[_n];
        for (int i = 0; i < _xb.Length; i++) _xb[i] = rng.NextInt(_v);
        for (int i = 0; i < _yb.Length; i++) _yb[i] = rng.NextInt(_v);
        fixed (int* p = _xb) _rt.CopyToDevice(xb, p, _xb.Length * 4L);
        fixed (int* p = _yb) _rt.CopyToDevice(yb, p, _yb.Length * 4L);
        var stack = HpBackprop.Networks.Sequential.Makemore(_v, _b, _e, _h);
        var options = new HpBackprop.Networks.NetworkOptions { BatchSize = _n, Optimizer = new HpBackprop.Networks.Sgd { LearningRate = 0.01f } };
        _step = CudaNetwork.On(_rt, stack, options);
        _atomicStep = CudaNetwork.On(_rt, stack, options, ScatterMode.Atomic);
        _step.Initialize(1);
        _atomicStep.Initialize(1);
    }

    private void Upload(ulong dst, long count, Func<float> next)
    {
        var a = new float[count];
        for (long i = 0; i < count; i++) a[i] = next();
        fixed (float* p = a) _rt.CopyToDevice(dst, p, count * 4);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _step.Dispose();
        _atomicStep.Dispose();
        foreach (var m in _mem) m.Dispose();
        _rt.Dispose();
    }

    /// <summary>Launches a kernel whose arguments are given as 8-byte slots (pointers, or ints/floats in the low 4 bytes).</summary>
    private void L(string name, uint grid, uint block, uint shared, params ReadOnlySpan<ulong> slots)
    {
        if (!_k.TryGetValue(name, out var k)) _k[name] = k = _rt.GetKernel(name);
        void** args = stackalloc void*[slots.Length];
        fixed (ulong* s = slots)
        {
            for (int i = 0; i < slots.Length; i++) args[i] = s + i;
            _rt.Launch(k, new Dim3(grid), new Dim3(block), shared, args);
        }
    }

    private void L2(string name, uint grid, Dim3 block, uint shared, params ReadOnlySpan<ulong> slots)
    {
        if (!_k.TryGetValue(name, out var k)) _k[name] = k = _rt.GetKernel(name);
        void** args = stackalloc void*[slots.Length];
        fixed (ulong* s = slots)
        {
            for (int i = 0; i < slots.Length; i++) args[i] = s + i;
            _rt.Launch(k, new Dim3(grid), block, shared, args);
        }
    }

    private static ulong I(int v) => (uint)v;
    private static ulong F(float v) => BitConverter.SingleToUInt32Bits(v);
    private static uint G(long work, int per = 256) => (uint)Math.Clamp((work + per - 1) / per, 1, 65535);

    [Benchmark]
    public void CrossEntropyFused()
    {
        L("cross_entropy_warp", G(_n, 8), 256, 0, logits, yb, dlogits, losses, I(_n), I(_v));
        L("sum_reduce", 1, 256, 0, losses, loss, I(_n), F(1f / _n));
        _rt.Synchronize();
    }

    [Benchmark]
    public void CrossEntropyChain()
    {
        long nv = (long)_n * _v;
        uint row = G(_n, 8), elemNV = G(nv), elemN = G(_n);
        L("chain_logit_maxes", row, 256, 0, logits, logit_maxes, I(_n), I(_v));
        L("chain_norm_logits", elemNV, 256, 0, logits, logit_maxes, norm_logits, I(_n), I(_v));
        L("chain_counts", elemNV, 256, 0, norm_logits, counts, I((int)nv));
        L("chain_counts_sum", row, 256, 0, counts, counts_sum, I(_n), I(_v));
        L("chain_counts_sum_inv", elemN, 256, 0, counts_sum, counts_sum_inv, I(_n));
        L("chain_probs", elemNV, 256, 0, counts, counts_sum_inv, probs, I(_n), I(_v));
        L("chain_logprobs", elemNV, 256, 0, probs, logprobs, I((int)nv));
        L("chain_losses", elemN, 256, 0, logprobs, yb, losses, I(_n), I(_v));
        L("sum_reduce", 1, 256, 0, losses, loss, I(_n), F(1f / _n));
        L("chain_dlogprobs", elemNV, 256, 0, dlogprobs, yb, I(_n), I(_v));
        L("chain_dprobs", elemNV, 256, 0, dlogprobs, probs, dprobs, I((int)nv));
        L("chain_dcounts_sum_inv", row, 256, 0, counts, dprobs, dcounts_sum_inv, I(_n), I(_v));
        L("chain_dcounts_sum", elemN, 256, 0, counts_sum, dcounts_sum_inv, dcounts_sum, I(_n));
        L("chain_dcounts", elemNV, 256, 0, counts_sum_inv, dprobs, dcounts_sum, dcounts, I(_n), I(_v));
        L("chain_dnorm_logits", elemNV, 256, 0, counts, dcounts, dnorm_logits, I((int)nv));
        L("chain_dlogit_maxes", row, 256, 0, dnorm_logits, dlogit_maxes, I(_n), I(_v));
        L("chain_dlogits", row, 256, 0, logits, dnorm_logits, dlogit_maxes, dlogits, I(_n), I(_v));
        _rt.Synchronize();
    }

    [Benchmark]
    public void BatchNormFused()
    {
        L2("batchnorm_forward", G(_h, 32), new Dim3(32, 8), 1024, hprebn, gain, bias, bnmeani, bnvar, bnvar_inv, bnraw, h, I(_n), I(_h), F(1e-5f));
        L2("batchnorm_backward", G(_h, 32), new Dim3(32, 8), 1024, dh, h, bnraw, gain, bnvar_inv, dhprebn, dbngain, dbnbias, I(_n), I(_h));
        _rt.Synchronize();
    }

    [Benchmark]
    public void BatchNormChain()
    {
        long nh = (long)_n * _h;
        uint col = G(_h), elemNH = G(nh), elemH = G(_h);
        L("chain_bnmeani", col, 256, 0, hprebn, bnmeani, I(_n), I(_h));
        L("chain_bndiff", elemNH, 256, 0, hprebn, bnmeani, bndiff, I(_n), I(_h));
        L("chain_bndiff2", elemNH, 256, 0, bndiff, bndiff2, I((int)nh));
        L("chain_bnvar", col, 256, 0, bndiff2, bnvar, I(_n), I(_h));
        L("chain_bnvar_inv", elemH, 256, 0, bnvar, bnvar_inv, I(_h), F(1e-5f));
        L("chain_bnraw", elemNH, 256, 0, bndiff, bnvar_inv, bnraw, I(_n), I(_h));
        L("chain_hpreact", elemNH, 256, 0, gain, bnraw, bias, hpreact, I(_n), I(_h));
        L("chain_h", elemNH, 256, 0, hpreact, h, I((int)nh));
        L("chain_dhpreact", elemNH, 256, 0, h, dh, dhpreact, I((int)nh));
        L("chain_dbngain", col, 256, 0, bnraw, dhpreact, dbngain, I(_n), I(_h));
        L("chain_dbnraw", elemNH, 256, 0, gain, dhpreact, dbnraw, I(_n), I(_h));
        L("chain_dbnbias", col, 256, 0, dhpreact, dbnbias, I(_n), I(_h));
        L("chain_dbnvar_inv", col, 256, 0, bndiff, dbnraw, dbnvar_inv, I(_n), I(_h));
        L("chain_dbnvar", elemH, 256, 0, bnvar, dbnvar_inv, dbnvar, I(_h), F(1e-5f));
        L("chain_dbndiff2", elemNH, 256, 0, dbnvar, dbndiff2, I(_n), I(_h));
        L("chain_dbndiff", elemNH, 256, 0, bnvar_inv, dbnraw, bndiff, dbndiff2, dbndiff, I(_n), I(_h));
        L("chain_dbnmeani", col, 256, 0, dbndiff, dbnmeani, I(_n), I(_h));
        L("chain_dhprebn", elemNH, 256, 0, dbndiff, dbnmeani, dhprebn, I(_n), I(_h));
        _rt.Synchronize();
    }

    [Benchmark]
    public void ScatterDeterministic()
    {
        L("embedding_backward_dense", G((long)_v * _e), 256, 0, dC, dembcat, xb, I(_n), I(_b), I(_e), I(_v));
        _rt.Synchronize();
    }

    [Benchmark]
    public void ScatterAtomic()
    {
        _rt.Zero(dC, (long)_v * _e * 4);
        L("embedding_backward_atomic", G((long)_n * _b * _e), 256, 0, dC, dembcat, xb, I(_n), I(_b), I(_e));
        _rt.Synchronize();
    }

    [Benchmark]
    public void TrainingStep() => _step.Step(_xb, _yb);

    [Benchmark]
    public void TrainingStepAtomicScatter() => _atomicStep.Step(_xb, _yb);
}
