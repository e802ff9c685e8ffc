using HpBackprop.Model;

namespace HpBackprop.Tests;

/// <summary>Random models and minibatches for the property, finite-difference and determinism tests.</summary>
internal static class TestModels
{
    /// <summary>A SPEC §2-initialised parameter set (float) for <paramref name="config"/>, seeded.</summary>
    public static ParameterSet Initialized(ModelConfig config, int seed)
    {
        var p = new ParameterSet(config);
        p.Initialize(seed);
        return p;
    }

    /// <summary>The seven parameters of <paramref name="p"/> by SPEC name, converted (exactly, for double) to <typeparamref name="T"/>.</summary>
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
