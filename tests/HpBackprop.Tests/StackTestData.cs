using System.Globalization;
using HpBackprop.Networks;
using HpBackprop.Reference;

namespace HpBackprop.Tests;

/// <summary>Random stacks, parameters and minibatches for the finite-difference and property tests of the stack reference.</summary>
internal static class StackTestData
{
    /// <summary>
    /// Parameters in the spirit of docs/makemore.md §2's initialisation (small non-zero values everywhere: zeros hide
    /// wrong backward passes): embedding N(0,1); linear weight N(0,1)/√IN, bias 0.1·N(0,1); batch-norm
    /// and layer-norm gain 1 + 0.1·N(0,1), bias 0.1·N(0,1).
    /// </summary>
    public static Dictionary<string, double[]> Parameters(Sequential stack, Random rng)
    {
        var p = new Dictionary<string, double[]>(StringComparer.Ordinal);
        foreach (var s in stack.Parameters())
        {
            var l = stack.Layers[s.Layer];
            var a = new double[s.Length];
            bool weight = s.Name.EndsWith(".weight", StringComparison.Ordinal);
            for (int i = 0; i < a.Length; i++)
                a[i] = (l.Kind, weight) switch
                {
                    (LayerKind.Embedding, _) => Normal(rng),
                    (LayerKind.Linear, true) => Normal(rng) / Math.Sqrt(l.In),
                    (LayerKind.BatchNorm or LayerKind.LayerNorm, true) => 1 + 0.1 * Normal(rng),
                    _ => 0.1 * Normal(rng),
                };
            p[s.Name] = a;
        }
        return p;
    }

    /// <summary>A minibatch (n ≥ 2 for stacks on ids): ids uniform in [0, V) or features N(0,1); class ids uniform, mse targets N(0,1), bce targets uniform in [0,1] with some exactly 0 or 1.</summary>
    public static StackInput<double> Input(StackReference<double> r, int n, Random rng)
    {
        var stack = r.Stack;
        int k = r.OutputWidth;
        int b = r.InputWidth;
        int[]? ids = null;
        // every id position takes at least min(3, n) values. A constant column reaching a batch norm has
        // variance 0, and 1/sqrt(eps) ≈ 316 amplifies the rounding of its mean; a column of two values is
        // normalised to ±c whatever the values, so its gradient is eps-driven (as at n = 2). Both are legal
        // but degenerate batches that measure rounding, not formulas.
        int distinct = Math.Min(3, Math.Min(n, stack.Layers[0].In));
        while (stack.TakesIds && (ids is null || Enumerable.Range(0, b).Any(c => Enumerable.Range(0, n).Select(i => ids[i * b + c]).Distinct().Count() < distinct)))
            ids = Enumerable.Range(0, n * b).Select(_ => rng.Next(stack.Layers[0].In)).ToArray();
        double[]? x = stack.TakesIds ? null : Enumerable.Range(0, n * r.InputWidth).Select(_ => Normal(rng)).ToArray();
        int[]? classes = r.Loss == LossKind.CrossEntropy ? Enumerable.Range(0, n).Select(_ => rng.Next(k)).ToArray() : null;
        double[]? t = r.Loss switch
        {
            LossKind.Mse => Enumerable.Range(0, n * k).Select(_ => Normal(rng)).ToArray(),
            LossKind.BceWithLogits => Enumerable.Range(0, n * k).Select(i => i % 5 == 0 ? i % 2 : rng.NextDouble()).ToArray(),
            _ => null,
        };
        return new StackInput<double>(n, ids, x, classes, t);
    }

    public static double Normal(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

    /// <summary>
    /// A random valid stack: an embedding + flatten or float features, then 1–4 random layers (linear
    /// with or without bias, batch norm in either mode, layer norm, tanh, relu, sigmoid, dropout with a rate
    /// of 0.1–0.5), then a linear to k outputs (k ≥ 2 for cross-entropy), closed by a random loss.
    /// </summary>
    public static (Sequential Stack, LossKind Loss, int InputWidth) RandomStack(Random rng)
    {
        var layers = new List<Layer>();
        int width, inputWidth;
        if (rng.Next(2) == 0)
        {
            int v = rng.Next(3, 13), e = rng.Next(1, 5);
            inputWidth = rng.Next(1, 4);
            layers.Add(Layer.Embedding(v, e));
            layers.Add(Layer.Flatten());
            width = inputWidth * e;
        }
        else width = inputWidth = rng.Next(1, 9);
        int count = rng.Next(1, 5);
        for (int j = 0; j < count; j++)
        {
            switch (rng.Next(8))
            {
                case 0: case 1: { int o = rng.Next(1, 13); layers.Add(Layer.Linear(width, o, rng.Next(4) != 0)); width = o; break; }
                case 2:
                    // a nonlinearity right after every batch norm: otherwise a second batch norm (or, under
                    // the mean loss, the constant dz) makes the gradients below it zero by construction,
                    // and rounding noise has no meaningful relative error
                    layers.Add(Layer.BatchNorm1d(width, rng.Next(2) == 0 ? BatchNormMode.Bessel : BatchNormMode.Biased));
                    layers.Add(rng.Next(3) switch { 0 => Layer.Tanh(), 1 => Layer.Relu(), _ => Layer.Sigmoid() });
                    break;
                case 3: layers.Add(Layer.Tanh()); break;
                case 4: layers.Add(Layer.Relu()); break;
                case 5: layers.Add(Layer.Sigmoid()); break;
                case 6:
                    // a nonlinearity after the layer norm too (the same reason as for batch norm)
                    layers.Add(Layer.LayerNorm(width));
                    layers.Add(rng.Next(3) switch { 0 => Layer.Tanh(), 1 => Layer.Relu(), _ => Layer.Sigmoid() });
                    break;
                default: layers.Add(Layer.Dropout(rng.Next(1, 6) / 10f)); break;
            }
        }
        var loss = (LossKind)rng.Next(4);
        int k = rng.Next(loss == LossKind.CrossEntropy ? 2 : 1, 7);
        layers.Add(Layer.Linear(width, k, rng.Next(4) != 0));
        return (new Sequential([.. layers]), loss, inputWidth);
    }

    public static string Describe(Sequential stack, LossKind loss, int n) => string.Create(CultureInfo.InvariantCulture, $"{stack} + {loss.ToText()}, n = {n}");
}
