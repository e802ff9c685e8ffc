using System.Diagnostics;
using BenchmarkDotNet.Running;

namespace HpBackprop.Bench;

internal static class Program
{
    /// <summary>
    /// <c>steps [--threads 1,2] [--shapes S,M,L] [--seconds 2]</c>: µs per training step, median of 5 timed
    /// windows, as a Markdown table and one JSON line per row (for the baselines runner).
    /// <c>gemm [--threads 1] [--openblas-core SkylakeX|auto]</c>: the six products of each shape against OpenBLAS
    /// (by default with its AVX-512 SkylakeX kernels, see <see cref="OpenBlas.SelectCore"/>).
    /// <c>fused</c>: fused vs atomic cross-entropy and batch-norm backward.
    /// <c>peak</c>: one core's FMA throughput (the roof for the GFLOP/s figures).
    /// <c>small-gemm [--n 32]</c>: a linear layer's three products at a small batch, general vs small-batch kernels (<see cref="SmallProducts"/>).
    /// <c>infer [--shapes makemore,mlp] [--threads 1,2] [--batches 1,32,4096]</c>: a batch of predictions through Predict and
    /// through ONNX Runtime running the ONNX export, alternated (<see cref="InferBench"/>).
    /// <c>gpu [--emulator]</c>: the CUDA benchmarks (BenchmarkDotNet on a GPU; "no CUDA device" otherwise).
    /// Anything else goes to BenchmarkDotNet's switcher (e.g. <c>--filter *Step*</c>).
    /// </summary>
    public static int Main(string[] args)
    {
        string mode = args.Length > 0 ? args[0] : "";
        // before anything loads OpenBLAS (see OpenBlas.SelectCore); "--openblas-core auto" keeps its own detection
        OpenBlas.SelectCore(Opt(args, "--openblas-core", "SkylakeX"));
        if (Array.IndexOf(args, "--openblas-core") is int i && i >= 0) args = [.. args[..i], .. args[Math.Min(args.Length, i + 2)..]];
        switch (mode)
        {
            case "steps": return Steps(args);
            case "gemm": return GemmCompare.Run(args);
            case "fused": return FusedCompare.Run(args);
            case "stages": return Stages.Run(args);
            case "peak": return Peak.Run(args);
            case "stack": return StackBench.Run(args);
            case "stack-stages": return StackBench.Stages(args);
            case "small-gemm": return SmallProducts.Run(args);
            case "infer": return InferBench.Run(args);
            case "gpu": return GpuBench.Run(args);
            default:
                BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
                return 0;
        }
    }

    internal static string Opt(string[] args, string name, string fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
    }

    /// <summary>
    /// Time per call of <paramref name="action"/> in µs after ≥0.5 s of warm-up (so the JIT has tiered up):
    /// the median and the minimum over <paramref name="windows"/> timed windows (each a mean over many calls).
    /// The machine is shared: the minimum is the least disturbed estimate, the median the typical one.
    /// </summary>
    internal static (double Median, double Min) Time(Action action, double seconds, int windows = 15)
    {
        var sw = Stopwatch.StartNew();
        int calls = 0;
        while (sw.Elapsed.TotalSeconds < Math.Max(0.5, seconds / 4) || calls < 5) { action(); calls++; }
        sw.Restart();
        int probe = Math.Max(3, calls / 10);
        for (int i = 0; i < probe; i++) action();
        double per = sw.Elapsed.TotalSeconds / probe;
        int reps = Math.Max(1, (int)(seconds / windows / per));
        var res = new double[windows];
        for (int w = 0; w < windows; w++)
        {
            sw.Restart();
            for (int r = 0; r < reps; r++) action();
            res[w] = sw.Elapsed.TotalMicroseconds / reps;
        }
        Array.Sort(res);
        return (res[windows / 2], res[0]);
    }

    /// <summary>The least disturbed time per call: the fastest of 200 short windows (robust on a shared machine).</summary>
    internal static double TimeUs(Action action, double seconds) => Time(action, seconds, 200).Min;

    private static int Steps(string[] args)
    {
        var threads = Opt(args, "--threads", "1,2").Split(',').Select(int.Parse).ToArray();
        var shapes = Opt(args, "--shapes", "S,M,L").Split(',');
        double seconds = double.Parse(Opt(args, "--seconds", "2"), System.Globalization.CultureInfo.InvariantCulture);
        Console.WriteLine("| shape | n, E, H | threads | µs/step (median) | µs/step (best window) | GFLOP/s (median) |");
        Console.WriteLine("|---|---|---|---|---|---|");
        var json = new List<string>();
        foreach (var s in shapes)
        {
            var cfg = Shapes.Get(s);
            foreach (int t in threads)
            {
                var (cpu, x, y) = Shapes.Make(cfg, t);
                using (cpu)
                {
                    var (us, best) = Time(() => cpu.Step(x, y), cfg.BatchSize >= 4096 ? seconds * 3 : seconds);
                    double gf = cfg.GemmFlopsPerStep / us / 1e3;
                    Console.WriteLine($"| {s} | {cfg.BatchSize}, {cfg.EmbeddingSize}, {cfg.HiddenSize} | {t} | {us:F1} | {best:F1} | {gf:F1} |");
                    var inv = System.Globalization.CultureInfo.InvariantCulture;
                    json.Add($"{{\"side\":\"hpbackprop\",\"shape\":\"{s}\",\"threads\":{t},\"us_median\":{us.ToString("F2", inv)},\"us_min\":{best.ToString("F2", inv)}}}");
                }
            }
        }
        foreach (var j in json) Console.WriteLine("JSON " + j);
        return 0;
    }
}
