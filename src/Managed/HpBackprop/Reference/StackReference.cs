using System.Numerics;
using HpBackprop.Networks;

namespace HpBackprop.Reference;

/// <summary>
/// The plain-loop reference for a <see cref="Sequential"/> stack and its loss (docs/stacks.md): one
/// training-mode forward and backward (<see cref="Run"/>), the inference forward
/// (<see cref="Forward"/>), and a training step with a <see cref="ReferenceOptimizer{T}"/>
/// (<see cref="TrainStep"/>). Every layer goes through its type's plain-loop forward and backward (most of them in
/// <see cref="ReferenceLayers{T}"/>); nothing is fused. Generic over the element type: in <see cref="double"/> it is the oracle
/// the fast path is tested against; in <see cref="float"/> it shows what plain single-precision loops give.
/// </summary>
/// <example>
/// <code>
/// var stack = Sequential.Parse("linear:4x8,relu,linear:8x1");
/// var reference = new StackReference&lt;double&gt;(stack, LossKind.Mse) { L2 = 0.01 };
/// var result = reference.Run(new StackInput&lt;double&gt;(n, Features: x, Targets: y), parameters);
/// double[] dW = result.Gradients["0.weight"];
/// </code>
/// </example>
/// <typeparam name="T"><see cref="float"/> or <see cref="double"/>.</typeparam>
public sealed class StackReference<T> where T : IFloatingPointIeee754<T>
{
    private readonly TensorShape[] _shapes;
    private readonly IReadOnlyList<ParameterSpec> _specs;

    /// <summary>Prepares the reference for <paramref name="stack"/> closed by <paramref name="loss"/>.</summary>
    /// <param name="stack">The layers.</param>
    /// <param name="loss">The loss.</param>
    /// <param name="inputWidth">B (ids) or D (features); null to take <see cref="Sequential.ImpliedInputWidth"/>.</param>
    /// <exception cref="StackException">The layers do not fit together (see <see cref="Sequential.Resolve"/>).</exception>
    public StackReference(Sequential stack, LossKind loss, int? inputWidth = null)
    {
        ArgumentNullException.ThrowIfNull(stack);
        Stack = stack;
        Loss = loss;
        _ = loss.ToText(); // rejects an undefined enum value
        _shapes = stack.Resolve(inputWidth);
        InputWidth = inputWidth ?? stack.ImpliedInputWidth()!.Value;
        _specs = stack.Parameters();
    }

    /// <summary>The stack.</summary>
    public Sequential Stack { get; }

    /// <summary>The loss.</summary>
    public LossKind Loss { get; }

    /// <summary>B (ids per row) or D (features per row).</summary>
    public int InputWidth { get; }

    /// <summary>k, the width of the last layer's output.</summary>
    public int OutputWidth => _shapes[^1].Width;

    /// <summary>Each layer's output shape.</summary>
    public IReadOnlyList<TensorShape> Shapes => _shapes;

    /// <summary>The L2 penalty <c>l2</c>: <c>loss += l2·sum(W²)</c> over every linear weight; 0 for none.</summary>
    public T L2 { get; init; } = T.Zero;

    /// <summary>The batch-norm momentum: <c>running = (1 − m)·running + m·batch_stat</c> (default 0.001).</summary>
    public T BatchNormMomentum { get; init; } = T.CreateChecked(0.001);

    /// <summary>The batch-norm and layer-norm epsilon (1e-5).</summary>
    public T Eps { get; init; } = T.CreateChecked(1e-5);

    /// <summary>The seed of the dropout masks (<see cref="NetworkOptions.Seed"/>; default 42).</summary>
    public uint Seed { get; init; } = 42;

    /// <summary>The optimiser step the dropout masks of <see cref="Run"/> are drawn for (<see cref="Network.StepCount"/>; default 0); <see cref="TrainStep"/> advances it by one.</summary>
    public long Step { get; set; }

    /// <summary>
    /// One training-mode forward and backward: batch norm normalises with the batch statistics and
    /// its running statistics are updated (in a copy, returned in <see cref="StackResult{T}.Buffers"/>).
    /// </summary>
    /// <param name="input">The minibatch.</param>
    /// <param name="parameters">Every parameter by state-dict name (PyTorch layouts); other names are ignored.</param>
    /// <param name="buffers">The running statistics before the step; null for PyTorch's initial state.</param>
    /// <exception cref="StackException">The input, targets or parameters do not fit the stack, an id or class is out of range, or a batch norm gets one row; the message names the layer.</exception>
    public StackResult<T> Run(StackInput<T> input, IReadOnlyDictionary<string, T[]> parameters, BatchNormBuffers<T>? buffers = null)
    {
        int n = Check(input, parameters, training: true, withTargets: true);
        var after = buffers?.Clone() ?? BatchNormBuffers<T>.Initial(Stack);
        if (buffers != null && !buffers.Layers.SequenceEqual(Stack.BatchNormLayers()))
            throw new StackException($"the running statistics are for batch-norm layers {string.Join(",", buffers.Layers)}, the stack has {string.Join(",", Stack.BatchNormLayers())}.");
        int count = Stack.Layers.Count;
        var ys = new T[count][];
        var contexts = new RefContext<T>[count];

        // ---- forward
        for (int i = 0; i < count; i++)
        {
            var c = contexts[i] = Context(i, n, input, i == 0 ? input.Features ?? [] : ys[i - 1], parameters, after, training: true);
            ys[i] = c.Y;
            LayerType.Of(c.Layer.Kind).Forward(c);
        }

        // ---- loss
        var z = ys[^1];
        var dys = new T[count][];
        var dz = dys[^1] = new T[z.Length];
        T[]? dt = input.Targets is null ? null : new T[z.Length];
        T loss = Loss switch
        {
            LossKind.CrossEntropy => ReferenceLayers<T>.CrossEntropy(z, input.Classes, dz, n, OutputWidth),
            LossKind.Mse => ReferenceLayers<T>.Mse(z, input.Targets, dz, dt),
            LossKind.BceWithLogits => ReferenceLayers<T>.BceWithLogits(z, input.Targets, dz, dt),
            _ => ReferenceLayers<T>.Mean(z, dz),
        };

        // ---- backward
        var grads = new Dictionary<string, T[]>(StringComparer.Ordinal);
        foreach (var s in _specs) grads[s.Name] = new T[s.Length];
        T[]? dInput = input.Features is null ? null : new T[input.Features.Length];
        for (int i = count - 1; i >= 0; i--)
        {
            var c = contexts[i];
            c.Dy = dys[i];
            // dx of layer i is dy of layer i-1; of the input only when it is float
            c.Dx = (i > 0 ? dys[i - 1] = new T[ys[i - 1].Length] : dInput) ?? [];
            c.Gradients = grads;
            LayerType.Of(c.Layer.Kind).Backward(c);
        }

        // ---- L2 penalty on every linear weight (after the backward: dW += 2·l2·W)
        if (L2 != T.Zero)
            for (int i = 0; i < count; i++)
                if (Stack.Layers[i].Kind == LayerKind.Linear) loss += ReferenceLayers<T>.L2Penalty(parameters[W(i)], grads[W(i)], L2);

        return new StackResult<T>(loss, ys, dys, OutputWidth, grads, dInput, dt, after);
    }

    /// <summary>
    /// The forward pass alone. In training mode (<paramref name="training"/> true) this is the output of
    /// <see cref="Run"/> (batch statistics); at inference batch norm uses the running statistics:
    /// <c>(x − running_mean)/√(running_var + eps)·gain + bias</c>, and any n ≥ 1 is allowed.
    /// Targets in <paramref name="input"/> are ignored.
    /// </summary>
    /// <returns>The output <c>z [n,k]</c>.</returns>
    /// <exception cref="StackException">The input or parameters do not fit the stack.</exception>
    public T[] Forward(StackInput<T> input, IReadOnlyDictionary<string, T[]> parameters, BatchNormBuffers<T>? buffers, bool training)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (training)
        {
            // the training forward is Run's; the mean objective needs no targets
            var probe = new StackReference<T>(Stack, LossKind.Mean, InputWidth) { L2 = L2, BatchNormMomentum = BatchNormMomentum, Eps = Eps, Seed = Seed, Step = Step };
            return probe.Run(input with { Classes = null, Targets = null }, parameters, buffers).Output;
        }
        int n = Check(input, parameters, training: false, withTargets: false);
        var stats = buffers ?? BatchNormBuffers<T>.Initial(Stack);
        T[] x = input.Features ?? [];
        for (int i = 0; i < Stack.Layers.Count; i++)
        {
            var c = Context(i, n, input, x, parameters, stats, training: false);
            LayerType.Of(c.Layer.Kind).Forward(c);
            x = c.Y;
        }
        return x;
    }

    private RefContext<T> Context(int i, int n, StackInput<T> input, T[] x, IReadOnlyDictionary<string, T[]> parameters, BatchNormBuffers<T> running, bool training) => new()
    {
        Layer = Stack.Layers[i], Index = i, N = n, Ids = i == 0 ? input.Ids : null, X = x, Y = new T[n * _shapes[i].PerRow],
        Parameters = parameters, Training = training, Running = running, Eps = Eps, Momentum = BatchNormMomentum, Seed = Seed, Step = Step,
    };

    /// <summary>
    /// One training step: <see cref="Run"/>, then <paramref name="optimizer"/> updates
    /// <paramref name="parameters"/> in place and <paramref name="buffers"/> takes the new running statistics.
    /// </summary>
    /// <returns>The result of the forward and backward (the loss before the update).</returns>
    public StackResult<T> TrainStep(StackInput<T> input, IDictionary<string, T[]> parameters, BatchNormBuffers<T> buffers, ReferenceOptimizer<T> optimizer)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(buffers);
        ArgumentNullException.ThrowIfNull(optimizer);
        var view = parameters as IReadOnlyDictionary<string, T[]> ?? parameters.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        var r = Run(input, view, buffers);
        optimizer.Step(parameters, r.Gradients);
        Step++;
        foreach (int i in buffers.Layers)
        {
            r.Buffers.RunningMean(i).CopyTo(buffers.RunningMean(i), 0);
            r.Buffers.RunningVar(i).CopyTo(buffers.RunningVar(i), 0);
            buffers.Track(i);
        }
        return r;
    }

    private static string W(int i) => ParameterName(i, "weight");

    private static string Bias(int i) => ParameterName(i, "bias");

    private static string ParameterName(int i, string what) => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{i}.{what}");

    private string At(int i) => $"layer {i} ({Stack.Layers[i]})";

    // Validates everything Run/Forward reads; returns n.
    private int Check(StackInput<T> input, IReadOnlyDictionary<string, T[]> parameters, bool training, bool withTargets)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(parameters);
        int n = input.N;
        if (n < 1) throw new StackException($"a batch needs at least one row, not n = {n}.");
        if (Stack.TakesIds)
        {
            if (input.Ids is null || input.Features is not null)
                throw new StackException($"{At(0)} takes ids [n,{InputWidth}]: give StackInput.Ids, not Features.");
            if (input.Ids.LongLength != (long)n * InputWidth)
                throw new StackException($"{At(0)} takes ids [n,B] = [{n},{InputWidth}] ({(long)n * InputWidth} ids) but got {input.Ids.Length}.");
            int v = Stack.Layers[0].In;
            for (int r = 0; r < input.Ids.Length; r++)
                if ((uint)input.Ids[r] >= (uint)v)
                    throw new StackException($"{At(0)}: id {input.Ids[r]} at [{r / InputWidth}, {r % InputWidth}] is outside [0, {v}).");
        }
        else
        {
            if (input.Features is null || input.Ids is not null)
                throw new StackException($"{At(0)} takes float features [n,{InputWidth}]: give StackInput.Features, not Ids.");
            if (input.Features.LongLength != (long)n * InputWidth)
                throw new StackException($"{At(0)} takes [n,D] = [{n},{InputWidth}] ({(long)n * InputWidth} values) but got {input.Features.Length}.");
        }
        foreach (var s in _specs)
        {
            if (!parameters.TryGetValue(s.Name, out var p))
                throw new StackException($"{At(s.Layer)}: the parameter '{s.Name}' [{string.Join(",", s.Shape)}] is missing.");
            if (p.LongLength != s.Length)
                throw new StackException($"{At(s.Layer)}: '{s.Name}' has {p.Length} elements but the layer needs [{string.Join(",", s.Shape)}] = {s.Length}.");
        }
        if (training && n < 2)
            foreach (int i in Stack.BatchNormLayers())
                throw new StackException($"{At(i)}: a batch of n = 1 has no variance; batch norm in training mode needs at least 2 rows.");
        if (!withTargets) return n;
        int k = OutputWidth;
        string loss = Loss.ToText();
        string last = At(Stack.Layers.Count - 1);
        switch (Loss.Targets())
        {
            case TargetKind.Classes:
                if (input.Classes is null || input.Targets is not null) throw new StackException($"{loss} takes class ids [n]: give StackInput.Classes, not Targets.");
                if (input.Classes.Length != n) throw new StackException($"{loss} takes one class id per row: {n} rows but {input.Classes.Length} ids.");
                for (int i = 0; i < n; i++)
                    if ((uint)input.Classes[i] >= (uint)k)
                        throw new StackException($"{loss}: class id {input.Classes[i]} at row {i} is outside [0, {k}) ({last} gives {k} outputs).");
                break;
            case TargetKind.Floats:
                if (input.Targets is null || input.Classes is not null) throw new StackException($"{loss} takes float targets [n,k] = [{n},{k}]: give StackInput.Targets, not Classes.");
                if (input.Targets.LongLength != (long)n * k) throw new StackException($"{loss} takes targets [n,k] = [{n},{k}] ({last} gives {k} outputs) but got {input.Targets.Length} values.");
                break;
            default:
                if (input.Classes is not null || input.Targets is not null) throw new StackException($"{loss} takes no targets, but the input has some.");
                break;
        }
        return n;
    }
}
