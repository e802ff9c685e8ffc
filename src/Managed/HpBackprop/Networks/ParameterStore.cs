using HpBackprop.Model;

namespace HpBackprop.Networks;

/// <summary>Where a named tensor lives in a flat buffer of a <see cref="ParameterStore"/>.</summary>
/// <param name="Name">The state-dict name, e.g. <c>2.weight</c> or <c>3.running_mean</c>.</param>
/// <param name="Layer">The 0-based index of its layer.</param>
/// <param name="Offset">The first element in the buffer.</param>
/// <param name="Shape">The PyTorch shape.</param>
public sealed record TensorSlot(string Name, int Layer, int Offset, int[] Shape)
{
    /// <summary>Number of elements.</summary>
    public int Length => Shape.Aggregate(1, (a, b) => a * b);
}

/// <summary>
/// All trainable parameters of a stack in one flat buffer (<see cref="Data"/>), their gradients in
/// another of the same layout (<see cref="Grad"/>), the optimiser's state in a third
/// (<see cref="OptimizerState"/>, <see cref="Optimizer.StateSlots"/> floats per parameter), and the
/// batch-norm running statistics (<see cref="Buffers"/>, <see cref="BatchesTracked"/>). Every tensor
/// starts on a 64-byte boundary; padding stays zero. Names are those of the equivalent
/// <c>torch.nn.Sequential</c>'s state dict.
/// </summary>
public sealed class ParameterStore
{
    private const int Align = 16; // floats
    private readonly TensorSlot[] _params, _buffers;
    private readonly Dictionary<string, (bool Param, int Index)> _byName = new(StringComparer.Ordinal);

    /// <summary>Allocates zeroed buffers for <paramref name="stack"/>, with <paramref name="stateSlots"/> floats of optimiser state per parameter (<see cref="Optimizer.StateSlots"/>).</summary>
    /// <exception cref="StackException">A buffer would exceed .NET's array limit.</exception>
    public ParameterStore(Sequential stack, int stateSlots = 0)
    {
        ArgumentNullException.ThrowIfNull(stack);
        ArgumentOutOfRangeException.ThrowIfNegative(stateSlots);
        Stack = stack;
        var specs = stack.Parameters();
        _params = new TensorSlot[specs.Count];
        long offset = 0;
        for (int i = 0; i < specs.Count; i++)
        {
            _params[i] = new TensorSlot(specs[i].Name, specs[i].Layer, (int)offset, specs[i].Shape);
            offset += (specs[i].Length + Align - 1) / Align * Align;
            if (offset > Array.MaxLength) throw TooLarge(offset);
            _byName.Add(specs[i].Name, (true, i));
        }
        long size = offset;
        var bns = stack.BatchNormLayers();
        _buffers = new TensorSlot[2 * bns.Count];
        offset = 0;
        for (int j = 0; j < bns.Count; j++)
        {
            int f = stack.Layers[bns[j]].In;
            _buffers[2 * j] = new TensorSlot($"{bns[j]}.running_mean", bns[j], (int)offset, [f]);
            offset += (f + Align - 1) / Align * Align;
            _buffers[2 * j + 1] = new TensorSlot($"{bns[j]}.running_var", bns[j], (int)offset, [f]);
            offset += (f + Align - 1) / Align * Align;
            if (offset > Array.MaxLength) throw TooLarge(offset);
            _byName.Add(_buffers[2 * j].Name, (false, 2 * j));
            _byName.Add(_buffers[2 * j + 1].Name, (false, 2 * j + 1));
        }
        if (size * Math.Max(1, stateSlots) > Array.MaxLength) throw TooLarge(size * stateSlots);
        Data = GC.AllocateArray<float>((int)size, pinned: true);
        Grad = GC.AllocateArray<float>((int)size, pinned: true);
        OptimizerState = GC.AllocateArray<float>((int)(size * stateSlots), pinned: true);
        Buffers = GC.AllocateArray<float>((int)offset, pinned: true);
        BatchesTracked = GC.AllocateArray<long>(bns.Count, pinned: true);
        ResetBuffers();
    }

    private static StackException TooLarge(long elements) =>
        new($"the network needs {elements:N0} floats in one buffer, more than .NET's array limit of {Array.MaxLength:N0}.");

    /// <summary>The stack these parameters belong to.</summary>
    public Sequential Stack { get; }

    /// <summary>All parameters, flat.</summary>
    public float[] Data { get; }

    /// <summary>All gradients, same layout as <see cref="Data"/>.</summary>
    public float[] Grad { get; }

    /// <summary>The optimiser's state: <see cref="Optimizer.StateSlots"/> blocks of the length of <see cref="Data"/> (momentum; AdamW's first then second moment).</summary>
    public float[] OptimizerState { get; }

    /// <summary>The batch-norm running statistics (<c>{i}.running_mean</c>, <c>{i}.running_var</c>), flat.</summary>
    public float[] Buffers { get; }

    /// <summary><c>{i}.num_batches_tracked</c> of each batch-norm layer, in layer order.</summary>
    public long[] BatchesTracked { get; }

    /// <summary>The parameters in buffer order.</summary>
    public IReadOnlyList<TensorSlot> Parameters => _params;

    /// <summary>The running-statistics buffers in order.</summary>
    public IReadOnlyList<TensorSlot> RunningStatistics => _buffers;

    /// <summary>The number of trainable parameters (without padding).</summary>
    public long Count => _params.Sum(p => (long)p.Length);

    /// <summary>Whether the stack has a parameter or buffer of this name.</summary>
    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>The slot of a parameter or buffer.</summary>
    /// <exception cref="KeyNotFoundException">No such name; the message lists the names.</exception>
    public TensorSlot Slot(string name) => Find(name).Param ? _params[Find(name).Index] : _buffers[Find(name).Index];

    /// <summary>The values of a parameter or a running-statistics buffer, by state-dict name.</summary>
    public Span<float> Value(string name)
    {
        var (param, i) = Find(name);
        var s = param ? _params[i] : _buffers[i];
        return (param ? Data : Buffers).AsSpan(s.Offset, s.Length);
    }

    /// <summary>The gradient of a parameter, by state-dict name.</summary>
    public Span<float> Gradient(string name)
    {
        var (param, i) = Find(name);
        if (!param) throw new ArgumentException($"'{name}' is a running statistic, not a trainable parameter: it has no gradient.", nameof(name));
        return Grad.AsSpan(_params[i].Offset, _params[i].Length);
    }

    private (bool Param, int Index) Find(string name) =>
        _byName.TryGetValue(name, out var r) ? r
        : throw new KeyNotFoundException($"the stack has no tensor named '{Layer.Clip(name)}'; its names are {string.Join(", ", _byName.Keys)}.");

    /// <summary>Running means 0, variances 1, no batches tracked (PyTorch's initial state).</summary>
    public void ResetBuffers()
    {
        foreach (var s in _buffers) Buffers.AsSpan(s.Offset, s.Length).Fill(s.Name.EndsWith(".running_var", StringComparison.Ordinal) ? 1f : 0f);
        Array.Clear(BatchesTracked);
    }

    /// <summary>Copies parameter values, running statistics and counters from a store of the same stack.</summary>
    public void CopyFrom(ParameterStore other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other.Stack.ToString() != Stack.ToString()) throw new ArgumentException($"cannot copy the parameters of '{Layer.Clip(other.Stack.ToString())}' into '{Layer.Clip(Stack.ToString())}'.", nameof(other));
        other.Data.CopyTo(Data, 0);
        other.Buffers.CopyTo(Buffers, 0);
        other.BatchesTracked.CopyTo(BatchesTracked, 0);
    }

    /// <summary>
    /// Fills the parameters as <see cref="Network.Initialize"/> does (documented there) and clears the gradients,
    /// the optimiser state and the running statistics: the same values for a stack on every device.
    /// </summary>
    public void Initialize(int seed)
    {
        var c = new InitContext(this, new NormalRng(seed));
        var layers = Stack.Layers;
        foreach (int phase in layers.Select(l => LayerType.Of(l.Kind).InitPhase).Where(p => p != int.MaxValue).Distinct().Order())
            for (int i = 0; i < layers.Count; i++)
            {
                var type = LayerType.Of(layers[i].Kind);
                if (type.InitPhase == phase) type.Initialize(layers[i], i, c);
            }
        Array.Clear(Grad);
        Array.Clear(OptimizerState);
        ResetBuffers();
    }
}
