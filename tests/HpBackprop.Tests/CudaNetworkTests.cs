using System.Collections.Concurrent;
using System.Globalization;
using HpBackprop.Cuda;
using HpBackprop.Cuda.Gpu;
using HpBackprop.Cuda.Native;
using HpBackprop.Cuda.Runtime;
using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Networks;
using HpBackprop.Reference;

namespace HpBackprop.Tests;

/// <summary>
/// A <see cref="Network"/> on the GPU backend against the same network on the CPU and against the truth (PyTorch float64 or
/// the double reference): <see cref="CudaNetworkTests"/> runs these on the kernel emulator, <see cref="CudaNetworkDriverTests"/>
/// on the real driver (reported as not run — inconclusive — where there is no GPU, never as passed).
/// </summary>
/// <remarks>
/// The tolerance of every tensor is derived from an independent float32 computation of that case: PyTorch's float32 error
/// for the oracle's stacks, the float reference's for the random stacks and trajectories (<see cref="StackParity.Float32Tolerance"/>:
/// 8·max(that error, 32·2⁻²⁴)), and both the GPU and the CPU must be that accurate. Where the two devices share an order of
/// operations exactly (the dropout mask, the elementwise kernels, two runs of one device) the comparison is bitwise.
/// Every test runs twice: with the default reduction chunks (one chunk per batch at these sizes) and with chunks of
/// 3 rows, so the multi-chunk kernels (per-chunk partial sums added in order) run too.
/// </remarks>
public abstract partial class CudaNetworkTestsBase
{
    /// <summary>Run on the real CUDA driver instead of the emulator.</summary>
    protected abstract bool OnDriver { get; }

    private Network Gpu(Sequential stack, NetworkOptions options, int rowsPerChunk = CudaDevice.DefaultRowsPerChunk, ScatterMode scatter = ScatterMode.Deterministic) =>
        CudaNetwork.On(Devices.Open(OnDriver), stack, options, scatter, ownsRuntime: true, rowsPerChunk);

    private static Network NetworkOf(Func<Sequential, NetworkOptions, Network> create, StackBundle b, Optimizer? optimizer = null)
    {
        var net = create(b.Stack, new NetworkOptions
        {
            BatchSize = b.N, Loss = b.Loss, L2 = (float)b.L2, BatchNormMomentum = (float)b.BatchNormMomentum, Eps = (float)b.Eps, InputWidth = b.InputWidth,
            InputGradients = true, Seed = b.Seed, Optimizer = optimizer ?? new Sgd(),
        });
        foreach (var (name, v) in b.Parameters) Copy(v, net.Parameters.Value(name));
        foreach (var (name, v) in b.RunningStatistics) Copy(v, net.Parameters.Value(name));
        var bns = b.Stack.BatchNormLayers();
        for (int j = 0; j < bns.Count; j++)
            if (b.BatchesTracked.TryGetValue(BatchNormBuffers<double>.TrackedName(bns[j]), out long t)) net.Parameters.BatchesTracked[j] = t;
        net.StepCount = b.Step;
        net.PushParameters();
        return net;
    }

    private static void Copy(double[] from, Span<float> to)
    {
        Assert.AreEqual(from.Length, to.Length);
        for (int i = 0; i < from.Length; i++) to[i] = (float)from[i];
    }

    private static double[] D(ReadOnlySpan<float> a) { var o = new double[a.Length]; for (int i = 0; i < a.Length; i++) o[i] = a[i]; return o; }

    private static float ForwardBackward(Network net, StackInput<float> x, bool update)
    {
        if (x.Ids != null)
            return x.Classes != null ? (update ? net.Step(x.Ids, x.Classes) : net.ForwardBackward(x.Ids, x.Classes))
                : (update ? net.Step(x.Ids, (ReadOnlySpan<float>)(x.Targets ?? [])) : net.ForwardBackward(x.Ids, (ReadOnlySpan<float>)(x.Targets ?? [])));
        return x.Classes != null ? (update ? net.Step(x.Features, x.Classes) : net.ForwardBackward(x.Features, x.Classes))
            : (update ? net.Step(x.Features, (ReadOnlySpan<float>)(x.Targets ?? [])) : net.ForwardBackward(x.Features, (ReadOnlySpan<float>)(x.Targets ?? [])));
    }

    /// <summary>Every tensor of one forward and backward, after <see cref="Network.PullParameters"/>: loss, output, gradients, input and target gradients, running statistics.</summary>
    private static List<(string Name, double[] Values)> Tensors(Network net, float loss)
    {
        net.PullParameters();
        var list = new List<(string, double[])> { ("loss", [loss]), ("out", D(net.Output)) };
        foreach (var s in net.Parameters.Parameters) list.Add(("grad." + s.Name, D(net.Parameters.Gradient(s.Name))));
        if (net.InputGradient.Length > 0) list.Add(("grad.x", D(net.InputGradient)));
        if (net.TargetGradient.Length > 0) list.Add(("grad.y", D(net.TargetGradient)));
        foreach (var s in net.Parameters.RunningStatistics) list.Add(("after." + s.Name, D(net.Parameters.Value(s.Name))));
        return list;
    }

    public static IEnumerable<object[]> OracleCases => StackOracle.Cases.SelectMany(c => new[] { new object[] { c, CudaDevice.DefaultRowsPerChunk }, [c, 3] });

    /// <summary>
    /// Every stack of the oracle set (every layer, loss and the L2 penalty; ids and float inputs) on the GPU and on the CPU from
    /// the bundle's values: the loss, the output, every gradient by state-dict name, the input and target gradients and the
    /// running statistics are as accurate as PyTorch float32 against PyTorch float64 (the rule of the CPU's parity test).
    /// </summary>
    [TestMethod]
    [DynamicData(nameof(OracleCases))]
    public void EveryOracleStackMatchesTorchAndTheCpu(string name, int rowsPerChunk)
    {
        var b32 = StackOracle.Load(name, "f32");
        var b64 = StackOracle.Load(name, "f64");
        var e32 = b32.ReadExpected();
        var e64 = b64.ReadExpected();
        var r64 = b64.ReferenceAs<double>().Run(b64.InputAs<double>(), b64.ParametersAs<double>(), b64.BuffersAs<double>());
        using var gpu = NetworkOf((s, o) => Gpu(s, o, rowsPerChunk), b32);
        using var cpu = NetworkOf(Network.Create, b32);
        var g = Tensors(gpu, ForwardBackward(gpu, b32.InputAs<float>(), update: false)).ToDictionary(t => t.Name, t => t.Values);
        var c = Tensors(cpu, ForwardBackward(cpu, b32.InputAs<float>(), update: false)).ToDictionary(t => t.Name, t => t.Values);
        var nearZero = StackOracle.NearZero(b64.Stack).ToHashSet();
        var truth = new List<(string Name, double[] Truth, double[] Torch32, double Scale)>
        {
            ("loss", [e64.Loss], [e32.Loss], Math.Abs(e64.Loss)),
            ("out", e64.Out, e32.Out, Oracle.MaxAbs(e64.Out)),
        };
        foreach (var (gr, t) in e64.Gradients)
            truth.Add(("grad." + gr, t, e32.Gradients[gr], nearZero.Contains(gr) ? StackOracle.NearZeroScale(r64, StackParity.LayerOf(gr)) : Oracle.MaxAbs(t)));
        if (e64.InputGradient is { } gx) truth.Add(("grad.x", gx, e32.InputGradient!, Oracle.MaxAbs(gx)));
        if (e64.TargetGradient is { } gy) truth.Add(("grad.y", gy, e32.TargetGradient!, Oracle.MaxAbs(gy)));
        foreach (var (a, t) in e64.After) truth.Add(("after." + a, t, e32.After[a], Oracle.MaxAbs(t)));
        var torchErr = truth.ToDictionary(r => r.Name, r => StackOracle.Rel(r.Truth, r.Torch32, r.Scale));
        var failures = new List<string>();
        foreach (var r in truth)
        {
            double e = torchErr[r.Name];
            if (r.Name.StartsWith("grad.", StringComparison.Ordinal) && nearZero.Contains(r.Name[5..]))
                e = Math.Max(e, torchErr[r.Name.Replace(".bias", ".weight", StringComparison.Ordinal)]);
            double tol = StackParity.Float32Tolerance(e);
            double eg = StackOracle.Rel(r.Truth, g[r.Name], r.Scale), ec = StackOracle.Rel(r.Truth, c[r.Name], r.Scale);
            if (!(eg <= tol)) failures.Add(string.Create(CultureInfo.InvariantCulture, $"{r.Name}: gpu error {eg:E2} > {tol:E2} (cpu {ec:E2}, torch float32 {torchErr[r.Name]:E2})"));
        }
        Assert.IsEmpty(failures, $"{name} (chunks of {rowsPerChunk} rows): " + string.Join("; ", failures));
        CollectionAssert.AreEqual(cpu.Parameters.BatchesTracked, gpu.Parameters.BatchesTracked, "num_batches_tracked");
    }

    public static IEnumerable<object[]> RandomSeeds => Enumerable.Range(0, 32).Select(i => new object[] { 9100 + i, i % 2 == 0 ? CudaDevice.DefaultRowsPerChunk : 3 });

    /// <summary>
    /// 32 random stacks (every layer, loss and optimiser; ids and float inputs; L2 at times), one training step on the GPU
    /// and on the CPU from the same values: the loss, every gradient, the input and target gradients, the running statistics
    /// and the parameters after the step, each within 8× the float reference's own error against the double reference.
    /// </summary>
    [TestMethod]
    [DynamicData(nameof(RandomSeeds))]
    public void RandomStacksMatchTheCpuAndTheDoubleReference(int seed, int rowsPerChunk)
    {
        var rng = new Random(seed);
        var (stack, loss, width) = StackTestData.RandomStack(rng);
        int n = rng.Next(stack.BatchNormLayers().Count > 0 ? 3 : 2, 21);
        float l2 = rng.Next(3) == 0 ? 0.01f : 0;
        Optimizer optimizer = rng.Next(3) switch
        {
            0 => new Sgd { LearningRate = 0.1f },
            1 => new Sgd { LearningRate = 0.05f, Momentum = 0.9f, WeightDecay = 0.01f },
            _ => new AdamW { LearningRate = 0.01f },
        };
        var options = new NetworkOptions { BatchSize = n, Loss = loss, L2 = l2, InputWidth = width, InputGradients = true, Optimizer = optimizer, Seed = seed };
        var p = StackTestData.Parameters(stack, rng).ToDictionary(kv => kv.Key, kv => kv.Value.Select(v => (double)(float)v).ToArray(), StringComparer.Ordinal);
        var r64 = new StackReference<double>(stack, loss, width) { L2 = l2, Seed = (uint)seed };
        var r32 = new StackReference<float>(stack, loss, width) { L2 = l2, Seed = (uint)seed };
        var x = StackTestData.Input(r64, n, rng);
        x = x with { Features = x.Features?.Select(v => (double)(float)v).ToArray(), Targets = x.Targets?.Select(v => (double)(float)v).ToArray() };
        var x32 = new StackInput<float>(n, x.Ids, x.Features?.Select(v => (float)v).ToArray(), x.Classes, x.Targets?.Select(v => (float)v).ToArray());
        var truth = r64.Run(x, p);
        var f32 = r32.Run(x32, p.ToDictionary(kv => kv.Key, kv => kv.Value.Select(v => (float)v).ToArray(), StringComparer.Ordinal));
        var reference = new List<(string Name, double[] Truth, double[] Float)>
        {
            ("loss", [truth.Loss], [f32.Loss]),
            ("out", truth.Output, D(f32.Output)),
        };
        foreach (var (name, v) in truth.Gradients) reference.Add(("grad." + name, v, D(f32.Gradients[name])));
        if (truth.InputGradient is { } dx) reference.Add(("grad.x", dx, D(f32.InputGradient!)));
        if (truth.TargetGradient is { } dt) reference.Add(("grad.y", dt, D(f32.TargetGradient!)));
        foreach (var (name, v) in truth.Buffers.ByName) reference.Add(("after." + name, v, D(f32.Buffers.ByName[name])));

        using var gpu = Gpu(stack, options, rowsPerChunk);
        using var cpu = Network.Create(stack, options);
        foreach (var net in new[] { gpu, cpu })
        {
            foreach (var (name, v) in p) Copy(v, net.Parameters.Value(name));
            net.PushParameters();
        }
        var g = Tensors(gpu, ForwardBackward(gpu, x32, update: false)).ToDictionary(t => t.Name, t => t.Values);
        var c = Tensors(cpu, ForwardBackward(cpu, x32, update: false)).ToDictionary(t => t.Name, t => t.Values);
        var nearZero = StackParity.NearZero(stack);
        var failures = new List<string>();
        var scales = reference.ToDictionary(r => r.Name, r => nearZero.Contains(r.Name.Length > 5 ? r.Name[5..] : "") ? StackParity.NearZeroScale(truth, StackParity.LayerOf(r.Name[5..])) : Math.Max(Oracle.MaxAbs(r.Truth), 1e-30));
        foreach (var (name, t, f) in reference)
        {
            double e = StackOracle.Rel(t, f, scales[name]);
            if (name.StartsWith("grad.", StringComparison.Ordinal) && nearZero.Contains(name[5..]))
                e = Math.Max(e, StackOracle.Rel(truth.Gradients[name[5..].Replace(".bias", ".weight", StringComparison.Ordinal)], D(f32.Gradients[name[5..].Replace(".bias", ".weight", StringComparison.Ordinal)]), 1));
            double tol = StackParity.Float32Tolerance(e) * Math.Pow(2, stack.Layers.Count(l => l.Kind is LayerKind.BatchNorm or LayerKind.LayerNorm));
            double eg = StackOracle.Rel(t, g[name], scales[name]), ec = StackOracle.Rel(t, c[name], scales[name]);
            if (!(eg <= tol)) failures.Add(string.Create(CultureInfo.InvariantCulture, $"{name}: gpu {eg:E2} > {tol:E2} (cpu {ec:E2})"));
            if (!(ec <= tol)) failures.Add(string.Create(CultureInfo.InvariantCulture, $"{name}: cpu {ec:E2} > {tol:E2}"));
        }
        // and a step of the optimiser on both: the parameters after it
        ForwardBackward(gpu, x32, update: true);
        ForwardBackward(cpu, x32, update: true);
        gpu.PullParameters();
        foreach (var s in cpu.Parameters.Parameters)
        {
            double rel = CudaParity.Relative(cpu.Parameters.Value(s.Name), gpu.Parameters.Value(s.Name));
            if (!(rel <= 1e-4)) failures.Add(string.Create(CultureInfo.InvariantCulture, $"{s.Name} after a step: gpu vs cpu {rel:E2}"));
        }
        Assert.IsEmpty(failures, $"{StackTestData.Describe(stack, loss, n)}, {optimizer}, l2 {l2} (chunks of {rowsPerChunk}):\n" + string.Join("\n", failures));
    }

    public static IEnumerable<object[]> Trajectories =>
    [
        ["embedding:11x4,flatten,linear:12x16,batchnorm:16,tanh,linear:16x11", "cross_entropy", "sgd:lr=0.1,momentum=0.9,weight_decay=0.01", "constant", 0f],
        ["linear:5x16,layernorm:16,relu,dropout:0.2,linear:16x3", "mse", "adamw:lr=0.01", "cosine:warmup=10,total=100,min_lr=0.001", 0f],
        ["linear:6x12:nobias,batchnorm:12:biased,sigmoid,linear:12x4", "bce_with_logits", "adamw:lr=0.005,weight_decay=0.1", "step:at=50,factor=0.1", 0.001f],
    ];

    /// <summary>
    /// 100 steps on the GPU and the CPU from the same values and minibatches (SGD with momentum and weight decay, AdamW, the
    /// cosine and step schedules, L2, dropout): the losses, the parameters and the running statistics after the last step
    /// are as close to the double reference's trajectory as 8× the float reference's own drift (its 100 float steps).
    /// </summary>
    [TestMethod]
    [DynamicData(nameof(Trajectories))]
    public void HundredStepTrajectoriesMatchTheCpuAndTheDoubleReference(string layers, string lossText, string optimizerText, string scheduleText, float l2)
    {
        var stack = Sequential.Parse(layers);
        var loss = Losses.Parse(lossText);
        var optimizer = Optimizer.Parse(optimizerText);
        var schedule = Schedule.Parse(scheduleText);
        const int steps = 100, n = 16;
        var options = new NetworkOptions { BatchSize = n, Loss = loss, Optimizer = optimizer, Schedule = schedule, L2 = l2, Seed = 3 };
        using var gpu = Gpu(stack, options);
        using var cpu = Network.Create(stack, options);
        gpu.Initialize(7);
        cpu.Initialize(7);
        var rng = new Random(12);
        var r64 = new StackReference<double>(stack, loss) { L2 = l2, Seed = 3 };
        var r32 = new StackReference<float>(stack, loss) { L2 = l2, Seed = 3 };
        var p64 = cpu.Parameters.Parameters.ToDictionary(s => s.Name, s => D(cpu.Parameters.Value(s.Name)), StringComparer.Ordinal);
        var p32 = cpu.Parameters.Parameters.ToDictionary(s => s.Name, s => cpu.Parameters.Value(s.Name).ToArray(), StringComparer.Ordinal);
        var b64 = BatchNormBuffers<double>.Initial(stack);
        var b32 = BatchNormBuffers<float>.Initial(stack);
        var o64 = new ReferenceOptimizer<double>(optimizer, schedule);
        var o32 = new ReferenceOptimizer<float>(optimizer, schedule);
        var losses = new double[4, steps];
        for (int s = 0; s < steps; s++)
        {
            var x = StackTestData.Input(r64, n, rng);
            x = x with { Features = x.Features?.Select(v => (double)(float)v).ToArray(), Targets = x.Targets?.Select(v => (double)(float)v).ToArray() };
            var x32 = new StackInput<float>(n, x.Ids, x.Features?.Select(v => (float)v).ToArray(), x.Classes, x.Targets?.Select(v => (float)v).ToArray());
            losses[0, s] = r64.TrainStep(x, p64, b64, o64).Loss;
            losses[1, s] = r32.TrainStep(x32, p32, b32, o32).Loss;
            losses[2, s] = ForwardBackward(gpu, x32, update: true);
            losses[3, s] = ForwardBackward(cpu, x32, update: true);
        }
        gpu.PullParameters();
        var failures = new List<string>();
        void Check(string what, double[] truth, double[] f32, double[] g, double[] c)
        {
            double scale = Math.Max(Oracle.MaxAbs(truth), 1e-30);
            double tol = StackParity.Float32Tolerance(StackOracle.Rel(truth, f32, scale));
            double eg = StackOracle.Rel(truth, g, scale), ec = StackOracle.Rel(truth, c, scale);
            if (!(eg <= tol && ec <= tol)) failures.Add(string.Create(CultureInfo.InvariantCulture, $"{what}: gpu {eg:E2}, cpu {ec:E2}, tol {tol:E2}"));
        }
        double[] Row(int i) => Enumerable.Range(0, steps).Select(s => losses[i, s]).ToArray();
        Check("losses", Row(0), Row(1), Row(2), Row(3));
        foreach (var s in cpu.Parameters.Parameters) Check(s.Name, p64[s.Name], D(p32[s.Name]), D(gpu.Parameters.Value(s.Name)), D(cpu.Parameters.Value(s.Name)));
        foreach (var s in cpu.Parameters.RunningStatistics) Check(s.Name, b64.ByName[s.Name], D(b32.ByName[s.Name]), D(gpu.Parameters.Value(s.Name)), D(cpu.Parameters.Value(s.Name)));
        Assert.AreEqual(steps, gpu.StepCount);
        Assert.IsEmpty(failures, layers + ": " + string.Join("; ", failures));
    }

    /// <summary>
    /// Calibration, evaluation and prediction on the GPU give the CPU's statistics, losses and outputs for the same trained values
    /// (trained on the CPU and pushed: trained apart, AdamW turns the rounding noise of a bias before a batch norm, whose gradient is
    /// 0 but for rounding, into full-size steps, and the two devices' biases part, as two PyTorch runs with other summation orders would).
    /// Both sum the statistics in double over the same float inputs, which differ by the rounding of the layers before: measured
    /// ≤ 2e-6 relative; bound 1e-4.
    /// </summary>
    [TestMethod]
    [DataRow("embedding:27x6,flatten,linear:18x24,batchnorm:24,tanh,linear:24x24,batchnorm:24:biased,relu,linear:24x27", "cross_entropy")]
    [DataRow("linear:7x16,layernorm:16,sigmoid,dropout:0.5,linear:16x16,batchnorm:16,linear:16x2", "bce_with_logits")]
    public void CalibrateEvaluateAndPredictMatchTheCpu(string layers, string lossText)
    {
        var stack = Sequential.Parse(layers);
        var loss = Losses.Parse(lossText);
        var options = new NetworkOptions { BatchSize = 32, Loss = loss, Optimizer = new AdamW { LearningRate = 0.01f } };
        using var gpu = Gpu(stack, options);
        using var cpu = Network.Create(stack, options);
        var rng = new Random(3);
        int rows = 1500; // two inference chunks
        int w = cpu.InputWidth, k = cpu.OutputWidth;
        ExampleSet data = stack.TakesIds
            ? ExampleSet.FromIds(Enumerable.Range(0, rows * w).Select(_ => rng.Next(27)).ToArray(), w, Enumerable.Range(0, rows).Select(_ => rng.Next(k)).ToArray())
            : ExampleSet.FromFeatures(Enumerable.Range(0, rows * w).Select(_ => (float)StackTestData.Normal(rng)).ToArray(), w, Enumerable.Range(0, rows * k).Select(_ => (float)rng.NextDouble()).ToArray(), k);
        cpu.Initialize(5);
        cpu.Fit(data, 30, seed: 8);
        gpu.Parameters.CopyFrom(cpu.Parameters);
        gpu.PushParameters();
        foreach (var net in new[] { gpu, cpu })
        {
            net.Calibrate(data);
            net.PullParameters();
        }
        foreach (var s in cpu.Parameters.RunningStatistics)
            Assert.IsLessThanOrEqualTo(1e-4, CudaParity.Relative(cpu.Parameters.Value(s.Name), gpu.Parameters.Value(s.Name)), s.Name);
        float ec = cpu.Evaluate(data), eg = gpu.Evaluate(data);
        Assert.AreEqual(ec, eg, 1e-4 * Math.Abs(ec), "evaluate");
        var oc = new float[rows * k];
        var og = new float[rows * k];
        if (stack.TakesIds) { cpu.Predict(data.Ids, rows, oc); gpu.Predict(data.Ids, rows, og); }
        else { cpu.Predict(data.Features, rows, oc); gpu.Predict(data.Features, rows, og); }
        Assert.IsLessThanOrEqualTo(1e-4, CudaParity.Relative(oc, og), "predict");
    }

    /// <summary>
    /// The makemore recipe (SGD, the step schedule, minibatches drawn by Fit) for 200 steps on the GPU ends where the CPU's run
    /// does, within the float32 drift of this trajectory, measured here: the CPU run again from parameters moved by one unit of
    /// float32 rounding (a relative 2⁻²⁴ of random sign, what one rounding difference does). The GPU's distance from the CPU
    /// run (its sums are in other orders: rounding differences at every step) may be 10 times that drift, plus 1e-6.
    /// </summary>
    [TestMethod]
    public void TheMakemoreRecipeEndsWhereTheCpusDoesWithinTheFloat32Drift()
    {
        var words = Data.DataSplit.Create(Data.Corpus.FromLines(TempDir.SyntheticWords(300, 2), "synthetic"), 3, 1);
        int V = words.Vocabulary.Size;
        var stack = Sequential.Makemore(V, 3, 10, 32);
        var options = new NetworkOptions { BatchSize = 32, Schedule = new StepSchedule(100, 0.1f) };
        var train = ExampleSet.FromWords(words.Train);
        var dev = ExampleSet.FromWords(words.Dev);
        (float[] Params, float Dev) Run(Network net, bool perturb)
        {
            net.Initialize(42);
            if (perturb)
            {
                var rng = new Random(3);
                var d = net.Parameters.Data;
                for (int i = 0; i < d.Length; i++) d[i] *= 1 + (rng.Next(2) == 0 ? 1 : -1) * 5.9604645e-8f;
                net.PushParameters();
            }
            net.Fit(train, 200, seed: 7);
            net.PullParameters();
            return (net.Parameters.Data.ToArray(), net.Evaluate(dev));
        }
        using var cpu = Network.Create(stack, options);
        var a = Run(cpu, false);
        var b = Run(cpu, true);
        using var gpu = Gpu(stack, options);
        var c = Run(gpu, false);
        double drift = CudaParity.Relative(a.Params, b.Params), devDrift = Math.Abs(a.Dev - b.Dev) / a.Dev;
        double ours = CudaParity.Relative(a.Params, c.Params), devOurs = Math.Abs(a.Dev - c.Dev) / a.Dev;
        Console.WriteLine($"float32 drift: parameters {drift:E2}, dev loss {devDrift:E2}; gpu vs cpu: parameters {ours:E2}, dev loss {devOurs:E2}");
        Assert.IsGreaterThan(0, drift, "the perturbation must move the trajectory");
        Assert.IsLessThanOrEqualTo(10 * drift + 1e-6, ours, "parameters");
        Assert.IsLessThanOrEqualTo(10 * devDrift + 1e-6, devOurs, "dev loss");
    }

    /// <summary>Two GPU networks, the same values and minibatches: bitwise the same parameters, statistics and losses (every reduction in an order fixed by the shape).</summary>
    [TestMethod]
    [DataRow(CudaDevice.DefaultRowsPerChunk)]
    [DataRow(3)]
    public void TwoRunsAreBitwiseTheSame(int rowsPerChunk)
    {
        var stack = Sequential.Parse("embedding:300x4,flatten,dropout:0.1,linear:12x20,batchnorm:20,tanh,linear:20x20,layernorm:20,relu,linear:20x300");
        var options = new NetworkOptions { BatchSize = 24, Optimizer = new Sgd { LearningRate = 0.1f, Momentum = 0.9f }, L2 = 0.001f };
        var rng = new Random(6);
        var batches = Enumerable.Range(0, 4).Select(_ => (Enumerable.Range(0, 24 * 3).Select(_ => rng.Next(300)).ToArray(), Enumerable.Range(0, 24).Select(_ => rng.Next(300)).ToArray())).ToArray();
        float[][] Run()
        {
            using var net = Gpu(stack, options, rowsPerChunk);
            net.Initialize(2);
            var l = batches.Select(b => net.Step(b.Item1, b.Item2)).ToArray();
            net.PullParameters();
            return [l, net.Parameters.Data.ToArray(), net.Parameters.Buffers.ToArray(), net.Parameters.OptimizerState.ToArray()];
        }
        var a = Run();
        var b = Run();
        for (int i = 0; i < a.Length; i++)
            CollectionAssert.AreEqual(Array.ConvertAll(a[i], BitConverter.SingleToInt32Bits), Array.ConvertAll(b[i], BitConverter.SingleToInt32Bits), $"array {i}");
    }

    /// <summary>The GPU draws the CPU's dropout mask bitwise (dropout on the input: both multiply the same values by the same factor).</summary>
    [TestMethod]
    public void TheGpuDropsWhatTheCpuDrops()
    {
        var stack = Sequential.Parse("dropout:0.35,linear:40x3");
        var options = new NetworkOptions { BatchSize = 50, Loss = LossKind.Mse, Seed = 77 };
        using var gpu = Gpu(stack, options);
        using var cpu = Network.Create(stack, options);
        var rng = new Random(1);
        var x = Enumerable.Range(0, 50 * 40).Select(_ => (float)StackTestData.Normal(rng)).ToArray();
        var t = new float[50 * 3];
        foreach (var net in new[] { gpu, cpu }) { net.Initialize(1); net.StepCount = 5_000_000_000; net.ForwardBackward(x, t); }
        var dg = gpu.OpOutput(0).ToArray();
        var dc = cpu.OpOutput(0).ToArray();
        CollectionAssert.AreEqual(Array.ConvertAll(dc, BitConverter.SingleToInt32Bits), Array.ConvertAll(dg, BitConverter.SingleToInt32Bits), "the dropped input");
        var keep = new byte[dc.Length];
        DropoutMask.Fill(keep, 77, 0, 5_000_000_000, 0.35f);
        for (int i = 0; i < keep.Length; i++) Assert.AreEqual(keep[i] == 0, dg[i] == 0, $"element {i}");
    }

    [TestMethod]
    public void AStepAllocatesNothingOnTheManagedHeap()
    {
        var stack = Sequential.Parse("embedding:27x6,flatten,linear:18x16,batchnorm:16,tanh,dropout:0.2,linear:16x16,layernorm:16,relu,linear:16x27");
        using var gpu = Gpu(stack, new NetworkOptions { BatchSize = 16, Optimizer = new AdamW(), L2 = 0.01f });
        gpu.Initialize(1);
        var rng = new Random(2);
        var x = Enumerable.Range(0, 16 * 3).Select(_ => rng.Next(27)).ToArray();
        var y = Enumerable.Range(0, 16).Select(_ => rng.Next(27)).ToArray();
        gpu.Step(x, y); // warm up (JIT, kernel handles)
        gpu.Step(x, y); // the second step captures the graph
        gpu.ForwardBackward(x, y);
        long before = GC.GetAllocatedBytesForCurrentThread();
        gpu.Step(x, y);
        gpu.ForwardBackward(x, y);
        gpu.Step(x, y);
        Assert.AreEqual(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    /// <summary>
    /// The lecture's deep stack (six linear + batch-norm blocks, n = 32) with its set on the device: the first step launches
    /// its 34 kernels and GEMMs, every later one replays them as one graph of 34 nodes, and per step only the loss crosses
    /// (read with the others at the end), after the step state's one upload. Over a 1,000-step run that is (34 + 999) / 1000
    /// = 1.033 launches and 4.076 bytes per step, inside the 1.05 and 16.
    /// </summary>
    [TestMethod]
    public void TheDeepStackIsOneLaunchAndItsLossAStepAfterTheFirst()
    {
        const string deep = "embedding:27x10,flatten,linear:30x100:nobias,batchnorm:100,tanh,linear:100x100:nobias,batchnorm:100,tanh,"
            + "linear:100x100:nobias,batchnorm:100,tanh,linear:100x100:nobias,batchnorm:100,tanh,linear:100x100:nobias,batchnorm:100,tanh,"
            + "linear:100x27:nobias,batchnorm:27";
        using var gpu = Gpu(Sequential.Parse(deep), new NetworkOptions { BatchSize = 32 });
        var rng = new Random(6);
        var set = ExampleSet.FromIds(Enumerable.Range(0, 500 * 3).Select(_ => rng.Next(27)).ToArray(), 3, Enumerable.Range(0, 500).Select(_ => rng.Next(27)).ToArray());
        const int steps = 4;
        gpu.Fit(set, steps, seed: 3);
        var b = CudaNetwork.Backend(gpu)!;
        var t = gpu.Traffic!.Value;
        long first = t.Launches - (steps - 1);
        // step_begin (draw + gather); six GEMM + batch norm pairs; the loss (cross-entropy and its mean into the ring, one
        // kernel: the batch fits one block); six batch-norm backwards and twelve GEMMs; the scatter; SGD
        Assert.AreEqual(1 + 12 + 1 + 18 + 1 + 1, first, "the first step's launches");
        Assert.AreEqual(1, b.LaunchesPerStep, "the later steps replay the capture");
        if (b.DrawnGraph is EmulatedGraph eg)
        {
            var nodes = eg.Describe().ToArray();
            Assert.AreEqual(first, nodes.Length, string.Join(", ", nodes));
            Assert.AreEqual(18, nodes.Count(n => n == "gemm"), "GEMMs");
            Assert.AreEqual("kernel:step_begin", nodes[0]);
            Assert.IsFalse(nodes.Any(n => n is "kernel:embedding_forward" or "kernel:bias_add"), "the gather is step_begin's; no linear has a bias");
            Assert.AreEqual(1, nodes.Count(n => n == "kernel:cross_entropy_bias_loss"), "the loss in one kernel: " + string.Join(", ", nodes));
        }
        Assert.AreEqual(2, t.Copies, "the step state up once, the losses down once");
        Assert.AreEqual(StepState.HeaderBytes + StepState.RowFloats * 4 + steps * 4, t.Bytes);
        Assert.IsLessThanOrEqualTo(1.05, (first + 999) / 1000.0, "launches per step over a 1,000-step run");
    }

    /// <summary>
    /// The float-feature MLP (linear → relu twice, then linear and cross-entropy; n = 256) with its set on the device: each
    /// hidden linear's bias rides on the relu after it (added in its forward, summed from its input gradient in its
    /// backward), so no bias_add, activation_backward or column sum is a node of its own; with more rows than one reduction
    /// chunk the bias gradients' chunk sums are finished by column_finish_sum. Unfused the step is 19 and 21 nodes (two bias
    /// adds and two column sums more). On the emulator the Fit's losses are the CPU's, bitwise.
    /// </summary>
    [TestMethod]
    [DataRow(256, 15)]
    [DataRow(300, 17)]
    public void TheMlpsHiddenBiasesRideOnItsActivations(int n, int nodes)
    {
        var stack = Sequential.Parse("linear:64x256,relu,linear:256x256,relu,linear:256x10");
        var options = new NetworkOptions { BatchSize = n, Optimizer = new Sgd { LearningRate = 0.05f } };
        var rng = new Random(n);
        const int rows = 1000;
        var set = ExampleSet.FromFeatures(Enumerable.Range(0, rows * 64).Select(_ => (float)StackTestData.Normal(rng)).ToArray(), 64,
            Enumerable.Range(0, rows).Select(_ => rng.Next(10)).ToArray());
        using var gpu = Gpu(stack, options);
        using var cpu = Network.Create(stack, options);
        string plan = string.Join("\n", gpu.Plan);
        foreach (var row in new[] { Plan.BiasInActivation, Plan.BiasGradientFromActivation })
            Assert.AreEqual(4, System.Text.RegularExpressions.Regex.Matches(plan, System.Text.RegularExpressions.Regex.Escape(row)).Count, $"{row}: both linears and both relus\n{plan}");
        Assert.IsFalse(string.Join("\n", cpu.Plan).Contains(Plan.BiasInActivation, StringComparison.Ordinal), "the CPU does not run the row");
        gpu.Initialize(2);
        cpu.Initialize(2);
        const int steps = 3;
        var lg = new TrainingRun(5, steps); var lc = new TrainingRun(5, steps);
        gpu.Fit(set, lg);
        cpu.Fit(set, lc);
        var b = CudaNetwork.Backend(gpu)!;
        Assert.IsNotNull(b.DrawnGraph, "the device drew the minibatches");
        Assert.AreEqual(nodes, b.GraphNodes, "graph nodes");
        if (b.DrawnGraph is EmulatedGraph eg)
        {
            var names = eg.Describe().ToArray();
            string all = string.Join(", ", names);
            Assert.AreEqual(0, names.Count(x => x is "kernel:bias_add" or "kernel:activation_backward" or "kernel:column_partial_sum"), all);
            Assert.AreEqual(2, names.Count(x => x == "kernel:activation_forward"), all);
            Assert.AreEqual(2, names.Count(x => x == "kernel:activation_backward_column_sum"), all);
            Assert.AreEqual(n > CudaDevice.DefaultRowsPerChunk ? 2 : 0, names.Count(x => x == "kernel:column_finish_sum"), all);
        }
        // the emulator's products and reductions add in the CPU's order here: measured, the three losses are the CPU's bits at
        // both sizes (cuBLAS on a GPU adds in its own order: there the random stacks' tests bound the error)
        if (!OnDriver)
            CollectionAssert.AreEqual(lc.Losses, lg.Losses, "the CPU's losses, bitwise");
    }

    [TestMethod]
    public void TheMakemoreStepIsItsKernelsAndTwoUploadsAndOneReadThenOneGraph()
    {
        // step_begin; forward: gather, GEMM, batch norm + tanh (the first linear's bias and the running statistics inside), GEMM; cross-entropy with
        // the last bias, the loss's sum into the ring and db2 (one kernel); backward: 2 GEMMs, batch-norm backward (db1
        // inside), 2 GEMMs, scatter; SGD
        using var gpu = Gpu(Sequential.Makemore(27, 3, 10, 24), new NetworkOptions { BatchSize = 32 });
        gpu.Initialize(1);
        var rng = new Random(4);
        var x = Enumerable.Range(0, 96).Select(_ => rng.Next(27)).ToArray();
        var y = Enumerable.Range(0, 32).Select(_ => rng.Next(27)).ToArray();
        gpu.Step(x, y);
        var b = CudaNetwork.Backend(gpu)!;
        Assert.AreEqual(13, b.LaunchesPerStep, "the first step launches every kernel itself");
        Assert.AreEqual(4, b.CopiesPerStep, "the step state up, ids and classes up, the loss down");
        Assert.AreEqual(StepState.HeaderBytes + StepState.RowFloats * 4 + 96 * 4 + 32 * 4 + 4, b.BytesPerStep);
        gpu.Step(x, y);
        Assert.AreEqual(1, b.LaunchesPerStep, "the second replays the captured step");
        Assert.AreEqual(3, b.CopiesPerStep, "ids and classes up (nodes of the graph), the loss down");
        Assert.AreEqual(96 * 4 + 32 * 4 + 4, b.BytesPerStep);
        if (b.Graph is EmulatedGraph eg) Assert.AreEqual(15, eg.NodeCount, string.Join(", ", eg.Describe()));
        else Assert.IsGreaterThanOrEqualTo(15, b.GraphNodes, "cuBLAS may add nodes of its own");
        // the network's traffic adds the two steps up (what train --json reports per step)
        long first = StepState.HeaderBytes + StepState.RowFloats * 4 + 96 * 4 + 32 * 4 + 4, second = 96 * 4 + 32 * 4 + 4;
        Assert.AreEqual(new DeviceTraffic(2, 13 + 1, 4 + 3, first + second, b.GraphNodes), gpu.Traffic);
        Assert.AreEqual((first + second) / 2.0, gpu.Traffic!.Value.BytesPerStep);
        using var cpu = Network.Create(Sequential.Makemore(27, 3, 10, 24), new NetworkOptions { BatchSize = 32 });
        Assert.IsNull(cpu.Traffic, "a CPU network has no device traffic");
    }

    [TestMethod]
    public void AtomicScatterAgreesWithTheDeterministicOne()
    {
        var stack = Sequential.Parse("embedding:300x5,flatten,linear:15x8,tanh,linear:8x300");
        var options = new NetworkOptions { BatchSize = 40 };
        using var det = Gpu(stack, options);
        using var atomic = Gpu(stack, options, scatter: ScatterMode.Atomic);
        var rng = new Random(9);
        var x = Enumerable.Range(0, 120).Select(_ => rng.Next(7)).ToArray(); // many repeats
        var y = Enumerable.Range(0, 40).Select(_ => rng.Next(300)).ToArray();
        foreach (var net in new[] { det, atomic }) { net.Initialize(3); net.ForwardBackward(x, y); net.PullParameters(); }
        Assert.IsLessThanOrEqualTo(1e-5, CudaParity.Relative(det.Parameters.Gradient("0.weight"), atomic.Parameters.Gradient("0.weight")));
    }

    [TestMethod]
    public void ANetworkBuiltOnOneThreadTrainsOnAnother()
    {
        // The driver's current context is per thread: a network created here and stepped on a new thread must make its
        // context current there, and give bitwise the same parameters as the same steps on this thread.
        var stack = Sequential.Makemore(27, 3, 10, 24);
        var rng = new Random(2);
        var batches = Enumerable.Range(0, 4).Select(_ => (Enumerable.Range(0, 96).Select(_ => rng.Next(27)).ToArray(), Enumerable.Range(0, 32).Select(_ => rng.Next(27)).ToArray())).ToArray();
        using var here = Gpu(stack, new NetworkOptions());
        using var there = Gpu(stack, new NetworkOptions());
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
        CollectionAssert.AreEqual(Array.ConvertAll(here.Parameters.Data, BitConverter.SingleToInt32Bits), Array.ConvertAll(there.Parameters.Data, BitConverter.SingleToInt32Bits));
    }

    [TestMethod]
    public void InputsThatDoNotFitAreRejectedNamingWhatAsOnTheCpu()
    {
        using var gpu = Gpu(Sequential.Makemore(27, 3, 10, 8), new NetworkOptions { BatchSize = 4 });
        gpu.Initialize(1);
        int[] x = new int[12], y = new int[4];
        Assert.ThrowsExactly<ShapeException>(() => gpu.Step(x.AsSpan(0, 9), y));
        x[5] = 27;
        StringAssert.Contains(Assert.ThrowsExactly<ShapeException>(() => gpu.Step(x, y)).Message, "id 27");
        Assert.AreEqual(0, gpu.StepCount, "a rejected step is not counted");
        StringAssert.Contains(Assert.Throws<ArgumentException>(() => gpu.Evaluate(ExampleSet.FromIds(x, 3, y))).Message, "id 27");
        x[5] = 0;
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => gpu.Evaluate(ExampleSet.FromFeatures(new float[12], 3, y))).Message, "takes ids");
        Assert.ThrowsExactly<ShapeException>(() => gpu.Predict(x, 4, new float[3 * 27]));
    }

    /// <summary>A GPU network saves a checkpoint with its device values (Save pulls them), which loads on the CPU and predicts what the GPU predicts.</summary>
    [TestMethod]
    public void AGpuCheckpointLoadsOnTheCpu()
    {
        var stack = Sequential.Parse("linear:3x8,batchnorm:8,tanh,linear:8x2");
        using var gpu = Gpu(stack, new NetworkOptions { BatchSize = 8, Loss = LossKind.Mse });
        gpu.Initialize(1);
        var rng = new Random(3);
        var x = Enumerable.Range(0, 24).Select(_ => (float)StackTestData.Normal(rng)).ToArray();
        for (int s = 0; s < 5; s++) gpu.Step(x, new float[16]);
        using var dir = new TempDir();
        StackCheckpoint.Save(dir.File("m.safetensors"), gpu, null);
        var loaded = StackCheckpoint.Load(dir.File("m.safetensors"));
        using var cpu = loaded.Network;
        var a = new float[16];
        var b = new float[16];
        gpu.Predict(x, 8, a);
        cpu.Predict(x, 8, b);
        Assert.IsLessThanOrEqualTo(1e-4, CudaParity.Relative(b, a));
        using var fresh = Network.Create(stack, new NetworkOptions { BatchSize = 8, Loss = LossKind.Mse });
        fresh.Initialize(1);
        Assert.AreNotEqual(fresh.Parameters.Value("0.weight")[0], cpu.Parameters.Value("0.weight")[0], "the saved values are the trained ones, not the initial ones");
    }
}

/// <summary>The GPU backend on the kernel emulator (no GPU needed), and its checks (no device at all).</summary>
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
        Assert.IsGreaterThanOrEqualTo(30, emu.KernelNames.Count, string.Join(",", emu.KernelNames));
        foreach (string k in emu.KernelNames) StringAssert.Contains(ptx, ".entry " + k + "(", $"kernel {k} is missing from the embedded PTX");
    }

    /// <summary>
    /// The driver loads a fatbin per PTX module (build-ptx.sh builds it from that PTX: sm_80 and sm_90 machine code and the
    /// PTX, byte-checked by CI with cuobjdump's listing): one per module, under the same name, each a fatbin container
    /// (magic 0xBA55ED50) of more than a kilobyte.
    /// </summary>
    [TestMethod]
    public void EveryPtxModuleHasItsFatbin()
    {
        var ptx = EmbeddedPtx.All().Select(m => System.IO.Path.GetFileNameWithoutExtension(m.Name)).ToArray();
        var fatbins = EmbeddedPtx.Fatbins().ToArray();
        CollectionAssert.AreEqual(ptx, fatbins.Select(f => System.IO.Path.GetFileNameWithoutExtension(f.Name)).ToArray());
        foreach (var (name, image) in fatbins)
        {
            Assert.IsGreaterThan(1024, image.Length, name);
            Assert.AreEqual(0xBA55ED50u, BitConverter.ToUInt32(image, 0), $"{name} is not a fatbin");
        }
    }

    /// <summary>Every check comes before the runtime is used: a stack that does not fit gets the CPU's message from every factory.</summary>
    [TestMethod]
    public void TheChecksAreTheCpusAndComeBeforeTheRuntimeIsTouched()
    {
        var options = new NetworkOptions { BatchSize = 8 };
        var bad = Sequential.Parse("embedding:27x10,flatten,linear:40x200,batchnorm:200,tanh,linear:200x27");
        string cpu = Assert.ThrowsExactly<StackException>(() => Network.Check(bad, options with { InputWidth = 3 })).Message;
        Assert.AreEqual(cpu, Assert.ThrowsExactly<StackException>(() => CudaNetwork.On(new UntouchableRuntime(), bad, options with { InputWidth = 3 })).Message);
        cpu = Assert.ThrowsExactly<StackException>(() => Network.Check(Sequential.Makemore(27), options with { BatchSize = 1 })).Message;
        Assert.AreEqual(cpu, Assert.ThrowsExactly<StackException>(() => CudaNetwork.On(new UntouchableRuntime(), Sequential.Makemore(27), options with { BatchSize = 1 })).Message);
        Assert.AreEqual(cpu, Assert.ThrowsExactly<StackException>(() => CudaNetwork.OnEmulator(Sequential.Makemore(27), options with { BatchSize = 1 })).Message);
        Assert.AreEqual(cpu, Assert.ThrowsExactly<StackException>(() => CudaNetwork.OnDevice(Sequential.Makemore(27), options with { BatchSize = 1 })).Message);
    }

    /// <summary>The plan on the GPU: the fusions its ops run (not SGD in the weight-gradient epilogue, not the CPU's row-block pipeline).</summary>
    [TestMethod]
    public void TheGpuPlanRunsItsRowsOfTheFusionTable()
    {
        Devices.RequireEmulator();
        using var gpu = CudaNetwork.OnEmulator(Sequential.Makemore(27, 3, 10, 16), new NetworkOptions { BatchSize = 300 });
        string plan = string.Join("\n", gpu.Plan);
        StringAssert.Contains(plan, Plan.BatchNormActivation);
        StringAssert.Contains(plan, Plan.BiasGradientFromBatchNorm);
        StringAssert.Contains(plan, Plan.BiasInLoss);
        StringAssert.Contains(plan, Plan.BiasInBatchNorm);
        using (var large = CudaNetwork.OnEmulator(Sequential.Makemore(27, 3, 10, 16), new NetworkOptions { BatchSize = Plan.BiasInLossMaxRows + 1 }))
            Assert.IsFalse(string.Join("\n", large.Plan).Contains(Plan.BiasInLoss, StringComparison.Ordinal), "a batch larger than one block keeps the five kernels");
        Assert.IsFalse(plan.Contains(Plan.SgdInEpilogue, StringComparison.Ordinal) || plan.Contains(Plan.RowBlockPipeline, StringComparison.Ordinal), plan);
        Assert.AreEqual("cuda-emulator", gpu.Device);
    }

    /// <summary>A device runtime that fails every call: proves that checks come before any allocation.</summary>
    private sealed unsafe class UntouchableRuntime : IDeviceRuntime
    {
        private static InvalidOperationException Touched() => new("the runtime was used before the checks finished");
        public string Name => throw Touched();
        public DeviceMemory Allocate(long bytes) => throw Touched();
        public DeviceEvent CreateEvent() => throw Touched();
        public void CopyToDevice(ulong dst, void* src, long bytes) => throw Touched();
        public void CopyToHost(void* dst, ulong src, long bytes) => throw Touched();
        public void CopyOnDevice(ulong dst, ulong src, long bytes) => throw Touched();
        public void Zero(ulong dst, long bytes) => throw Touched();
        public Kernel GetKernel(string name) => throw Touched();
        public void Launch(Kernel kernel, Dim3 grid, Dim3 block, uint sharedBytes, void** args) => throw Touched();
        public void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha, ulong a, int lda, ulong b, int ldb, float beta, ulong c, int ldc) => throw Touched();
        public void Synchronize() => throw Touched();
        public PinnedMemory AllocatePinned(long bytes) => throw Touched();
        public void CopyToDeviceAsync(ulong dst, void* pinnedSource, long bytes) => throw Touched();
        public bool IsCapturing => throw Touched();
        public void BeginCapture() => throw Touched();
        public DeviceGraph EndCapture() => throw Touched();
        public void Launch(DeviceGraph graph) => throw Touched();
        public void Dispose() { }
    }
}

/// <summary>The GPU backend on the real driver and cuBLAS; not run (inconclusive) without a GPU.</summary>
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
