using System.Globalization;
using HpBackprop.Networks;

namespace HpBackprop.Reference;

/// <summary>
/// How a stack's gradients are compared with a truth (the double reference or PyTorch float64), shared by the tests and
/// the <c>check</c> and <c>grads</c> commands: a relative error is <c>max|diff| / scale</c>, the scale being the tensor's
/// largest magnitude, except for gradients that are zero by construction (<see cref="NearZero"/>), measured against
/// <see cref="NearZeroScale"/>. A float32 result may be at most <see cref="Float32Factor"/> times less accurate than an
/// independent float32 computation of the same tensor (PyTorch's), with a floor of <see cref="Float32Floor"/>; a double
/// result within <see cref="Float64Tolerance"/>.
/// </summary>
public static class StackParity
{
    /// <summary>How much less accurate than an independent float32 computation a float result may be.</summary>
    public const double Float32Factor = 8;

    /// <summary>32 units of float32 roundoff (32·2⁻²⁴ = 1.9e-6).</summary>
    public const double Float32Floor = 32 * 5.9604644775390625e-8;

    /// <summary>Double against double (other summation orders and library functions).</summary>
    public const double Float64Tolerance = 1e-10;

    /// <summary>The float32 tolerance of a tensor whose independent float32 error is <paramref name="independentError"/>.</summary>
    public static double Float32Tolerance(double independentError) => Float32Factor * Math.Max(independentError, Float32Floor);

    /// <summary>
    /// The bias gradients that are zero by construction and hold only rounding noise: the bias of a linear followed by a
    /// batch norm (directly or through further linears only), whose mean removes it. State-dict names, <c>{i}.bias</c>.
    /// </summary>
    public static IReadOnlySet<string> NearZero(Sequential stack)
    {
        ArgumentNullException.ThrowIfNull(stack);
        var set = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i + 1 < stack.Layers.Count; i++)
        {
            if (stack.Layers[i] is not { Kind: LayerKind.Linear, HasBias: true }) continue;
            int j = i + 1;
            while (j < stack.Layers.Count && stack.Layers[j].Kind == LayerKind.Linear) j++;
            if (j < stack.Layers.Count && stack.Layers[j].Kind == LayerKind.BatchNorm) set.Add(string.Create(CultureInfo.InvariantCulture, $"{i}.bias"));
        }
        return set;
    }

    /// <summary>
    /// The scale of the near-zero bias gradient <c>db = sum0(dy)</c> of layer <paramref name="layer"/>: <c>max_c Σ_r |dy[r,c]|</c>,
    /// the size of the terms whose cancellation leaves it ≈ 0 (its rounding noise is proportional to it), with dy the
    /// double reference's gradient of that layer's output.
    /// </summary>
    public static double NearZeroScale(StackResult<double> reference, int layer)
    {
        ArgumentNullException.ThrowIfNull(reference);
        var dy = reference.LayerOutputGradients[layer] ?? throw new ArgumentException($"the reference kept no output gradient of layer {layer}.", nameof(layer));
        int width = reference.Gradients[string.Create(CultureInfo.InvariantCulture, $"{layer}.bias")].Length;
        double m = 0;
        for (int c = 0; c < width; c++)
        {
            double s = 0;
            for (int r = c; r < dy.Length; r += width) s += Math.Abs(dy[r]);
            m = Math.Max(m, s);
        }
        return m;
    }

    /// <summary>The layer index of a state-dict name (<c>3.bias</c> → 3).</summary>
    public static int LayerOf(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return int.Parse(name.AsSpan(0, name.IndexOf('.')), CultureInfo.InvariantCulture);
    }

    /// <summary>The largest magnitude (0 for an empty span).</summary>
    public static double MaxAbs(ReadOnlySpan<double> a)
    {
        double m = 0;
        foreach (double x in a) m = Math.Max(m, Math.Abs(x));
        return m;
    }

    /// <summary>The largest absolute difference; NaN when any difference is NaN.</summary>
    public static double MaxAbsDiff(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"the tensors have {a.Length} and {b.Length} elements.", nameof(b));
        double m = 0;
        for (int i = 0; i < a.Length; i++)
        {
            double d = Math.Abs(a[i] - b[i]);
            if (double.IsNaN(d)) return double.NaN;
            m = Math.Max(m, d);
        }
        return m;
    }
}
