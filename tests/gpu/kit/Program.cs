using System.Diagnostics;
using System.Globalization;
using HpBackprop.IO;
using HpBackprop.Cuda;
using HpBackprop.Cuda.Runtime;
using HpBackprop.Data;
using HpBackprop.Model;

namespace HpBackprop.GpuKit;

/// <summary>
/// hpb-gpukit: the measuring side of tests/gpu/run-kit.sh. Modes:
///   env                      device, driver, where cuBLAS was found, the embedded PTX (exit 3 without a GPU)
///   parity [--steps 100]     the same steps on the CPU network and the CUDA backend: loss and parameter differences
///   steps [--shapes S,M,L] [--seconds 1.5]   µs per training step on the GPU, in process, after warm-up
///   sanitize                 a short run over every device path, for compute-sanitizer
/// Every mode prints markdown (and JSON lines for steps) on stdout.
/// </summary>
internal static class Program
{
    private static readonly (string Name, ModelConfig Config)[] Shapes =
    [
        ("S", new ModelConfig(27, 3, 10, 200, 32)),
        ("M", new ModelConfig(27, 3, 24, 512, 256)),
        ("L", new ModelConfig(27, 3, 32, 1024, 4096)),
    ];

    private static int Main(string[] args)
    {
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
        string mode = args.Length > 0 ? args[0] : "";
        string? why = CudaProbe.WhyUnavailable();
        if (mode is not ("env" or "parity" or "steps" or "sanitize"))
        {
            Console.Error.WriteLine("usage: hpb-gpukit env | parity [--steps N] | steps [--shapes S,M,L] [--seconds S] | sanitize");
            return 2;
        }
        if (why != null)
        {
            Console.WriteLine($"no GPU: {why}");
            return 3;
        }
        try
        {
            return mode switch
            {
                "env" => Env(),
                "parity" => Parity(IntOption(args, "--steps", 100)),
                "steps" => Steps(Option(args, "--shapes") ?? "S,M,L", double.Parse(Option(args, "--seconds") ?? "1.5", CultureInfo.InvariantCulture)),
                _ => Sanitize(),
            };
        }
        catch (CudaUnavailableException e)
        {
            Console.WriteLine($"no usable GPU: {e.Message}");
            return 3;
        }
    }

    private static string? Option(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    private static int IntOption(string[] args, string name, int fallback) => Option(args, name) is string s ? int.Parse(s, CultureInfo.InvariantCulture) : fallback;

    private static int Env()
    {
        var sw = Stopwatch.StartNew();
        using var rt = new DriverRuntime();
        Console.WriteLine($"device: {rt.Name}");
        Console.WriteLine($"driver CUDA version: {rt.DriverVersion / 1000}.{rt.DriverVersion % 1000 / 10}");
        Console.WriteLine($"cuBLAS: {rt.CublasLibrary}");
        Console.WriteLine($"runtime start (driver, context, PTX JIT of {EmbeddedPtx.All().Count()} modules, cuBLAS): {sw.Elapsed.TotalMilliseconds:F0} ms");
        return 0;
    }

    private static (int[] X, int[] Y)[] RandomBatches(ModelConfig c, int count, int seed)
    {
        var rng = new Random(seed);
        var o = new (int[], int[])[count];
        for (int k = 0; k < count; k++)
        {
            var x = new int[c.BatchSize * c.BlockSize];
            var y = new int[c.BatchSize];
            // every fifth id is 0 (the boundary token repeats, as in real data)
            for (int i = 0; i < x.Length; i++) x[i] = i % 5 == 0 ? 0 : rng.Next(c.VocabSize);
            for (int i = 0; i < y.Length; i++) y[i] = rng.Next(c.VocabSize);
            o[k] = (x, y);
        }
        return o;
    }

    /// <summary>CPU vs CUDA after the same steps: the seeds' shape, M, and the large-V paths (sorted scatter, block cross-entropy).</summary>
    private static int Parity(int steps)
    {
        const double tolerance = 2e-4; // the float32 tolerance of the test suite (ParityTests.Float32Tolerance)
        (string Name, ModelConfig Config)[] cases =
        [
            Shapes[0], Shapes[1],
            ("V=300 (sorted scatter, 2 radix passes)", new ModelConfig(300, 3, 10, 64, 64)),
            ("V=2148 (block cross-entropy)", new ModelConfig(2148, 3, 10, 64, 64)),
        ];
        Console.WriteLine($"| case | steps | max relative loss difference | worst parameter: relative difference | verdict (≤ {tolerance:E0}) |");
        Console.WriteLine("|---|---|---|---|---|");
        bool ok = true;
        foreach (var (name, cfg) in cases)
        {
            var p1 = new ParameterSet(cfg); p1.Initialize(7);
            var p2 = new ParameterSet(cfg); p2.CopyFrom(p1);
            using var cpu = StackCheckpoint.FromParameterSet(p1, cfg.BatchSize); // the makemore stack as the CPU network: plain SGD, lr 0.1
            using var gpu = CudaBackend.OnDevice(p2);
            var batches = RandomBatches(cfg, 16, 11);
            double lossDiff = 0;
            for (int s = 0; s < steps; s++)
            {
                var (x, y) = batches[s % batches.Length];
                float a = cpu.Step(x, y), b = gpu.Step(x, y, 0.1f);
                lossDiff = Math.Max(lossDiff, Math.Abs(a - b) / Math.Max(1e-6, Math.Abs(a)));
            }
            gpu.PullParameters();
            StackCheckpoint.ToParameterSet(cpu, p1);
            string worst = "";
            double worstRel = 0;
            foreach (var info in p1.Layout)
            {
                var a = p1.Value(info.Name); var b = p2.Value(info.Name);
                double scale = 0, diff = 0;
                for (int i = 0; i < a.Length; i++) { scale = Math.Max(scale, Math.Abs(a[i])); diff = Math.Max(diff, Math.Abs((double)a[i] - b[i])); }
                double rel = diff / Math.Max(scale, 1e-30);
                if (rel >= worstRel) { worstRel = rel; worst = info.Name; }
            }
            bool pass = worstRel <= tolerance && lossDiff <= tolerance;
            ok &= pass;
            Console.WriteLine($"| {name} | {steps} | {lossDiff:E2} | {worst}: {worstRel:E2} | {(pass ? "ok" : "DIFFERS")} |");
        }
        return ok ? 0 : 1;
    }

    /// <summary>µs per training step on the GPU (StepWithoutLoss; one synchronisation per timed window), median and best of 10 windows after warm-up.</summary>
    private static int Steps(string shapes, double seconds)
    {
        Console.WriteLine("| shape (n, E, H) | HpBackprop CUDA µs/step median (best) | launches/step | steps timed |");
        Console.WriteLine("|---|---|---|---|");
        var json = new List<string>();
        foreach (string s in shapes.Split(','))
        {
            var cfg = Shapes.First(x => x.Name == s).Config;
            var p = new ParameterSet(cfg);
            p.Initialize(42);
            using var gpu = CudaBackend.OnDevice(p);
            var batches = RandomBatches(cfg, 16, 42);
            int k = 0;
            void One() { var (x, y) = batches[k++ & 15]; gpu.StepWithoutLoss(x, y, 0.01f); }
            // warm-up: JIT, cuBLAS heuristics, clocks — 200 steps or a quarter of the budget
            var t0 = Stopwatch.StartNew();
            int calls = 0;
            while (calls < 200 && (calls < 20 || t0.Elapsed.TotalSeconds < seconds / 4)) { One(); calls++; }
            gpu.LastLoss();
            double per = t0.Elapsed.TotalSeconds / calls;
            int reps = Math.Max(5, (int)(seconds / 10 / per));
            var windows = new List<double>();
            for (int w = 0; w < 10; w++)
            {
                var t = Stopwatch.StartNew();
                for (int r = 0; r < reps; r++) One();
                float loss = gpu.LastLoss();
                windows.Add(t.Elapsed.TotalMilliseconds * 1000 / reps);
                if (!float.IsFinite(loss)) throw new InvalidOperationException($"shape {s}: the loss is {loss}");
            }
            windows.Sort();
            double median = (windows[4] + windows[5]) / 2, best = windows[0];
            Console.WriteLine($"| {s} ({cfg.BatchSize}, {cfg.EmbeddingSize}, {cfg.HiddenSize}) | {median:F1} ({best:F1}) | {gpu.LaunchesPerStep} | {10 * reps:N0} |");
            json.Add($"{{\"side\": \"hpbackprop-cuda\", \"shape\": \"{s}\", \"us_median\": {median:F2}, \"us_min\": {best:F2}, \"launches\": {gpu.LaunchesPerStep}}}");
        }
        Console.WriteLine();
        foreach (string j in json) Console.WriteLine(j);
        return 0;
    }

    /// <summary>A few steps over every device path (both scatters, dense and sorted; warp and block cross-entropy; 256- and 1024-thread blocks), calibration, evaluation and inference.</summary>
    private static int Sanitize()
    {
        var corpus = Corpus.FromLines(SyntheticWords(400), "synthetic");
        var split = DataSplit.Create(corpus, 3, 1);
        foreach (var scatter in new[] { ScatterMode.Deterministic, ScatterMode.Atomic })
        {
            var p = new ParameterSet(new ModelConfig(split.Vocabulary.Size, 3, 10, 64, 32));
            p.Initialize(3);
            using var gpu = CudaBackend.OnDevice(p, scatter);
            var rng = new NormalRng(5);
            var x = new int[32 * 3]; var y = new int[32];
            for (int s = 0; s < 3; s++) { split.Train.DrawBatch(rng, x, y); gpu.Step(x, y, 0.1f); }
            gpu.Calibrate(split.Train);
            float dev = gpu.Evaluate(split.Dev);
            var logits = new float[p.Config.VocabSize];
            gpu.InferLogits([0, 0, 0], 1, logits);
            Console.WriteLine($"seed-like shape, {scatter} scatter: 3 steps, calibrate, dev loss {dev:F4}, inference");
        }
        // large V: sorted scatter with two radix passes, block cross-entropy with 256 and with 1024 threads; n=4096 takes the 1024-thread loss sum
        foreach (var cfg in new[] { new ModelConfig(300, 3, 8, 32, 48), new ModelConfig(3000, 2, 8, 32, 40), new ModelConfig(17000, 2, 4, 16, 16), new ModelConfig(27, 3, 8, 40, 4096) })
        {
            var p = new ParameterSet(cfg);
            p.Initialize(9);
            using var gpu = CudaBackend.OnDevice(p);
            foreach (var (x, y) in RandomBatches(cfg, 2, 4)) gpu.Step(x, y, 0.1f);
            Console.WriteLine($"V={cfg.VocabSize} n={cfg.BatchSize}: 2 steps, loss {gpu.LastLoss():F4}");
        }
        return 0;
    }

    private static IEnumerable<string> SyntheticWords(int count)
    {
        var rng = new Random(2);
        const string cons = "bcdfghjklmnprstvz", vow = "aeiouy";
        for (int i = 0; i < count; i++)
        {
            var w = new System.Text.StringBuilder();
            for (int s = 0, syl = 1 + rng.Next(3); s < syl; s++) { w.Append(cons[rng.Next(cons.Length)]); w.Append(vow[rng.Next(vow.Length)]); }
            yield return w.ToString();
        }
    }
}
