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
/// <see cref="Parse"/>; <see cref="ToString"/> prints the text form.
/// </summary>
/// <param name="Kind">The kind of layer.</param>
/// <param name="In">Embedding: the number of ids V; linear: IN; batch norm: F; otherwise 0.</param>
/// <param name="Out">Embedding: the width E; linear: OUT; batch norm: F; otherwise 0.</param>
/// <param name="HasBias">Linear only: whether the layer has a bias.</param>
/// <param name="Mode">Batch norm only: how it normalises.</param>
public sealed record Layer(LayerKind Kind, int In = 0, int Out = 0, bool HasBias = false, BatchNormMode Mode = BatchNormMode.Bessel)
{
    /// <summary>An embedding table of <paramref name="count"/> rows of width <paramref name="width"/> (<c>embedding:VxE</c>).</summary>
    public static Layer Embedding(int count, int width) => new(LayerKind.Embedding, count, width);

    /// <summary>Flattens <c>[n,B,E]</c> to <c>[n,B·E]</c> (<c>flatten</c>).</summary>
    public static Layer Flatten() => new(LayerKind.Flatten);

    /// <summary>A linear layer <c>y = x·weightᵀ + bias</c> (<c>linear:INxOUT</c>, or <c>:nobias</c> without bias).</summary>
    public static Layer Linear(int inFeatures, int outFeatures, bool bias = true) => new(LayerKind.Linear, inFeatures, outFeatures, bias);

    /// <summary>Batch norm over <paramref name="features"/> columns (<c>batchnorm:F</c>, or <c>:biased</c>).</summary>
    public static Layer BatchNorm1d(int features, BatchNormMode mode = BatchNormMode.Bessel) => new(LayerKind.BatchNorm, features, features, false, mode);

    /// <summary>Elementwise tanh.</summary>
    public static Layer Tanh() => new(LayerKind.Tanh);

    /// <summary>Elementwise ReLU.</summary>
    public static Layer Relu() => new(LayerKind.Relu);

    /// <summary>Elementwise sigmoid.</summary>
    public static Layer Sigmoid() => new(LayerKind.Sigmoid);

    /// <summary>Whether the layer is elementwise (tanh, relu, sigmoid).</summary>
    public bool IsActivation => Kind is LayerKind.Tanh or LayerKind.Relu or LayerKind.Sigmoid;

    /// <summary>The layer in the text form, e.g. <c>linear:30x200</c>, <c>batchnorm:200:biased</c>.</summary>
    public override string ToString() => Kind switch
    {
        LayerKind.Embedding => $"embedding:{I(In)}x{I(Out)}",
        LayerKind.Flatten => "flatten",
        LayerKind.Linear => $"linear:{I(In)}x{I(Out)}" + (HasBias ? "" : ":nobias"),
        LayerKind.BatchNorm => $"batchnorm:{I(In)}" + (Mode == BatchNormMode.Biased ? ":biased" : ""),
        LayerKind.Tanh => "tanh",
        LayerKind.Relu => "relu",
        LayerKind.Sigmoid => "sigmoid",
        _ => Kind.ToString(),
    };

    /// <summary>Parses one layer of the text form.</summary>
    /// <exception cref="FormatException">The text is not a layer; the message says what was expected.</exception>
    public static Layer Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string t = text.Trim();
        string[] parts = t.Split(':');
        string head = parts[0].ToLowerInvariant();
        switch (head)
        {
            case "flatten": NoArgs(); return Flatten();
            case "tanh": NoArgs(); return Tanh();
            case "relu": NoArgs(); return Relu();
            case "sigmoid": NoArgs(); return Sigmoid();
            case "embedding":
                {
                    if (parts.Length != 2) throw Bad("embedding:VxE (e.g. embedding:27x10)");
                    var (v, e) = Pair(parts[1], "embedding:VxE (e.g. embedding:27x10)");
                    return Embedding(v, e);
                }
            case "linear":
                {
                    const string form = "linear:INxOUT or linear:INxOUT:nobias (e.g. linear:30x200)";
                    if (parts.Length is < 2 or > 3) throw Bad(form);
                    var (i, o) = Pair(parts[1], form);
                    if (parts.Length == 3 && !parts[2].Equals("nobias", StringComparison.OrdinalIgnoreCase)) throw Bad(form);
                    return Linear(i, o, parts.Length == 2);
                }
            case "batchnorm":
                {
                    const string form = "batchnorm:F or batchnorm:F:biased (e.g. batchnorm:200)";
                    if (parts.Length is < 2 or > 3) throw Bad(form);
                    int f = Positive(parts[1], form);
                    if (parts.Length == 3 && !parts[2].Equals("biased", StringComparison.OrdinalIgnoreCase)) throw Bad(form);
                    return BatchNorm1d(f, parts.Length == 3 ? BatchNormMode.Biased : BatchNormMode.Bessel);
                }
            default:
                throw new FormatException($"'{Clip(t)}' is not a layer: the layers are embedding:VxE, flatten, linear:INxOUT[:nobias], batchnorm:F[:biased], tanh, relu, sigmoid.");
        }

        void NoArgs() { if (parts.Length != 1) throw Bad(head); }
        FormatException Bad(string form) => new($"'{Clip(t)}' is not a valid layer: expected {form}.");
        (int, int) Pair(string s, string form)
        {
            string[] xy = s.Split('x', 'X');
            if (xy.Length != 2) throw Bad(form);
            return (Positive(xy[0], form), Positive(xy[1], form));
        }
        int Positive(string s, string form)
        {
            if (!int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int v) || v < 1) throw Bad(form + "; sizes are whole numbers ≥ 1");
            return v;
        }
    }

    internal static string Clip(string s) => s.Length <= 60 ? s : s[..57] + "...";

    private static string I(int v) => v.ToString(CultureInfo.InvariantCulture);
}
