using System.Globalization;
using CsCheck;
using HpBackprop.Networks;
using HpBackprop.Reference;
using NSeq = HpBackprop.Networks.Sequential;

namespace HpBackprop.TorchSharpTests;

/// <summary>
/// Random stacks, property-based (CsCheck): layers, widths, batch sizes, losses, the L2 penalty, batch-norm momentum,
/// optimisers, schedules, dropout seeds and steps drawn at random, each case compared with TorchSharp as the fixed cases
/// are (<see cref="Parity.Check"/>). The cases of a run are fixed: case i is drawn from CsCheck's PCG generator of
/// stream i and the seed <see cref="MasterSeed"/> (<c>HPB_TS_MASTER_SEED</c> draws another set), so CI runs the same
/// cases every time. A failing case is then given to <see cref="Check.Sample{T}(Gen{T}, Action{T}, Action{string}?, string?, long, int, int, Func{T, string}?, ISampleLogger?)"/>
/// with its seed, which explores further cases for a smaller failing one (shrinking) and fails with the seed of the
/// smallest: <c>CsCheck_Seed=SEED bash tests/torchsharp/run.sh --filter …</c> replays it.
/// </summary>
[TestClass]
public sealed class RandomStackTests
{
    /// <summary>The one-step cases of a run, and the 100-step trajectories of a run.</summary>
    public const int OneStepCases = 300, TrajectoryCases = 24, TrajectorySteps = 100;

    /// <summary>Cases CsCheck explores for a smaller failing one (<c>HPB_TS_SHRINK_ITER</c>, default 100).</summary>
    private static readonly int ShrinkIterations = int.TryParse(Environment.GetEnvironmentVariable("HPB_TS_SHRINK_ITER"), CultureInfo.InvariantCulture, out int n) && n > 0 ? n : 100;

    private static readonly ulong MasterSeed = ulong.TryParse(Environment.GetEnvironmentVariable("HPB_TS_MASTER_SEED"), CultureInfo.InvariantCulture, out ulong s) ? s : 20261207;

    private static Gen<Layer> Activation => Gen.OneOf(Gen.Const(Layer.Tanh()), Gen.Const(Layer.Relu()), Gen.Const(Layer.Sigmoid()));

    /// <summary>One hidden block: kind 0–7 (linear with or without bias, batch norm of either mode + an activation, tanh,
    /// relu, sigmoid, layer norm + an activation, dropout), a width, a flag and a rate.</summary>
    private static readonly Gen<(int Kind, int Width, bool Flag, int Rate, Layer Act)> Block =
        Gen.Select(Gen.Int[0, 7], Gen.Int[1, 12], Gen.Bool, Gen.Int[1, 5], Activation);

    private static readonly Gen<Optimizer> Optimizers = Gen.Frequency(
        (3, Gen.Select(Gen.Int[1, 4], Gen.Bool, Gen.Bool, (lr, m, wd) => (Optimizer)new Sgd { LearningRate = lr * 0.05f, Momentum = m ? 0.9f : 0, WeightDecay = wd ? 0.01f : 0 })),
        (2, Gen.Select(Gen.Int[1, 4], Gen.Bool, (lr, wd) => (Optimizer)new AdamW { LearningRate = lr * 0.005f, WeightDecay = wd ? 0.01f : 0 })));

    /// <summary>A schedule TorchSharp's schedulers express over <paramref name="steps"/> steps (see <see cref="Parity.TorchSchedule"/>).</summary>
    private static Gen<Schedule> Schedules(int steps) => Gen.Frequency(
        (2, Gen.Const(Schedule.Constant)),
        (1, Gen.Select(Gen.Int[(steps + 1) / 2, steps], Gen.Int[1, 5], (at, f) => (Schedule)new StepSchedule(at, f * 0.1f))),
        (1, Gen.Select(Gen.OneOf(Gen.Const(0), Gen.Int[2, Math.Max(2, steps / 4)]), Gen.Int[steps, 2 * steps], Gen.Bool,
            (w, t, min) => (Schedule)new CosineSchedule(w, t, min ? 1e-4f : 0))));

    /// <summary>A random valid case (the rules of tests/HpBackprop.Tests' random stacks: a nonlinearity after every batch
    /// norm and layer norm; layer norm over at least 4 features and n ≥ 4 under batch norm (below it, n rows keep n − 2 degrees of freedom, and at n = 3 the
    /// backward cancels all but one: LibTorch's CPU batch norm sums in double there, so its float32 error is far below that
    /// of any float-summing implementation; the fixed cases n2 and n2_biased cover the smallest batches); trajectories
    /// without the mean objective, which has no minimum and diverges; under AdamW no bias on a linear that feeds a batch norm, whose gradient is
    /// rounding noise that Adam would turn into ±lr steps; a step count other than 0 only with SGD, whose first step does not
    /// depend on it).</summary>
    private static Gen<ParityCase> Cases(int steps, bool trajectory) =>
        Gen.Select(Gen.Bool, Gen.Int[3, 12], Gen.Int[1, 4], Gen.Int[1, 3], Gen.Int[1, 8], Block.Array[1, 4],
                trajectory ? Gen.OneOf(Gen.Const(LossKind.CrossEntropy), Gen.Const(LossKind.Mse), Gen.Const(LossKind.BceWithLogits)) : Gen.Enum<LossKind>(), Gen.Int[1, 6])
        .SelectMany(t => Gen.Select(Gen.Int[2, 24], Gen.Bool, Gen.Bool, Optimizers, Schedules(steps), Gen.Int[0, 1000], Gen.Frequency((3, Gen.Const(0L)), (1, Gen.Long[1, 1L << 40])), Gen.Int[1, 1_000_000])
            .Select(u => Make(t, u)));

    private static ParityCase Make((bool Ids, int V, int E, int B, int D, (int Kind, int Width, bool Flag, int Rate, Layer Act)[] Blocks, LossKind Loss, int K) t,
        (int N, bool L2, bool Momentum, Optimizer Opt, Schedule Schedule, int DropoutSeed, long Step, int Seed) u)
    {
        var layers = new List<Layer>();
        int width, inputWidth;
        // under a batch norm or layer norm, an embedding of at least 4 ids and 2 features: the distinct inputs are the rows
        // that batch norm sees (3 ids of width 1 are a three-row batch however large n is)
        bool norms = t.Blocks.Any(b => b.Kind is 2 or 6);
        int v = norms ? Math.Max(4, t.V) : t.V, e = norms ? Math.Max(2, t.E) : t.E;
        if (t.Ids) { layers.Add(Layer.Embedding(v, e)); layers.Add(Layer.Flatten()); width = t.B * e; inputWidth = t.B; }
        else width = inputWidth = t.D;
        bool adam = u.Opt is AdamW;
        foreach (var b in t.Blocks)
            switch (b.Kind)
            {
                case 0: case 1: layers.Add(Layer.Linear(width, b.Width, b.Kind == 0 || b.Flag)); width = b.Width; break;
                case 2: layers.Add(Layer.BatchNorm1d(width, b.Flag ? BatchNormMode.Bessel : BatchNormMode.Biased)); layers.Add(b.Act); break;
                case 3: layers.Add(Layer.Tanh()); break;
                case 4: layers.Add(Layer.Relu()); break;
                case 5: layers.Add(Layer.Sigmoid()); break;
                case 6:
                    // over F ≥ 4 features (as batch norm over n ≥ 4 rows, below)
                    if (width >= 4) layers.Add(Layer.LayerNorm(width));
                    layers.Add(b.Act);
                    break;
                default: layers.Add(Layer.Dropout(b.Rate / 10f)); break;
            }
        int k = t.Loss == LossKind.CrossEntropy ? Math.Max(2, t.K) : t.K;
        layers.Add(Layer.Linear(width, k, true));
        if (adam)
            for (int i = 0; i + 1 < layers.Count; i++)
                if (layers[i].Kind == LayerKind.Linear && layers[i + 1].Kind == LayerKind.BatchNorm) layers[i] = layers[i] with { HasBias = false };
        var stack = new NSeq([.. layers]);
        int n = stack.BatchNormLayers().Count > 0 ? Math.Max(4, u.N) : u.N;
        return new ParityCase($"random-{u.Seed}", stack, t.Loss, n, inputWidth, u.Seed)
        {
            L2 = u.L2 ? 0.01 : 0,
            BnMomentum = u.Momentum ? 0.1f : 0.001f,
            Optimizer = u.Opt,
            Schedule = u.Schedule,
            DropoutSeed = u.DropoutSeed,
            Step = adam ? 0 : u.Step,
            Steps = TrajectorySteps,
        };
    }

    private static void Assertion(ParityCase c, int trajectorySteps)
    {
        var (failures, _) = Parity.Check(c, trajectorySteps);
        if (failures.Count > 0) throw new Exception(c + ":\n" + string.Join("\n", failures));
    }

    /// <summary>The cases of the run, deterministically; a failure is shrunk by CsCheck from its seed and reported with the smallest failing seed.</summary>
    private static void Run(int count, int steps, uint streamOffset)
    {
        var gen = Cases(Math.Max(steps, 20), steps > 0);
        // CsCheck_Seed replays one case (the seed a failure printed), shrinking from it
        if (Environment.GetEnvironmentVariable("CsCheck_Seed") is { Length: > 0 } replay)
        {
            gen.Sample(c => Assertion(c, steps), seed: replay, iter: 50, threads: 1, print: c => c.ToString());
            return;
        }
        int layersSeen = 0;
        var kinds = new HashSet<string>();
        for (int i = 0; i < count; i++)
        {
            var pcg = new PCG(streamOffset + (uint)i, MasterSeed);
            string seed = pcg.ToString();
            var c = gen.Generate(pcg, null, out _);
            layersSeen += c.Stack.Layers.Count;
            foreach (var l in c.Stack.Layers) kinds.Add(l.Kind == LayerKind.BatchNorm ? $"batchnorm:{l.Mode}" : l.Kind.ToString());
            kinds.Add(c.Loss.ToText());
            kinds.Add(c.Optimizer.GetType().Name);
            kinds.Add(c.Schedule.GetType().Name);
            var (failures, _) = Parity.Check(c, steps);
            if (failures.Count == 0) continue;
            if (Environment.GetEnvironmentVariable("HPB_TS_SURVEY") == "1") { Console.WriteLine($"SURVEY case {i}: {c}\n  {string.Join("\n  ", failures)}"); continue; }
            Console.WriteLine($"case {i} (seed {seed}) failed: {c}\n  {string.Join("\n  ", failures)}\nshrinking with CsCheck from that seed…");
            // throws with the smallest failing case and its seed
            gen.Sample(x => Assertion(x, steps), seed: seed, iter: ShrinkIterations, threads: 1, print: x => x.ToString());
            Assert.Fail($"case {i} (seed {seed}, master seed {MasterSeed}) failed but CsCheck did not reproduce it: {c}\n{string.Join("\n", failures)}");
        }
        Console.WriteLine($"{count} random cases passed ({(steps > 0 ? $"{steps}-step trajectories" : "one step each")}, master seed {MasterSeed}), {layersSeen} layers, covering {string.Join(", ", kinds.Order(StringComparer.Ordinal))}");
        foreach (var must in new[] { "Embedding", "Linear", "batchnorm:Bessel", "batchnorm:Biased", "LayerNorm", "Dropout", "Tanh", "Relu", "Sigmoid",
                     "cross_entropy", "mse", "bce_with_logits", "Sgd", "AdamW", "ConstantSchedule", "StepSchedule", "CosineSchedule" }.Concat(steps > 0 ? [] : ["mean"]))
            Assert.Contains(must, kinds, $"the {count} random cases never drew {must}");
    }

    [TestMethod]
    public void RandomStacksMatchTorchSharpInOneStep()
    {
        TorchSharpRuntime.Require();
        Run(OneStepCases, 0, 0);
    }

    [TestMethod]
    public void RandomStacksMatchTorchSharpOver100Steps()
    {
        TorchSharpRuntime.Require();
        Run(TrajectoryCases, TrajectorySteps, 1_000_000);
    }
}
