using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using HpBackprop.Cpu;
using HpBackprop.Model;
using HpBackprop.Training;

namespace HpBackprop.Networks;

/// <summary>How a <see cref="Sequential"/> stack is compiled into a <see cref="Network"/>.</summary>
public sealed record NetworkOptions
{
    /// <summary>Rows of every training minibatch, n (default 32).</summary>
    public int BatchSize { get; init; } = 32;

    /// <summary>The loss that closes the stack (default softmax cross-entropy).</summary>
    public LossKind Loss { get; init; } = LossKind.CrossEntropy;

    /// <summary>The optimiser <see cref="Network.Step(ReadOnlySpan{int}, ReadOnlySpan{int})"/> applies (default plain SGD, lr 0.1).</summary>
    public Optimizer Optimizer { get; init; } = new Sgd();

    /// <summary>The learning-rate schedule (default constant).</summary>
    public Schedule Schedule { get; init; } = Schedule.Constant;

    /// <summary>L2 penalty: <c>loss += L2·ΣW²</c> over every linear layer's weight (default 0).</summary>
    public float L2 { get; init; }

    /// <summary>Weight of the newest batch in the batch-norm running statistics (default 0.001, the lecture's; PyTorch's is 0.1).</summary>
    public float BatchNormMomentum { get; init; } = 0.001f;

    /// <summary>The batch-norm epsilon added to the variance (default 1e-5).</summary>
    public float Eps { get; init; } = 1e-5f;

    /// <summary>Threads for a step: the caller plus <c>Threads − 1</c> persistent workers (default 1). Results are bitwise the same for any count.</summary>
    public int Threads { get; init; } = 1;

    /// <summary>The input width (B ids or D features); null to take the one the stack implies.</summary>
    public int? InputWidth { get; init; }

    /// <summary>Also compute the gradients of float inputs and float targets (<see cref="Network.InputGradient"/>, <see cref="Network.TargetGradient"/>).</summary>
    public bool InputGradients { get; init; }

    /// <summary>
    /// The seed of the initial parameters and of the dropout masks (default 42). <see cref="Network.Create(Sequential, NetworkOptions)"/>
    /// (and the CUDA package's factories) fill the parameters as <see cref="Network.Initialize"/> does with this seed, so a new network
    /// is ready to train, as a PyTorch module is when it is built; <c>Initialize(seed)</c> draws them again. The mask of a
    /// <c>dropout:P</c> layer at a step is a function of this seed, the optimiser step, the layer and the element, the same on every device.
    /// </summary>
    public int Seed { get; init; } = 42;
}

/// <summary>
/// A <see cref="Sequential"/> stack and its loss compiled for one batch size on one device: the CPU
/// (<see cref="Create(Sequential, NetworkOptions)"/>), or a CUDA GPU or its kernel emulator (<c>HpBackprop.Cuda.CudaNetwork</c>).
/// The stack is compiled once into a plan of steps over named buffers (<see cref="Plan"/> lists them with the fusions
/// the device runs); every buffer is sized once and a training step — forward, the loss straight from the output,
/// backward, the optimiser over the flat buffers — allocates nothing. Validation, training, evaluation, prediction,
/// calibration and checkpoints are the same code on every device. Parameters, gradients and optimiser state are under
/// the state-dict names of the equivalent <c>torch.nn.Sequential</c> in <see cref="Parameters"/>, in PyTorch's layout on
/// every device: on the CPU they are the buffers the steps use; on a GPU, the host copy that <see cref="PullParameters"/>
/// refreshes and <see cref="PushParameters"/> sends back.
/// A network is used by one thread at a time: a call on a second thread while one runs (Step, ForwardBackward, Evaluate,
/// Predict, Calibrate, Initialize, PullParameters, PushParameters) throws <see cref="InvalidOperationException"/> naming the
/// network, and any call after <see cref="Dispose"/> throws <see cref="ObjectDisposedException"/> naming it.
/// </summary>
/// <example>
/// <code>
/// var stack = Sequential.Parse("linear:2x16,relu,linear:16x1");
/// using var net = Network.Create(stack, new NetworkOptions { BatchSize = 64, Loss = LossKind.Mse, Optimizer = new AdamW { LearningRate = 0.01f } });
/// net.Initialize(seed: 1);
/// float loss = net.Step(features, targets);   // features [64,2], targets [64,1]
/// </code>
/// </example>
public sealed unsafe partial class Network : IDisposable
{
    /// <summary>Rows per chunk when evaluating, predicting or calibrating.</summary>
    public const int EvalChunk = Backend.EvalChunk;

    private readonly Plan _plan;
    private readonly Backend _backend;
    private readonly int _k;
    private float[]? _outMirror, _dInMirror, _dTargetMirror;
    // one thread at a time, nothing after Dispose
    private readonly SingleUse _use;

    private Network(Plan plan, ParameterStore store, Backend backend)
    {
        _use = new SingleUse(() => SingleUse.NameOf(plan.Stack, plan.Options.BatchSize));
        _plan = plan;
        Parameters = store;
        _backend = backend;
        _k = plan.OutputWidth;
    }

    /// <summary>
    /// Compiles <paramref name="stack"/> for the CPU with <paramref name="options"/> and initialises its parameters as
    /// <see cref="Initialize"/> does with <see cref="NetworkOptions.Seed"/> (so a new network is never all zeros). Every check
    /// happens here, before anything is allocated: the layers must fit together, the loss must fit the output, batch norm needs
    /// at least 2 rows, and the buffers must fit in memory (sizes are computed in 64 bits; the message gives the bytes).
    /// </summary>
    /// <exception cref="StackException">The stack, the loss or the batch size do not fit; the message names the layer.</exception>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    public static Network Create(Sequential stack, NetworkOptions options) => Create(stack, options, CpuDevice.Instance);

    /// <summary>Compiles <paramref name="stack"/> for <paramref name="device"/> (the CUDA package's factories call this).</summary>
    internal static Network Create(Sequential stack, NetworkOptions options, DeviceKind device)
    {
        var shapes = Check(stack, options);
        ArgumentNullException.ThrowIfNull(device);
        int width = options.InputWidth ?? stack.ImpliedInputWidth()!.Value;
        var plan = Networks.Plan.Compile(stack, options, shapes, width, device.Fusions);
        var store = new ParameterStore(stack, options.Optimizer.StateSlots);
        store.Initialize(options.Seed); // before the backend copies the store to its device
        var backend = device.Create(plan, store);
        return new Network(plan, store, backend);
    }

    /// <summary>
    /// Every check <see cref="Create(Sequential, NetworkOptions)"/> makes, without allocating anything: the layers fit
    /// together, the loss fits the output, batch norm has at least 2 rows, every buffer fits .NET's array limit and all of
    /// them fit in memory. Returns each layer's output shape.
    /// </summary>
    /// <exception cref="StackException">The stack, the loss or the batch size do not fit; the message names the layer, or the bytes needed.</exception>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    public static TensorShape[] Check(Sequential stack, NetworkOptions options)
    {
        ArgumentNullException.ThrowIfNull(stack);
        ArgumentNullException.ThrowIfNull(options);
        StackChecks.Layers(stack.Layers);
        Validate(options);
        var shapes = stack.Resolve(options.InputWidth);
        StackChecks.ProducesOutput(stack);
        int inputWidth = options.InputWidth ?? stack.ImpliedInputWidth()!.Value;
        int n = options.BatchSize;
        foreach (int i in stack.BatchNormLayers())
            if (n < 2) throw new StackException($"layer {i} ({stack.Layers[i]}) needs a batch of at least 2 rows: a batch of {n} has no variance.");
        if (options.Loss == LossKind.CrossEntropy && shapes[^1].Width < 2)
            throw new StackException($"cross_entropy needs at least 2 classes, but the last layer ({stack.Layers[^1]}) gives {shapes[^1].Width} output.");
        long bytes = RequiredBytes(stack, options, shapes, inputWidth);
        long available = MemoryBudget.Available;
        if (bytes > available)
            throw new StackException($"the network '{Layer.Clip(stack.ToString())}' with batch size {n} needs {bytes:N0} bytes of buffers; this process can use {available:N0}.");
        return shapes;
    }

    /// <summary>The bytes of every buffer a network of this stack and batch size allocates on the host (computed in 64 bits).</summary>
    public static long RequiredBytes(Sequential stack, NetworkOptions options, TensorShape[] shapes, int inputWidth)
    {
        ArgumentNullException.ThrowIfNull(stack);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(shapes);
        long n = options.BatchSize, floats = 0;
        long pars = stack.Parameters().Sum(p => p.Length + 16);
        floats += pars * (2 + options.Optimizer.StateSlots);
        for (int i = 0; i < shapes.Length; i++)
        {
            long w = shapes[i].PerRow;
            long rows = Math.Max(n, EvalChunk); // training batches of n rows, inference chunks of EvalChunk rows
            if (rows * w > Array.MaxLength)
                throw new StackException($"layer {i} ({stack.Layers[i]}) would need {rows * w * 4:N0} bytes in one buffer ({rows:N0} rows of {w:N0}), more than .NET's array limit of {Array.MaxLength:N0} elements.");
            floats += (2 * n + EvalChunk) * w;
            if (stack.Layers[i].Kind is LayerKind.BatchNorm or LayerKind.LayerNorm) floats += n * w;
            if (stack.Layers[i].Kind == LayerKind.Dropout) floats += (n * w + 3) / 4;
        }
        floats += n * inputWidth;
        if (options.InputGradients) floats += n * inputWidth + n * shapes[^1].Width; // the input and target gradients
        return floats * sizeof(float);
    }

    private static void Validate(NetworkOptions o)
    {
        if (o.BatchSize < 1) throw new ArgumentException($"NetworkOptions.BatchSize = {o.BatchSize} is invalid: it must be at least 1.", nameof(o));
        if (o.Threads < 1) throw new ArgumentException($"NetworkOptions.Threads = {o.Threads} is invalid: it must be at least 1.", nameof(o));
        StackChecks.Options(o);
        if (!(float.IsFinite(o.L2) && o.L2 >= 0)) throw new ArgumentException($"NetworkOptions.L2 = {o.L2} is invalid: it must be a finite number ≥ 0.", nameof(o));
        if (!(float.IsFinite(o.BatchNormMomentum) && o.BatchNormMomentum >= 0 && o.BatchNormMomentum <= 1))
            throw new ArgumentException($"NetworkOptions.BatchNormMomentum = {o.BatchNormMomentum} is invalid: it must be in [0, 1].", nameof(o));
        if (!(float.IsFinite(o.Eps) && o.Eps > 0)) throw new ArgumentException($"NetworkOptions.Eps = {o.Eps} is invalid: it must be a finite number > 0.", nameof(o));
        ArgumentNullException.ThrowIfNull(o.Optimizer);
        ArgumentNullException.ThrowIfNull(o.Schedule);
        o.Optimizer.Validate();
        o.Schedule.Validate();
    }

    /// <summary>Where it runs: <c>cpu</c>, <c>cuda (device name, …)</c> or <c>cuda-emulator</c>.</summary>
    public string Device => _backend.Device;

    /// <summary>
    /// What this network's training steps asked of its GPU so far (launches, host↔device copies and bytes, the captured
    /// step's nodes), or <see langword="null"/> on the CPU. <c>train --json</c> reports it per step.
    /// </summary>
    public DeviceTraffic? Traffic => _backend.Traffic;

    /// <summary>The stack.</summary>
    public Sequential Stack => _plan.Stack;

    /// <summary>The options it was compiled with.</summary>
    public NetworkOptions Options => _plan.Options;

    /// <summary>The output shape of every layer.</summary>
    public IReadOnlyList<TensorShape> Shapes => _plan.Shapes;

    /// <summary>The input width: B ids or D features per row.</summary>
    public int InputWidth => _plan.InputWidth;

    /// <summary>The output width k of the last layer.</summary>
    public int OutputWidth => _k;

    /// <summary>Rows of every training minibatch.</summary>
    public int BatchSize => Options.BatchSize;

    /// <summary>Parameters, gradients, optimiser state and running statistics (on a GPU, the host copy: see <see cref="PullParameters"/>).</summary>
    public ParameterStore Parameters { get; }

    /// <summary>Optimiser steps taken so far (the schedule's position; AdamW's t is this + 1 at the next step; the step the dropout masks are drawn for).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Set to a negative value.</exception>
    public long StepCount { get; set { ArgumentOutOfRangeException.ThrowIfNegative(value, nameof(StepCount)); field = value; } }

    /// <summary>The learning rate the next <c>Step</c> will use.</summary>
    public float LearningRate => Options.Schedule.At(StepCount, Options.Optimizer.LearningRate);

    /// <summary>The compiled plan: one line per step, naming its layers, what it runs and the fusions of the device that rewrote it.</summary>
    public IReadOnlyList<string> Plan
    {
        get
        {
            var lines = _plan.Steps.Select(s => s.ToString()).ToList();
            if (Cpu is { Pipelined: true } cpu)
                lines.Insert(0, $"layers 0..{Stack.Layers.Count - 1} (training, n ≥ {RowBlockPipeline.MinRows}): {cpu.PipelinePattern} [{Networks.Plan.RowBlockPipeline}]; the steps below run inference");
            return lines;
        }
    }

    /// <summary>
    /// Fills the parameters from a generator seeded with <paramref name="seed"/> (standard normals, drawn for
    /// embeddings, then linear layers, then batch norms, each in layer order; a linear weight is drawn as its
    /// transpose <c>[IN,OUT]</c>, row by row): embedding ~ N(0,1); a linear weight ~ N(0,1)·gain/√IN, where gain
    /// is 5/3 when a tanh follows (after an optional batch norm, layer norm or dropout), √2 for ReLU, 1 otherwise, and the
    /// last linear layer's weight ~ N(0,1)·0.1 instead; biases ~ N(0,1)·0.1; batch-norm weight ~ 1 + N(0,1)·0.1, bias ~
    /// N(0,1)·0.1; layer-norm weight 1 and bias 0. Small non-zero values everywhere, so a wrong backward cannot hide behind
    /// zeros. The same values on every device. Clears gradients, optimiser state, running statistics and <see cref="StepCount"/>.
    /// A new network already holds the values of <see cref="NetworkOptions.Seed"/>; this draws them again, from <paramref name="seed"/>.
    /// </summary>
    public void Initialize(int seed)
    {
        using var use = _use.Enter();
        {
            Parameters.Initialize(seed);
            _backend.Push();
            StepCount = 0;
        }
    }

    // ---- training -------------------------------------------------------------------------------------------

    /// <summary>Forward and backward on a minibatch of ids <c>[n,B]</c> and class ids <c>[n]</c>: fills the gradients, returns the loss. Does not update (the running statistics take the batch, as in any training forward).</summary>
    public float ForwardBackward(ReadOnlySpan<int> ids, ReadOnlySpan<int> classes) { fixed (int* pi = ids, pc = classes) return Run(null, pi, ids.Length, pc, classes.Length, null, 0, false); }

    /// <summary>Forward and backward on ids <c>[n,B]</c> and float targets <c>[n,k]</c> (empty for the <c>mean</c> loss).</summary>
    public float ForwardBackward(ReadOnlySpan<int> ids, ReadOnlySpan<float> targets) { fixed (int* pi = ids) fixed (float* pt = targets) return Run(null, pi, ids.Length, null, 0, pt, targets.Length, false); }

    /// <summary>Forward and backward on features <c>[n,D]</c> and class ids <c>[n]</c>.</summary>
    public float ForwardBackward(ReadOnlySpan<float> features, ReadOnlySpan<int> classes) { fixed (float* pf = features) fixed (int* pc = classes) return Run(pf, null, features.Length, pc, classes.Length, null, 0, false); }

    /// <summary>Forward and backward on features <c>[n,D]</c> and float targets <c>[n,k]</c> (empty for the <c>mean</c> loss).</summary>
    public float ForwardBackward(ReadOnlySpan<float> features, ReadOnlySpan<float> targets) { fixed (float* pf = features, pt = targets) return Run(pf, null, features.Length, null, 0, pt, targets.Length, false); }

    /// <summary>One training step on ids and class ids: forward, backward, the optimiser with the scheduled rate. Returns the loss before the update.</summary>
    public float Step(ReadOnlySpan<int> ids, ReadOnlySpan<int> classes) { fixed (int* pi = ids, pc = classes) return Run(null, pi, ids.Length, pc, classes.Length, null, 0, true); }

    /// <summary>One training step on ids and float targets (empty for the <c>mean</c> loss).</summary>
    public float Step(ReadOnlySpan<int> ids, ReadOnlySpan<float> targets) { fixed (int* pi = ids) fixed (float* pt = targets) return Run(null, pi, ids.Length, null, 0, pt, targets.Length, true); }

    /// <summary>One training step on features and class ids.</summary>
    public float Step(ReadOnlySpan<float> features, ReadOnlySpan<int> classes) { fixed (float* pf = features) fixed (int* pc = classes) return Run(pf, null, features.Length, pc, classes.Length, null, 0, true); }

    /// <summary>One training step on features and float targets (empty for the <c>mean</c> loss).</summary>
    public float Step(ReadOnlySpan<float> features, ReadOnlySpan<float> targets) { fixed (float* pf = features, pt = targets) return Run(pf, null, features.Length, null, 0, pt, targets.Length, true); }

    private float Run(float* features, int* ids, int inputLength, int* classes, int classCount, float* targets, int targetLength, bool step)
    {
        using var use = _use.Enter();
        {
            CheckBatch(features, ids, inputLength, classes, classCount, targets, targetLength, BatchSize);
            return StepChecked(new Batch(BatchSize, ids, features, classes, targets), step);
        }
    }

    /// <summary>One step on a checked batch.</summary>
    private float StepChecked(in Batch batch, bool update)
    {
        var args = new StepArgs(update, LearningRate, StepCount + 1, StepCount);
        float loss = _backend.Step(batch, args);
        if (update) StepCount++;
        return loss;
    }

    private void CheckBatch(float* features, int* ids, int inputLength, int* classes, int classCount, float* targets, int targetLength, int n)
    {
        bool takesIds = Stack.TakesIds;
        if (takesIds && ids == null && inputLength >= 0 && features != null)
            throw new ArgumentException($"the stack '{Layer.Clip(Stack.ToString())}' starts with an embedding and takes ids, not float features.");
        if (!takesIds && ids != null)
            throw new ArgumentException($"the stack '{Layer.Clip(Stack.ToString())}' takes float features, not ids.");
        if ((long)inputLength != (long)n * InputWidth)
            throw new ShapeException(takesIds ? "ids" : "features", [n, InputWidth], [inputLength / Math.Max(1, InputWidth), InputWidth]);
        if (takesIds) InputChecks.Ids(ids, inputLength, InputWidth, Stack);
        else InputChecks.Finite(features, inputLength, InputWidth, "features");
        switch (Options.Loss.Targets())
        {
            case TargetKind.Classes:
                if (classes == null) throw new ArgumentException($"the loss {Options.Loss.ToText()} takes class ids [n]; float targets were given.");
                if (classCount != n) throw new ShapeException("classes", [n], [classCount]);
                for (int i = 0; i < n; i++)
                    if ((uint)classes[i] >= (uint)_k) throw new ShapeException("classes", $"class id {classes[i]} at row {i} is outside [0, {_k}) (the output width of layer {Stack.Layers.Count - 1}, {Stack.Layers[^1]}).");
                break;
            case TargetKind.Floats:
                if (targets == null && classes != null) throw new ArgumentException($"the loss {Options.Loss.ToText()} takes float targets [n,{_k}]; class ids were given.");
                if ((long)targetLength != (long)n * _k) throw new ShapeException("targets", [n, _k], [targetLength / Math.Max(1, _k), _k]);
                InputChecks.Targets(targets, targetLength, _k, Options.Loss);
                break;
            default:
                if (classCount != 0 || targetLength != 0) throw new ArgumentException("the loss mean takes no targets: pass an empty span.");
                break;
        }
    }

    /// <summary>The output <c>z [n,k]</c> of the last training forward.</summary>
    public ReadOnlySpan<float> Output => Read(TrainingBuffer.Output, ref _outMirror, (long)BatchSize * _k);

    /// <summary>The gradient of the float inputs of the last <c>ForwardBackward</c>, when <see cref="NetworkOptions.InputGradients"/> is set.</summary>
    public ReadOnlySpan<float> InputGradient => Options.InputGradients && !Stack.TakesIds ? Read(TrainingBuffer.InputGradient, ref _dInMirror, (long)BatchSize * InputWidth) : [];

    /// <summary>The gradient of the float targets of the last <c>ForwardBackward</c>, when <see cref="NetworkOptions.InputGradients"/> is set.</summary>
    public ReadOnlySpan<float> TargetGradient => Options.InputGradients && Options.Loss.Targets() == TargetKind.Floats ? Read(TrainingBuffer.TargetGradient, ref _dTargetMirror, (long)BatchSize * _k) : [];

    private float[] Read(TrainingBuffer which, ref float[]? mirror, long length)
    {
        using var use = _use.Enter();
        mirror ??= new float[length];
        _backend.ReadTraining(which, _plan.Steps.Length - 1, mirror);
        return mirror;
    }

    // ---- inference ------------------------------------------------------------------------------------------

    /// <summary>
    /// Predictions for <paramref name="rows"/> rows of ids in inference mode (batch norm with running statistics, dropout
    /// off), written to <paramref name="output"/> <c>[rows,k]</c>: class probabilities (softmax) for cross-entropy, sigmoid
    /// probabilities for BCE, the raw outputs otherwise; with <paramref name="raw"/> set, always the raw outputs (logits).
    /// </summary>
    public void Predict(ReadOnlySpan<int> ids, int rows, Span<float> output, bool raw = false)
    {
        if (!Stack.TakesIds) throw new ArgumentException("this stack takes float features, not ids.", nameof(ids));
        CheckRows(ids.Length, rows, output.Length);
        using var use = _use.Enter();
        fixed (int* pi = ids) fixed (float* po = output)
        {
            InputChecks.Ids(pi, ids.Length, InputWidth, Stack);
            PredictRows(null, pi, rows, po, raw);
        }
    }

    /// <summary>Predictions for <paramref name="rows"/> rows of float features (see the ids overload).</summary>
    public void Predict(ReadOnlySpan<float> features, int rows, Span<float> output, bool raw = false)
    {
        if (Stack.TakesIds) throw new ArgumentException("this stack takes ids, not float features.", nameof(features));
        CheckRows(features.Length, rows, output.Length);
        using var use = _use.Enter();
        fixed (float* pf = features) fixed (float* po = output)
        {
            InputChecks.Finite(pf, features.Length, InputWidth, "features");
            PredictRows(pf, null, rows, po, raw);
        }
    }

    private void CheckRows(int inputLength, int rows, int outputLength)
    {
        if (rows < 0) throw new ArgumentOutOfRangeException(nameof(rows), rows, "rows must not be negative.");
        if ((long)inputLength != (long)rows * InputWidth) throw new ShapeException("input", [rows, InputWidth], [inputLength / InputWidth, InputWidth]);
        if ((long)outputLength < (long)rows * _k) throw new ShapeException("output", [rows, _k], [outputLength / _k, _k]);
    }

    private void PredictRows(float* features, int* ids, int rows, float* output, bool raw)
    {
        {
            for (int r0 = 0; r0 < rows; r0 += EvalChunk)
            {
                int r = Math.Min(EvalChunk, rows - r0);
                var b = new Batch(r, ids == null ? null : ids + (long)r0 * InputWidth, features == null ? null : features + (long)r0 * InputWidth, null, null);
                _backend.Infer(b, 0, _plan.Steps.Length);
                var o = new Span<float>(output + (long)r0 * _k, r * _k);
                _backend.ReadInferred(o);
                if (raw) continue;
                if (Options.Loss == LossKind.CrossEntropy)
                    for (int i = 0; i < r; i++) System.Numerics.Tensors.TensorPrimitives.SoftMax(o.Slice(i * _k, _k), o.Slice(i * _k, _k));
                else if (Options.Loss == LossKind.BceWithLogits)
                    System.Numerics.Tensors.TensorPrimitives.Sigmoid(o, o);
            }
        }
    }

    /// <summary>The mean loss over every example of <paramref name="data"/> in inference mode (batch norm with running statistics, dropout off; no L2 term).</summary>
    /// <exception cref="ArgumentException">The examples do not fit the network (input kind or width, targets, an id or class out of range).</exception>
    public float Evaluate(ExampleSet data)
    {
        CheckData(data);
        using var use = _use.Enter();
        return (float)(EvaluateChecked(data, null, out _) / data.Count);
    }

    /// <summary>
    /// The summed loss over every example of checked <paramref name="data"/> in inference mode (the caller holds the network);
    /// with <paramref name="outputs"/> (<see cref="EvalChunk"/>·k floats), also the examples a classifier gets right
    /// (<see cref="CorrectClasses"/>), else 0.
    /// </summary>
    private double EvaluateChecked(ExampleSet data, float[]? outputs, out long correct)
    {
        double total = 0;
        correct = 0;
        fixed (int* ids = data.Ids, cls = data.Classes)
        fixed (float* f = data.Features, t = data.Targets)
            for (int r0 = 0; r0 < data.Count; r0 += EvalChunk)
            {
                int r = Math.Min(EvalChunk, data.Count - r0);
                var b = new Batch(r, ids == null ? null : ids + (long)r0 * InputWidth, f == null ? null : f + (long)r0 * InputWidth,
                    cls == null ? null : cls + r0, t == null ? null : t + (long)r0 * _k);
                _backend.Infer(b, 0, _plan.Steps.Length);
                total += _backend.InferLoss(b);
                if (outputs != null)
                {
                    var o = outputs.AsSpan(0, r * _k);
                    _backend.ReadInferred(o);
                    correct += CorrectClasses(o, r, data, r0);
                }
            }
        return total;
    }

    /// <summary>
    /// Replaces every batch norm's running statistics with the mean and Bessel-corrected variance of its input over all of
    /// <paramref name="train"/>, in layer order (each computed with the ones before it calibrated), in double precision
    /// (two passes: the mean, then the centred squares). The input of each batch norm is computed once per example: it is
    /// kept on the host for the next batch norm when it fits in memory, so the cost grows with the number of layers, not its square.
    /// </summary>
    public void Calibrate(ExampleSet train)
    {
        CheckData(train);
        if (train.Count < 2) throw new ArgumentException("calibration needs at least 2 examples.", nameof(train));
        using var use = _use.Enter();
        {
            fixed (int* ids = train.Ids)
            fixed (float* feats = train.Features)
                CalibrateAll(ids, feats, train.Count);
        }
    }

    private void CalibrateAll(int* ids, float* feats, int N)
    {
        float[]? frontier = null; // the input of step `at` for every example, when it fits in memory
        int at = 0;
        var chunk = new float[(long)EvalChunk * _plan.Steps.Max(s => s.InWidth)];
        foreach (int k in _plan.BatchNormSteps)
        {
            int F = _plan.Steps[k].InWidth;
            long limit = CalibrationMemoryLimit >= 0 ? CalibrationMemoryLimit : GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 4;
            bool keep = (long)N * F <= Array.MaxLength && (long)N * F * sizeof(float) <= limit;
            float[]? next = keep ? new float[(long)N * F] : null;
            var sum = new double[F];
            var sq = new double[F];
            // pass 1: the mean (and the input kept for pass 2 and the next batch norm)
            for (int r0 = 0; r0 < N; r0 += EvalChunk)
            {
                int r = Math.Min(EvalChunk, N - r0);
                var x = Input(r0, r, k);
                Accumulate(x, r, F, sum, sq, 0);
                if (next != null) x.CopyTo(next.AsSpan(r0 * F));
            }
            for (int c = 0; c < F; c++) sum[c] /= N;
            // pass 2: the centred squares
            if (next != null) Accumulate(next, N, F, sum, sq, 1);
            else
                for (int r0 = 0; r0 < N; r0 += EvalChunk)
                {
                    int r = Math.Min(EvalChunk, N - r0);
                    Accumulate(Input(r0, r, k), r, F, sum, sq, 1);
                }
            string i0 = _plan.Steps[k].Layer.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var mean = Parameters.Value(i0 + ".running_mean");
            var variance = Parameters.Value(i0 + ".running_var");
            for (int c = 0; c < F; c++) { mean[c] = (float)sum[c]; variance[c] = (float)(sq[c] / (N - 1)); }
            _backend.PushBuffers();
            if (next != null) { frontier = next; at = k; }
        }

        // the input of step k for rows [r0, r0 + r): from the kept input of an earlier step, or from the examples
        Span<float> Input(int r0, int r, int k)
        {
            fixed (float* fr = frontier)
            {
                var b = fr != null ? new Batch(r, null, fr + (long)r0 * _plan.Steps[at].InWidth, null, null)
                    : new Batch(r, ids == null ? null : ids + (long)r0 * InputWidth, feats == null ? null : feats + (long)r0 * InputWidth, null, null);
                _backend.Infer(b, fr != null ? at : 0, k);
                CalibrationForwards += k - (fr != null ? at : 0);
            }
            var dst = chunk.AsSpan(0, r * _plan.Steps[k].InWidth);
            _backend.ReadInferred(dst);
            return dst;
        }

        static void Accumulate(ReadOnlySpan<float> x, int rows, int f, double[] sum, double[] sq, int pass)
        {
            for (int i = 0; i < rows; i++)
                for (int c = 0; c < f; c++)
                {
                    double v = x[i * f + c];
                    if (pass == 0) sum[c] += v; else { double d = v - sum[c]; sq[c] += d * d; }
                }
        }
    }

    /// <summary>The bytes <see cref="Calibrate"/> may keep for a batch norm's input over the whole set (−1: a quarter of the memory the process may use); beyond it the input is recomputed from the examples.</summary>
    internal long CalibrationMemoryLimit { get; set; } = -1;

    /// <summary>Step forwards (one step over one chunk) run by <see cref="Calibrate"/> so far: its cost grows linearly with the number of batch norms.</summary>
    internal long CalibrationForwards { get; private set; }

    private void CheckData(ExampleSet data)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.Count == 0) throw new ArgumentException("the example set is empty.", nameof(data));
        if (Stack.TakesIds != (data.Ids != null))
            throw new ArgumentException($"the stack takes {(Stack.TakesIds ? "ids" : "float features")} but the examples have {(data.Ids != null ? "ids" : "float features")}.", nameof(data));
        if (data.InputWidth != InputWidth)
            throw new ArgumentException($"the examples have {data.InputWidth} inputs per row but the network takes {InputWidth}.", nameof(data));
        var want = Options.Loss.Targets();
        if (want != TargetKind.None && data.TargetKind != want)
            throw new ArgumentException($"the loss {Options.Loss.ToText()} takes {(want == TargetKind.Classes ? "class ids" : "float targets")} but the examples have {(data.TargetKind == TargetKind.Classes ? "class ids" : data.TargetKind == TargetKind.Floats ? "float targets" : "none")}.", nameof(data));
        if (want == TargetKind.Floats && data.TargetWidth != _k)
            throw new ArgumentException($"the examples have {data.TargetWidth} targets per row but the network's output has {_k}.", nameof(data));
        InputChecks.Contents(data, Stack, Options.Loss, _k);
    }

    // ---- a training loop (its body: RunSteps, in Network.Fit.cs) --------------------------------------------

    /// <summary>
    /// Trains for <paramref name="steps"/> steps on minibatches drawn uniformly with replacement from
    /// <paramref name="train"/> (seeded by <paramref name="seed"/>; the same draws on every device), reporting progress
    /// every <paramref name="reportEvery"/> steps. Returns the loss of every step done: a cancellation stops the loop at
    /// the end of a step, and the array then holds the steps done only. The loop allocates nothing per step. Every example
    /// is checked once before the first step (ids and class ids in range, features and targets finite). For a validation
    /// set, early stopping or epochs, see <see cref="Fit(ExampleSet, FitOptions)"/>, of which this is the short form.
    /// </summary>
    /// <exception cref="TrainingDivergedException">A loss was NaN or infinite; the message names the step and the rate.</exception>
    public float[] Fit(ExampleSet train, int steps, int seed = 42, Action<TrainingProgress>? progress = null, int reportEvery = 1000, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(steps);
        return Fit(train, new FitOptions { Steps = steps, Seed = seed, Progress = progress, ReportEvery = reportEvery, CancellationToken = cancellationToken }).Losses;
    }

    /// <summary>
    /// Continues <paramref name="run"/>: trains from step <see cref="TrainingRun.Completed"/> up to <paramref name="untilStep"/>
    /// (default: <see cref="TrainingRun.TotalSteps"/>) on minibatches drawn by the run's generator, recording each loss in
    /// <see cref="TrainingRun.Losses"/>. A run saved with <see cref="IO.StackCheckpoint"/> and continued here gives bitwise
    /// the parameters of the same run never stopped. The loop allocates nothing per step; a cancellation stops it at the
    /// end of a step. Returns the number of steps taken by this call.
    /// </summary>
    /// <exception cref="TrainingDivergedException">A loss was NaN or infinite; the message names the 1-based step and the rate.</exception>
    public int Fit(ExampleSet train, TrainingRun run, Action<TrainingProgress>? progress = null, int reportEvery = 1000,
        CancellationToken cancellationToken = default, int? untilStep = null)
    {
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(run);
        int until = untilStep ?? run.TotalSteps;
        if (until < run.Completed || until > run.TotalSteps)
            throw new ArgumentOutOfRangeException(nameof(untilStep), until, $"untilStep must be in [{run.Completed}, {run.TotalSteps}].");
        CheckData(train);
        using var use = _use.Enter();
        return RunSteps(train, run, until, null, progress, reportEvery, cancellationToken, null, 0, null);
    }

    // ---- device copies --------------------------------------------------------------------------------------

    /// <summary>Copies the device's parameters, gradients, optimiser state and running statistics into <see cref="Parameters"/> (nothing to do on the CPU, where they are the same buffers).</summary>
    public void PullParameters()
    {
        using var use = _use.Enter();
        _backend.Pull();
    }

    /// <summary>Copies <see cref="Parameters"/> (values, gradients, optimiser state, running statistics) to the device (nothing to do on the CPU).</summary>
    public void PushParameters()
    {
        using var use = _use.Enter();
        _backend.Push();
    }

    /// <summary>Frees the buffers (on a GPU, the device memory, and the runtime when the network owns it) and the worker threads.</summary>
    /// <exception cref="InvalidOperationException">Another thread is using the network.</exception>
    public void Dispose()
    {
        if (_use.Dispose()) _backend.Dispose();
    }

    /// <summary>The one-thread-at-a-time guard, for tests.</summary>
    internal SingleUse Use => _use;

    // ---- for the backends, the tests and the benchmarks -------------------------------------------------------

    /// <summary>The compiled plan.</summary>
    internal Plan CompiledPlan => _plan;

    /// <summary>The backend.</summary>
    internal Backend Backend => _backend;

    /// <summary>The CPU backend, or null on another device.</summary>
    internal CpuBackend? Cpu => _backend as CpuBackend;

    private CpuBackend CpuOnly => Cpu ?? throw new InvalidOperationException($"this reads the CPU backend's buffers; the network runs on {Device}.");

    /// <summary>The output of step <paramref name="k"/> (see <see cref="Plan"/>) in the last training step.</summary>
    internal ReadOnlySpan<float> OpOutput(int k)
    {
        if (Cpu is { } c) return c.OpOutput(k);
        var a = new float[(long)BatchSize * _plan.Steps[k].OutWidth];
        _backend.ReadTraining(TrainingBuffer.Output, k, a);
        return a;
    }

    /// <summary>The gradient of step <paramref name="k"/>'s output in the last training step.</summary>
    internal ReadOnlySpan<float> OpOutputGradient(int k)
    {
        if (Cpu is { } c) return c.OpOutputGradient(k);
        var a = new float[(long)BatchSize * _plan.Steps[k].OutWidth];
        _backend.ReadTraining(TrainingBuffer.OutputGradient, k, a);
        return a;
    }

    /// <summary>The batch statistics (mean, variance, 1/√(var + eps)) of the batch norm in step <paramref name="k"/> in the last training step (CPU).</summary>
    internal (float[] Mean, float[] Variance, float[] VarInv) BatchStatistics(int k) => CpuOnly.BatchStatistics(k);

    /// <summary>Whether the batch norm in step <paramref name="k"/> holds its <c>[n,F]</c> bnraw buffer (CPU).</summary>
    internal bool BatchNormHoldsBnraw(int k) => CpuOnly.BatchNormHoldsBnraw(k);

    /// <summary>Off: a batch the row-block pipeline would take runs op by op instead (CPU; for tests and benchmarks).</summary>
    internal bool PipelineEnabled { get => CpuOnly.PipelineEnabled; set => CpuOnly.PipelineEnabled = value; }

    /// <summary>Whether training steps take the row-block pipeline.</summary>
    internal bool Pipelined => Cpu?.Pipelined == true;

    /// <summary>Times each op (CPU; the benchmarks' <c>stack-stages</c>).</summary>
    internal (string Pattern, double ForwardUs, double BackwardUs)[] ProfileOps(int* ids, float* features, int reps) => CpuOnly.ProfileOps(ids, features, reps);

    /// <summary>One step on a drawn minibatch of whichever inputs and targets the stack takes.</summary>
    internal float StepOn(int[] ids, float[] features, int[] classes, float[] targets) =>
        Options.Loss.Targets() == TargetKind.Classes
            ? (Stack.TakesIds ? Step(ids, classes) : Step(features, classes))
            : (Stack.TakesIds ? Step(ids, (ReadOnlySpan<float>)targets) : Step(features, (ReadOnlySpan<float>)targets));
}
