using System.Globalization;
using System.Numerics;
using HpBackprop.Networks;

namespace HpBackprop.Reference;

/// <summary>
/// One minibatch for a stack: the input (ids for a stack that starts with an embedding, float
/// features otherwise) and the targets its loss takes (class ids for cross-entropy, floats for mse
/// and bce_with_logits, none for mean). Arrays are row-major and not copied.
/// </summary>
/// <typeparam name="T"><see cref="float"/> or <see cref="double"/>.</typeparam>
/// <param name="N">Rows n.</param>
/// <param name="Ids">Ids <c>[n,B]</c> for a stack on ids, else null.</param>
/// <param name="Features">Features <c>[n,D]</c> for a stack on floats, else null.</param>
/// <param name="Classes">Class ids <c>[n]</c> for cross-entropy, else null.</param>
/// <param name="Targets">Targets <c>[n,k]</c> for mse and bce_with_logits, else null.</param>
public sealed record StackInput<T>(int N, int[]? Ids = null, T[]? Features = null, int[]? Classes = null, T[]? Targets = null)
    where T : IFloatingPointIeee754<T>;

/// <summary>
/// The batch-norm running statistics of a stack by state-dict name (<c>{i}.running_mean</c>,
/// <c>{i}.running_var</c>) and each layer's <c>{i}.num_batches_tracked</c>. Mutable; the reference
/// never changes the instance it is given (it returns an updated copy).
/// </summary>
/// <typeparam name="T"><see cref="float"/> or <see cref="double"/>.</typeparam>
public sealed class BatchNormBuffers<T> where T : IFloatingPointIeee754<T>
{
    private readonly Dictionary<string, T[]> _values = new(StringComparer.Ordinal);
    private readonly Dictionary<int, long> _tracked = [];

    private BatchNormBuffers(IReadOnlyList<int> layers) => Layers = layers;

    /// <summary>The indices of the batch-norm layers.</summary>
    public IReadOnlyList<int> Layers { get; }

    /// <summary>PyTorch's initial state for <paramref name="stack"/>: running means 0, variances 1, no batches tracked.</summary>
    public static BatchNormBuffers<T> Initial(Sequential stack)
    {
        ArgumentNullException.ThrowIfNull(stack);
        var b = new BatchNormBuffers<T>(stack.BatchNormLayers());
        foreach (int i in b.Layers)
        {
            int f = stack.Layers[i].In;
            b._values[MeanName(i)] = new T[f];
            b._values[VarName(i)] = Enumerable.Repeat(T.One, f).ToArray();
            b._tracked[i] = 0;
        }
        return b;
    }

    /// <summary>
    /// The statistics given by name (copied), the initial state for any not given.
    /// </summary>
    /// <param name="stack">The stack.</param>
    /// <param name="values"><c>{i}.running_mean</c> and <c>{i}.running_var</c>, each <c>[F]</c>; other names are ignored.</param>
    /// <param name="tracked"><c>{i}.num_batches_tracked</c>; other names are ignored.</param>
    /// <exception cref="StackException">A buffer has the wrong length; the message names it and the layer.</exception>
    public static BatchNormBuffers<T> From(Sequential stack, IReadOnlyDictionary<string, T[]>? values, IReadOnlyDictionary<string, long>? tracked = null)
    {
        var b = Initial(stack);
        foreach (int i in b.Layers)
        {
            int f = stack.Layers[i].In;
            foreach (string name in new[] { MeanName(i), VarName(i) })
                if (values != null && values.TryGetValue(name, out var v))
                {
                    if (v.Length != f) throw new StackException($"'{name}' has {v.Length} elements but layer {i} ({stack.Layers[i]}) needs [{f}].");
                    b._values[name] = (T[])v.Clone();
                }
            if (tracked != null && tracked.TryGetValue(TrackedName(i), out long t)) b._tracked[i] = t;
        }
        return b;
    }

    /// <summary>A deep copy.</summary>
    public BatchNormBuffers<T> Clone()
    {
        var b = new BatchNormBuffers<T>(Layers);
        foreach (var (k, v) in _values) b._values[k] = (T[])v.Clone();
        foreach (var (k, v) in _tracked) b._tracked[k] = v;
        return b;
    }

    /// <summary>The running mean of batch-norm layer <paramref name="layer"/> (the live array).</summary>
    public T[] RunningMean(int layer) => Get(MeanName(layer));

    /// <summary>The running variance of batch-norm layer <paramref name="layer"/> (the live array).</summary>
    public T[] RunningVar(int layer) => Get(VarName(layer));

    /// <summary><c>num_batches_tracked</c> of batch-norm layer <paramref name="layer"/>.</summary>
    public long BatchesTracked(int layer) => _tracked.TryGetValue(layer, out long t) ? t : throw NotBatchNorm(layer);

    internal void Track(int layer) => _tracked[layer] = BatchesTracked(layer) + 1;

    /// <summary>The running statistics by state-dict name.</summary>
    public IReadOnlyDictionary<string, T[]> ByName => _values;

    /// <summary><c>{i}.running_mean</c>.</summary>
    public static string MeanName(int layer) => layer.ToString(CultureInfo.InvariantCulture) + ".running_mean";

    /// <summary><c>{i}.running_var</c>.</summary>
    public static string VarName(int layer) => layer.ToString(CultureInfo.InvariantCulture) + ".running_var";

    /// <summary><c>{i}.num_batches_tracked</c>.</summary>
    public static string TrackedName(int layer) => layer.ToString(CultureInfo.InvariantCulture) + ".num_batches_tracked";

    private T[] Get(string name) => _values.TryGetValue(name, out var v) ? v : throw NotBatchNorm(int.Parse(name.AsSpan(0, name.IndexOf('.')), CultureInfo.InvariantCulture));

    private KeyNotFoundException NotBatchNorm(int layer) =>
        new($"layer {layer} is not a batch-norm layer; the batch-norm layers are {string.Join(", ", Layers)}.");
}

/// <summary>What <see cref="StackReference{T}.Run"/> computes for one minibatch in training mode.</summary>
/// <typeparam name="T"><see cref="float"/> or <see cref="double"/>.</typeparam>
public sealed class StackResult<T> where T : IFloatingPointIeee754<T>
{
    internal StackResult(T loss, T[][] outputs, T[]?[] outputGradients, int outputWidth, Dictionary<string, T[]> gradients,
        T[]? inputGradient, T[]? targetGradient, BatchNormBuffers<T> buffers)
    {
        Loss = loss; LayerOutputs = outputs; LayerOutputGradients = outputGradients; OutputWidth = outputWidth;
        Gradients = gradients; InputGradient = inputGradient; TargetGradient = targetGradient; Buffers = buffers;
    }

    /// <summary>The loss, including the L2 penalty.</summary>
    public T Loss { get; }

    /// <summary>The output <c>z [n,k]</c> of the last layer (what the loss sees).</summary>
    public T[] Output => LayerOutputs[^1];

    /// <summary>k, the width of <see cref="Output"/>.</summary>
    public int OutputWidth { get; }

    /// <summary>Each layer's output <c>y</c> in order (row-major; an embedding's is <c>[n,B,E]</c>).</summary>
    public IReadOnlyList<T[]> LayerOutputs { get; }

    /// <summary>The gradient of the loss with respect to each layer's output (<c>dy</c>), in layer order; the last is <c>dz</c>.</summary>
    public IReadOnlyList<T[]?> LayerOutputGradients { get; }

    /// <summary>The gradient of every parameter, by state-dict name (<c>{i}.weight</c>, <c>{i}.bias</c>).</summary>
    public IReadOnlyDictionary<string, T[]> Gradients { get; }

    /// <summary><c>grad.x</c>, the gradient of float features <c>[n,D]</c>; null for ids.</summary>
    public T[]? InputGradient { get; }

    /// <summary><c>grad.y</c>, the gradient of float targets <c>[n,k]</c> (mse, bce_with_logits); null otherwise.</summary>
    public T[]? TargetGradient { get; }

    /// <summary>The batch-norm running statistics after this step (a new instance; each layer's count one higher).</summary>
    public BatchNormBuffers<T> Buffers { get; }
}
