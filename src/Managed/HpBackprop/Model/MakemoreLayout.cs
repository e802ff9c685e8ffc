using HpBackprop.Networks;

namespace HpBackprop.Model;

/// <summary>
/// The one mapping between the makemore MLP's <see cref="ParameterSet"/> (C, W1 <c>[K,H]</c>, b1, bngain, bnbias,
/// W2 <c>[H,V]</c>, b2 and the inference statistics) and the state dict of its stack
/// (<see cref="Sequential.Makemore"/>: <c>0.weight</c>, <c>2.weight</c> <c>[H,K]</c>, <c>2.bias</c>, <c>3.weight</c>,
/// <c>3.bias</c>, <c>3.running_mean</c>, <c>3.running_var</c>, <c>5.weight</c> <c>[V,H]</c>, <c>5.bias</c>): the linear
/// weights are transposed, everything else copied.
/// </summary>
internal static class MakemoreLayout
{
    private static readonly (string Spec, string StateDict)[] Copied = [("C", "0.weight"), ("b1", "2.bias"), ("bngain", "3.weight"), ("bnbias", "3.bias"), ("b2", "5.bias")];

    /// <summary>Copies <paramref name="p"/>'s values and inference statistics (and, with <paramref name="gradients"/>, its gradients) into <paramref name="s"/>.</summary>
    public static void ToStore(ParameterSet p, ParameterStore s, bool gradients)
    {
        var c = p.Config;
        foreach (var (spec, name) in Copied)
        {
            p.Value(spec).CopyTo(s.Value(name));
            if (gradients) p.Gradient(spec).CopyTo(s.Gradient(name));
        }
        Transpose(p.W1, s.Value("2.weight"), c.ContextWidth, c.HiddenSize);
        Transpose(p.W2, s.Value("5.weight"), c.HiddenSize, c.VocabSize);
        if (gradients)
        {
            Transpose(p.dW1, s.Gradient("2.weight"), c.ContextWidth, c.HiddenSize);
            Transpose(p.dW2, s.Gradient("5.weight"), c.HiddenSize, c.VocabSize);
        }
        p.RunningMean.CopyTo(s.Value("3.running_mean"));
        p.RunningVar.CopyTo(s.Value("3.running_var"));
    }

    /// <summary>The inverse of <see cref="ToStore"/>.</summary>
    public static void FromStore(ParameterStore s, ParameterSet p, bool gradients)
    {
        var c = p.Config;
        foreach (var (spec, name) in Copied)
        {
            s.Value(name).CopyTo(p.Value(spec));
            if (gradients) s.Gradient(name).CopyTo(p.Gradient(spec));
        }
        Transpose(s.Value("2.weight"), p.W1, c.HiddenSize, c.ContextWidth);
        Transpose(s.Value("5.weight"), p.W2, c.VocabSize, c.HiddenSize);
        if (gradients)
        {
            Transpose(s.Gradient("2.weight"), p.dW1, c.HiddenSize, c.ContextWidth);
            Transpose(s.Gradient("5.weight"), p.dW2, c.VocabSize, c.HiddenSize);
        }
        s.Value("3.running_mean").CopyTo(p.RunningMean);
        s.Value("3.running_var").CopyTo(p.RunningVar);
    }

    /// <summary><paramref name="t"/> <c>[cols,rows]</c> = <paramref name="a"/> <c>[rows,cols]</c>ᵀ.</summary>
    private static void Transpose(ReadOnlySpan<float> a, Span<float> t, int rows, int cols)
    {
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
    }
}
