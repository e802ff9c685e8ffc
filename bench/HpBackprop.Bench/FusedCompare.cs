using BenchmarkDotNet.Attributes;
using HpBackprop.Cpu;

namespace HpBackprop.Bench;

/// <summary>Inputs for the fused-vs-atomic comparisons at one (n, H), V = 27.</summary>
public sealed class FusedCase
{
    public readonly int N, H, V = 27;
    public readonly float[] Logits, Dlogits, Dh, H_, Hprebn, Bndiff, Bnraw, Bnvar, BnvarInv, Bngain, Bnbias, Mean, Dhprebn, Dbngain, Dbnbias, Scratch;
    public readonly int[] Yb;
    public readonly AtomicCrossEntropy AtomicCe;
    public readonly AtomicBatchNorm AtomicBn;

    public FusedCase(int n, int h)
    {
        N = n; H = h;
        var r = new Random(3);
        float[] R(int len, float s = 1f) { var a = new float[len]; for (int i = 0; i < len; i++) a[i] = (float)(r.NextDouble() * 2 - 1) * s; return a; }
        Logits = R(n * V, 3); Dlogits = new float[n * V]; Yb = Enumerable.Range(0, n).Select(_ => r.Next(V)).ToArray();
        Hprebn = R(n * h, 2); Bngain = R(h, 0.1f).Select(x => x + 1).ToArray(); Bnbias = R(h, 0.1f); Dh = R(n * h, 0.01f);
        Mean = new float[h]; Bnvar = new float[h]; BnvarInv = new float[h]; Bnraw = new float[n * h]; H_ = new float[n * h];
        BatchNorm.ForwardTanh(Hprebn, Bngain, Bnbias, Mean, Bnvar, BnvarInv, Bnraw, H_, n, h, 1e-5f);
        Bndiff = new float[n * h];
        for (int i = 0; i < n; i++) for (int c = 0; c < h; c++) Bndiff[i * h + c] = Hprebn[i * h + c] - Mean[c];
        Dhprebn = new float[n * h]; Dbngain = new float[h]; Dbnbias = new float[h]; Scratch = new float[h];
        AtomicCe = new AtomicCrossEntropy(n, V);
        AtomicBn = new AtomicBatchNorm(n, h);
    }

    public float CeFused() => CrossEntropy.ForwardBackward(Logits, Yb, Dlogits, N, V);
    public float CeAtomic() => AtomicCe.Run(Logits, Yb, Dlogits);
    public void BnFused() => BatchNorm.Backward(Dh, H_, Bnraw, Bngain, BnvarInv, Dhprebn, Dbngain, Dbnbias, Scratch, N, H);
    public void BnAtomic() => AtomicBn.Run(Dh, H_, Bndiff, Bnraw, Bnvar, BnvarInv, Bngain, Dhprebn, Dbngain, Dbnbias);
}

/// <summary><c>fused [--seconds 0.5]</c>: fused vs atomic cross-entropy and batch-norm backward at n=32/H=200 and n=4096/H=1024.</summary>
public static class FusedCompare
{
    public static int Run(string[] args)
    {
        double sec = double.Parse(Program.Opt(args, "--seconds", "0.5"), System.Globalization.CultureInfo.InvariantCulture);
        Console.WriteLine("| piece | n, H | fused µs | atomic chain µs | fused speed-up |");
        Console.WriteLine("|---|---|---|---|---|");
        foreach (var (n, h) in new[] { (32, 200), (4096, 1024) })
        {
            var k = new FusedCase(n, h);
            double f = Program.TimeUs(() => k.CeFused(), sec), a = Program.TimeUs(() => k.CeAtomic(), sec);
            Console.WriteLine($"| cross-entropy fwd+bwd (V=27) | {n}, {h} | {f:F2} | {a:F2} | {a / f:F1}× |");
            f = Program.TimeUs(k.BnFused, sec); a = Program.TimeUs(k.BnAtomic, sec);
            Console.WriteLine($"| tanh + batch-norm backward | {n}, {h} | {f:F2} | {a:F2} | {a / f:F1}× |");
        }
        return 0;
    }
}

[MemoryDiagnoser]
public class FusedVsAtomic
{
    [Params("32x200", "4096x1024")] public string Shape = "32x200";
    private FusedCase _k = null!;

    [GlobalSetup] public void Setup() { var p = Shape.Split('x'); _k = new FusedCase(int.Parse(p[0]), int.Parse(p[1])); }
    [Benchmark] public float CrossEntropyFused() => _k.CeFused();
    [Benchmark] public float CrossEntropyAtomic() => _k.CeAtomic();
    [Benchmark] public void BatchNormBackwardFused() => _k.BnFused();
    [Benchmark] public void BatchNormBackwardAtomic() => _k.BnAtomic();
}

[MemoryDiagnoser]
public class TrainingStep
{
    [Params("S", "M", "L")] public string Shape = "S";
    [Params(1, 2)] public int Threads = 1;
    private Networks.Network _cpu = null!;
    private int[] _x = null!, _y = null!;

    [GlobalSetup] public void Setup() => (_cpu, _x, _y) = Shapes.Make(Shapes.Get(Shape), Threads);
    [GlobalCleanup] public void Cleanup() => _cpu.Dispose();
    [Benchmark] public float Step() => _cpu.Step(_x, _y);
}

[MemoryDiagnoser]
public class SgemmVsOpenBlas
{
    [Params("S", "M", "L")] public string Shape = "S";
    [Params(1, 2)] public int Threads = 1;
    [Params(0, 1, 2, 3, 4, 5)] public int Product;
    private Products _p = null!;

    [GlobalSetup] public void Setup() { _p = new Products(Shapes.Get(Shape), Threads); OpenBlas.SetNumThreads(Threads); }
    [GlobalCleanup] public void Cleanup() => _p.Dispose();
    [Benchmark(Baseline = true)] public void OpenBLAS() => _p.Blas(_p.All[Product]);
    [Benchmark] public void HpBackprop() => _p.Ours(_p.All[Product]);
}

/// <summary>A training step of the lecture's deeper network (n = 32) and of a float-feature MLP (n = 256), as compiled stacks.</summary>
[MemoryDiagnoser]
public class StackStep
{
    [Params("deep", "mlp")] public string Stack = "deep";
    [Params(1, 2)] public int Threads = 1;
    private Networks.Network _net = null!;
    private Action _step = null!;

    [GlobalSetup] public void Setup() { var (layers, n) = StackBench.Get(Stack); _net = StackBench.Make(layers, n, Threads, out _step); }
    [GlobalCleanup] public void Cleanup() => _net.Dispose();
    [Benchmark] public void Step() => _step();
}
