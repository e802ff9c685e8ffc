using CsCheck;
using HpBackprop.Cpu;
using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Networks;
using HpBackprop.Training;

namespace HpBackprop.Tests;

/// <summary>
/// Property-based fuzzing (CsCheck) of the library's public entry points, as an adversary would call them: stacks built
/// through the public <see cref="Layer"/> constructor with arbitrary values and enum casts (and valid stacks with one
/// layer broken), options with out-of-range numbers and undefined enums, and sequences of API calls with wrong sizes,
/// ids outside the table, NaN and infinite inputs, negative step counts and calls after Dispose. Every call must either
/// succeed or throw one of the exceptions the library documents (<see cref="ArgumentException"/> and its subclasses
/// <see cref="StackException"/>, <see cref="ShapeException"/>, <see cref="ArgumentOutOfRangeException"/>;
/// <see cref="ObjectDisposedException"/> after Dispose; <see cref="TrainingDivergedException"/> from Fit; <see cref="KeyNotFoundException"/>
/// from <see cref="ParameterStore.Value"/> of an unknown name) — never an
/// IndexOutOfRange, a NullReference, an overflow, and never a crash of the process (an access violation ends the test
/// run, which then fails). Seeded: every case is drawn from a PCG generator of stream (seed, case), and the seed and the
/// case number are in every failure message, so a failure replays exactly.
/// </summary>
[TestClass]
public sealed class PropertyFuzzTests
{
    private const ulong Seed = 20261207;

    /// <summary>The cases of each run.</summary>
    public const int StackCases = 3000, KernelCases = 3000;

    private static readonly Gen<int> Width = Gen.Frequency(
        (40, Gen.Int[1, 6]),
        (1, Gen.Int[-3, 0]),
        (1, Gen.OneOf(int.MinValue, int.MaxValue, 1 << 20, 100_000, 65_536)));

    private static readonly Gen<LayerKind> Kind = Gen.Frequency(
        (8, Gen.Enum<LayerKind>()),
        (1, Gen.Int[-3, 50].Select(i => (LayerKind)i)));

    private static readonly Gen<BatchNormMode> Mode = Gen.Frequency(
        (8, Gen.Enum<BatchNormMode>()),
        (1, Gen.Int[-2, 9].Select(i => (BatchNormMode)i)));

    /// <summary>Any layer the public constructor accepts: arbitrary kind, sizes, bias and mode.</summary>
    private static readonly Gen<Layer> AnyLayer = Gen.Select(Kind, Width, Width, Gen.Bool, Mode, (k, i, o, b, m) => new Layer(k, i, o, b, m));

    private static readonly Gen<float> Number = Gen.Frequency(
        (40, Gen.Float[0f, 0.9f]),
        (1, Gen.OneOf(-1f, 0f, 2f, 1e6f, float.NaN, float.PositiveInfinity, float.NegativeInfinity, float.Epsilon)));

    /// <summary>A stack whose widths fit together (features or ids), sometimes with one layer replaced by an arbitrary one.</summary>
    private static readonly Gen<Layer[]> Stacks =
        Gen.Select(Gen.Bool, Gen.Int[2, 6], Gen.Int[1, 3], Gen.Int[1, 3], Gen.Int[1, 5], Gen.Int[0, 3], Gen.Int[1, 4])
        .SelectMany(t =>
        {
            var (ids, v, e, b, d, hidden, k) = t;
            return Gen.Int[0, 3].Array[hidden].SelectMany(kinds => Gen.Int[1, 5].Array[hidden].SelectMany(widths =>
                Gen.Select(Gen.Int[0, 100], AnyLayer, (breakAt, broken) =>
                {
                    var list = new List<Layer>();
                    int w = d;
                    if (ids) { list.Add(Layer.Embedding(v, e)); list.Add(Layer.Flatten()); w = b * e; }
                    for (int i = 0; i < hidden; i++)
                        switch (!ids && i == 0 ? 0 : kinds[i])   // a stack on features starts with a linear, which gives its input width
                        {
                            case 0: list.Add(Layer.Linear(w, widths[i], widths[i] % 2 == 0)); w = widths[i]; break;
                            case 1: list.Add(Layer.BatchNorm1d(w, widths[i] % 2 == 0 ? BatchNormMode.Bessel : BatchNormMode.Biased)); break;
                            case 2: list.Add(widths[i] % 3 == 0 ? Layer.Tanh() : widths[i] % 3 == 1 ? Layer.Relu() : Layer.Sigmoid()); break;
                            default: list.Add(Layer.Flatten()); break;
                        }
                    list.Add(Layer.Linear(w, k));
                    if (breakAt < 15) list[breakAt % list.Count] = broken;   // one stack in seven gets one arbitrary layer
                    if (breakAt >= 97) return list.Where(l => l.Kind == LayerKind.Flatten).DefaultIfEmpty(Layer.Flatten()).ToArray();
                    return list.ToArray();
                })));
        });

    private static readonly Gen<Optimizer> Optimizers = Gen.Frequency(
        (3, Gen.Select(Number, Number, Number, (lr, m, wd) => (Optimizer)new Networks.Sgd { LearningRate = lr, Momentum = m, WeightDecay = wd })),
        (2, Gen.Select(Number, Number, Number, Number, (lr, b1, b2, eps) => (Optimizer)new AdamW { LearningRate = lr, Beta1 = b1, Beta2 = b2, Eps = eps })));

    private static readonly Gen<Schedule> Schedules = Gen.Frequency(
        (3, Gen.Const(Schedule.Constant)),
        (1, Gen.Select(Gen.Int[-2, 10], Number, (at, f) => (Schedule)new StepSchedule(at, f))),
        (1, Gen.Select(Gen.Int[-2, 10], Gen.Int[-2, 20], Number, (w, t, m) => (Schedule)new CosineSchedule(w, t, m))));

    private static readonly Gen<NetworkOptions> Options =
        Gen.Select(Gen.Frequency((30, Gen.Int[2, 6]), (3, Gen.Const(1)), (1, Gen.OneOf(0, -1, 100_000_000, int.MaxValue))),
                   Gen.Frequency((30, Gen.Enum<LossKind>()), (1, Gen.Int[-2, 99].Select(i => (LossKind)i))),
                   Gen.Frequency((30, Gen.Const(1)), (4, Gen.Const(2)), (1, Gen.OneOf(0, -1, 100))),
                   Gen.Select(Number, Number, Number, (l2, m, eps) => (l2: l2 < 0.5f ? 0f : l2, m, eps: eps == 0.5f ? 1e-5f : eps)),
                   Optimizers, Schedules,
                   Gen.Frequency((15, Gen.Const((int?)null)), (1, Gen.Int[-1, 6].Select(i => (int?)i))))
        .Select(t => new NetworkOptions
        {
            BatchSize = t.Item1, Loss = t.Item2, Threads = t.Item3, L2 = t.Item4.l2, BatchNormMomentum = t.Item4.m, Eps = t.Item4.eps,
            Optimizer = t.Item5, Schedule = t.Item6, InputWidth = t.Item7,
        });

    /// <summary>One call on the network: 0..9, with a draw that picks sizes and bad values.</summary>
    private static readonly Gen<(int Call, int Twist, int Seed)[]> Calls = Gen.Select(Gen.Int[0, 9], Gen.Int[0, 19], Gen.Int).Array[1, 8];

    private static bool Documented(Exception e, bool disposed) => e switch
    {
        ObjectDisposedException => disposed,
        ArgumentException => true,   // StackException, ShapeException, ArgumentOutOfRangeException among them
        TrainingDivergedException => true,
        KeyNotFoundException => true,   // ParameterStore.Value of a name the stack does not have
        _ => false,
    };

    private static T Draw<T>(Gen<T> gen, int i) => gen.Generate(new PCG((uint)i, Seed), null, out _);

    [TestMethod]
    public void StacksOptionsAndCallSequencesEndOnlyInDocumentedExceptions()
    {
        int compiled = 0, refused = 0, calls = 0, callsRefused = 0;
        var failures = new List<string>();
        // a budget of 256 MiB for this flow: a stack that is valid but large (a width of 2^20) is refused by the size check
        // (one more path under test) instead of allocating gigabytes
        using var budget = MemoryBudget.Limit(256L << 20);
        for (int i = 0; i < StackCases; i++)
        {
            var (layers, options, sequence) = Draw(Gen.Select(Stacks, Options, Calls), i);
            string what = $"seed {Seed}, case {i}: [{string.Join(",", layers.Select(l => $"{l.Kind}:{l.In}x{l.Out}{(l.HasBias ? "+b" : "")}:{l.Mode}"))}] {options}";
            Network? net = null;
            try
            {
                net = Network.Create(new Sequential(layers), options);
                compiled++;
            }
            catch (Exception e) when (Documented(e, false)) { refused++; continue; }
            catch (Exception e) { failures.Add($"{what}: Create threw {e.GetType().Name}: {e.Message}"); continue; }
            bool disposed = false;
            try
            {
                foreach (var (call, twist, seed) in sequence)
                {
                    calls++;
                    try
                    {
                        Call(net, call, twist, seed, ref disposed);
                    }
                    catch (Exception e) when (Documented(e, disposed)) { callsRefused++; }
                    catch (Exception e) { failures.Add($"{what}: call {call}/{twist} threw {e}"); break; }
                }
            }
            finally { net.Dispose(); }
            if (failures.Count > 5) break;
        }
        Console.WriteLine($"seed {Seed}: {StackCases} stacks, {compiled} compiled, {refused} refused; {calls} calls, {callsRefused} refused");
        Assert.AreEqual(0, failures.Count, string.Join("\n", failures));
        // the generator must reach both outcomes at both levels, or the test proves little
        Assert.IsTrue(compiled > StackCases / 5 && refused > StackCases / 5, $"compiled {compiled}, refused {refused}");
        Assert.IsTrue(calls - callsRefused > calls / 10 && callsRefused > calls / 10, $"{calls} calls, {callsRefused} refused");
    }

    /// <summary>One API call with inputs drawn from <paramref name="seed"/>, correct or twisted by <paramref name="twist"/>.</summary>
    private static void Call(Network net, int call, int twist, int seed, ref bool disposed)
    {
        var r = new Random(seed);
        int n = net.BatchSize, w = net.InputWidth, k = net.OutputWidth;
        int rows = twist == 1 ? n + 1 : twist == 2 ? Math.Max(0, n - 1) : n;
        int V = net.Stack.TakesIds ? net.Stack.Layers[0].In : 0;
        int[] Ids(int count)
        {
            var a = new int[count];
            for (int j = 0; j < a.Length; j++) a[j] = twist == 3 && j == a.Length - 1 ? V + r.Next(0, 3) : twist == 4 && j == 0 ? -1 - r.Next(0, 3) : twist == 5 ? int.MaxValue : r.Next(V);
            return a;
        }
        float[] Floats(int count, bool probabilities)
        {
            var a = new float[count];
            for (int j = 0; j < a.Length; j++) a[j] = probabilities ? r.NextSingle() : r.NextSingle() * 4 - 2;
            if (a.Length > 0 && twist == 6) a[r.Next(a.Length)] = float.NaN;
            if (a.Length > 0 && twist == 7) a[r.Next(a.Length)] = float.NegativeInfinity;
            if (a.Length > 0 && twist == 8) a[r.Next(a.Length)] = 1.5f;
            return a;
        }
        int[] Classes(int count)
        {
            var a = new int[count];
            for (int j = 0; j < a.Length; j++) a[j] = twist == 9 && j == 0 ? k + r.Next(0, 2) : twist == 10 && j == 0 ? -1 : r.Next(k);
            return a;
        }
        var loss = net.Options.Loss;
        bool classes = loss == LossKind.CrossEntropy, floats = loss is LossKind.Mse or LossKind.BceWithLogits;
        switch (call)
        {
            case 0: net.Initialize(seed); break;
            case 1:
            case 2:
                {
                    bool step = call == 1;
                    if (net.Stack.TakesIds != (twist == 11))   // twist 11: the wrong kind of input
                    {
                        var x = Ids(rows * w);
                        if (classes || twist == 12) { var c = Classes(rows); _ = step ? net.Step(x, c) : net.ForwardBackward(x, c); }
                        else { var t = floats ? Floats(rows * k, loss == LossKind.BceWithLogits) : []; _ = step ? net.Step(x, (ReadOnlySpan<float>)t) : net.ForwardBackward(x, (ReadOnlySpan<float>)t); }
                    }
                    else
                    {
                        var x = Floats(rows * w, false);
                        if (classes || twist == 12) { var c = Classes(rows); _ = step ? net.Step(x, c) : net.ForwardBackward(x, c); }
                        else { var t = floats ? Floats(rows * k, loss == LossKind.BceWithLogits) : []; _ = step ? net.Step(x, (ReadOnlySpan<float>)t) : net.ForwardBackward(x, (ReadOnlySpan<float>)t); }
                    }
                    break;
                }
            case 3:
            case 4:
            case 5:
                {
                    int count = 1 + r.Next(2 * Network.EvalChunk + 3) % (twist == 13 ? 3000 : 40);
                    ExampleSet data = net.Stack.TakesIds
                        ? ExampleSet.FromIds(Ids(count * w), w, Classes(count))
                        : classes ? ExampleSet.FromFeatures(Floats(count * w, false), w, Classes(count))
                        : floats ? ExampleSet.FromFeatures(Floats(count * w, false), w, Floats(count * k, loss == LossKind.BceWithLogits), k)
                        : ExampleSet.FromFeatures(Floats(count * w, false), w);
                    if (call == 3) net.Evaluate(data);
                    else if (call == 4) net.Calibrate(data);
                    else net.Fit(data, steps: 1 + r.Next(3), seed: seed);
                    break;
                }
            case 6:
                {
                    var output = new float[Math.Max(0, rows * k - (twist == 14 ? 1 : 0))];
                    if (net.Stack.TakesIds) net.Predict(Ids(rows * w), rows, output, raw: twist % 2 == 0);
                    else net.Predict(Floats(rows * w, false), rows, output, raw: twist % 2 == 0);
                    break;
                }
            case 7: net.StepCount = twist < 3 ? -1 - twist : twist * 1000L; break;
            case 8:
                if (twist < 2) { net.Dispose(); disposed = true; }
                break;
            default:
                _ = net.Parameters.Value(twist < 10 ? $"{twist}.weight" : "no.such");   // KeyNotFoundException is documented there
                break;
        }
    }

    [TestMethod]
    public void TheSpanKernelsRefuseSizesThatDoNotFitTheirSpans()
    {
        // the public span kernels behind the network: sizes drawn small, negative or past int's range when multiplied
        var size = Gen.Frequency((10, Gen.Int[0, 6]), (1, Gen.OneOf(-1, int.MinValue, 65_536, 1 << 20, int.MaxValue)));
        var gen = Gen.Select(Gen.Int[0, 7], size, size, size, Gen.Int[0, 40], Gen.Int[0, 40], Gen.Int[0, 40]);
        int ran = 0, refused = 0;
        for (int i = 0; i < KernelCases; i++)
        {
            var (kernel, m, k, n, la, lb, lc) = Draw(gen, i);
            var a = new float[la];
            var b = new float[lb];
            var c = new float[lc];
            var ids = new int[lb];
            for (int j = 0; j < ids.Length; j++) ids[j] = j % 3 - (i % 5 == 0 ? 1 : 0);
            try
            {
                switch (kernel)
                {
                    case 0: Gemm.NN(a, b, c, m, k, n); break;
                    case 1: Gemm.NT(a, b, c, m, k, n); break;
                    case 2: Gemm.TN(a, b, c, m, k, n); break;
                    case 3: Linear.Forward(a, b, c, c, m, k, n); break;
                    case 4: Linear.ColumnSum(a, c, m, k); break;
                    case 5: Embedding.Forward(a, ids, c, m, k, n); break;
                    case 6: Embedding.Backward(a, ids, c, m, k, n); break;
                    default: CrossEntropy.ForwardBackward(a, ids, c, m, k); break;
                }
                ran++;
            }
            catch (ArgumentException) { refused++; }
            catch (Exception e) { Assert.Fail($"seed {Seed}, case {i}: kernel {kernel} (m {m}, k {k}, n {n}, spans {la}/{lb}/{lc}) threw {e.GetType().Name}: {e.Message}"); }
        }
        Console.WriteLine($"seed {Seed}: {KernelCases} kernel calls, {ran} ran, {refused} refused");
        Assert.IsTrue(ran > KernelCases / 10 && refused > KernelCases / 10, $"ran {ran}, refused {refused}");
    }
}
