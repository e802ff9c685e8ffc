using System.Diagnostics;
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
}

/// <summary>
/// A <see cref="Sequential"/> stack and its loss compiled for one batch size on the CPU: every buffer is
/// sized once, adjacent layers are fused by a small set of named patterns (see <see cref="Plan"/>), and a
/// training step — forward, loss straight from the output, backward, optimiser over the flat buffers —
/// allocates nothing. Parameters, gradients and optimiser state live in <see cref="Parameters"/> under the
/// state-dict names of the equivalent <c>torch.nn.Sequential</c>.
/// A network is used by one thread at a time: a call on a second thread while one runs (Step, ForwardBackward, Evaluate,
/// Predict, Calibrate, Initialize) throws <see cref="InvalidOperationException"/> naming the network, and any call after
/// <see cref="Dispose"/> throws <see cref="ObjectDisposedException"/> naming it.
/// </summary>
/// <example>
/// <code>
/// var stack = Sequential.Parse("linear:2x16,relu,linear:16x1");
/// using var net = Network.Create(stack, new NetworkOptions { BatchSize = 64, Loss = LossKind.Mse, Optimizer = new AdamW { LearningRate = 0.01f } });
/// net.Initialize(seed: 1);
/// float loss = net.Step(features, targets);   // features [64,2], targets [64,1]
/// </code>
/// </example>
public sealed unsafe class Network : INetwork
{
    /// <summary>Rows per chunk when evaluating, predicting or calibrating.</summary>
    public const int EvalChunk = 1024;

    private readonly LayerOp[] _ops;
    private readonly float[][] _out, _dout, _evOut;
    private readonly float[] _dIn, _dTarget;
    private readonly WorkerPool? _pool;
    private readonly int[] _linearWeights; // parameter indices of linear weights (for L2)
    private readonly int _k;
    // plain SGD without L2: linear weights are updated in their gradient product's epilogue, the rest in one pass over these ranges
    private readonly StepState? _fusedSgd;
    private readonly (int Offset, int Length)[] _restRanges = [];
    // the row-block pipeline: the whole training step of a makemore-shaped stack at large n (null when it does not apply)
    private readonly IRowBlockPipeline? _pipeline;
    // one thread at a time, nothing after Dispose (issue #20)
    private readonly SingleUse _use;

    private Network(Sequential stack, NetworkOptions options, TensorShape[] shapes, int inputWidth)
    {
        _use = new SingleUse(() => SingleUse.NameOf(stack, options.BatchSize));
        Stack = stack;
        Options = options;
        InputWidth = inputWidth;
        Shapes = shapes;
        _k = shapes[^1].Width;
        Parameters = new ParameterStore(stack, options.Optimizer.StateSlots);
        if (options.Threads > 1) _pool = new WorkerPool(options.Threads);
        if (options.Optimizer is Sgd { Momentum: 0, WeightDecay: 0 } && options.L2 == 0) _fusedSgd = new StepState();
        _ops = Compile(out _linearWeights);
        if (_fusedSgd != null)
        {
            var ranges = new List<(int, int)>();
            int start = 0;
            foreach (int p in _linearWeights)
            {
                var slot = Parameters.Parameters[p];
                if (slot.Offset > start) ranges.Add((start, slot.Offset - start));
                start = slot.Offset + slot.Length;
            }
            if (Parameters.Data.Length > start) ranges.Add((start, Parameters.Data.Length - start));
            _restRanges = ranges.ToArray();
        }
        int n = options.BatchSize;
        _out = new float[_ops.Length][];
        _dout = new float[_ops.Length][];
        _evOut = new float[_ops.Length][];
        for (int k = 0; k < _ops.Length; k++)
        {
            _out[k] = Buf((long)n * _ops[k].OutWidth);
            _dout[k] = Buf((long)n * _ops[k].OutWidth);
            _evOut[k] = Buf((long)EvalChunk * _ops[k].OutWidth);
        }
        _dIn = options.InputGradients && !stack.TakesIds ? Buf((long)n * inputWidth) : [];
        _dTarget = options.InputGradients && options.Loss.Targets() == TargetKind.Floats ? Buf((long)n * _k) : [];
        _pipeline = MakePipeline();
        // the pipeline trains without the batch norm's [n,F] bnraw buffer (it recomputes bnraw from hprebn where it needs it)
        if (_pipeline != null) foreach (var op in _ops) (op as IBatchNormOp)?.ReleaseTrainingBuffer();
    }

    /// <summary>
    /// The row-block pipeline for <c>embedding, flatten, linear, batchnorm, ACT, linear</c> with cross-entropy at
    /// n ≥ 256 on a CPU with vector instructions (any activation, either batch-norm mode, with or without biases); null otherwise.
    /// It writes the same buffers as the ops (embcat, hprebn, h, logits and their gradients).
    /// </summary>
    private IRowBlockPipeline? MakePipeline()
    {
        var l = Stack.Layers;
        int n = BatchSize;
        if (Options.Loss != LossKind.CrossEntropy || l.Count != 6 || _ops.Length != 4) return null;
        if (l[0].Kind != LayerKind.Embedding || l[1].Kind != LayerKind.Flatten || l[2].Kind != LayerKind.Linear || l[3].Kind != LayerKind.BatchNorm
            || !l[4].IsActivation || l[5].Kind != LayerKind.Linear || !RowBlockPipeline.Applies(n, l[2].Out)) return null;
        var ps = Parameters;
        float* P = Ptr(ps.Data), G = Ptr(ps.Grad), Bf = Ptr(ps.Buffers);
        float* Pv(string name) => ps.Contains(name) ? P + ps.Slot(name).Offset : null;
        float* Gv(string name) => ps.Contains(name) ? G + ps.Slot(name).Offset : null;
        var w = new PipelineWeights
        {
            C = Pv("0.weight"), DC = Gv("0.weight"), W1 = Pv("2.weight"), DW1 = Gv("2.weight"), B1 = Pv("2.bias"), DB1 = Gv("2.bias"),
            Gain = Pv("3.weight"), Bias = Pv("3.bias"), DGain = Gv("3.weight"), DBias = Gv("3.bias"),
            RunMean = Bf + ps.Slot("3.running_mean").Offset, RunVar = Bf + ps.Slot("3.running_var").Offset,
            Tracked = (long*)Unsafe.AsPointer(ref ps.BatchesTracked[0]), W2 = Pv("5.weight"), DW2 = Gv("5.weight"), B2 = Pv("5.bias"), DB2 = Gv("5.bias"),
        };
        var x = new PipelineBuffers
        {
            Embcat = Ptr(_out[0]), Hprebn = Ptr(_out[1]), H = Ptr(_out[2]), Logits = Ptr(_out[3]), Dlogits = Ptr(_dout[3]), Dhprebn = Ptr(_dout[1]), Dembcat = Ptr(_dout[0]),
        };
        int B = InputWidth, E = l[0].Out, H = l[2].Out, V = l[5].Out, t = Options.Threads;
        float eps = Options.Eps, m = Options.BatchNormMomentum;
        bool biased = l[3].Mode == BatchNormMode.Biased;
        return (l[4].Kind, biased) switch
        {
            (LayerKind.Tanh, false) => new RowBlockPipeline<TanhAct, BatchNorm.Bessel>(w, x, n, B, E, H, V, eps, m, t, _pool),
            (LayerKind.Tanh, true) => new RowBlockPipeline<TanhAct, BatchNorm.Biased>(w, x, n, B, E, H, V, eps, m, t, _pool),
            (LayerKind.Relu, false) => new RowBlockPipeline<ReluAct, BatchNorm.Bessel>(w, x, n, B, E, H, V, eps, m, t, _pool),
            (LayerKind.Relu, true) => new RowBlockPipeline<ReluAct, BatchNorm.Biased>(w, x, n, B, E, H, V, eps, m, t, _pool),
            (LayerKind.Sigmoid, false) => new RowBlockPipeline<SigmoidAct, BatchNorm.Bessel>(w, x, n, B, E, H, V, eps, m, t, _pool),
            _ => new RowBlockPipeline<SigmoidAct, BatchNorm.Biased>(w, x, n, B, E, H, V, eps, m, t, _pool),
        };
    }

    /// <summary>
    /// Compiles <paramref name="stack"/> for the CPU with <paramref name="options"/>. Every check happens here,
    /// before anything is allocated: the layers must fit together, the loss must fit the output, batch norm needs
    /// at least 2 rows, and the buffers must fit in memory (sizes are computed in 64 bits; the message gives the bytes).
    /// </summary>
    /// <exception cref="StackException">The stack, the loss or the batch size do not fit; the message names the layer.</exception>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    public static Network Create(Sequential stack, NetworkOptions options)
    {
        var shapes = Check(stack, options);
        return new Network(stack, options, shapes, options.InputWidth ?? stack.ImpliedInputWidth()!.Value);
    }

    /// <summary>
    /// Every check <see cref="Create"/> makes, without allocating anything: the layers fit together, the loss fits the
    /// output, batch norm has at least 2 rows, every buffer fits .NET's array limit and all of them fit in memory.
    /// Returns each layer's output shape.
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

    /// <summary>The bytes of every buffer a network of this stack and batch size allocates (computed in 64 bits).</summary>
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
            if (stack.Layers[i].Kind == LayerKind.BatchNorm) floats += n * w;
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

    /// <summary>The stack.</summary>
    public Sequential Stack { get; }

    /// <summary>The options it was compiled with.</summary>
    public NetworkOptions Options { get; }

    /// <summary>The output shape of every layer.</summary>
    public IReadOnlyList<TensorShape> Shapes { get; }

    /// <summary>The input width: B ids or D features per row.</summary>
    public int InputWidth { get; }

    /// <summary>The output width k of the last layer.</summary>
    public int OutputWidth => _k;

    /// <summary>Rows of every training minibatch.</summary>
    public int BatchSize => Options.BatchSize;

    /// <summary>Parameters, gradients, optimiser state and running statistics.</summary>
    public ParameterStore Parameters { get; }

    /// <summary>Optimiser steps taken so far (the schedule's position; AdamW's t is this + 1 at the next step).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Set to a negative value.</exception>
    public long StepCount { get; set { ArgumentOutOfRangeException.ThrowIfNegative(value, nameof(StepCount)); field = value; } }

    /// <summary>
    /// Times each op's forward and backward over the buffers of the last training step (for the benchmarks'
    /// <c>stack-stages</c> mode): returns one (pattern, forward µs, backward µs) per op. Call after a step.
    /// </summary>
    internal (string Pattern, double ForwardUs, double BackwardUs)[] ProfileOps(int* ids, float* features, int reps)
    {
        var res = new (string, double, double)[_ops.Length];
        int n = BatchSize;
        var sw = new Stopwatch();
        for (int k = 0; k < _ops.Length; k++)
        {
            float* x = k == 0 ? features : Ptr(_out[k - 1]);
            float* dx = k > 0 ? Ptr(_dout[k - 1]) : null;
            sw.Restart();
            for (int r = 0; r < reps; r++) _ops[k].Forward(x, ids, Ptr(_out[k]), n, true);
            double f = sw.Elapsed.TotalMicroseconds / reps;
            sw.Restart();
            for (int r = 0; r < reps; r++) _ops[k].Backward(x, ids, Ptr(_out[k]), Ptr(_dout[k]), dx, n);
            double b = sw.Elapsed.TotalMicroseconds / reps;
            res[k] = ($"layers {_ops[k].Layer}..{_ops[k].Layer + _ops[k].Layers - 1}: {_ops[k].Pattern}", f, b);
        }
        return res;
    }

    /// <summary>The compiled plan: one line per fused op, naming its layers and its pattern.</summary>
    public IReadOnlyList<string> Plan => _pipeline != null && PipelineEnabled
        ? [$"layers 0..{Stack.Layers.Count - 1} (training, n ≥ {RowBlockPipeline.MinRows}): {_pipeline.Pattern}", .. _ops.Select(o => $"layers {o.Layer}..{o.Layer + o.Layers - 1} (inference): {o.Pattern}")]
        : _ops.Select(o => $"layers {o.Layer}..{o.Layer + o.Layers - 1}: {o.Pattern}").ToArray();

    /// <summary>The output of op <paramref name="k"/> (see <see cref="Plan"/>) in the last training step, for tests.</summary>
    internal ReadOnlySpan<float> OpOutput(int k) => _out[k];

    /// <summary>The gradient of op <paramref name="k"/>'s output in the last training step, for tests.</summary>
    internal ReadOnlySpan<float> OpOutputGradient(int k) => _dout[k];

    /// <summary>The batch statistics (mean, variance, 1/√(var + eps)) of the batch norm in op <paramref name="k"/> in the last training step, for tests.</summary>
    internal (float[] Mean, float[] Variance, float[] VarInv) BatchStatistics(int k) =>
        Pipelined ? _pipeline!.Statistics : ((IBatchNormOp)_ops[k]).Statistics;

    /// <summary>Whether the batch norm in op <paramref name="k"/> holds its <c>[n,F]</c> bnraw buffer (the pipeline trains without it), for tests.</summary>
    internal bool BatchNormHoldsBnraw(int k) => ((IBatchNormOp)_ops[k]).HoldsTrainingBuffer;

    /// <summary>Off: a batch the row-block pipeline would take runs op by op instead (for tests and benchmarks that compare the two).</summary>
    internal bool PipelineEnabled { get; set; } = true;

    /// <summary>Whether training steps take the row-block pipeline.</summary>
    internal bool Pipelined => _pipeline != null && PipelineEnabled;

    /// <summary>The output <c>z [n,k]</c> of the last training forward.</summary>
    public ReadOnlySpan<float> Output => _out[^1];

    /// <summary>The gradient of the float inputs of the last <c>ForwardBackward</c>, when <see cref="NetworkOptions.InputGradients"/> is set.</summary>
    public ReadOnlySpan<float> InputGradient => _dIn;

    /// <summary>The gradient of the float targets of the last <c>ForwardBackward</c>, when <see cref="NetworkOptions.InputGradients"/> is set.</summary>
    public ReadOnlySpan<float> TargetGradient => _dTarget;

    private static float[] Buf(long length) => length == 0 ? [] : GC.AllocateArray<float>(checked((int)length), pinned: true);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float* Ptr(float[] a) => a.Length == 0 ? null : (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(a));

    private LayerOp[] Compile(out int[] linearWeights)
    {
        var ops = new List<LayerOp>();
        var lw = new List<int>();
        var layers = Stack.Layers;
        var ps = Parameters;
        float* P = Ptr(ps.Data), G = Ptr(ps.Grad), Bf = Ptr(ps.Buffers);
        int n = BatchSize, width = InputWidth, bnIndex = 0;
        int pi = 0; // next parameter index
        for (int i = 0; i < layers.Count;)
        {
            var l = layers[i];
            LayerOp op;
            int covered = 1, inW = Shapes_(i - 1, width);
            switch (l.Kind)
            {
                case LayerKind.Embedding:
                    {
                        var w = ps.Parameters[pi++];
                        op = new EmbeddingOp(P + w.Offset, G + w.Offset, l.In, l.Out, width);
                        if (i + 1 < layers.Count && layers[i + 1].Kind == LayerKind.Flatten) covered = 2;
                        break;
                    }
                case LayerKind.Flatten:
                    i++; // a view: nothing to run
                    continue;
                case LayerKind.Linear:
                    {
                        var w = ps.Parameters[pi++];
                        lw.Add(pi - 1);
                        float* b = null, db = null;
                        if (l.HasBias) { var bs = ps.Parameters[pi++]; b = P + bs.Offset; db = G + bs.Offset; }
                        op = new LinearOp(P + w.Offset, b, G + w.Offset, db, l.In, l.Out, _pool, _fusedSgd);
                        break;
                    }
                case LayerKind.BatchNorm:
                    {
                        var g = ps.Parameters[pi++]; var b = ps.Parameters[pi++];
                        var rm = ps.RunningStatistics[2 * bnIndex]; var rv = ps.RunningStatistics[2 * bnIndex + 1];
                        LayerKind? act = i + 1 < layers.Count && layers[i + 1].IsActivation ? layers[i + 1].Kind : null;
                        if (act != null) covered = 2;
                        long* tracked = (long*)Unsafe.AsPointer(ref ps.BatchesTracked[bnIndex]); // pinned
                        op = MakeBatchNorm(act, l.Mode, P + g.Offset, P + b.Offset, G + g.Offset, G + b.Offset, Bf + rm.Offset, Bf + rv.Offset,
                            tracked, l.In, n);
                        // the sweep sums its dx anyway: that is the bias gradient of a linear right before it
                        if (ops.Count > 0 && ops[^1] is LinearOp { BiasGradient: not null } before && before.Layer == i - 1)
                        {
                            before.BiasGradientByNext = true;
                            ((IBatchNormOp)op).SetInputBiasGradient(before.BiasGradient);
                        }
                        bnIndex++;
                        break;
                    }
                default:
                    op = l.Kind switch
                    {
                        LayerKind.Tanh => new ActivationOp<TanhAct>("tanh"),
                        LayerKind.Relu => new ActivationOp<ReluAct>("relu"),
                        _ => new ActivationOp<SigmoidAct>("sigmoid"),
                    };
                    break;
            }
            op.Layer = i; op.Layers = covered; op.InWidth = inW; op.OutWidth = Shapes_(i + covered - 1, width);
            ops.Add(op);
            i += covered;
        }
        linearWeights = lw.ToArray();
        return ops.ToArray();

        int Shapes_(int layer, int w0) => layer < 0 ? w0 : ((TensorShape[])Shapes)[layer].PerRow;
    }

    private LayerOp MakeBatchNorm(LayerKind? act, BatchNormMode mode, float* gain, float* bias, float* dgain, float* dbias, float* rm, float* rv, long* tracked, int f, int n)
    {
        float eps = Options.Eps, m = Options.BatchNormMomentum;
        string name = (mode == BatchNormMode.Biased ? "batchnorm:biased" : "batchnorm") + (act is null ? "" : "+" + act.Value.ToString().ToLowerInvariant()) + " (one sweep)";
        bool biased = mode == BatchNormMode.Biased;
        return (act, biased) switch
        {
            (LayerKind.Tanh, false) => new BatchNormOp<TanhAct, BatchNorm.Bessel>(gain, bias, dgain, dbias, rm, rv, tracked, f, n, eps, m, name, _pool),
            (LayerKind.Tanh, true) => new BatchNormOp<TanhAct, BatchNorm.Biased>(gain, bias, dgain, dbias, rm, rv, tracked, f, n, eps, m, name, _pool),
            (LayerKind.Relu, false) => new BatchNormOp<ReluAct, BatchNorm.Bessel>(gain, bias, dgain, dbias, rm, rv, tracked, f, n, eps, m, name, _pool),
            (LayerKind.Relu, true) => new BatchNormOp<ReluAct, BatchNorm.Biased>(gain, bias, dgain, dbias, rm, rv, tracked, f, n, eps, m, name, _pool),
            (LayerKind.Sigmoid, false) => new BatchNormOp<SigmoidAct, BatchNorm.Bessel>(gain, bias, dgain, dbias, rm, rv, tracked, f, n, eps, m, name, _pool),
            (LayerKind.Sigmoid, true) => new BatchNormOp<SigmoidAct, BatchNorm.Biased>(gain, bias, dgain, dbias, rm, rv, tracked, f, n, eps, m, name, _pool),
            (_, false) => new BatchNormOp<IdentityAct, BatchNorm.Bessel>(gain, bias, dgain, dbias, rm, rv, tracked, f, n, eps, m, name, _pool),
            (_, true) => new BatchNormOp<IdentityAct, BatchNorm.Biased>(gain, bias, dgain, dbias, rm, rv, tracked, f, n, eps, m, name, _pool),
        };
    }

    /// <summary>
    /// Fills the parameters from a generator seeded with <paramref name="seed"/> (standard normals, drawn for
    /// embeddings, then linear layers, then batch norms, each in layer order; a linear weight is drawn as its
    /// transpose <c>[IN,OUT]</c>, row by row): embedding ~ N(0,1); a linear weight ~ N(0,1)·gain/√IN, where gain
    /// is 5/3 when a tanh follows (after an optional batch norm), √2 for ReLU, 1 otherwise, and the last linear
    /// layer's weight ~ N(0,1)·0.1 instead; biases ~ N(0,1)·0.1; batch-norm weight ~ 1 + N(0,1)·0.1, bias ~ N(0,1)·0.1.
    /// Small non-zero values everywhere, so a wrong backward cannot hide behind zeros. Clears gradients,
    /// optimiser state, running statistics and <see cref="StepCount"/>.
    /// </summary>
    public void Initialize(int seed)
    {
        using var use = _use.Enter();
        Parameters.Initialize(seed);
        StepCount = 0;
    }

    // ---- training -------------------------------------------------------------------------------------------

    /// <summary>Forward and backward on a minibatch of ids <c>[n,B]</c> and class ids <c>[n]</c>: fills the gradients, returns the loss. Does not update.</summary>
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

    /// <summary>The learning rate the next <c>Step</c> will use.</summary>
    public float LearningRate => Options.Schedule.At(StepCount, Options.Optimizer.LearningRate);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private float Run(float* features, int* ids, int inputLength, int* classes, int classCount, float* targets, int targetLength, bool step)
    {
        using var use = _use.Enter();
        int n = BatchSize;
        CheckBatch(features, ids, inputLength, classes, classCount, targets, targetLength, n);
        if (_fusedSgd != null) { _fusedSgd.Update = step; _fusedSgd.Lr = LearningRate; }
        if (_pipeline != null && PipelineEnabled)
        {
            float l = _pipeline.ForwardBackward(ids, classes, _fusedSgd);
            if (Options.L2 != 0) { l += L2Penalty(); L2Gradient(); }
            if (step) ApplyOptimizer();
            return l;
        }
        // forward
        for (int k = 0; k < _ops.Length; k++)
            _ops[k].Forward(k == 0 ? features : Ptr(_out[k - 1]), ids, Ptr(_out[k]), n, true);
        // the loss, straight from the output
        float* z = Ptr(_out[^1]), dz = Ptr(_dout[^1]);
        float loss = LossForward(z, classes, targets, dz, Ptr(_dTarget), n);
        if (Options.L2 != 0) loss += L2Penalty();
        // backward
        for (int k = _ops.Length - 1; k >= 0; k--)
        {
            float* dx = k > 0 ? Ptr(_dout[k - 1]) : Ptr(_dIn);
            _ops[k].Backward(k == 0 ? features : Ptr(_out[k - 1]), ids, Ptr(_out[k]), Ptr(_dout[k]), dx, n);
        }
        if (Options.L2 != 0) L2Gradient();
        if (step) ApplyOptimizer();
        return loss;
    }

    private float LossForward(float* z, int* classes, float* targets, float* dz, float* dt, int rows)
    {
        long count = (long)rows * _k;
        return Options.Loss switch
        {
            LossKind.CrossEntropy => (float)(CrossEntropy.Rows(z, classes, dz, rows, _k, 1f / rows) / rows),
            LossKind.Mse => RegressionLosses.Mse(z, targets, dz, dt, count),
            LossKind.BceWithLogits => RegressionLosses.BceWithLogits(z, targets, dz, dt, count),
            _ => RegressionLosses.Mean(z, dz, count),
        };
    }

    private float L2Penalty()
    {
        double s = 0;
        foreach (int p in _linearWeights)
        {
            var slot = Parameters.Parameters[p];
            var w = new ReadOnlySpan<float>(Parameters.Data, slot.Offset, slot.Length);
            for (int i = 0; i < w.Length; i++) s += (double)w[i] * w[i];
        }
        return (float)(Options.L2 * s);
    }

    private void L2Gradient()
    {
        float two = 2 * Options.L2;
        foreach (int p in _linearWeights)
        {
            var slot = Parameters.Parameters[p];
            var w = new ReadOnlySpan<float>(Parameters.Data, slot.Offset, slot.Length);
            var g = new Span<float>(Parameters.Grad, slot.Offset, slot.Length);
            System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(w, two, g, g);
        }
    }

    private void ApplyOptimizer()
    {
        var ps = Parameters;
        float lr = LearningRate;
        float* p = Ptr(ps.Data), g = Ptr(ps.Grad), s = Ptr(ps.OptimizerState);
        long len = ps.Data.Length;
        switch (Options.Optimizer)
        {
            case Sgd when _fusedSgd != null:
                // the linear weights were updated in their gradient products' epilogues
                foreach (var (offset, length) in _restRanges) OptimizerKernels.Sgd(p + offset, g + offset, null, length, lr, 0, 0);
                break;
            case Sgd sgd:
                OptimizerKernels.Sgd(p, g, sgd.Momentum != 0 ? s : null, len, lr, sgd.Momentum, sgd.WeightDecay);
                break;
            case AdamW a:
                OptimizerKernels.AdamW(p, g, s, s + len, len, lr, a.Beta1, a.Beta2, a.Eps, a.WeightDecay, StepCount + 1);
                break;
        }
        StepCount++;
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

    // ---- inference ------------------------------------------------------------------------------------------

    /// <summary>The output of <paramref name="rows"/> ≤ <see cref="EvalChunk"/> rows in inference mode (batch norm with running statistics).</summary>
    private float* Infer(float* features, int* ids, int rows, int upTo)
    {
        for (int k = 0; k < upTo; k++)
            _ops[k].Forward(k == 0 ? features : Ptr(_evOut[k - 1]), ids, Ptr(_evOut[k]), rows, false);
        return upTo == 0 ? features : Ptr(_evOut[upTo - 1]);
    }

    /// <summary>
    /// Predictions for <paramref name="rows"/> rows of ids or features in inference mode, written to
    /// <paramref name="output"/> <c>[rows,k]</c>: class probabilities (softmax) for cross-entropy, sigmoid
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
        for (int r0 = 0; r0 < rows; r0 += EvalChunk)
        {
            int r = Math.Min(EvalChunk, rows - r0);
            float* z = Infer(features == null ? null : features + (long)r0 * InputWidth, ids == null ? null : ids + (long)r0 * InputWidth, r, _ops.Length);
            float* o = output + (long)r0 * _k;
            Buffer.MemoryCopy(z, o, (long)r * _k * 4, (long)r * _k * 4);
            if (raw) continue;
            if (Options.Loss == LossKind.CrossEntropy)
                for (int i = 0; i < r; i++) System.Numerics.Tensors.TensorPrimitives.SoftMax(new ReadOnlySpan<float>(o + (long)i * _k, _k), new Span<float>(o + (long)i * _k, _k));
            else if (Options.Loss == LossKind.BceWithLogits)
                System.Numerics.Tensors.TensorPrimitives.Sigmoid(new ReadOnlySpan<float>(o, r * _k), new Span<float>(o, r * _k));
        }
    }

    /// <summary>The mean loss over every example of <paramref name="data"/> in inference mode (batch norm with running statistics; no L2 term).</summary>
    /// <exception cref="ArgumentException">The examples do not fit the network (input kind or width, targets).</exception>
    public float Evaluate(ExampleSet data)
    {
        using var use = _use.Enter();
        CheckData(data);
        double total = 0;
        for (int r0 = 0; r0 < data.Count; r0 += EvalChunk)
        {
            int r = Math.Min(EvalChunk, data.Count - r0);
            fixed (int* ids = data.Ids, cls = data.Classes)
            fixed (float* f = data.Features, t = data.Targets)
            {
                float* z = Infer(f == null ? null : f + (long)r0 * InputWidth, ids == null ? null : ids + (long)r0 * InputWidth, r, _ops.Length);
                if (cls != null)
                    for (int i = 0; i < r; i++)
                        if ((uint)cls[r0 + i] >= (uint)_k) throw new ArgumentException($"class id {cls[r0 + i]} of example {r0 + i} is outside [0, {_k}).", nameof(data));
                total += (double)LossForward(z, cls == null ? null : cls + r0, t == null ? null : t + (long)r0 * _k, null, null, r) * r;
            }
        }
        return (float)(total / data.Count);
    }

    /// <summary>
    /// Replaces every batch norm's running statistics with the mean and Bessel-corrected variance of its input
    /// over all of <paramref name="train"/> (in layer order, each computed with the ones before it calibrated),
    /// two passes in double precision.
    /// </summary>
    public void Calibrate(ExampleSet train)
    {
        using var use = _use.Enter();
        CheckData(train);
        if (train.Count < 2) throw new ArgumentException("calibration needs at least 2 examples.", nameof(train));
        for (int k = 0; k < _ops.Length; k++)
        {
            var layer = Stack.Layers[_ops[k].Layer];
            if (layer.Kind != LayerKind.BatchNorm) continue;
            int F = layer.In;
            var sum = new double[F];
            var sq = new double[F];
            for (int pass = 0; pass < 2; pass++)
            {
                for (int r0 = 0; r0 < train.Count; r0 += EvalChunk)
                {
                    int r = Math.Min(EvalChunk, train.Count - r0);
                    fixed (int* ids = train.Ids)
                    fixed (float* f = train.Features)
                    {
                        float* x = Infer(f == null ? null : f + (long)r0 * InputWidth, ids == null ? null : ids + (long)r0 * InputWidth, r, k);
                        for (int i = 0; i < r; i++)
                            for (int c = 0; c < F; c++)
                            {
                                double v = x[(long)i * F + c];
                                if (pass == 0) sum[c] += v; else { double d = v - sum[c]; sq[c] += d * d; }
                            }
                    }
                }
                if (pass == 0) for (int c = 0; c < F; c++) sum[c] /= train.Count;
            }
            string i0 = _ops[k].Layer.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var mean = Parameters.Value(i0 + ".running_mean");
            var variance = Parameters.Value(i0 + ".running_var");
            for (int c = 0; c < F; c++) { mean[c] = (float)sum[c]; variance[c] = (float)(sq[c] / (train.Count - 1)); }
        }
    }

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

    // ---- a training loop ------------------------------------------------------------------------------------

    /// <summary>
    /// Trains for <paramref name="steps"/> steps on minibatches drawn uniformly with replacement from
    /// <paramref name="train"/> (seeded by <paramref name="seed"/>), reporting progress every
    /// <paramref name="reportEvery"/> steps (see <see cref="NetworkTraining.Fit(INetwork, ExampleSet, int, int, Action{TrainingProgress}?, int, CancellationToken)"/>). Returns the loss of every step.
    /// </summary>
    /// <exception cref="TrainingDivergedException">A loss was NaN or infinite; the message names the step and the rate.</exception>
    public float[] Fit(ExampleSet train, int steps, int seed = 42, Action<TrainingProgress>? progress = null, int reportEvery = 1000, CancellationToken cancellationToken = default) =>
        NetworkTraining.Fit(this, train, steps, seed, progress, reportEvery, cancellationToken);

    internal void CheckExamples(ExampleSet data) => CheckData(data);

    /// <summary>One step on a drawn minibatch of whichever inputs and targets the stack takes.</summary>
    internal float StepOn(int[] ids, float[] features, int[] classes, float[] targets) =>
        Options.Loss.Targets() == TargetKind.Classes
            ? (Stack.TakesIds ? Step(ids, classes) : Step(features, classes))
            : (Stack.TakesIds ? Step(ids, (ReadOnlySpan<float>)targets) : Step(features, (ReadOnlySpan<float>)targets));

    /// <inheritdoc />
    public string Device => "cpu";

    /// <inheritdoc />
    public void PullParameters() { }

    /// <inheritdoc />
    public void PushParameters() { }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_use.Dispose()) _pool?.Dispose();
    }

    /// <summary>The one-thread-at-a-time guard, for tests.</summary>
    internal SingleUse Use => _use;
}
