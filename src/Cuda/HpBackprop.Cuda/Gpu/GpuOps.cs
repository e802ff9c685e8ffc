using HpBackprop.Cuda.Runtime;
using HpBackprop.Networks;

namespace HpBackprop.Cuda.Gpu;

/// <summary>
/// One step of a compiled plan on the GPU: forward and backward side by side over device pointers (0 = none), rows
/// row-major, <c>x [rows, InWidth]</c>, <c>y [rows, OutWidth]</c>. Parameters and gradients are views of the backend's
/// device copies of the flat buffers (PyTorch's layout), found by state-dict name.
/// </summary>
internal abstract unsafe class GpuOp(PlanStep step)
{
    public PlanStep Step { get; } = step;

    /// <summary>Training (batch statistics, the dropout masks of the step in the device's step state) or inference forward.</summary>
    public abstract void Forward(ulong x, ulong ids, ulong y, int rows, bool training);

    /// <summary>Backward from <paramref name="dy"/>: the step's parameter gradients, and <paramref name="dx"/> unless it is 0.</summary>
    public abstract void Backward(ulong x, ulong ids, ulong y, ulong dy, ulong dx, int rows);
}

/// <summary>The device copies of the store's flat buffers and how to find a tensor in them.</summary>
internal sealed class DeviceStore(ParameterStore store, ulong data, ulong grad, ulong state, ulong buffers)
{
    public ParameterStore Host { get; } = store;
    public ulong Data { get; } = data;
    public ulong Grad { get; } = grad;
    public ulong State { get; } = state;
    public ulong Buffers { get; } = buffers;

    public ulong P(string name) => Data + (ulong)(Host.Slot(name).Offset * 4L);
    public ulong G(string name) => Grad + (ulong)(Host.Slot(name).Offset * 4L);
    public ulong B(string name) => Buffers + (ulong)(Host.Slot(name).Offset * 4L);
}

/// <summary>The activation codes of the kernels (native/kernels/hpb_common.cuh): 0 none, 1 tanh, 2 relu, 3 sigmoid.</summary>
internal static class ActivationCode
{
    public static int Of(LayerKind? kind) => kind switch
    {
        LayerKind.Tanh => 1,
        LayerKind.Relu => 2,
        LayerKind.Sigmoid => 3,
        _ => 0,
    };
}

/// <summary><c>embedding</c> (+ flatten): <c>embedding_forward</c>; backward the deterministic scatter (dense for small V, sort and segments for large V) or atomics (opt-in).</summary>
internal sealed unsafe class GatherOp : GpuOp
{
    /// <summary>Largest V for the one-thread-per-cell deterministic scatter; larger V sorts the ids.</summary>
    public const int DenseScatterMaxV = 256;

    private readonly Gpu _g;
    private readonly ulong _w, _dw;
    private readonly int _v, _e, _b;
    private readonly ScatterMode _scatter;
    private readonly ulong _keys, _vals, _keys2, _vals2, _hist;
    private readonly int _tiles;

    public GatherOp(Gpu g, DeviceStore s, PlanStep step, int block, int rows, ScatterMode scatter) : base(step)
    {
        _g = g;
        string w = LayerType.Name(step.Layer, "weight");
        _w = s.P(w); _dw = s.G(w);
        _v = step.Def.In; _e = step.Def.Out; _b = block;
        _scatter = scatter;
        int m = rows * block;
        _tiles = (m + 255) / 256;
        if (scatter == ScatterMode.Deterministic && _v > DenseScatterMaxV)
        {
            _keys = g.Alloc(m); _vals = g.Alloc(m); _keys2 = g.Alloc(m); _vals2 = g.Alloc(m); _hist = g.Alloc(256L * _tiles);
        }
    }

    /// <summary>The embedding table (device address) and the width of its rows, E.</summary>
    public (ulong Table, int Width) Table => (_w, _e);

    public override void Forward(ulong x, ulong ids, ulong y, int rows, bool training)
    {
        ulong a0 = y, a1 = _w, a2 = ids; int a3 = rows, a4 = _b, a5 = _e;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5 };
        _g.Launch(_g.K("embedding_forward"), new(Gpu.Blocks((long)rows * _b * _e, 256)), new(256), 0, args);
    }

    public override void Backward(ulong x, ulong ids, ulong y, ulong dy, ulong dx, int rows)
    {
        int m = rows * _b;
        if (_scatter == ScatterMode.Atomic)
        {
            _g.Rt.Zero(_dw, (long)_v * _e * 4);
            ulong a0 = _dw, a1 = dy, a2 = ids; int a3 = rows, a4 = _b, a5 = _e;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5 };
            _g.Launch(_g.K("embedding_backward_atomic"), new(Gpu.Blocks((long)m * _e, 256)), new(256), 0, args);
            return;
        }
        if (_v <= DenseScatterMaxV)
        {
            ulong a0 = _dw, a1 = dy, a2 = ids; int a3 = rows, a4 = _b, a5 = _e, a6 = _v;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6 };
            _g.Launch(_g.K("embedding_backward_dense"), new(Gpu.Blocks((long)_v * _e, 256)), new(256), 0, args);
            return;
        }
        // a stable LSD radix sort of the occurrences by id (8 bits a pass), then one warp per run of equal ids
        ulong keysIn = ids, valsIn = 0, keysOut = _keys, valsOut = _vals;
        int passes = _v <= 256 ? 1 : _v <= 65536 ? 2 : 4;
        for (int pass = 0; pass < passes; pass++)
        {
            SortPass(keysIn, valsIn, keysOut, valsOut, m, 8 * pass);
            keysIn = keysOut; valsIn = valsOut;
            (keysOut, valsOut) = keysOut == _keys ? (_keys2, _vals2) : (_keys, _vals);
        }
        _g.Rt.Zero(_dw, (long)_v * _e * 4);
        {
            ulong a0 = _dw, a1 = dy, a2 = keysIn, a3 = valsIn; int a4 = m, a5 = _e;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5 };
            _g.Launch(_g.K("embedding_backward_segments"), new(Gpu.Blocks(m, 8)), new(256), 0, args);
        }
    }

    private void SortPass(ulong keysIn, ulong valsIn, ulong keysOut, ulong valsOut, int m, int shift)
    {
        int tiles = (m + 255) / 256;
        {
            ulong a0 = _hist, a1 = keysIn; int a2 = m, a3 = shift;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3 };
            _g.Launch(_g.K("embedding_sort_histogram"), new((uint)tiles), new(256), 0, args);
        }
        {
            ulong a0 = _hist; int a1 = 256 * tiles;
            void** args = stackalloc void*[] { &a0, &a1 };
            _g.Launch(_g.K("exclusive_scan_int"), new(1), new(1024), 0, args);
        }
        {
            ulong a0 = keysOut, a1 = valsOut, a2 = keysIn, a3 = valsIn, a4 = _hist; int a5 = m, a6 = shift;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6 };
            _g.Launch(_g.K("embedding_sort_scatter"), new((uint)tiles), new(256), 0, args);
        }
    }
}

/// <summary><c>linear</c>: cuBLAS with the transpose flags of PyTorch's <c>[OUT,IN]</c> weight, <c>bias_add</c>; backward dx, dW, and db as a deterministic column sum (unless the batch norm after it writes db).</summary>
internal sealed unsafe class LinearOp : GpuOp
{
    private readonly Gpu _g;
    private readonly ulong _w, _b, _dw, _db, _partial;
    private readonly int _in, _out;

    public LinearOp(Gpu g, DeviceStore s, PlanStep step, int rows) : base(step)
    {
        _g = g;
        _in = step.Def.In; _out = step.Def.Out;
        _w = s.P(LayerType.Name(step.Layer, "weight")); _dw = s.G(LayerType.Name(step.Layer, "weight"));
        if (step.Def.HasBias)
        {
            _b = s.P(LayerType.Name(step.Layer, "bias")); _db = s.G(LayerType.Name(step.Layer, "bias"));
            if (!step.BiasGradientFromNext) _partial = g.Alloc((long)g.Chunks(rows) * _out);
        }
    }

    public override void Forward(ulong x, ulong ids, ulong y, int rows, bool training)
    {
        _g.Forward(x, _w, y, rows, _in, _out);
        if (_b == 0 || (training && (Step.BiasInLoss || Step.BiasInNext))) return; // the loss's kernel, or the batch norm's, adds it
        ulong a0 = y, a1 = _b; int a2 = rows, a3 = _out;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3 };
        _g.Launch(_g.K("bias_add"), new(Gpu.Blocks((long)rows * _out, 256)), new(256), 0, args);
    }

    public override void Backward(ulong x, ulong ids, ulong y, ulong dy, ulong dx, int rows)
    {
        if (dx != 0) _g.BackwardInput(dy, _w, dx, rows, _in, _out);
        _g.BackwardWeight(x, dy, _dw, rows, _in, _out);
        if (_db != 0 && !Step.BiasGradientFromNext && !Step.BiasInLoss) _g.ColumnSum(dy, rows, _out, _db, _partial);
    }
}

/// <summary>
/// <c>batchnorm</c> (Bessel or biased) with the activation after it, if fused: one kernel per direction when the batch is
/// one reduction chunk, else per-chunk partial sums finished in order; the running statistics in the forward's kernel.
/// </summary>
internal sealed unsafe class BatchNormOp : GpuOp
{
    private readonly Gpu _g;
    private readonly ulong _gain, _bias, _dgain, _dbias, _rm, _rv, _prevBias, _inBias;
    private readonly ulong _mean, _var, _varInv, _raw, _p1, _p2;
    private readonly int _f, _act, _biased, _tracked;
    private readonly float _eps, _momentum;
    private readonly ParameterStore _host;

    // previousBias: the gradient of the previous linear's bias this op writes (PlanStep.WritesPreviousBiasGradient), or 0;
    // inputBias: the previous linear's bias this op adds to its input in training steps (PlanStep.AddsPreviousBias), or 0
    public BatchNormOp(Gpu g, DeviceStore s, PlanStep step, ulong previousBias, ulong inputBias, int rows, float eps, float momentum, int trackedIndex) : base(step)
    {
        _inBias = inputBias;
        _g = g;
        int i = step.Layer;
        _f = step.Def.In;
        _gain = s.P(LayerType.Name(i, "weight")); _bias = s.P(LayerType.Name(i, "bias"));
        _dgain = s.G(LayerType.Name(i, "weight")); _dbias = s.G(LayerType.Name(i, "bias"));
        _rm = s.B(LayerType.Name(i, "running_mean")); _rv = s.B(LayerType.Name(i, "running_var"));
        _prevBias = previousBias;
        _act = ActivationCode.Of(step.Activation);
        _biased = step.Def.Mode == BatchNormMode.Biased ? 1 : 0;
        _eps = eps; _momentum = momentum;
        _mean = g.Alloc(_f); _var = g.Alloc(_f); _varInv = g.Alloc(_f); _raw = g.Alloc((long)rows * _f);
        int chunks = g.Chunks(rows);
        if (chunks > 1) { _p1 = g.Alloc((long)chunks * _f); _p2 = g.Alloc((long)chunks * _f); }
        _host = s.Host;
        _tracked = trackedIndex;
    }

    public override void Forward(ulong x, ulong ids, ulong y, int rows, bool training)
    {
        int F = _f;
        if (!training)
        {
            ulong a0 = x, a1 = _rm, a2 = _rv, a3 = _gain, a4 = _bias, a5 = y; int a6 = rows, a7 = F; float a8 = _eps; int a9 = _act;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8, &a9 };
            _g.Launch(_g.K("batchnorm_inference"), new(Gpu.Blocks((long)rows * F, 256)), new(256), 0, args);
            return;
        }
        _host.BatchesTracked[_tracked]++;
        int chunks = _g.Chunks(rows);
        if (chunks == 1)
        {
            ulong a0 = x, a1 = _gain, a2 = _bias, a3 = _mean, a4 = _var, a5 = _varInv, a6 = _raw, a7 = y, a8 = _rm, a9 = _rv;
            int a10 = rows, a11 = F; float a12 = _eps, a13 = _momentum; int a14 = _act, a15 = _biased; ulong a16 = _inBias;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8, &a9, &a10, &a11, &a12, &a13, &a14, &a15, &a16 };
            _g.Launch(_g.K("batchnorm_forward"), new(Gpu.Blocks(F, 32)), new(32, 8), 32 * 8 * 4, args);
            return;
        }
        if (_inBias != 0)
        {
            // the chunked path reads x in several kernels: the linear's bias is added once, first
            ulong b0 = x, b1 = _inBias; int b2 = rows, b3 = F;
            void** bargs = stackalloc void*[] { &b0, &b1, &b2, &b3 };
            _g.Launch(_g.K("bias_add"), new(Gpu.Blocks((long)rows * F, 256)), new(256), 0, bargs);
        }
        _g.ColumnPartials(x, 0, 0, rows, F, _p1);
        {
            ulong a0 = _p1; int a1 = chunks, a2 = rows, a3 = F; ulong a4 = _mean;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4 };
            _g.Launch(_g.K("batchnorm_finish_mean"), new(Gpu.Blocks(F, 256)), new(256), 0, args);
        }
        _g.ColumnPartials(x, _mean, 1, rows, F, _p1);
        {
            ulong a0 = _p1; int a1 = chunks, a2 = rows, a3 = F; float a4 = _eps, a5 = _momentum; int a6 = _biased;
            ulong a7 = _mean, a8 = _var, a9 = _varInv, a10 = _rm, a11 = _rv;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8, &a9, &a10, &a11 };
            _g.Launch(_g.K("batchnorm_finish_var"), new(Gpu.Blocks(F, 256)), new(256), 0, args);
        }
        {
            ulong a0 = x, a1 = _mean, a2 = _varInv, a3 = _gain, a4 = _bias, a5 = _raw, a6 = y; int a7 = rows, a8 = F, a9 = _act;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8, &a9 };
            _g.Launch(_g.K("batchnorm_normalize"), new(Gpu.Blocks((long)rows * F, 256)), new(256), 0, args);
        }
    }

    public override void Backward(ulong x, ulong ids, ulong y, ulong dy, ulong dx, int rows)
    {
        int F = _f;
        if (dx == 0) dx = dy; // the sweep writes an input gradient anyway: let it overwrite dy
        int chunks = _g.Chunks(rows);
        if (chunks == 1)
        {
            ulong a0 = dy, a1 = y, a2 = _raw, a3 = _gain, a4 = _varInv, a5 = dx, a6 = _dgain, a7 = _dbias, a8 = _prevBias;
            int a9 = rows, a10 = F, a11 = _act, a12 = _biased;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8, &a9, &a10, &a11, &a12 };
            _g.Launch(_g.K("batchnorm_backward"), new(Gpu.Blocks(F, 32)), new(32, 8), 32 * 8 * 4, args);
            return;
        }
        {
            ulong a0 = dy, a1 = y, a2 = _raw; int a3 = rows, a4 = F, a5 = _g.RowsPerChunk, a6 = _act; ulong a7 = _p1, a8 = _p2;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8 };
            _g.Launch(_g.K("batchnorm_backward_partials"), new(Gpu.Blocks(F, 32), (uint)chunks), new(32, 8), 32 * 8 * 4, args);
        }
        _g.FinishColumns(_p1, chunks, F, _dbias);
        _g.FinishColumns(_p2, chunks, F, _dgain);
        {
            ulong a0 = dy, a1 = y, a2 = _raw, a3 = _gain, a4 = _varInv, a5 = _dbias, a6 = _dgain, a7 = dx; int a8 = rows, a9 = F, a10 = _act, a11 = _biased;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8, &a9, &a10, &a11 };
            _g.Launch(_g.K("batchnorm_backward_dx"), new(Gpu.Blocks((long)rows * F, 256)), new(256), 0, args);
        }
        if (_prevBias != 0) _g.ColumnSum(dx, rows, F, _prevBias, _p1);
    }
}

/// <summary>
/// A standalone <c>tanh</c>, <c>relu</c> or <c>sigmoid</c>: <c>activation_forward</c>, <c>activation_backward</c> (from the
/// output). After a linear with bias, in training steps, the forward adds that bias (<see cref="Plan.BiasInActivation"/>)
/// and the backward, <c>activation_backward_column_sum</c>, writes its gradient (<see cref="Plan.BiasGradientFromActivation"/>).
/// </summary>
internal sealed unsafe class ActivationOp : GpuOp
{
    private readonly Gpu _g;
    private readonly int _act;
    private readonly ulong _inBias, _prevBias, _partial;

    // inputBias: the previous linear's bias added to the input in training steps (PlanStep.AddsPreviousBias), or 0;
    // previousBias: the gradient of that bias this op writes (PlanStep.WritesPreviousBiasGradient), or 0
    public ActivationOp(Gpu g, PlanStep step, ulong inputBias, ulong previousBias, int rows) : base(step)
    {
        _g = g;
        _act = ActivationCode.Of(step.Def.Kind);
        _inBias = inputBias; _prevBias = previousBias;
        if (previousBias != 0 && g.Chunks(rows) > 1) _partial = g.Alloc((long)g.Chunks(rows) * step.OutWidth);
    }

    public override void Forward(ulong x, ulong ids, ulong y, int rows, bool training)
    {
        ulong a0 = x, a1 = y; int a2 = checked(rows * Step.OutWidth), a3 = _act; ulong a4 = training ? _inBias : 0; int a5 = Step.OutWidth;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5 };
        _g.Launch(_g.K("activation_forward"), new(Gpu.Blocks(a2, 256)), new(256), 0, args);
    }

    public override void Backward(ulong x, ulong ids, ulong y, ulong dy, ulong dx, int rows)
    {
        if (dx == 0) return;
        int cols = Step.OutWidth;
        if (_prevBias == 0)
        {
            ulong a0 = y, a1 = dy, a2 = dx; int a3 = checked(rows * cols), a4 = _act;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4 };
            _g.Launch(_g.K("activation_backward"), new(Gpu.Blocks(a3, 256)), new(256), 0, args);
            return;
        }
        int chunks = _g.Chunks(rows);
        {
            ulong a0 = y, a1 = dy, a2 = dx; int a3 = _act, a4 = rows, a5 = cols, a6 = _g.RowsPerChunk; ulong a7 = chunks == 1 ? _prevBias : _partial;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7 };
            _g.Launch(_g.K("activation_backward_column_sum"), new(Gpu.Blocks(cols, 32), (uint)chunks), new(32, 8), 32 * 8 * 4, args);
        }
        if (chunks > 1) _g.FinishColumns(_partial, chunks, cols, _prevBias);
    }
}
