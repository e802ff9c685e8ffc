using System.Globalization;

namespace HpBackprop.Networks;

/// <summary>The kinds of layer a <see cref="Sequential"/> stack is built from.</summary>
public enum LayerKind
{
    /// <summary><c>embedding:VxE</c>: ids <c>[n,B]</c> → rows of a <c>[V,E]</c> table, <c>[n,B,E]</c> (torch.nn.Embedding).</summary>
    Embedding,
    /// <summary><c>flatten</c>: <c>[n,B,E]</c> → <c>[n,B·E]</c> (torch.nn.Flatten(1)); a no-op on <c>[n,D]</c>.</summary>
    Flatten,
    /// <summary><c>linear:INxOUT[:nobias]</c>: <c>y = x·weightᵀ + bias</c> with weight <c>[OUT,IN]</c> (torch.nn.Linear).</summary>
    Linear,
    /// <summary><c>batchnorm:F[:biased]</c>: batch normalisation over the rows of <c>[n,F]</c> (see <see cref="BatchNormMode"/>).</summary>
    BatchNorm,
    /// <summary><c>tanh</c>, elementwise.</summary>
    Tanh,
    /// <summary><c>relu</c>: <c>max(x, 0)</c>, elementwise.</summary>
    Relu,
    /// <summary><c>sigmoid</c>: <c>1/(1+exp(−x))</c>, elementwise.</summary>
    Sigmoid,
    /// <summary><c>layernorm:F</c>: each row of <c>[n,F]</c> normalised over its F features, with a per-feature gain and bias (torch.nn.LayerNorm(F)).</summary>
    LayerNorm,
    /// <summary><c>dropout:P</c>: in training each element is zeroed with probability P and the rest scaled by <c>1/(1−P)</c>; the identity in inference (torch.nn.Dropout(P)).</summary>
    Dropout,
}

/// <summary>How a batch-norm layer normalises in training mode.</summary>
public enum BatchNormMode
{
    /// <summary>The lecture's: the batch variance with Bessel's correction (over <c>n−1</c>), in training and at inference.</summary>
    Bessel,
    /// <summary>PyTorch's <c>BatchNorm1d</c> in training mode: the variance over <c>n</c> (the running variance still takes the <c>n−1</c> one).</summary>
    Biased,
}

/// <summary>
/// One layer of a <see cref="Sequential"/> stack: what it is and its widths. Create layers with the
/// static factories (<see cref="Linear"/>, <see cref="BatchNorm1d"/>, …) or parse the text form with
/// <see cref="Parse"/>; <see cref="ToString"/> prints the text form. A layer built with the constructor is
/// checked when a network is compiled (<see cref="Network.Check"/>): widths of at least 1, a defined
/// <see cref="LayerKind"/>, batch norm and layer norm with <c>In == Out</c>, a dropout rate in [0, 1).
/// </summary>
/// <param name="Kind">The kind of layer.</param>
/// <param name="In">Embedding: the number of ids V; linear: IN; batch norm and layer norm: F; otherwise 0.</param>
/// <param name="Out">Embedding: the width E; linear: OUT; batch norm and layer norm: F; otherwise 0.</param>
/// <param name="HasBias">Linear only: whether the layer has a bias.</param>
/// <param name="Mode">Batch norm only: how it normalises.</param>
/// <param name="Rate">Dropout only: the probability P that an element is zeroed, in [0, 1).</param>
public sealed record Layer(LayerKind Kind, int In = 0, int Out = 0, bool HasBias = false, BatchNormMode Mode = BatchNormMode.Bessel, float Rate = 0f)
{
    /// <summary>An embedding table of <paramref name="count"/> rows of width <paramref name="width"/> (<c>embedding:VxE</c>).</summary>
    public static Layer Embedding(int count, int width) => new(LayerKind.Embedding, count, width);

    /// <summary>Flattens <c>[n,B,E]</c> to <c>[n,B·E]</c> (<c>flatten</c>).</summary>
    public static Layer Flatten() => new(LayerKind.Flatten);

    /// <summary>A linear layer <c>y = x·weightᵀ + bias</c> (<c>linear:INxOUT</c>, or <c>:nobias</c> without bias).</summary>
    public static Layer Linear(int inFeatures, int outFeatures, bool bias = true) => new(LayerKind.Linear, inFeatures, outFeatures, bias);

    /// <summary>Batch norm over <paramref name="features"/> columns (<c>batchnorm:F</c>, or <c>:biased</c>).</summary>
    public static Layer BatchNorm1d(int features, BatchNormMode mode = BatchNormMode.Bessel) => new(LayerKind.BatchNorm, features, features, false, mode);

    /// <summary>Layer norm over the <paramref name="features"/> of each row (<c>layernorm:F</c>; eps from <see cref="NetworkOptions.Eps"/>).</summary>
    public static Layer LayerNorm(int features) => new(LayerKind.LayerNorm, features, features);

    /// <summary>Inverted dropout with drop probability <paramref name="p"/> in [0, 1) (<c>dropout:P</c>).</summary>
    public static Layer Dropout(float p) => new(LayerKind.Dropout, Rate: p);

    /// <summary>Elementwise tanh.</summary>
    public static Layer Tanh() => new(LayerKind.Tanh);

    /// <summary>Elementwise ReLU.</summary>
    public static Layer Relu() => new(LayerKind.Relu);

    /// <summary>Elementwise sigmoid.</summary>
    public static Layer Sigmoid() => new(LayerKind.Sigmoid);

    /// <summary>Whether the layer is elementwise (tanh, relu, sigmoid).</summary>
    public bool IsActivation => Kind is LayerKind.Tanh or LayerKind.Relu or LayerKind.Sigmoid;

    /// <summary>The layer in the text form, e.g. <c>linear:30x200</c>, <c>batchnorm:200:biased</c>, <c>dropout:0.1</c>.</summary>
    public override string ToString() => LayerType.Find(Kind) is { } t ? t.Format(this) : $"{Kind}";

    /// <summary>Parses one layer of the text form.</summary>
    /// <exception cref="FormatException">The text is not a layer; the message says what was expected.</exception>
    public static Layer Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string t = text.Trim();
        string[] parts = t.Split(':');
        var type = LayerType.ByHead(parts[0].ToLowerInvariant())
            ?? throw new FormatException($"'{Clip(t)}' is not a layer: the layers are {string.Join(", ", LayerType.All.Select(l => l.Form))}.");
        return type.Parse(parts, t);
    }

    internal static string Clip(string s) => s.Length <= 60 ? s : s[..57] + "...";
}
