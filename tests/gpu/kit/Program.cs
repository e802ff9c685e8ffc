using System.Diagnostics;
using System.Globalization;
using HpBackprop.Cuda;
using HpBackprop.Cuda.Runtime;
using HpBackprop.Data;
using HpBackprop.Networks;

namespace HpBackprop.GpuKit;

/// <summary>
/// hpb-gpukit: the measuring side of tests/gpu/run-kit.sh. Modes:
///   env                      device, driver, where cuBLAS was found, the embedded PTX, how long the runtime took to start
///   smoke                    in well under 90 s: env, then 20 steps of parity on two stacks, then the step time at S
///   parity [--steps 100]     the same steps on the CPU network and the GPU one for every kind of stack: loss and parameter differences
///   steps [--shapes S,M,L,deep,mlp] [--seconds 1.5]   µs per training step on the GPU, in process, after warm-up
///   sanitize                 a short run over every device path, for compute-sanitizer
/// Exit codes: 0 ok; 1 a check failed; 2 usage; 3 no GPU (no driver, no device); 4 a GPU is there but cannot be used
/// (cuBLAS missing, the PTX refused by the driver, a context that cannot be made). Every mode prints markdown (and JSON
/// lines for steps) on stdout; the first line of a 3 or a 4 says which.
/// </summary>
internal static class Program
{
    private const int Ok = 0, Failed = 1, Usage = 2, NoGpu = 3, Unusable = 4;

    /// <summary>The shapes of the step-time table: the makemore MLP at S, M, L, the lecture's deep stack and a float-feature MLP.</summary>
    private static readonly (string Name, string Layers, int N, bool Features)[] Shapes =
    [
        ("S", "embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x27", 32, false),
        ("M", "embedding:27x24,flatten,linear:72x512,batchnorm:512,tanh,linear:512x27", 256, false),
        ("L", "embedding:27x32,flatten,linear:96x1024,batchnorm:1024,tanh,linear:1024x27", 4096, false),
        ("deep", "embedding:27x10,flatten,linear:30x100:nobias,batchnorm:100,tanh,linear:100x100:nobias,batchnorm:100,tanh,"
            + "linear:100x100:nobias,batchnorm:100,tanh,linear:100x100:nobias,batchnorm:100,tanh,linear:100x100:nobias,batchnorm:100,tanh,"
            + "linear:100x27:nobias,batchnorm:27", 32, false),
        ("mlp", "linear:64x256,relu,linear:256x256,relu,linear:256x10", 256, true),
    ];

    /// <summary>The parity cases: every layer kind, both batch-norm modes, both scatters, the large-V paths, the chunked reductions (n &gt; 256).</summary>
    private static readonly (string Name, string Layers, int N, bool Features, string Optimizer)[] ParityCases =
    [
        ("S makemore", Shapes[0].Layers, 32, false, "sgd:lr=0.1"),
        ("M makemore (n=256, one chunk)", Shapes[1].Layers, 256, false, "sgd:lr=0.05"),
        ("n=600 (three row chunks)", "embedding:27x8,flatten,linear:24x64,batchnorm:64:biased,relu,linear:64x27", 600, false, "sgd:lr=0.05,momentum=0.9"),
        ("deep", Shapes[3].Layers, 32, false, "sgd:lr=0.05"),
        ("mlp (features)", Shapes[4].Layers, 256, true, "sgd:lr=0.05,momentum=0.9,weight_decay=0.01"),
        ("layernorm + dropout", "linear:64x128,layernorm:128,relu,dropout:0.2,linear:128x128,batchnorm:128,sigmoid,linear:128x10", 64, true, "sgd:lr=0.05"),
        ("V=300 (sorted scatter)", "embedding:300x10,flatten,linear:30x64,batchnorm:64,tanh,linear:64x300", 64, false, "sgd:lr=0.1"),
        ("V=2148 (block cross-entropy)", "embedding:2148x10,flatten,linear:30x64,batchnorm:64,tanh,linear:64x2148", 64, false, "sgd:lr=0.1"),
    ];

    private static int Main(string[] args)
    {
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
        string mode = args.Length > 0 ? args[0] : "";
        if (mode is not ("env" or "smoke" or "parity" or "steps" or "sanitize"))
        {
            Console.Error.WriteLine("usage: hpb-gpukit env | smoke | parity [--steps N] | steps [--shapes S,M,L,deep,mlp] [--seconds S] | sanitize");
            return Usage;
        }
        if (CudaProbe.WhyUnavailable() is string why)
        {
            Console.WriteLine($"no GPU: {why}");
            return NoGpu;
        }
        try
        {
            return mode switch
            {
                "env" => Env(),
                "smoke" => Smoke(),
                "parity" => Parity(IntOption(args, "--steps", 100), ParityCases),
                "steps" => Steps(Option(args, "--shapes") ?? "S,M,L,deep,mlp", double.Parse(Option(args, "--seconds") ?? "1.5", CultureInfo.InvariantCulture)),
                _ => Sanitize(),
            };
        }
        catch (CudaUnavailableException e)
        {
            // the driver found a device, but something it needs cannot be had (cuBLAS, the PTX JIT, a context)
            Console.WriteLine($"GPU present but unusable: {e.Message}");
            return Unusable;
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
        Console.WriteLine($"kernels: {rt.LoadedCode}");
        Console.WriteLine($"runtime start (driver, context, PTX JIT of {EmbeddedPtx.All().Count()} modules, cuBLAS): {sw.Elapsed.TotalMilliseconds:F0} ms");
        return Ok;
    }

    /// <summary>What a short lease should bring back first: the device, parity on two stacks, one step time.</summary>
    private static int Smoke()
    {
        int rc = Env();
        Console.WriteLine();
        rc = Math.Max(rc, Parity(20, [ParityCases[0], ParityCases[5]]));
        Console.WriteLine();
        rc = Math.Max(rc, Steps("S", 0.5));
        return rc;
    }

    private static NetworkOptions Options(int n, string optimizer) => new() { BatchSize = n, Optimizer = Optimizer.Parse(optimizer) };

    /// <summary>Minibatches of ids (every fifth id 0: the boundary token repeats, as in real data) or features, and class ids.</summary>
    private static (int[] Ids, float[] Features, int[] Classes)[] Batches(Network net, int count, int seed)
    {
        var rng = new Random(seed);
        int n = net.BatchSize, w = net.InputWidth, k = net.OutputWidth;
        int V = net.Stack.TakesIds ? net.Stack.Layers[0].In : 0;
        var o = new (int[], float[], int[])[count];
        for (int b = 0; b < count; b++)
        {
            var ids = V > 0 ? Enumerable.Range(0, n * w).Select(i => i % 5 == 0 ? 0 : rng.Next(V)).ToArray() : [];
            var features = V > 0 ? [] : Enumerable.Range(0, n * w).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            o[b] = (ids, features, Enumerable.Range(0, n).Select(_ => rng.Next(k)).ToArray());
        }
        return o;
    }

    private static float Step(Network net, (int[] Ids, float[] Features, int[] Classes) b) =>
        net.Stack.TakesIds ? net.Step(b.Ids, b.Classes) : net.Step(b.Features, b.Classes);

    /// <summary>CPU vs GPU after the same steps on every parity case: the largest relative loss difference and the worst tensor.</summary>
    private static int Parity(int steps, (string Name, string Layers, int N, bool Features, string Optimizer)[] cases)
    {
        // the test suite's bound on plain SGD trajectories of a hundred steps, where rounding differences do not grow
        const double tolerance = 2e-4;
        Console.WriteLine($"| case | optimiser | steps | max relative loss difference | worst tensor: relative difference | verdict (≤ {tolerance:E0}) |");
        Console.WriteLine("|---|---|---|---|---|---|");
        bool ok = true;
        foreach (var (name, layers, n, _, optimizer) in cases)
        {
            var stack = Sequential.Parse(layers);
            using var cpu = Network.Create(stack, Options(n, optimizer));
            using var gpu = CudaNetwork.OnDevice(stack, Options(n, optimizer));
            cpu.Initialize(7);
            gpu.Initialize(7);
            var batches = Batches(cpu, 16, 11);
            double lossDiff = 0;
            for (int s = 0; s < steps; s++)
            {
                var b = batches[s % batches.Length];
                float a = Step(cpu, b), g = Step(gpu, b);
                lossDiff = Math.Max(lossDiff, Math.Abs(a - g) / Math.Max(1e-6, Math.Abs(a)));
            }
            gpu.PullParameters();
            string worst = "";
            double worstRel = 0;
            foreach (var slot in cpu.Parameters.Parameters.Concat(cpu.Parameters.RunningStatistics))
            {
                var a = cpu.Parameters.Value(slot.Name); var g = gpu.Parameters.Value(slot.Name);
                double scale = 0, diff = 0;
                for (int i = 0; i < a.Length; i++) { scale = Math.Max(scale, Math.Abs(a[i])); diff = Math.Max(diff, Math.Abs((double)a[i] - g[i])); }
                double rel = diff / Math.Max(scale, 1e-30);
                if (rel >= worstRel) { worstRel = rel; worst = slot.Name; }
            }
            bool pass = worstRel <= tolerance && lossDiff <= tolerance;
            ok &= pass;
            Console.WriteLine($"| {name} | {optimizer} | {steps} | {lossDiff:E2} | {worst}: {worstRel:E2} | {(pass ? "ok" : "DIFFERS")} |");
        }
        return ok ? Ok : Failed;
    }

    /// <summary>
    /// µs per training step on the GPU, median and best of 10 windows after warm-up, three ways: <c>Fit</c> with the set on
    /// the device (the minibatch drawn by the step's first kernel, the losses read once per window) replayed as one captured
    /// graph and with every kernel launched on the stream, and <c>Network.Step</c> with the minibatch staged, copied and
    /// its 4-byte loss read back every step (graph). PyTorch's side (torch_gpu_steps.py) keeps its batches on the device too.
    /// </summary>
    private static int Steps(string shapes, double seconds)
    {
        Console.WriteLine("| shape (stack, n) | launch | HpBackprop CUDA µs/step median (best) | launches/step | graph nodes | copies/step | bytes/step | steps timed |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|");
        var json = new List<string>();
        foreach (string s in shapes.Split(','))
        {
            var (name, layers, n, _) = Shapes.First(x => x.Name == s);
            foreach (string mode in new[] { "graph-resident", "stream-resident", "graph-staged" })
            {
                using var net = CudaNetwork.OnDevice(Sequential.Parse(layers), Options(n, "sgd:lr=0.01"));
                net.Initialize(42);
                var b = CudaNetwork.Backend(net)!;
                b.UseGraphs = mode != "stream-resident";
                var batches = Batches(net, 16, 42);
                var set = Set(batches, net);
                // room for every step timed (the run keeps a float per step: 4 MB)
                var run = new TrainingRun(7, 1_000_000);
                int k = 0;
                // one call: `count` steps (Fit reads the losses at its end, which waits for the device)
                void Many(int count)
                {
                    if (mode == "graph-staged") for (int i = 0; i < count; i++) Step(net, batches[k++ & 15]);
                    else
                    {
                        if (run.Completed + count > run.TotalSteps) run = new TrainingRun(7, run.TotalSteps);
                        net.Fit(set, run, untilStep: run.Completed + count);
                    }
                }
                var t0 = Stopwatch.StartNew();
                int calls = 0;
                while (calls < 200 && (calls < 20 || t0.Elapsed.TotalSeconds < seconds / 8)) { Many(1); calls++; }
                double per = t0.Elapsed.TotalSeconds / calls;
                int reps = Math.Max(5, (int)(seconds / 20 / per));
                var windows = new List<double>();
                var start = net.Traffic!.Value;
                for (int w = 0; w < 10; w++)
                {
                    var t = Stopwatch.StartNew();
                    Many(reps);
                    windows.Add(t.Elapsed.TotalMilliseconds * 1000 / reps);
                }
                var end = net.Traffic!.Value;
                double steps = end.Steps - start.Steps;
                windows.Sort();
                double median = (windows[4] + windows[5]) / 2, best = windows[0];
                double launches = (end.Launches - start.Launches) / steps, copies = (end.Copies - start.Copies) / steps, bytes = (end.Bytes - start.Bytes) / steps;
                Console.WriteLine($"| {name} (n={n}) | {mode} | {median:F1} ({best:F1}) | {launches:F3} | {end.GraphNodes} | {copies:F3} | {bytes:F2} | {10 * reps:N0} |");
                json.Add($"{{\"side\": \"hpbackprop-cuda-{mode}\", \"shape\": \"{name}\", \"us_median\": {median:F2}, \"us_min\": {best:F2}, \"launches\": {launches:F3}, \"graph_nodes\": {end.GraphNodes}}}");
            }
        }
        Console.WriteLine();
        foreach (string j in json) Console.WriteLine(j);
        return Ok;
    }

    /// <summary>The 16 minibatches as one example set (the set <c>Fit</c> keeps on the device).</summary>
    private static ExampleSet Set((int[] Ids, float[] Features, int[] Classes)[] batches, Network net) =>
        net.Stack.TakesIds
            ? ExampleSet.FromIds(batches.SelectMany(b => b.Ids).ToArray(), net.InputWidth, batches.SelectMany(b => b.Classes).ToArray())
            : ExampleSet.FromFeatures(batches.SelectMany(b => b.Features).ToArray(), net.InputWidth, batches.SelectMany(b => b.Classes).ToArray());

    /// <summary>A few steps over every device path (both scatters, dense and sorted; warp and block cross-entropy; one and several row chunks; every layer), calibration, evaluation and inference.</summary>
    private static int Sanitize()
    {
        var corpus = Corpus.FromLines(SyntheticWords(400), "synthetic");
        var split = DataSplit.Create(corpus, 3, 1);
        int V = split.Vocabulary.Size;
        foreach (var scatter in new[] { ScatterMode.Deterministic, ScatterMode.Atomic })
        {
            var stack = Sequential.Parse($"embedding:{V}x10,flatten,linear:30x64,batchnorm:64,tanh,dropout:0.1,linear:64x64,layernorm:64,relu,linear:64x{V}");
            using var gpu = CudaNetwork.OnDevice(stack, Options(32, "adamw:lr=0.01"), scatter);
            gpu.Initialize(3);
            var train = ExampleSet.FromWords(split.Train);
            gpu.Fit(train, 3, seed: 5);
            gpu.Calibrate(train);
            float dev = gpu.Evaluate(ExampleSet.FromWords(split.Dev));
            var probs = new float[V];
            gpu.Predict([0, 0, 0], 1, probs);
            gpu.PullParameters();
            Console.WriteLine($"every layer, {scatter} scatter: 3 steps, calibrate, dev loss {dev:F4}, inference");
        }
        // large V (sorted scatter, block cross-entropy with 256 and 1024 threads), n = 4096 (16 row chunks), float features with mse and bce
        foreach (var (layers, n, optimizer) in new[]
        {
            ("embedding:300x8,flatten,linear:24x32,batchnorm:32,tanh,linear:32x300", 48, "sgd:lr=0.1"),
            ("embedding:3000x8,flatten,linear:16x32,batchnorm:32:biased,tanh,linear:32x3000", 40, "sgd:lr=0.1,momentum=0.9"),
            ("embedding:17000x4,flatten,linear:8x16,batchnorm:16,tanh,linear:16x17000", 16, "sgd:lr=0.1"),
            ("embedding:27x8,flatten,linear:24x40,batchnorm:40,tanh,linear:40x27", 4096, "sgd:lr=0.1"),
        })
        {
            using var gpu = CudaNetwork.OnDevice(Sequential.Parse(layers), Options(n, optimizer));
            gpu.Initialize(9);
            float loss = float.NaN;
            foreach (var b in Batches(gpu, 2, 4)) loss = Step(gpu, b);
            Console.WriteLine($"{layers[..Math.Min(40, layers.Length)]}... n={n}: 2 steps, loss {loss:F4}");
        }
        foreach (var loss in new[] { LossKind.Mse, LossKind.BceWithLogits, LossKind.Mean })
        {
            using var gpu = CudaNetwork.OnDevice(Sequential.Parse("linear:8x16,layernorm:16,sigmoid,linear:16x4"),
                new NetworkOptions { BatchSize = 300, Loss = loss, L2 = 0.01f, Optimizer = new AdamW() });
            gpu.Initialize(2);
            var x = Enumerable.Range(0, 300 * 8).Select(i => (float)Math.Sin(i)).ToArray();
            var t = loss == LossKind.Mean ? [] : Enumerable.Range(0, 300 * 4).Select(i => (float)((Math.Cos(i) + 1) / 2)).ToArray();
            float l = gpu.Step(x, t);
            Console.WriteLine($"features with {loss.ToText()}, L2, AdamW, n=300: loss {l:F4}");
        }
        return Ok;
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
