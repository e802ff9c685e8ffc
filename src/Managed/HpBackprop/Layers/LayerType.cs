using System.Globalization;
using System.Numerics;
using HpBackprop.Model;
using HpBackprop.Reference;

namespace HpBackprop.Networks;

/// <summary>
/// Everything the library knows about one kind of layer, in one place: its text form, the shape it gives,
/// its parameters and running buffers, their initialisation, and its plain-loop reference forward and backward
/// (generic over float and double). <see cref="Sequential"/>, <see cref="ParameterStore"/>, the reference
/// network (<see cref="StackReference{T}"/>) and checkpoints loop over these; the compiled plan
/// (<see cref="Plan"/>) gives each layer a step, which every backend runs with one op per step kind.
/// </summary>
internal abstract class LayerType
{
    /// <summary>The kind.</summary>
    public abstract LayerKind Kind { get; }

    /// <summary>The first word of the text form (<c>linear</c>).</summary>
    public abstract string Head { get; }

    /// <summary>The text form for messages (<c>linear:INxOUT[:nobias]</c>).</summary>
    public abstract string Form { get; }

    /// <summary>Parses the text form split at ':' (<paramref name="parts"/>[0] is the head).</summary>
    /// <exception cref="FormatException">Not this layer's form.</exception>
    public abstract Layer Parse(string[] parts, string text);

    /// <summary>The text form.</summary>
    public abstract string Format(Layer l);

    /// <summary>Why <paramref name="l"/> (built any way, the public constructor included) is not a valid layer of this kind; null when it is.</summary>
    public string? Invalid(Layer l) => Sizes(l) ?? Unused(l);

    /// <summary>Why the layer's sizes (In, Out, Rate) do not suit its kind; null when they do.</summary>
    protected abstract string? Sizes(Layer l);

    /// <summary>A setting the kind does not use, set anyway (a bias, a mode, a rate): null when there is none.</summary>
    private string? Unused(Layer l) =>
        l.HasBias && Kind != LayerKind.Linear ? "only a linear layer has a bias (HasBias must be false)"
        : l.Mode != BatchNormMode.Bessel && Kind != LayerKind.BatchNorm ? "only a batch norm has a mode (Mode must be Bessel, the default)"
        : l.Rate != 0 && Kind != LayerKind.Dropout ? "only a dropout layer has a rate (Rate must be 0)"
        : null;

    /// <summary>The message for a layer with sizes of a kind that has none.</summary>
    protected static string? NoSizes(Layer l, string factory) =>
        l.In != 0 || l.Out != 0 ? $"In = {I(l.In)} and Out = {I(l.Out)}; a {l.Kind.ToString().ToLowerInvariant()} layer has no sizes, so both must be 0 (build it with Layer.{factory}())" : null;

    /// <summary>The message for In or Out below 1.</summary>
    protected static string? BothPositive(Layer l) =>
        l.In < 1 || l.Out < 1 ? $"In = {I(l.In)} and Out = {I(l.Out)}; both must be at least 1" : null;

    /// <summary>The message for a normalisation layer whose F is below 1 or whose In and Out differ.</summary>
    protected static string? SameWidth(Layer l, string what, string factory) =>
        l.In < 1 ? $"its {I(l.In)} features must be at least 1"
        : l.In != l.Out ? $"a {what} has In = {I(l.In)} and Out = {I(l.Out)}; they must be equal ({what} takes and gives F features; build it with Layer.{factory})"
        : null;

    /// <summary>The shape of the output for an input of <paramref name="input"/>; throws <see cref="StackException"/> naming the layers (<paramref name="at"/>, <paramref name="prev"/>) when they do not fit.</summary>
    public abstract TensorShape Output(Layer l, TensorShape input, int index, string at, Func<string> prev);

    /// <summary>Whether the layer is elementwise (an activation).</summary>
    public virtual bool IsActivation => false;

    /// <summary>The layer's trainable tensors: state-dict suffix (<c>weight</c>, <c>bias</c>) and PyTorch shape.</summary>
    public virtual IEnumerable<(string Suffix, int[] Shape)> Parameters(Layer l) => [];

    /// <summary>Features of the running statistics (<c>running_mean</c>, <c>running_var</c>, <c>num_batches_tracked</c>); 0 for none.</summary>
    public virtual int RunningFeatures(Layer l) => 0;

    /// <summary>
    /// When the layer's parameters draw from the initialisation generator: every layer of phase 0 in order, then phase 1, …
    /// (embeddings, then linear layers, then batch norms; layers that draw nothing come last).
    /// </summary>
    public virtual int InitPhase => int.MaxValue;

    /// <summary>Fills the layer's parameters (documented at <see cref="Network.Initialize"/>).</summary>
    public virtual void Initialize(Layer l, int index, InitContext c) { }

    /// <summary>The reference forward: <c>c.Y</c> from <c>c.X</c> (or <c>c.Ids</c>), training or inference; may keep what the backward needs in <c>c.Saved</c>.</summary>
    public abstract void Forward<T>(RefContext<T> c) where T : IFloatingPointIeee754<T>;

    /// <summary>The reference backward: <c>c.Dx</c> (when not null) and the layer's gradients from <c>c.Dy</c>.</summary>
    public abstract void Backward<T>(RefContext<T> c) where T : IFloatingPointIeee754<T>;

    // ---- the registry

    private static readonly LayerType[] Types =
    [
        new EmbeddingLayer(), new FlattenLayer(), new LinearLayer(), new BatchNormLayer(),
        new ActivationLayer(LayerKind.Tanh, "tanh"), new ActivationLayer(LayerKind.Relu, "relu"), new ActivationLayer(LayerKind.Sigmoid, "sigmoid"),
        new LayerNormLayer(), new DropoutLayer(),
    ];

    /// <summary>Every layer type, in the order of <see cref="LayerKind"/>.</summary>
    public static IReadOnlyList<LayerType> All => Types;

    /// <summary>The type of a kind; null for a value that is not a <see cref="LayerKind"/>.</summary>
    public static LayerType? Find(LayerKind kind) => (uint)kind < (uint)Types.Length ? Types[(int)kind] : null;

    /// <summary>The type of a kind.</summary>
    /// <exception cref="StackException">Not a defined <see cref="LayerKind"/>.</exception>
    public static LayerType Of(LayerKind kind) => Find(kind) ?? throw new StackException($"({nameof(LayerKind)}){(int)kind} is not a layer kind: the kinds are {string.Join(", ", Enum.GetNames<LayerKind>())}.");

    /// <summary>The type whose text form starts with <paramref name="head"/>; null when none does.</summary>
    public static LayerType? ByHead(string head) => Types.FirstOrDefault(t => t.Head == head);

    // ---- helpers for the text forms

    protected FormatException Bad(string text) => new($"'{Layer.Clip(text)}' is not a valid layer: expected {Form}.");

    protected void NoArguments(string[] parts, string text)
    {
        if (parts.Length != 1) throw Bad(text);
    }

    protected int Positive(string s, string text)
    {
        if (!int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int v) || v < 1)
            throw new FormatException($"'{Layer.Clip(text)}' is not a valid layer: expected {Form}; sizes are whole numbers ≥ 1.");
        return v;
    }

    protected (int, int) Pair(string s, string text)
    {
        string[] xy = s.Split('x', 'X');
        if (xy.Length != 2) throw Bad(text);
        return (Positive(xy[0], text), Positive(xy[1], text));
    }

    protected static string I(int v) => v.ToString(CultureInfo.InvariantCulture);

    /// <summary>The state-dict name <c>{index}.{suffix}</c>.</summary>
    public static string Name(int index, string suffix) => string.Create(CultureInfo.InvariantCulture, $"{index}.{suffix}");
}

/// <summary>What <see cref="LayerType.Initialize"/> draws from and writes to.</summary>
internal sealed class InitContext(ParameterStore store, NormalRng rng)
{
    /// <summary>The generator (standard normals).</summary>
    public NormalRng Rng { get; } = rng;

    /// <summary>The values of a parameter of the layer, by suffix.</summary>
    public Span<float> Value(int index, string suffix) => store.Value(LayerType.Name(index, suffix));

    /// <summary>The stack.</summary>
    public Sequential Stack => store.Stack;

    /// <summary>Fills <paramref name="t"/> with <c>N(0,1)·scale + shift</c> in order.</summary>
    public void Normal(Span<float> t, float scale, float shift)
    {
        for (int i = 0; i < t.Length; i++) t[i] = (float)Rng.Next() * scale + shift;
    }
}

/// <summary>One layer's view of the reference network's tensors (<see cref="StackReference{T}"/>).</summary>
internal sealed class RefContext<T> where T : IFloatingPointIeee754<T>
{
    /// <summary>The layer and its index.</summary>
    public required Layer Layer { get; init; }

    /// <summary>The 0-based position in the stack (its state-dict prefix).</summary>
    public required int Index { get; init; }

    /// <summary>Rows.</summary>
    public required int N { get; init; }

    /// <summary>The ids (first layer on ids), else null.</summary>
    public int[]? Ids { get; init; }

    /// <summary>The input <c>[n, in]</c> (empty for an embedding).</summary>
    public required T[] X { get; init; }

    /// <summary>The output <c>[n, out]</c>.</summary>
    public required T[] Y { get; init; }

    /// <summary>The gradient of the output (backward).</summary>
    public T[] Dy { get; set; } = [];

    /// <summary>The gradient of the input to write, or empty when it is not needed.</summary>
    public T[] Dx { get; set; } = [];

    /// <summary>Parameters by state-dict name.</summary>
    public required IReadOnlyDictionary<string, T[]> Parameters { get; init; }

    /// <summary>Gradients by state-dict name (backward).</summary>
    public Dictionary<string, T[]> Gradients { get; set; } = [];

    /// <summary>Training (batch statistics, dropout) or inference.</summary>
    public required bool Training { get; init; }

    /// <summary>The running statistics (updated by a training forward).</summary>
    public required BatchNormBuffers<T> Running { get; init; }

    /// <summary>Normalisation epsilon.</summary>
    public required T Eps { get; init; }

    /// <summary>Batch-norm momentum.</summary>
    public required T Momentum { get; init; }

    /// <summary>Dropout masks: seed and step (<see cref="DropoutMask"/>).</summary>
    public required uint Seed { get; init; }

    /// <summary>The optimiser step the dropout mask is drawn for.</summary>
    public required long Step { get; init; }

    /// <summary>What the forward keeps for the backward.</summary>
    public object? Saved { get; set; }

    /// <summary>A parameter by suffix.</summary>
    public T[] P(string suffix) => Parameters[LayerType.Name(Index, suffix)];

    /// <summary>A gradient by suffix.</summary>
    public T[] G(string suffix) => Gradients[LayerType.Name(Index, suffix)];
}
