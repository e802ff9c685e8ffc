using HpBackprop.Cuda.Native;
using HpBackprop.Cuda.Runtime;
using HpBackprop.Networks;

namespace HpBackprop.Cuda.Gpu;

/// <summary>A CUDA device (or the kernel emulator): the fusions its ops run, and the backend it makes for a plan.</summary>
internal sealed class CudaDevice(Func<IDeviceRuntime> open, bool ownsRuntime, ScatterMode scatter, int rowsPerChunk) : DeviceKind
{
    /// <summary>The default rows of one reduction chunk.</summary>
    public const int DefaultRowsPerChunk = 256;

    private static readonly HashSet<string> Runs = [Plan.FlattenView, Plan.BatchNormActivation, Plan.BiasGradientFromBatchNorm, Plan.BiasInBatchNorm, Plan.BiasInActivation, Plan.BiasGradientFromActivation, Plan.BiasInLoss];

    /// <inheritdoc />
    public override IReadOnlySet<string> Fusions => Runs;

    /// <inheritdoc />
    public override Backend Create(Plan plan, ParameterStore store)
    {
        var rt = open();
        try
        {
            return new GpuBackend(plan, store, new Gpu(rt, ownsRuntime, rowsPerChunk), scatter);
        }
        catch
        {
            if (ownsRuntime) rt.Dispose();
            throw;
        }
    }
}

/// <summary>
/// The GPU backend: one <see cref="GpuOp"/> per plan step over device buffers sized once, the losses and the optimisers as
/// kernels over device copies of the store's flat buffers (the same layout, so pulling and pushing are plain copies).
/// A training step uploads the minibatch, launches its kernels and cuBLAS products, and reads the 4-byte loss back; it
/// allocates nothing. Every reduction runs in an order fixed by the shape, so two runs give the same bits.
/// </summary>
internal sealed unsafe class GpuBackend : Backend
{
    private readonly Plan _plan;
    private readonly ParameterStore _ps;
    private readonly Gpu _g;
    private readonly DeviceStore _dev;
    private readonly GpuOp[] _ops;
    private readonly ulong[] _out, _dout, _ev;
    private readonly ulong _ids, _features, _classes, _targets, _dIn, _dTarget;
    private readonly ulong _evIds, _evIn, _evClasses, _evTargets;
    private readonly ulong _losses, _sumPartial, _lossOut;
    private readonly ulong _lastBias, _lastBiasGrad; // the last linear's bias and its gradient, where the loss's kernel takes them
    private readonly StepState _state;
    // two pinned staging buffers, taken in turn by queued steps (StepQueued); each with the event recorded after the step
    // that copies from it, waited for before the host writes it again, and the captured step that copies from it
    private readonly PinnedMemory[] _staging = new PinnedMemory[2];
    private readonly DeviceEvent[] _stagedRead = new DeviceEvent[2];
    private readonly DeviceGraph?[] _graphs = new DeviceGraph?[2];
    private int _stage;
    private readonly long _stageInput, _stageTargets;
    private DeviceGraph? _drawnGraph;
    private DeviceMemory? _setX, _setY;
    private int _setCount, _setXWidth, _setYWidth;
    private long _setupCopies, _setupBytes;
    private bool _warm;
    private readonly (ulong W, ulong G, int Count, int PartialOffset)[] _l2;
    private readonly int _n, _k;
    private ulong _inferred;
    private int _inferredRows, _inferredWidth;
    private bool _disposed;

    public GpuBackend(Plan plan, ParameterStore store, Gpu gpu, ScatterMode scatter)
    {
        _plan = plan;
        _ps = store;
        _g = gpu;
        try
        {
            var o = plan.Options;
            _n = o.BatchSize;
            _k = plan.OutputWidth;
            int len = store.Data.Length;
            _dev = new DeviceStore(store, gpu.Alloc(len), gpu.Alloc(len), gpu.Alloc(store.OptimizerState.Length), gpu.Alloc(store.Buffers.Length));
            int steps = plan.Steps.Length, rows = Math.Max(_n, EvalChunk);
            _out = new ulong[steps]; _dout = new ulong[steps]; _ev = new ulong[steps];
            for (int k = 0; k < steps; k++)
            {
                long w = plan.Steps[k].OutWidth;
                _out[k] = gpu.Alloc(_n * w); _dout[k] = gpu.Alloc(_n * w); _ev[k] = gpu.Alloc(EvalChunk * w);
            }
            bool ids = plan.Stack.TakesIds;
            int B = plan.InputWidth;
            _ids = ids ? gpu.Alloc((long)_n * B) : 0;
            _features = ids ? 0 : gpu.Alloc((long)_n * B);
            _evIds = ids ? gpu.Alloc((long)EvalChunk * B) : 0;
            _evIn = gpu.Alloc((long)EvalChunk * Math.Max(B, plan.Steps.Max(s => s.InWidth)));
            var targets = o.Loss.Targets();
            _classes = targets == TargetKind.Classes ? gpu.Alloc(_n) : 0;
            _targets = targets == TargetKind.Floats ? gpu.Alloc((long)_n * _k) : 0;
            _evClasses = targets == TargetKind.Classes ? gpu.Alloc(EvalChunk) : 0;
            _evTargets = targets == TargetKind.Floats ? gpu.Alloc((long)EvalChunk * _k) : 0;
            _dIn = o.InputGradients && !ids ? gpu.Alloc((long)_n * B) : 0;
            _dTarget = o.InputGradients && targets == TargetKind.Floats ? gpu.Alloc((long)_n * _k) : 0;
            _losses = gpu.Alloc(rows);
            // the per-block partial sums of the losses and of the L2 penalty
            var weights = plan.LinearWeights.Select(store.Slot).ToArray();
            _l2 = new (ulong, ulong, int, int)[o.L2 != 0 ? weights.Length : 0];
            int partials = Gpu.SumBlocks((long)rows * _k);
            for (int j = 0; j < _l2.Length; j++)
            {
                var s = weights[j];
                _l2[j] = (_dev.P(s.Name), _dev.G(s.Name), s.Length, partials);
                partials += Gpu.SumBlocks(s.Length);
            }
            _sumPartial = gpu.AllocDoubles(partials);
            _lossOut = gpu.Alloc(1);
            if (plan.Steps[^1].BiasInLoss)
            {
                string bias = LayerType.Name(plan.Steps[^1].Layer, "bias");
                _lastBias = _dev.P(bias); _lastBiasGrad = _dev.G(bias);
            }
            _state = new StepState(gpu, o);
            // the minibatch is staged in pinned memory and copied by the step itself (a node of its graph)
            _stageInput = (long)_n * B * 4;
            _stageTargets = targets == TargetKind.Classes ? _n * 4L : targets == TargetKind.Floats ? (long)_n * _k * 4 : 0;
            for (int j = 0; j < 2; j++)
            {
                _staging[j] = gpu.Pinned(_stageInput + _stageTargets);
                _stagedRead[j] = gpu.Rt.CreateEvent();
            }
            var bnLayers = plan.Stack.BatchNormLayers().ToList();
            _ops = new GpuOp[steps];
            for (int k = 0; k < steps; k++)
            {
                var s = plan.Steps[k];
                _ops[k] = s.Kind switch
                {
                    StepKind.Gather => new GatherOp(gpu, _dev, s, B, rows, scatter),
                    StepKind.Linear => new LinearOp(gpu, _dev, s, _n),
                    StepKind.BatchNorm => new BatchNormOp(gpu, _dev, s, s.WritesPreviousBiasGradient ? _dev.G(LayerType.Name(plan.Steps[k - 1].Layer, "bias")) : 0,
                        s.AddsPreviousBias ? _dev.P(LayerType.Name(plan.Steps[k - 1].Layer, "bias")) : 0, _n, o.Eps, o.BatchNormMomentum, bnLayers.IndexOf(s.Layer)),
                    StepKind.LayerNorm => new GpuLayerNormOp(gpu, _dev, s, rows, o.Eps),
                    StepKind.Dropout => new GpuDropoutOp(gpu, s, (uint)o.Seed, _state.Device),
                    _ => new ActivationOp(gpu, s, s.AddsPreviousBias ? _dev.P(LayerType.Name(plan.Steps[k - 1].Layer, "bias")) : 0,
                        s.WritesPreviousBiasGradient ? _dev.G(LayerType.Name(plan.Steps[k - 1].Layer, "bias")) : 0, _n),
                };
            }
            Push();
        }
        catch
        {
            gpu.Dispose();
            throw;
        }
    }

    public override string Device => _g.Rt.Name;

    /// <summary>Launches of the last training step: kernels and cuBLAS calls, or 1 for a graph's replay.</summary>
    internal int LaunchesPerStep { get; private set; }

    private long _steps, _launches, _copies, _bytes;

    public override DeviceTraffic? Traffic => new DeviceTraffic(_steps, _launches, _copies, _bytes, GraphNodes) { SetupCopies = _setupCopies, SetupBytes = _setupBytes };

    /// <summary>Nodes of the captured training step (of the last one captured: with the minibatch drawn on the device or uploaded; 0 before).</summary>
    internal int GraphNodes => _lastGraph?.NodeCount ?? 0;

    private DeviceGraph? _lastGraph;

    /// <summary>The captured step that draws its minibatch on the device (tests).</summary>
    internal DeviceGraph? DrawnGraph => _drawnGraph;

    /// <summary>Host-device copies of the last training step (the minibatch, an upload of the step state, the loss read).</summary>
    internal int CopiesPerStep { get; private set; }

    /// <summary>Bytes copied between host and device by the last training step.</summary>
    internal long BytesPerStep { get; private set; }

    /// <summary>Replay training steps as one captured graph (the default); false queues every launch of every step (tests, benchmarks).</summary>
    internal bool UseGraphs { get; set; } = true;

    /// <summary>The captured graph (tests).</summary>
    internal DeviceGraph? Graph => _graphs[0] ?? _graphs[1];

    /// <summary>The captured step that copies its minibatch from staging buffer <paramref name="buffer"/> (tests).</summary>
    internal DeviceGraph? StagedGraph(int buffer) => _graphs[buffer];

    /// <summary>The step state (tests).</summary>
    internal StepState State => _state;

    /// <summary>The runtime (tests).</summary>
    internal IDeviceRuntime Runtime => _g.Rt;

    // ---- training

    public override float Step(in Batch batch, in StepArgs args)
    {
        Stage(batch);
        Run(args, drawn: false);
        float loss;
        _g.ToHost(&loss, _state.Ring + (ulong)(StepState.Slot(args.Step) * 4L), 4);
        Count();
        return loss;
    }

    public override bool QueuesSteps => true;

    public override void StepQueued(in Batch batch, in StepArgs args)
    {
        // the host writes one staging buffer while the device may still copy from the other (the step before)
        Stage(batch);
        Run(args, drawn: false);
        _stage ^= 1;
        Count();
    }

    public override void StepDrawn(in StepArgs args)
    {
        if (_setX == null) throw new InvalidOperationException("no example set is resident on the device");
        Run(args, drawn: true);
        Count();
    }

    /// <summary>
    /// Queues a training step (its minibatch staged already, or drawn on the device from the resident set): the first update
    /// step launches everything itself (kernels loaded, cuBLAS warm), every later one replays its capture, one per way the
    /// minibatch comes in. Starts the step's counts (<see cref="Count"/> ends them).
    /// </summary>
    private void Run(in StepArgs args, bool drawn)
    {
        _g.Launches = 0; _g.Copies = 0; _g.CopiedBytes = 0;
        _state.Prepare(args);
        if (args.Update && UseGraphs && _warm)
        {
            ref var graph = ref drawn ? ref _drawnGraph : ref _graphs[_stage];
            graph ??= Capture(drawn);
            _lastGraph = graph;
            _g.Rt.Launch(graph);
            _g.Launches++;
            if (!drawn)
            {
                // the staged minibatch's copies are nodes of the graph
                _g.Copies += _stageTargets > 0 ? 2 : 1;
                _g.CopiedBytes += _stageInput + _stageTargets;
            }
        }
        else
        {
            Enqueue(args.Update, drawn);
            _warm |= args.Update;
        }
        if (!drawn) _stagedRead[_stage].Record();
        _state.Queued(args);
    }

    /// <summary>The step's counts, as the last step's and into the run's totals (<see cref="Traffic"/>).</summary>
    private void Count()
    {
        LaunchesPerStep = _g.Launches; CopiesPerStep = _g.Copies; BytesPerStep = _g.CopiedBytes;
        _steps++; _launches += _g.Launches; _copies += _g.Copies; _bytes += _g.CopiedBytes;
    }

    public override bool Reside(ExampleSet set, int seed)
    {
        // the targets the loss takes (a set may carry targets the loss does not: they stay on the host)
        int xw = set.InputWidth, yw = _classes != 0 ? 1 : _targets != 0 ? _k : 0;
        long xBytes = (long)set.Count * xw * 4, yBytes = (long)set.Count * yw * 4;
        // a set of the same shape reuses the buffers (and the captured step that reads them); its values are uploaded again
        if (_setX == null || _setCount != set.Count || _setXWidth != xw || _setYWidth != yw)
        {
            FreeSet();
            try
            {
                _setX = _g.Rt.Allocate(xBytes);
                _setY = yw > 0 ? _g.Rt.Allocate(yBytes) : null;
            }
            catch (CudaException e) when (e.Code == 2) // CUDA_ERROR_OUT_OF_MEMORY: the minibatches are uploaded step by step instead
            {
                FreeSet();
                return false;
            }
        }
        _setCount = set.Count; _setXWidth = xw; _setYWidth = yw;
        _state.DrawSeed = unchecked((uint)seed);
        // the values kept on the device are compared with the set's (a Fit in chunks, as the CLI's, uploads the set once);
        // sets above SnapshotLimit are uploaded by every call rather than kept twice on the host
        var xs = set.Ids != null ? System.Runtime.InteropServices.MemoryMarshal.AsBytes(set.Ids.AsSpan()) : System.Runtime.InteropServices.MemoryMarshal.AsBytes(set.Features.AsSpan());
        var ys = yw == 0 ? default : _classes != 0 ? System.Runtime.InteropServices.MemoryMarshal.AsBytes(set.Classes.AsSpan()) : System.Runtime.InteropServices.MemoryMarshal.AsBytes(set.Targets.AsSpan());
        if (_snapshotX != null && xs.SequenceEqual(_snapshotX) && ys.SequenceEqual(_snapshotY)) return true;
        _snapshotX = _snapshotY = null;
        int copies = _g.Copies;
        long bytes = _g.CopiedBytes;
        fixed (byte* x = xs, y = ys)
        {
            _g.ToDevice(_setX!.Pointer, x, xBytes);
            if (_setY != null) _g.ToDevice(_setY.Pointer, y, yBytes);
        }
        _setupCopies += _g.Copies - copies; _setupBytes += _g.CopiedBytes - bytes;
        _g.Copies = copies; _g.CopiedBytes = bytes;
        if (xBytes + yBytes <= SnapshotLimit) { _snapshotX = xs.ToArray(); _snapshotY = ys.ToArray(); }
        return true;
    }

    /// <summary>The largest set (bytes) whose values are kept on the host to tell whether the next Fit needs to upload it again.</summary>
    internal const long SnapshotLimit = 64L << 20;

    private byte[]? _snapshotX, _snapshotY;


    private void FreeSet()
    {
        // the captured step reads the set at its addresses: a new set is a new capture
        if (ReferenceEquals(_lastGraph, _drawnGraph)) _lastGraph = Graph;
        _drawnGraph?.Dispose();
        _drawnGraph = null;
        _setX?.Dispose(); _setY?.Dispose();
        _setX = _setY = null;
        _snapshotX = _snapshotY = null;
    }

    public override int LossWindow => StepState.Rows;

    public override void ReadLosses(long first, Span<float> destination)
    {
        // the ring's slots of the steps, in at most two pieces (it wraps); counted as the steps' traffic
        int done = 0;
        while (done < destination.Length)
        {
            int slot = StepState.Slot(first + done), count = Math.Min(destination.Length - done, StepState.Rows - slot);
            int copies = _g.Copies;
            long bytes = _g.CopiedBytes;
            fixed (float* d = destination) _g.ToHost(d + done, _state.Ring + (ulong)(slot * 4L), count * 4L);
            _copies += _g.Copies - copies; _bytes += _g.CopiedBytes - bytes;
            done += count;
        }
    }

    /// <summary>Copies the minibatch into the pinned staging buffer (the step copies it to the device).</summary>
    private void Stage(in Batch batch)
    {
        _stagedRead[_stage].Wait(); // the step that last copied from this buffer has run
        byte* p = (byte*)_staging[_stage].Pointer;
        Buffer.MemoryCopy(_ids != 0 ? batch.Ids : batch.Features, p, _stageInput, _stageInput);
        if (_stageTargets > 0) Buffer.MemoryCopy(_classes != 0 ? batch.Classes : batch.Targets, p + _stageInput, _stageTargets, _stageTargets);
    }

    /// <summary>Captures the update step into a graph (its minibatch drawn on the device, or copied from the staging buffer).</summary>
    private DeviceGraph Capture(bool drawn)
    {
        int launches = _g.Launches, copies = _g.Copies;
        long bytes = _g.CopiedBytes;
        _g.Rt.BeginCapture();
        try
        {
            Enqueue(true, drawn);
        }
        catch
        {
            try { _g.Rt.EndCapture().Dispose(); } catch (InvalidOperationException) { }
            throw;
        }
        var graph = _g.Rt.EndCapture();
        _g.Launches = launches; _g.Copies = copies; _g.CopiedBytes = bytes; // nothing ran yet
        return graph;
    }

    /// <summary>
    /// Queues one training step: the minibatch from the staging buffer (or, when <paramref name="drawn"/>, drawn from the
    /// resident set by step_begin, which also gathers the embedding rows of a first embedding), step_begin, forward, the loss into the ring, backward, the L2 gradient, and the
    /// optimiser when <paramref name="update"/>. Every per-step value comes from the device's step state, so the same
    /// sequence is what the graph captures.
    /// </summary>
    private void Enqueue(bool update, bool drawn)
    {
        int n = _n;
        var o = _plan.Options;
        if (!drawn)
        {
            byte* p = (byte*)_staging[_stage].Pointer;
            _g.ToDeviceAsync(_ids != 0 ? _ids : _features, p, _stageInput);
            if (_stageTargets > 0) _g.ToDeviceAsync(_classes != 0 ? _classes : _targets, p + _stageInput, _stageTargets);
        }
        bool gathered = StepBegin(drawn);
        ulong input = _ids != 0 ? 0 : _features;
        for (int k = gathered ? 1 : 0; k < _ops.Length; k++) _ops[k].Forward(k == 0 ? input : _out[k - 1], _ids, _out[k], n, true);
        Loss(_out[^1], _classes, _targets, _dout[^1], _dTarget, n, _state.Ring, _state.Device);
        if (_l2.Length > 0) L2Penalty();
        for (int k = _ops.Length - 1; k >= 0; k--)
            _ops[k].Backward(k == 0 ? input : _out[k - 1], _ids, _out[k], _dout[k], k > 0 ? _dout[k - 1] : _dIn, n);
        if (_l2.Length > 0) foreach (var (w, g, count, _) in _l2) _g.Axpy(g, w, 2 * o.L2, count);
        if (update) Optimize();
    }

    /// <summary>
    /// step_begin, the step's first node: the step's state; with <paramref name="drawn"/>, also the minibatch drawn from the
    /// resident set and, when the first op is an embedding, its rows gathered (true: that op's forward is done).
    /// </summary>
    private bool StepBegin(bool drawn)
    {
        ulong a0 = _state.Device, a1 = 0, a2 = 0, a6 = 0, a7 = 0, a9 = 0, a11 = 0; int a3 = 0, a4 = 0, a5 = 0, a8 = 0, a10 = 0;
        long work = 1;
        bool gather = false;
        if (drawn)
        {
            a1 = _setX!.Pointer; a2 = _setY?.Pointer ?? 0; a3 = _setCount; a4 = _setXWidth; a5 = _setYWidth;
            a6 = _ids != 0 ? _ids : _features; a7 = _classes != 0 ? _classes : _targets; a8 = _n;
            work = (long)_n * (_setXWidth + _setYWidth);
            if (_ops[0] is GatherOp g)
            {
                (a9, a10) = g.Table;
                a11 = _out[0];
                work += (long)_n * _setXWidth * a10;
                gather = true;
            }
        }
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8, &a9, &a10, &a11 };
        _g.Launch(_g.K("step_begin"), new(Gpu.Blocks(work, 256)), new(256), 0, args);
        return gather;
    }

    /// <summary>
    /// The mean loss of <paramref name="rows"/> rows of <paramref name="z"/> into <paramref name="output"/> (or, with the step
    /// state <paramref name="state"/>, into the step's slot of the loss ring there), with dz and dt unless they are 0.
    /// </summary>
    private void Loss(ulong z, ulong classes, ulong targets, ulong dz, ulong dt, int rows, ulong output, ulong state)
    {
        var loss = _plan.Options.Loss;
        if (loss == LossKind.CrossEntropy && state != 0 && dz != 0
            && (_plan.Steps[^1].BiasInLoss || (rows <= Plan.BiasInLossMaxRows && _k <= Plan.BiasInLossMaxWidth)))
        {
            // a training step whose batch fits one block: the loss into the ring in one kernel, with the last bias and its
            // gradient where the plan put them there (_lastBias, _lastBiasGrad; else 0: nothing added, no gradient)
            ulong a0 = z, a1 = _lastBias, a2 = classes, a3 = dz, a4 = _losses, a5 = _lastBiasGrad, a6 = output, a7 = state; int a8 = rows, a9 = _k;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8, &a9 };
            _g.Launch(_g.K("cross_entropy_bias_loss"), new(1), new(256), 0, args);
            return;
        }
        if (loss == LossKind.CrossEntropy)
        {
            int V = _k;
            ulong a0 = z, a1 = classes, a2 = dz, a3 = _losses; int a4 = rows, a5 = V;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5 };
            if (V <= WarpCrossEntropyMaxV) _g.Launch(_g.K("cross_entropy_warp"), new(Gpu.Blocks(rows, 8)), new(256), 0, args);
            else _g.Launch(_g.K("cross_entropy_block"), new((uint)Math.Min(rows, 65535)), new(V >= 16384 ? 1024u : 256u), 0, args);
            _g.SumPartials(_losses, rows, 0, _sumPartial);
            _g.SumFinish(_sumPartial, Gpu.SumBlocks(rows), 1.0 / rows, output, state);
            return;
        }
        int count = checked(rows * _k);
        int kind = loss switch { LossKind.Mse => 1, LossKind.BceWithLogits => 2, _ => 3 };
        float scale = loss == LossKind.Mse ? 2f / count : 1f / count;
        {
            ulong a0 = z, a1 = targets, a2 = dz, a3 = dt; int a4 = count, a5 = kind; float a6 = scale; int a7 = Gpu.SumChunk; ulong a8 = _sumPartial;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8 };
            _g.Launch(_g.K("regression_loss"), new((uint)Gpu.SumBlocks(count)), new(256), 0, args);
        }
        _g.SumFinish(_sumPartial, Gpu.SumBlocks(count), 1.0 / count, output, state);
    }

    /// <summary>Largest V for the one-warp-per-row cross-entropy kernel; larger V uses a block per row.</summary>
    public const int WarpCrossEntropyMaxV = 2048;

    private void L2Penalty()
    {
        foreach (var (w, _, count, offset) in _l2) _g.SumPartials(w, count, 1, _sumPartial + (ulong)(offset * 8L));
        int first = _l2[0].PartialOffset, total = 0;
        foreach (var (_, _, count, _) in _l2) total += Gpu.SumBlocks(count);
        // added to the step's loss in float, as loss + l2 on the host
        _g.SumFinish(_sumPartial + (ulong)(first * 8L), total, _plan.Options.L2, _state.Ring, _state.Device, accumulate: true);
    }

    /// <summary>The optimiser over the flat buffers; the rate and AdamW's bias corrections come from the step state.</summary>
    private void Optimize()
    {
        ulong p = _dev.Data, g = _dev.Grad, s = _dev.State, st = _state.Device;
        int count = _ps.Data.Length;
        switch (_plan.Options.Optimizer)
        {
            case Sgd { Momentum: 0, WeightDecay: 0 }:
                {
                    ulong a0 = p, a1 = g, a2 = st; int a3 = count;
                    void** a = stackalloc void*[] { &a0, &a1, &a2, &a3 };
                    _g.Launch(_g.K("sgd_update"), new(Gpu.Blocks(count, 256)), new(256), 0, a);
                    break;
                }
            case Sgd sgd:
                {
                    ulong a0 = p, a1 = g, a2 = sgd.Momentum != 0 ? s : 0; int a3 = count; ulong a4 = st; float a5 = sgd.Momentum, a6 = sgd.WeightDecay;
                    void** a = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6 };
                    _g.Launch(_g.K("sgd_momentum_update"), new(Gpu.Blocks(count, 256)), new(256), 0, a);
                    break;
                }
            case AdamW w:
                {
                    // the CPU's constants (OptimizerKernels.AdamW): the per-step ones in the step state's rows
                    float a1 = 1 - w.Beta1, a2 = 1 - w.Beta2;
                    ulong q0 = p, q1 = g, q2 = s, q3 = s + (ulong)(count * 4L); int q4 = count; ulong q5 = st; float q6 = w.WeightDecay, q7 = w.Beta1, q8 = w.Beta2, q9 = a1, q10 = a2, q11 = w.Eps;
                    void** a = stackalloc void*[] { &q0, &q1, &q2, &q3, &q4, &q5, &q6, &q7, &q8, &q9, &q10, &q11 };
                    _g.Launch(_g.K("adamw_update"), new(Gpu.Blocks(count, 256)), new(256), 0, a);
                    break;
                }
        }
    }

    // ---- inference

    public override void Infer(in Batch batch, int from, int to)
    {
        int rows = batch.Rows;
        ulong x;
        if (from == 0 && _evIds != 0)
        {
            _g.ToDevice(_evIds, batch.Ids, (long)rows * _plan.InputWidth * 4);
            x = 0;
        }
        else
        {
            int w = from == 0 ? _plan.InputWidth : _plan.Steps[from].InWidth;
            _g.ToDevice(_evIn, batch.Features, (long)rows * w * 4);
            x = _evIn;
        }
        for (int k = from; k < to; k++)
        {
            _ops[k].Forward(x, _evIds, _ev[k], rows, false);
            x = _ev[k];
        }
        _inferred = x;
        _inferredRows = rows;
        _inferredWidth = to > 0 ? _plan.Steps[to - 1].OutWidth : _plan.InputWidth;
    }

    public override double InferLoss(in Batch batch)
    {
        int rows = batch.Rows;
        if (_evClasses != 0) _g.ToDevice(_evClasses, batch.Classes, rows * 4L);
        if (_evTargets != 0) _g.ToDevice(_evTargets, batch.Targets, (long)rows * _k * 4);
        Loss(_inferred, _evClasses, _evTargets, 0, 0, rows, _lossOut, 0);
        float mean;
        _g.ToHost(&mean, _lossOut, 4);
        return (double)mean * rows;
    }

    public override void ReadInferred(Span<float> destination)
    {
        long count = (long)_inferredRows * _inferredWidth;
        fixed (float* d = destination) _g.ToHost(d, _inferred, Math.Min(count, destination.Length) * 4);
    }

    public override void ReadTraining(TrainingBuffer which, int step, Span<float> destination)
    {
        ulong src = which switch
        {
            TrainingBuffer.Output => _out[step],
            TrainingBuffer.OutputGradient => _dout[step],
            TrainingBuffer.InputGradient => _dIn,
            _ => _dTarget,
        };
        if (src == 0) return;
        fixed (float* d = destination) _g.ToHost(d, src, destination.Length * 4L);
    }

    // ---- the flat buffers

    public override void Pull()
    {
        fixed (float* d = _ps.Data, g = _ps.Grad, s = _ps.OptimizerState, b = _ps.Buffers)
        {
            _g.ToHost(d, _dev.Data, _ps.Data.Length * 4L);
            _g.ToHost(g, _dev.Grad, _ps.Grad.Length * 4L);
            _g.ToHost(s, _dev.State, _ps.OptimizerState.Length * 4L);
            _g.ToHost(b, _dev.Buffers, _ps.Buffers.Length * 4L);
        }
    }

    public override void Push()
    {
        fixed (float* d = _ps.Data, g = _ps.Grad, s = _ps.OptimizerState)
        {
            _g.ToDevice(_dev.Data, d, _ps.Data.Length * 4L);
            _g.ToDevice(_dev.Grad, g, _ps.Grad.Length * 4L);
            _g.ToDevice(_dev.State, s, _ps.OptimizerState.Length * 4L);
        }
        PushBuffers();
    }

    public override void PushBuffers()
    {
        fixed (float* b = _ps.Buffers) _g.ToDevice(_dev.Buffers, b, _ps.Buffers.Length * 4L);
    }

    public override void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var g in _graphs) g?.Dispose();
        foreach (var e in _stagedRead) e?.Dispose();
        FreeSet();
        _g.Dispose();
    }
}
