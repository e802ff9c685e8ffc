using System.Globalization;
using System.Text.RegularExpressions;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using HpBackprop.Bench;
using HpBackprop.Networks;
using HpBackprop.TorchSharpTests;
using TorchSharp;
using static TorchSharp.torch;

namespace HpBackprop.TorchSharpBench;

/// <summary>
/// One training step of a stack in TorchSharp, as a .NET user would write it: the stack's <c>nn.Sequential</c> (the
/// parity suite's <see cref="TorchStack"/>: with <c>nativeBatchNorm</c> TorchSharp's own <c>BatchNorm1d</c>, whose training
/// variance is the biased one; otherwise the lecture's Bessel batch norm as a module of TorchSharp operators), float32,
/// autograd, <c>torch.optim.SGD</c> at lr 0.01, and per step one dispose scope around zero_grad, forward,
/// cross-entropy, backward and step. Sixteen fixed random minibatches, taken in turn.
/// </summary>
public sealed class TorchStep : IDisposable
{
    private readonly TorchStack _ts;
    private readonly optim.Optimizer _opt;
    private readonly Tensor[] _xs, _ys;
    private int _i;

    /// <summary>Builds the model (parameters from <c>torch.manual_seed(42)</c>) and the minibatches; sets LibTorch's thread count.</summary>
    public TorchStep(string layers, int n, int threads, bool nativeBatchNorm = false)
    {
        torch.set_num_threads(threads);
        if (nativeBatchNorm) layers = Regex.Replace(layers, @"batchnorm:(\d+)(?![\d:])", "batchnorm:$1:biased");
        var stack = Sequential.Parse(layers);
        torch.manual_seed(42);
        _ts = new TorchStack(stack, LossKind.CrossEntropy, ScalarType.Float32);
        _ts.Model.train();
        _opt = optim.SGD(_ts.Model.parameters(), 0.01);
        var first = stack.Layers[0];
        int k = stack.Layers[^1].Out;
        _xs = new Tensor[16];
        _ys = new Tensor[16];
        for (int i = 0; i < 16; i++)
        {
            _xs[i] = stack.TakesIds ? torch.randint(0, first.In, [n, InputWidth(stack)], dtype: ScalarType.Int64) : torch.randn(n, first.In);
            _ys[i] = torch.randint(0, k, [n], dtype: ScalarType.Int64);
        }
    }

    /// <summary>Whether the stack has a batch norm (else the native variant is the same model).</summary>
    public static bool HasBatchNorm(string layers) => layers.Contains("batchnorm:", StringComparison.Ordinal);

    private static int InputWidth(Sequential s) => s.Layers[2].In / s.Layers[0].Out;

    /// <summary>One step: zero_grad, forward, cross-entropy, backward, SGD step, inside one dispose scope.</summary>
    public void Step()
    {
        using var scope = torch.NewDisposeScope();
        _opt.zero_grad();
        var z = _ts.Model.call(_xs[_i & 15]);
        var loss = nn.functional.cross_entropy(z, _ys[_i & 15]);
        loss.backward();
        _opt.step();
        _i++;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in _xs.Concat(_ys)) t.Dispose();
        _opt.Dispose();
        _ts.Dispose();
    }
}

/// <summary>
/// BenchmarkDotNet: one training step of the same stack in HpBackprop (<see cref="StackBench.Make"/>, as
/// <c>bench -- stack</c>) and in TorchSharp (<see cref="TorchStep"/>, its own <c>BatchNorm1d</c>), at S, M, L, the deep stack and the float-feature
/// MLP, 1 and 2 threads. In process (the apphost is the one given LibTorch's runtime), short runs.
/// </summary>
[Config(typeof(InProcessConfig))]
public class TrainingStep
{
    private Network? _net;
    private Action? _ours;
    private TorchStep? _torch;

    /// <summary>The shape (see <see cref="StackBench.Get"/>).</summary>
    [Params("S", "M", "L", "deep", "mlp")]
    public string Shape { get; set; } = "S";

    /// <summary>Threads of either side.</summary>
    [Params(1, 2)]
    public int Threads { get; set; } = 1;

    /// <summary>Builds both sides.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var (layers, n) = StackBench.Get(Shape);
        _net = StackBench.Make(layers, n, Threads, out _ours);
        _torch = new TorchStep(layers, n, Threads, nativeBatchNorm: true);
    }

    /// <summary>HpBackprop's compiled network.</summary>
    [Benchmark(Baseline = true)]
    public void HpBackprop() => _ours!();

    /// <summary>TorchSharp autograd.</summary>
    [Benchmark]
    public void TorchSharp() => _torch!.Step();

    /// <summary>Releases both sides.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _net?.Dispose();
        _torch?.Dispose();
    }

    private sealed class InProcessConfig : ManualConfig
    {
        public InProcessConfig() => AddJob(Job.ShortRun.WithToolchain(InProcessEmitToolchain.Instance));
    }
}

internal static class Program
{
    /// <summary>
    /// <c>side [--shapes S,M,L,deep,mlp] [--threads 1,2] [--seconds 1] [--rounds 3] [--bessel]</c>: HpBackprop and
    /// TorchSharp alternated round by round in this process, each round the median of 15 timed windows; a Markdown table
    /// (median of the rounds' medians, best window) and one JSON line per side and row. TorchSharp's batch norm is its own
    /// <c>BatchNorm1d</c> (LibTorch's fused kernel; its training variance divides by n where the lecture's divides by
    /// n − 1, the same work); <c>--bessel</c> adds a column with the lecture's batch norm written as a TorchSharp module
    /// (<see cref="BesselBatchNorm"/>, as the parity suite and the PyTorch baseline build it), which LibTorch runs
    /// operator by operator.
    /// Anything else goes to BenchmarkDotNet's switcher (<c>--filter *TrainingStep*</c>).
    /// </summary>
    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "side") return Side(args);
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
        return 0;
    }

    private static int Side(string[] args)
    {
        var inv = CultureInfo.InvariantCulture;
        var threads = Bench.Program.Opt(args, "--threads", "1,2").Split(',').Select(int.Parse).ToArray();
        var shapes = Bench.Program.Opt(args, "--shapes", "S,M,L,deep,mlp").Split(',');
        double seconds = double.Parse(Bench.Program.Opt(args, "--seconds", "1"), inv);
        int rounds = int.Parse(Bench.Program.Opt(args, "--rounds", "3"), inv);
        bool bessel = args.Contains("--bessel");
        Console.WriteLine($"TorchSharp {typeof(torch).Assembly.GetName().Version} (LibTorch CPU); {Environment.ProcessorCount} cores; "
            + $"the sides alternated {rounds} times per row, {seconds} s each");
        Console.WriteLine("| shape | n | threads | HpBackprop µs/step (best) | TorchSharp µs/step (best) | × vs TorchSharp |"
            + (bessel ? " TorchSharp, Bessel module µs (best) | × vs it |" : ""));
        Console.WriteLine("|---|---|---|---|---|---|" + (bessel ? "---|---|" : ""));
        var json = new List<string>();
        foreach (var s in shapes)
        {
            var (layers, n) = StackBench.Get(s);
            double secs = n >= 4096 ? seconds * 3 : seconds;
            foreach (int t in threads)
            {
                using var net = StackBench.Make(layers, n, t, out var ours);
                using var ts = new TorchStep(layers, n, t, nativeBatchNorm: true);
                using var tsb = bessel && TorchStep.HasBatchNorm(layers) ? new TorchStep(layers, n, t) : null;
                var o = new List<(double, double)>();
                var a = new List<(double, double)>();
                var b = new List<(double, double)>();
                for (int r = 0; r < rounds; r++)
                {
                    o.Add(Bench.Program.Time(ours, secs));
                    torch.set_num_threads(t);
                    a.Add(Bench.Program.Time(ts.Step, secs));
                    if (tsb != null) b.Add(Bench.Program.Time(tsb.Step, secs));
                }
                (double Median, double Min) Sum(List<(double Median, double Min)> v) =>
                    (v.Select(x => x.Median).Order().ElementAt(v.Count / 2), v.Min(x => x.Min));
                var (om, ob) = Sum(o);
                var (am, ab) = Sum(a);
                string extra = !bessel ? "" : " – | – |";
                if (b.Count > 0)
                {
                    var (bm, bb) = Sum(b);
                    extra = $" {bm:F1} ({bb:F1}) | {bm / om:F1}× |";
                    json.Add($"{{\"side\":\"torchsharp\",\"mode\":\"bessel_module\",\"shape\":\"{s}\",\"threads\":{t},\"us_median\":{bm.ToString("F2", inv)},\"us_min\":{bb.ToString("F2", inv)}}}");
                }
                Console.WriteLine($"| {s} | {n} | {t} | {om:F1} ({ob:F1}) | {am:F1} ({ab:F1}) | {am / om:F1}× |{extra}");
                json.Add($"{{\"side\":\"hpbackprop\",\"shape\":\"{s}\",\"threads\":{t},\"us_median\":{om.ToString("F2", inv)},\"us_min\":{ob.ToString("F2", inv)}}}");
                json.Add($"{{\"side\":\"torchsharp\",\"mode\":\"autograd\",\"shape\":\"{s}\",\"threads\":{t},\"us_median\":{am.ToString("F2", inv)},\"us_min\":{ab.ToString("F2", inv)}}}");
            }
        }
        foreach (var j in json) Console.WriteLine("JSON " + j);
        return 0;
    }
}
