using System.Globalization;
using HpBackprop.Networks;

namespace HpBackprop.TorchSharpTests;

/// <summary>
/// One parity case: a stack, its loss and options, and the seed its values are drawn from. The same case runs in
/// HpBackprop (float32) and in TorchSharp twice, in float32 and in float64 from the same float32 values; the float64
/// run is the truth, and TorchSharp's float32 error against it sets the tolerance of ours (<see cref="Parity"/>).
/// </summary>
internal sealed record ParityCase(string Name, Networks.Sequential Stack, LossKind Loss, int N, int InputWidth, int Seed)
{
    public double L2 { get; init; }
    public float BnMomentum { get; init; } = 0.001f;
    public Optimizer Optimizer { get; init; } = new Sgd { LearningRate = 0.1f };
    public Schedule Schedule { get; init; } = Schedule.Constant;
    public int DropoutSeed { get; init; } = 42;
    /// <summary>The network's step count before the case's step (the dropout masks' step).</summary>
    public long Step { get; init; }
    /// <summary>Steps of a trajectory.</summary>
    public int Steps { get; init; } = 20;
    /// <summary>Ids drawn from [0, IdRange) instead of [0, V) (repeated rows of the embedding).</summary>
    public int? IdRange { get; init; }
    /// <summary>Factors applied to a linear layer's initial weight and bias (large logits).</summary>
    public IReadOnlyDictionary<int, float> WeightScale { get; init; } = new Dictionary<int, float>();

    public int OutputWidth => Stack.Resolve(InputWidth)[^1].Width;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Name}: {Stack} + {Loss.ToText()}, n = {N}, width {InputWidth}, l2 {L2}, bn momentum {BnMomentum}, {Optimizer}, {Schedule}, dropout seed {DropoutSeed}, step {Step}, seed {Seed}");

    public NetworkOptions Options(int threads = 1) => new()
    {
        BatchSize = N, Loss = Loss, L2 = (float)L2, BatchNormMomentum = BnMomentum, Eps = 1e-5f, InputWidth = InputWidth,
        InputGradients = true, Optimizer = Optimizer, Schedule = Schedule, Seed = DropoutSeed, Threads = threads,
    };
}

/// <summary>The float32 values of a case: parameters and running statistics by state-dict name, and minibatches.</summary>
internal sealed class CaseData
{
    public required Dictionary<string, float[]> Values { get; init; }
    public Dictionary<string, long> Tracked { get; } = new(StringComparer.Ordinal);

    /// <summary>
    /// Small non-zero values everywhere (zeros hide wrong backward passes): embedding N(0,1); linear weight
    /// N(0,1)·gain/√IN (5/3 before a tanh), bias 0.1·N(0,1); batch-norm and layer-norm weight 1 + 0.1·N(0,1), bias
    /// 0.1·N(0,1); running_mean 0.1·N(0,1), running_var 1 + 0.1·|N(0,1)|. All rounded to float32.
    /// </summary>
    public static CaseData Draw(ParityCase c)
    {
        var rng = new Random(c.Seed);
        var values = new Dictionary<string, float[]>(StringComparer.Ordinal);
        var layers = c.Stack.Layers;
        foreach (var s in c.Stack.Parameters())
        {
            var l = layers[s.Layer];
            bool weight = s.Name.EndsWith(".weight", StringComparison.Ordinal);
            float scale = c.WeightScale.GetValueOrDefault(s.Layer, 1f);
            double gain = 1;
            if (l.Kind == LayerKind.Linear)
            {
                var next = layers.Skip(s.Layer + 1).FirstOrDefault(t => t.Kind is not (LayerKind.BatchNorm or LayerKind.LayerNorm or LayerKind.Dropout));
                gain = next?.Kind == LayerKind.Tanh ? 5.0 / 3 : 1;
            }
            var a = new float[s.Length];
            for (int i = 0; i < a.Length; i++)
                a[i] = (float)((l.Kind, weight) switch
                {
                    (LayerKind.Embedding, _) => Normal(rng),
                    (LayerKind.Linear, true) => Normal(rng) * gain / Math.Sqrt(l.In) * scale,
                    (LayerKind.BatchNorm or LayerKind.LayerNorm, true) => 1 + 0.1 * Normal(rng),
                    (LayerKind.Linear, false) => 0.1 * Normal(rng) * scale,
                    _ => 0.1 * Normal(rng),
                });
            values[s.Name] = a;
        }
        foreach (int i in c.Stack.BatchNormLayers())
        {
            int f = layers[i].In;
            values[$"{i}.running_mean"] = Enumerable.Range(0, f).Select(_ => (float)(0.1 * Normal(rng))).ToArray();
            values[$"{i}.running_var"] = Enumerable.Range(0, f).Select(_ => (float)(1 + 0.1 * Math.Abs(Normal(rng)))).ToArray();
        }
        return new CaseData { Values = values };
    }

    /// <summary>
    /// Minibatch <paramref name="index"/> of <paramref name="rows"/> rows: ids uniform (every id column takes at least
    /// min(3, n) values, so no batch-norm column is constant, and at least min(4, n) rows differ), features N(0,1); class ids uniform, mse targets N(0,1),
    /// bce targets uniform in [0,1] with every fifth exactly 0 or 1.
    /// </summary>
    public static Batch DrawBatch(ParityCase c, int index, int? rows = null)
    {
        int n = rows ?? c.N;
        var rng = new Random(c.Seed * 7919 + 104729 * (index + 1));
        var stack = c.Stack;
        int b = c.InputWidth, k = c.OutputWidth;
        int[]? ids = null;
        if (stack.TakesIds)
        {
            int range = c.IdRange ?? stack.Layers[0].In;
            int distinct = Math.Min(3, Math.Min(n, range));
            int rowsWanted = (int)Math.Min(Math.Min(4, n), Math.Pow(range, b));
            while (ids is null || Enumerable.Range(0, b).Any(col => Enumerable.Range(0, n).Select(i => ids[i * b + col]).Distinct().Count() < distinct)
                   || Enumerable.Range(0, n).Select(i => string.Join(",", ids.Skip(i * b).Take(b))).Distinct().Count() < rowsWanted)
                ids = Enumerable.Range(0, n * b).Select(_ => rng.Next(range)).ToArray();
        }
        float[]? x = stack.TakesIds ? null : Enumerable.Range(0, n * b).Select(_ => (float)Normal(rng)).ToArray();
        int[]? classes = c.Loss == LossKind.CrossEntropy ? Enumerable.Range(0, n).Select(_ => rng.Next(k)).ToArray() : null;
        float[]? t = c.Loss switch
        {
            LossKind.Mse => Enumerable.Range(0, n * k).Select(_ => (float)Normal(rng)).ToArray(),
            LossKind.BceWithLogits => Enumerable.Range(0, n * k).Select(i => i % 5 == 0 ? i % 2 : (float)rng.NextDouble()).ToArray(),
            _ => null,
        };
        return new Batch(n, ids, x, classes, t);
    }

    public static double Normal(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
}
