using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Networks;

namespace HpBackprop.Tests;

/// <summary>
/// The makemore MLP as the compiled CPU network (<see cref="Network"/> of <see cref="Sequential.Makemore"/>), built
/// from a <see cref="ParameterSet"/> and read back under the makemore names, so the oracle and reference-chain comparisons
/// see the same tensors as before: the buffers of the last step (<see cref="Intermediate"/>) and the parameters and
/// gradients with the linear weights transposed back to <c>W1 [B·E,H]</c> and <c>W2 [H,V]</c>.
/// </summary>
internal sealed class MakemoreNet : IDisposable
{
    /// <summary>
    /// Compiles the makemore stack of <paramref name="p"/>'s configuration holding its values, for minibatches of
    /// <see cref="ModelConfig.BatchSize"/> rows, with <paramref name="options"/> (threads, optimiser, schedule, batch-norm
    /// momentum; default plain SGD with lr 0.1, which fuses the update into the weight-gradient products).
    /// </summary>
    public MakemoreNet(ParameterSet p, NetworkOptions? options = null)
    {
        Config = p.Config;
        Net = StackCheckpoint.FromParameterSet(p, (options ?? new NetworkOptions()) with { BatchSize = Config.BatchSize });
    }

    public ModelConfig Config { get; }

    public Network Net { get; }

    public float ForwardBackward(int[] xb, int[] yb) => Net.ForwardBackward(xb, yb);

    /// <summary>One step with the network's optimiser and schedule.</summary>
    public float Step(int[] xb, int[] yb) => Net.Step(xb, yb);

    /// <summary>A buffer of the last step by makemore name (see <see cref="MakemoreView.Intermediate"/>).</summary>
    public float[] Intermediate(string name) => MakemoreView.Intermediate(Net, name);

    /// <summary>Values, gradients and running statistics in a new parameter set (makemore names and layout).</summary>
    public ParameterSet ToParameterSet()
    {
        var p = new ParameterSet(Config);
        StackCheckpoint.ToParameterSet(Net, p);
        return p;
    }

    /// <summary>The gradient of a parameter by makemore name (C, W1, b1, W2, b2, bngain, bnbias).</summary>
    public float[] Gradient(string name) => ToParameterSet().Gradient(name).ToArray();

    /// <summary>The examples of a data set of words, for <c>Fit</c>, <c>Evaluate</c> and <c>Calibrate</c>.</summary>
    public static ExampleSet Examples(HpBackprop.Data.Dataset d) => ExampleSet.FromWords(d);

    public void Dispose() => Net.Dispose();
}

/// <summary>Random models and minibatches for the property, finite-difference and determinism tests.</summary>
internal static class TestModels
{
    /// <summary>A docs/makemore.md §2-initialised parameter set (float) for <paramref name="config"/>, seeded.</summary>
    public static ParameterSet Initialized(ModelConfig config, int seed)
    {
        var p = new ParameterSet(config);
        p.Initialize(seed);
        return p;
    }

    /// <summary>The seven parameters of <paramref name="p"/> by makemore name, converted (exactly, for double) to <typeparamref name="T"/>.</summary>
    public static Dictionary<string, T[]> ParametersAs<T>(ParameterSet p) where T : System.Numerics.INumberBase<T> =>
        ParameterSet.Names.ToDictionary(name => name, name => p.Value(name).ToArray().Select(T.CreateChecked).ToArray(), StringComparer.Ordinal);

    /// <summary>
    /// A random minibatch of n rows with ids uniform in [0, V). Resampled until at least two
    /// contexts differ: with identical contexts every column of hprebn is constant, bnvar = 0 and
    /// bnvar_inv = 1/√eps ≈ 316 amplifies rounding noise (a legal but degenerate batch that
    /// measures rounding, not formulas).
    /// </summary>
    public static (int[] Xb, int[] Yb) RandomBatch(NormalRng rng, int n, int blockSize, int vocab)
    {
        while (true)
        {
            var xb = new int[n * blockSize];
            var yb = new int[n];
            for (int i = 0; i < xb.Length; i++) xb[i] = rng.NextInt(vocab);
            for (int i = 0; i < n; i++) yb[i] = rng.NextInt(vocab);
            for (int i = 1; i < n; i++)
                if (!xb.AsSpan(i * blockSize, blockSize).SequenceEqual(xb.AsSpan(0, blockSize))) return (xb, yb);
        }
    }

    /// <summary>max |a - b| over all elements divided by <paramref name="scale"/> (NaN propagates).</summary>
    public static double RelativeError(ReadOnlySpan<double> actual, ReadOnlySpan<double> expected, double scale)
    {
        double d = Oracle.MaxAbsDiff(actual, expected);
        return d / Math.Max(scale, 1e-300);
    }

    public static double[] ToDouble(ReadOnlySpan<float> a)
    {
        var o = new double[a.Length];
        for (int i = 0; i < a.Length; i++) o[i] = a[i];
        return o;
    }

    public static double[] ToDouble(float[] a) => ToDouble((ReadOnlySpan<float>)a);
}
