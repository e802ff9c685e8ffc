using System.Globalization;

namespace HpBackprop.Networks;

/// <summary>A stack of layers does not fit together, or does not fit its data. The message names the layer.</summary>
public sealed class StackException : ArgumentException
{
    /// <summary>Creates the exception.</summary>
    public StackException(string message) : base(message) { }
}

/// <summary>What a layer of a resolved stack takes and gives: ids, a sequence of rows <c>[n,B,E]</c> or features <c>[n,D]</c>.</summary>
/// <param name="IsIds">Ids <c>[n,Width]</c> (the input of an embedding).</param>
/// <param name="Rows">For a sequence <c>[n,Rows,Width]</c>: its length B; 0 for ids and features.</param>
/// <param name="Width">The last dimension.</param>
public readonly record struct TensorShape(bool IsIds, int Rows, int Width)
{
    /// <summary>Elements per example (<c>Rows·Width</c> for a sequence).</summary>
    public int PerRow => Rows == 0 ? Width : Rows * Width;

    /// <summary>The shape as text, e.g. <c>[n,3,10]</c>.</summary>
    public override string ToString() => Rows == 0 ? $"[n,{Width}]" : $"[n,{Rows},{Width}]";
}

/// <summary>Where one named parameter of a stack lives: the state-dict name (docs/stacks.md), its layer and its shape.</summary>
/// <param name="Name">The state-dict name, <c>{i}.weight</c> or <c>{i}.bias</c>.</param>
/// <param name="Layer">The 0-based index of the layer.</param>
/// <param name="Shape">The PyTorch shape (linear weight <c>[OUT,IN]</c>).</param>
public sealed record ParameterSpec(string Name, int Layer, int[] Shape)
{
    /// <summary>Number of elements.</summary>
    public long Length => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// A network as a list of layers applied in order, the same as a <c>torch.nn.Sequential</c> of the
/// same modules (parameters <c>{i}.weight</c>, <c>{i}.bias</c>; batch-norm buffers <c>{i}.running_mean</c>,
/// <c>{i}.running_var</c>, <c>{i}.num_batches_tracked</c>). The text form is the layers separated by
/// commas, e.g. the makemore MLP <c>embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x27</c>.
/// </summary>
public sealed class Sequential
{
    private readonly Layer[] _layers;

    /// <summary>Creates a stack of <paramref name="layers"/>.</summary>
    /// <exception cref="StackException">The stack is empty, or a layer breaks the invariants of its kind (an undefined kind or mode, a width below 1, a batch norm whose In and Out differ); the message names the layer.</exception>
    public Sequential(params Layer[] layers)
    {
        ArgumentNullException.ThrowIfNull(layers);
        if (layers.Length == 0) throw new StackException("a stack needs at least one layer.");
        _layers = (Layer[])layers.Clone();   // checked after the copy, so the caller's array cannot change under the checks
        foreach (var l in _layers) ArgumentNullException.ThrowIfNull(l, nameof(layers));
        StackChecks.Layers(_layers);
    }

    /// <summary>The makemore MLP of the lecture: <c>embedding:VxE,flatten,linear:(B·E)xH,batchnorm:H,tanh,linear:HxV</c>.</summary>
    public static Sequential Makemore(int vocabSize, int blockSize = 3, int embedding = 10, int hidden = 200) => new(
        Layer.Embedding(vocabSize, embedding), Layer.Flatten(), Layer.Linear(blockSize * embedding, hidden),
        Layer.BatchNorm1d(hidden), Layer.Tanh(), Layer.Linear(hidden, vocabSize));

    /// <summary>The layers in order.</summary>
    public IReadOnlyList<Layer> Layers => _layers;

    /// <summary>The text form, layers separated by commas.</summary>
    public override string ToString() => string.Join(",", _layers.Select(l => l.ToString()));

    /// <summary>Parses the text form (layers separated by commas).</summary>
    /// <exception cref="FormatException">A layer is not valid; the message names its position and what was expected.</exception>
    public static Sequential Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (string.IsNullOrWhiteSpace(text)) throw new FormatException("the stack is empty: give layers separated by commas, e.g. linear:4x16,relu,linear:16x1.");
        string[] parts = text.Split(',');
        var layers = new Layer[parts.Length];
        for (int i = 0; i < parts.Length; i++)
        {
            try { layers[i] = Layer.Parse(parts[i]); }
            catch (FormatException e) { throw new FormatException($"layer {i}: {e.Message}", e); }
        }
        return new Sequential(layers);
    }

    /// <summary>Whether the first layer is an embedding (the stack takes ids, not float features).</summary>
    public bool TakesIds => _layers[0].Kind == LayerKind.Embedding;

    /// <summary>
    /// The input width the stack implies: D for the first linear, batch norm or layer norm (after elementwise layers
    /// only), or B for an embedding whose flattened output feeds one (<c>IN / E</c>); null when nothing fixes it.
    /// </summary>
    public int? ImpliedInputWidth()
    {
        var first = _layers[0];
        bool ids = first.Kind == LayerKind.Embedding;
        for (int i = ids ? 1 : 0; i < _layers.Length; i++)
        {
            var l = _layers[i];
            if (l.Kind is LayerKind.Linear or LayerKind.BatchNorm or LayerKind.LayerNorm)
                return !ids ? l.In : first.Out > 0 && l.In % first.Out == 0 ? l.In / first.Out : null;
            if (l.Kind != LayerKind.Flatten && l.Kind != LayerKind.Dropout && !l.IsActivation) return null;
        }
        return null;
    }

    /// <summary>
    /// Checks that the layers fit together for an input of <paramref name="inputWidth"/> (B ids or D
    /// features; null to take <see cref="ImpliedInputWidth"/>) and returns each layer's output shape.
    /// Every layer is checked first (a defined kind, widths ≥ 1, batch norm and layer norm as wide in as out, a
    /// dropout rate in [0, 1)), whichever way it was built; a stack must compute something (not only flatten).
    /// </summary>
    /// <exception cref="StackException">The layers do not fit; the message names the layer(s) and the widths.</exception>
    public TensorShape[] Resolve(int? inputWidth = null)
    {
        StackChecks.ProducesOutput(this);
        int? w = inputWidth ?? ImpliedInputWidth();
        if (w is null)
            throw new StackException($"the input width of '{Layer.Clip(ToString())}' cannot be inferred from its layers: give it (the block size B of the ids, or D features).");
        if (w < 1) throw new StackException($"the input width must be at least 1, not {w}.");
        var shape = new TensorShape(TakesIds, 0, w.Value);
        var outs = new TensorShape[_layers.Length];
        for (int i = 0; i < _layers.Length; i++)
        {
            var l = _layers[i];
            string at = $"layer {i} ({l})";
            if (shape.IsIds && l.Kind != LayerKind.Embedding) throw new StackException($"{at} cannot take ids: the first layer of a stack on ids must be an embedding.");
            int j = i;
            shape = LayerType.Of(l.Kind).Output(l, shape, i, at, () => Prev(j));
            if ((long)shape.Rows * shape.Width > Array.MaxLength)
                throw new StackException($"{at} gives {shape}: {(long)shape.Rows * shape.Width:N0} values per row, more than .NET's array limit of {Array.MaxLength:N0}.");
            outs[i] = shape;
        }
        if (outs[^1].Rows != 0) throw new StackException($"the stack ends with {outs[^1]}: add 'flatten' so its output is [n,k].");
        return outs;

        string Prev(int i) => i == 0 ? $"the input ({(TakesIds ? "ids" : "features")} of width {w})" : $"layer {i - 1} ({_layers[i - 1]})";
    }

    /// <summary>The trainable parameters in buffer order, with their state-dict names and PyTorch shapes.</summary>
    public IReadOnlyList<ParameterSpec> Parameters()
    {
        var list = new List<ParameterSpec>();
        for (int i = 0; i < _layers.Length; i++)
            foreach (var (suffix, shape) in LayerType.Of(_layers[i].Kind).Parameters(_layers[i]))
                list.Add(new(LayerType.Name(i, suffix), i, shape));
        return list;
    }

    /// <summary>The indices of the layers with running statistics (the batch-norm layers), in order.</summary>
    public IReadOnlyList<int> BatchNormLayers() => Enumerable.Range(0, _layers.Length).Where(i => LayerType.Find(_layers[i].Kind)?.RunningFeatures(_layers[i]) > 0).ToArray();
}
