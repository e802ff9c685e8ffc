using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using HpBackprop.Networks;

namespace HpBackprop.Cpu;

/// <summary>The CPU: every row of the fusion table, the row-block pipeline included.</summary>
internal sealed class CpuDevice : DeviceKind
{
    /// <summary>The one instance.</summary>
    public static readonly CpuDevice Instance = new();

    private static readonly HashSet<string> All = [Plan.FlattenView, Plan.BatchNormActivation, Plan.BiasGradientFromBatchNorm, Plan.SgdInEpilogue, Plan.RowBlockPipeline];

    /// <inheritdoc />
    public override IReadOnlySet<string> Fusions => All;

    /// <inheritdoc />
    public override Backend Create(Plan plan, ParameterStore store) => new CpuBackend(plan, store);
}

/// <summary>
/// The CPU backend: one <see cref="LayerOp"/> per plan step (managed SIMD kernels over pointers into the store's pinned
/// flat buffers, so parameters need no copies), the losses straight from the output, the optimisers as one pass over the
/// flat buffers, and for the makemore-shaped stack at large n the row-block pipeline. A step allocates nothing.
/// </summary>
internal sealed unsafe class CpuBackend : Backend
{
    private readonly Plan _plan;
    private readonly ParameterStore _ps;
    private readonly LayerOp[] _ops;
    private readonly float[][] _out, _dout, _evOut;
    private readonly float[] _dIn, _dTarget;
    private readonly WorkerPool? _pool;
    private readonly int _k, _n;
    private readonly StepState _state = new();
    private readonly bool _fusedSgd;
    private readonly (int Offset, int Length)[] _restRanges = [];
    private readonly TensorSlot[] _linearWeights;
    private readonly IRowBlockPipeline? _pipeline;
    private int _inferredRows;

    public CpuBackend(Plan plan, ParameterStore store)
    {
        _plan = plan;
        _ps = store;
        var options = plan.Options;
        _n = options.BatchSize;
        _k = plan.OutputWidth;
        if (options.Threads > 1) _pool = new WorkerPool(options.Threads);
        _fusedSgd = plan.Steps.Any(s => s.SgdInEpilogue);
        _linearWeights = plan.LinearWeights.Select(store.Slot).ToArray();
        _ops = plan.Steps.Select(MakeOp).ToArray();
        if (_fusedSgd)
        {
            var ranges = new List<(int, int)>();
            int start = 0;
            foreach (var slot in _linearWeights)
            {
                if (slot.Offset > start) ranges.Add((start, slot.Offset - start));
                start = slot.Offset + slot.Length;
            }
            if (store.Data.Length > start) ranges.Add((start, store.Data.Length - start));
            _restRanges = ranges.ToArray();
        }
        _out = new float[_ops.Length][];
        _dout = new float[_ops.Length][];
        _evOut = new float[_ops.Length][];
        for (int k = 0; k < _ops.Length; k++)
        {
            _out[k] = Buf((long)_n * _ops[k].OutWidth);
            _dout[k] = Buf((long)_n * _ops[k].OutWidth);
            _evOut[k] = Buf((long)EvalChunk * _ops[k].OutWidth);
        }
        bool grads = options.InputGradients;
        _dIn = grads && !plan.Stack.TakesIds ? Buf((long)_n * plan.InputWidth) : [];
        _dTarget = grads && options.Loss.Targets() == TargetKind.Floats ? Buf((long)_n * _k) : [];
        _pipeline = plan.WholeStepPipeline ? MakePipeline() : null;
        // the pipeline trains without the batch norm's [n,F] bnraw buffer (it recomputes bnraw from hprebn where it needs it)
        if (_pipeline != null) foreach (var op in _ops) (op as IBatchNormOp)?.ReleaseTrainingBuffer();
    }

    public override string Device => "cpu";

    private float* P(string name) => Ptr(_ps.Data) + _ps.Slot(name).Offset;
    private float* G(string name) => Ptr(_ps.Grad) + _ps.Slot(name).Offset;
    private float* Bf(string name) => Ptr(_ps.Buffers) + _ps.Slot(name).Offset;

    private LayerOp MakeOp(PlanStep s, int k)
    {
        var l = s.Def;
        int i = s.Layer;
        string W = LayerType.Name(i, "weight"), Bias = LayerType.Name(i, "bias");
        LayerOp op = s.Kind switch
        {
            StepKind.Gather => new EmbeddingOp(P(W), G(W), l.In, l.Out, _plan.InputWidth),
            StepKind.Linear => new LinearOp(P(W), l.HasBias ? P(Bias) : null, G(W), l.HasBias ? G(Bias) : null, l.In, l.Out, _pool, s.SgdInEpilogue ? _state : null)
            { BiasGradientByNext = s.BiasGradientFromNext },
            StepKind.BatchNorm => MakeBatchNorm(s),
            StepKind.LayerNorm => new LayerNormOp(P(W), P(Bias), G(W), G(Bias), l.In, _n, _plan.Options.Eps),
            StepKind.Dropout => new DropoutOp(l.Rate, i, (uint)_plan.Options.Seed, _state, _n, s.OutWidth),
            _ => l.Kind switch
            {
                LayerKind.Tanh => new ActivationOp<TanhAct>("tanh"),
                LayerKind.Relu => new ActivationOp<ReluAct>("relu"),
                _ => new ActivationOp<SigmoidAct>("sigmoid"),
            },
        };
        op.Layer = s.Layer; op.Layers = s.Layers; op.InWidth = s.InWidth; op.OutWidth = s.OutWidth;
        if (s.WritesPreviousBiasGradient) ((IBatchNormOp)op).SetInputBiasGradient(G(LayerType.Name(_plan.Steps[k - 1].Layer, "bias")));
        return op;
    }

    private LayerOp MakeBatchNorm(PlanStep s)
    {
        var l = s.Def;
        int i = s.Layer, f = l.In, n = _n;
        float eps = _plan.Options.Eps, m = _plan.Options.BatchNormMomentum;
        float* gain = P(LayerType.Name(i, "weight")), bias = P(LayerType.Name(i, "bias")), dgain = G(LayerType.Name(i, "weight")), dbias = G(LayerType.Name(i, "bias"));
        float* rm = Bf(LayerType.Name(i, "running_mean")), rv = Bf(LayerType.Name(i, "running_var"));
        long* tracked = (long*)Unsafe.AsPointer(ref _ps.BatchesTracked[_plan.Stack.BatchNormLayers().ToList().IndexOf(i)]); // pinned
        string name = (l.Mode == BatchNormMode.Biased ? "batchnorm:biased" : "batchnorm") + (s.Activation is { } a ? "+" + a.ToString().ToLowerInvariant() : "") + " (one sweep)";
        bool biased = l.Mode == BatchNormMode.Biased;
        return (s.Activation, biased) switch
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
    /// The row-block pipeline for <c>embedding, flatten, linear, batchnorm+ACT, linear</c> with cross-entropy at n ≥ 256 on a CPU
    /// with vector instructions; null where it does not apply. It writes the same buffers as the ops.
    /// </summary>
    private IRowBlockPipeline? MakePipeline()
    {
        var l = _plan.Stack.Layers;
        int n = _n;
        if (!RowBlockPipeline.Applies(n, l[2].Out)) return null;
        var ps = _ps;
        float* Pv(string name) => ps.Contains(name) ? P(name) : null;
        float* Gv(string name) => ps.Contains(name) ? G(name) : null;
        var w = new PipelineWeights
        {
            C = Pv("0.weight"), DC = Gv("0.weight"), W1 = Pv("2.weight"), DW1 = Gv("2.weight"), B1 = Pv("2.bias"), DB1 = Gv("2.bias"),
            Gain = Pv("3.weight"), Bias = Pv("3.bias"), DGain = Gv("3.weight"), DBias = Gv("3.bias"),
            RunMean = Bf("3.running_mean"), RunVar = Bf("3.running_var"),
            Tracked = (long*)Unsafe.AsPointer(ref ps.BatchesTracked[0]), W2 = Pv("5.weight"), DW2 = Gv("5.weight"), B2 = Pv("5.bias"), DB2 = Gv("5.bias"),
        };
        var x = new PipelineBuffers
        {
            Embcat = Ptr(_out[0]), Hprebn = Ptr(_out[1]), H = Ptr(_out[2]), Logits = Ptr(_out[3]), Dlogits = Ptr(_dout[3]), Dhprebn = Ptr(_dout[1]), Dembcat = Ptr(_dout[0]),
        };
        int B = _plan.InputWidth, E = l[0].Out, H = l[2].Out, V = l[5].Out, t = _plan.Options.Threads;
        float eps = _plan.Options.Eps, m = _plan.Options.BatchNormMomentum;
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

    // ---- training

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public override float Step(in Batch batch, in StepArgs args)
    {
        int n = _n;
        _state.Update = args.Update && _fusedSgd;
        _state.Lr = args.LearningRate;
        _state.Step = args.Step;
        float* features = batch.Features;
        int* ids = batch.Ids;
        var o = _plan.Options;
        if (_pipeline != null && PipelineEnabled)
        {
            float l = _pipeline.ForwardBackward(ids, batch.Classes, _fusedSgd ? _state : null);
            if (o.L2 != 0) { l += L2Penalty(); L2Gradient(); }
            if (args.Update) ApplyOptimizer(args);
            return l;
        }
        for (int k = 0; k < _ops.Length; k++)
            _ops[k].Forward(k == 0 ? features : Ptr(_out[k - 1]), ids, Ptr(_out[k]), n, true);
        float* z = Ptr(_out[^1]), dz = Ptr(_dout[^1]);
        float loss = LossForward(z, batch.Classes, batch.Targets, dz, Ptr(_dTarget), n);
        if (o.L2 != 0) loss += L2Penalty();
        for (int k = _ops.Length - 1; k >= 0; k--)
        {
            float* dx = k > 0 ? Ptr(_dout[k - 1]) : Ptr(_dIn);
            _ops[k].Backward(k == 0 ? features : Ptr(_out[k - 1]), ids, Ptr(_out[k]), Ptr(_dout[k]), dx, n);
        }
        if (o.L2 != 0) L2Gradient();
        if (args.Update) ApplyOptimizer(args);
        return loss;
    }

    private float LossForward(float* z, int* classes, float* targets, float* dz, float* dt, int rows)
    {
        long count = (long)rows * _k;
        return _plan.Options.Loss switch
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
        foreach (var slot in _linearWeights)
        {
            var w = new ReadOnlySpan<float>(_ps.Data, slot.Offset, slot.Length);
            for (int i = 0; i < w.Length; i++) s += (double)w[i] * w[i];
        }
        return (float)(_plan.Options.L2 * s);
    }

    private void L2Gradient()
    {
        float two = 2 * _plan.Options.L2;
        foreach (var slot in _linearWeights)
        {
            var w = new ReadOnlySpan<float>(_ps.Data, slot.Offset, slot.Length);
            var g = new Span<float>(_ps.Grad, slot.Offset, slot.Length);
            System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(w, two, g, g);
        }
    }

    private void ApplyOptimizer(in StepArgs args)
    {
        var ps = _ps;
        float lr = args.LearningRate;
        float* p = Ptr(ps.Data), g = Ptr(ps.Grad), s = Ptr(ps.OptimizerState);
        long len = ps.Data.Length;
        switch (_plan.Options.Optimizer)
        {
            case Networks.Sgd when _fusedSgd:
                // the linear weights were updated in their gradient products' epilogues
                foreach (var (offset, length) in _restRanges) OptimizerKernels.Sgd(p + offset, g + offset, null, length, lr, 0, 0);
                break;
            case Networks.Sgd sgd:
                OptimizerKernels.Sgd(p, g, sgd.Momentum != 0 ? s : null, len, lr, sgd.Momentum, sgd.WeightDecay);
                break;
            case AdamW a:
                OptimizerKernels.AdamW(p, g, s, s + len, len, lr, a.Beta1, a.Beta2, a.Eps, a.WeightDecay, args.AdamStep);
                break;
        }
    }

    // ---- inference

    public override void Infer(in Batch batch, int from, int to)
    {
        float* x = batch.Features;
        for (int k = from; k < to; k++)
        {
            _ops[k].Forward(x, batch.Ids, Ptr(_evOut[k]), batch.Rows, false);
            x = Ptr(_evOut[k]);
        }
        _inferred = to > from ? Ptr(_evOut[to - 1]) : batch.Features;
        _inferredWidth = to > 0 ? _ops[to - 1].OutWidth : _plan.InputWidth;
        _inferredRows = batch.Rows;
    }

    private float* _inferred;
    private int _inferredWidth;

    public override double InferLoss(in Batch batch) =>
        (double)LossForward(_inferred, batch.Classes, batch.Targets, null, null, batch.Rows) * batch.Rows;

    public override void ReadInferred(Span<float> destination) =>
        new ReadOnlySpan<float>(_inferred, checked(_inferredRows * _inferredWidth)).CopyTo(destination);

    public override void ReadTraining(TrainingBuffer which, int step, Span<float> destination)
    {
        float[] a = which switch
        {
            TrainingBuffer.Output => _out[step],
            TrainingBuffer.OutputGradient => _dout[step],
            TrainingBuffer.InputGradient => _dIn,
            _ => _dTarget,
        };
        a.AsSpan(0, Math.Min(a.Length, destination.Length)).CopyTo(destination);
    }

    public override void Pull() { }

    public override void Push() { }

    public override void PushBuffers() { }

    public override void Dispose() => _pool?.Dispose();

    // ---- for tests and benchmarks

    /// <summary>The ops (one per plan step).</summary>
    internal IReadOnlyList<LayerOp> Ops => _ops;

    /// <summary>The output of step <paramref name="k"/> in the last training step.</summary>
    internal ReadOnlySpan<float> OpOutput(int k) => _out[k];

    /// <summary>The gradient of step <paramref name="k"/>'s output in the last training step.</summary>
    internal ReadOnlySpan<float> OpOutputGradient(int k) => _dout[k];

    /// <summary>The batch statistics of the batch norm in step <paramref name="k"/> in the last training step.</summary>
    internal (float[] Mean, float[] Variance, float[] VarInv) BatchStatistics(int k) =>
        Pipelined ? _pipeline!.Statistics : ((IBatchNormOp)_ops[k]).Statistics;

    /// <summary>Whether the batch norm in step <paramref name="k"/> holds its <c>[n,F]</c> bnraw buffer.</summary>
    internal bool BatchNormHoldsBnraw(int k) => ((IBatchNormOp)_ops[k]).HoldsTrainingBuffer;

    /// <summary>Off: a batch the row-block pipeline would take runs op by op instead.</summary>
    internal bool PipelineEnabled { get; set; } = true;

    /// <summary>Whether training steps take the row-block pipeline.</summary>
    internal bool Pipelined => _pipeline != null && PipelineEnabled;

    /// <summary>The pipeline's pattern name, or null.</summary>
    internal string? PipelinePattern => _pipeline?.Pattern;

    /// <summary>Times each op's forward and backward over the buffers of the last training step (the benchmarks' <c>stack-stages</c>).</summary>
    internal (string Pattern, double ForwardUs, double BackwardUs)[] ProfileOps(int* ids, float* features, int reps)
    {
        var res = new (string, double, double)[_ops.Length];
        var sw = new Stopwatch();
        for (int k = 0; k < _ops.Length; k++)
        {
            float* x = k == 0 ? features : Ptr(_out[k - 1]);
            float* dx = k > 0 ? Ptr(_dout[k - 1]) : null;
            sw.Restart();
            for (int r = 0; r < reps; r++) _ops[k].Forward(x, ids, Ptr(_out[k]), _n, true);
            double f = sw.Elapsed.TotalMicroseconds / reps;
            sw.Restart();
            for (int r = 0; r < reps; r++) _ops[k].Backward(x, ids, Ptr(_out[k]), Ptr(_dout[k]), dx, _n);
            double b = sw.Elapsed.TotalMicroseconds / reps;
            res[k] = ($"layers {_ops[k].Layer}..{_ops[k].Layer + _ops[k].Layers - 1}: {_ops[k].Pattern}", f, b);
        }
        return res;
    }

    private static float[] Buf(long length) => length == 0 ? [] : GC.AllocateArray<float>(checked((int)length), pinned: true);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float* Ptr(float[] a) => a.Length == 0 ? null : (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(a));
}
