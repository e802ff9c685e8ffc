using System.Runtime.Intrinsics.X86;
using HpBackprop.Networks;

namespace HpBackprop.Cpu;

/// <summary>
/// One step of a compiled network on the CPU: one layer, or a named fusion of adjacent layers chosen
/// when the network is compiled (embedding + flatten as one gather; batch norm + the activation after it
/// in one sweep). Forward and backward side by side; rows are row-major, <c>x [rows, InWidth]</c>,
/// <c>y [rows, OutWidth]</c>. Parameters and gradients are pointers into the pinned flat buffers.
/// </summary>
internal abstract unsafe class LayerOp
{
    /// <summary>The first layer this op covers, and how many.</summary>
    public int Layer, Layers = 1;

    /// <summary>Floats per row of the input and output.</summary>
    public int InWidth, OutWidth;

    /// <summary>The fusion pattern's name (for <c>Network.Plan</c>).</summary>
    public abstract string Pattern { get; }

    /// <summary>Training (batch statistics) or inference forward.</summary>
    public abstract void Forward(float* x, int* ids, float* y, int rows, bool training);

    /// <summary>Backward from <paramref name="dy"/>: fills this op's parameter gradients and <paramref name="dx"/> (skipped when null).</summary>
    public abstract void Backward(float* x, int* ids, float* y, float* dy, float* dx, int rows);
}

/// <summary>
/// <c>embedding:VxE</c> (+ <c>flatten</c>): <c>y[i, j·E + e] = weight[ids[i,j], e]</c>; backward
/// <c>dweight = 0; dweight[ids[i,j]] += dy[i,j]</c> in a fixed order (repeated ids accumulate).
/// </summary>
internal sealed unsafe class EmbeddingOp(float* weight, float* dweight, int count, int width, int block) : LayerOp
{
    public override string Pattern => Layers == 2 ? "embedding+flatten (gather)" : "embedding (gather)";

    public override void Forward(float* x, int* ids, float* y, int rows, bool training) => Embedding.Forward(weight, ids, y, rows * block, width);

    public override void Backward(float* x, int* ids, float* y, float* dy, float* dx, int rows) =>
        Embedding.Backward(dy, ids, dweight, count * width, rows * block, width);
}

/// <summary>
/// What a training step's backward does besides the gradients: with <see cref="Update"/> set, plain SGD with rate
/// <see cref="Lr"/> is applied to each linear weight in the epilogue of its gradient's product (after <c>dx</c> has read
/// the weight), so the optimiser's pass over the flat buffer skips those weights.
/// </summary>
internal sealed class StepState
{
    public bool Update;
    public float Lr;

    /// <summary>The optimiser steps taken before this one: the step the dropout masks are drawn for.</summary>
    public long Step;
}

/// <summary>
/// <c>linear:INxOUT</c>: <c>y = x·weightᵀ + bias</c> with the bias as the GEMM's starting value
/// (weight <c>[OUT,IN]</c>, PyTorch's layout); backward <c>dx = dy·weight</c>, <c>dweight = dyᵀ·x</c>
/// (with <paramref name="sgd"/>, also <c>weight −= lr·dweight</c> in that product's epilogue), <c>dbias = sum0(dy)</c>.
/// </summary>
internal sealed unsafe class LinearOp(float* w, float* b, float* dw, float* db, int inF, int outF, WorkerPool? pool, StepState? sgd) : LayerOp
{
    /// <summary>The bias gradient, or null without a bias.</summary>
    public float* BiasGradient => db;

    /// <summary>Set when the batch-norm sweep that follows writes <c>dbias = sum0(dy)</c> (it sums its <c>dx</c> anyway), so this op need not.</summary>
    public bool BiasGradientByNext;

    public override string Pattern
    {
        get
        {
            var parts = new List<string>();
            if (b != null) parts.Add("bias in the GEMM");
            if (BiasGradientByNext) parts.Add("bias gradient from the batch-norm sweep");
            if (sgd != null) parts.Add("SGD in the weight-gradient epilogue");
            return parts.Count == 0 ? "linear" : $"linear ({string.Join(", ", parts)})";
        }
    }

    public override void Forward(float* x, int* ids, float* y, int rows, bool training) =>
        Gemm.Run(new Gemm.Args(rows, outF, inF, x, inF, 1, w, 1, inF, y, outF, b, false), pool);

    public override void Backward(float* x, int* ids, float* y, float* dy, float* dx, int rows)
    {
        if (dx != null) Gemm.Run(new Gemm.Args(rows, inF, outF, dy, outF, 1, w, inF, 1, dx, inF, null, false), pool);
        float* upd = sgd is { Update: true } ? w : null; // after dx has read the weight
        Gemm.Run(new Gemm.Args(outF, inF, rows, dy, 1, outF, x, inF, 1, dw, inF, null, false, upd, upd != null ? sgd!.Lr : 0f), pool);
        if (db != null && !BiasGradientByNext) Linear.ColumnSum(dy, db, rows, outF);
    }
}

/// <summary>A standalone elementwise activation (one not fused into a batch-norm sweep).</summary>
internal sealed unsafe class ActivationOp<TA>(string name) : LayerOp where TA : struct, IActivation
{
    public override string Pattern => name;

    public override void Forward(float* x, int* ids, float* y, int rows, bool training) => Activation.Forward<TA>(x, y, (long)rows * OutWidth);

    public override void Backward(float* x, int* ids, float* y, float* dy, float* dx, int rows)
    {
        if (dx != null) Activation.Backward<TA>(y, dy, dx, (long)rows * OutWidth);
    }
}

/// <summary>A batch-norm op of any activation and mode, as the compiler wires it.</summary>
internal unsafe interface IBatchNormOp
{
    /// <summary>Also write <c>sum0(dx)</c> to <paramref name="dbias"/> in the backward: the bias gradient of the linear before this batch norm.</summary>
    void SetInputBiasGradient(float* dbias);

    /// <summary>The batch statistics of the last training forward: mean, variance (over n−1, or n in the biased mode) and 1/√(var + eps).</summary>
    (float[] Mean, float[] Variance, float[] VarInv) Statistics { get; }

    /// <summary>
    /// Frees the <c>[n,F]</c> bnraw buffer the training forward keeps for the backward (the network's row-block pipeline
    /// trains without it); a later op-by-op training step allocates it again.
    /// </summary>
    void ReleaseTrainingBuffer();

    /// <summary>Whether the bnraw buffer is allocated (for tests).</summary>
    bool HoldsTrainingBuffer { get; }
}

/// <summary>
/// <c>batchnorm:F</c> (Bessel or biased) and, when one follows it, its activation, in one sweep per
/// column block: statistics, normalise, scale and shift, activate; backward through both in one sweep
/// (docs/makemore.md §4's fused formula with <c>n/(n−1)</c>, or 1 in the biased mode). In training the running
/// statistics are updated, <c>running = (1 − momentum)·running + momentum·batch</c>, with the unbiased
/// variance in both modes. Inference normalises with the running statistics.
/// </summary>
internal sealed unsafe class BatchNormOp<TA, TB> : LayerOp, IBatchNormOp where TA : struct, IActivation where TB : struct, BatchNorm.IBnMode
{
    private readonly float* _gain, _bias, _dgain, _dbias, _runMean, _runVar;
    private readonly long* _tracked;
    private readonly float[] _mean, _var, _varInv, _scratch;
    private float[]? _raw;
    private readonly int _f, _rows;
    private readonly float _eps, _momentum;
    private readonly string _name;
    private readonly WorkerPool? _pool;
    private readonly Work _fw = new(true), _bw = new(false);

    /// <summary>When set, the backward also writes <c>sum0(dx)</c> here: the bias gradient of the linear before this batch norm.</summary>
    public float* InputBiasGradient;

    public void SetInputBiasGradient(float* dbias) => InputBiasGradient = dbias;

    public BatchNormOp(float* gain, float* bias, float* dgain, float* dbias, float* runMean, float* runVar, long* tracked,
        int features, int rows, float eps, float momentum, string name, WorkerPool? pool)
    {
        _gain = gain; _bias = bias; _dgain = dgain; _dbias = dbias; _runMean = runMean; _runVar = runVar; _tracked = tracked;
        _f = features; _rows = rows; _eps = eps; _momentum = momentum; _name = name; _pool = pool;
        _mean = Pinned(features); _var = Pinned(features); _varInv = Pinned(features); _scratch = Pinned(features);
        _raw = Pinned((long)rows * features);
    }

    /// <summary>bnraw <c>[n,F]</c>, kept by the training forward for the backward (allocated again after <see cref="ReleaseTrainingBuffer"/>).</summary>
    private float[] Raw => _raw ??= Pinned((long)_rows * _f);

    public void ReleaseTrainingBuffer() => _raw = null;

    public bool HoldsTrainingBuffer => _raw != null;

    private static float[] Pinned(long n) => GC.AllocateArray<float>(checked((int)n), pinned: true);

    private static float* P(float[] a) => (float*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(a));

    public override string Pattern => _name;

    public (float[] Mean, float[] Variance, float[] VarInv) Statistics => (_mean, _var, _varInv);

    public override void Forward(float* x, int* ids, float* y, int rows, bool training)
    {
        int F = _f;
        if (!training)
        {
            BatchNorm.InferencePortable<TA>(new ReadOnlySpan<float>(x, rows * F), new ReadOnlySpan<float>(_runMean, F), new ReadOnlySpan<float>(_runVar, F),
                new ReadOnlySpan<float>(_gain, F), new ReadOnlySpan<float>(_bias, F), new Span<float>(y, rows * F), _scratch, rows, F, _eps);
            return;
        }
        _ = Raw; // allocated here, on the calling thread, if it was released (the workers read _raw)
        if (Avx512F.IsSupported && !Gemm.ForceVector256)
        {
            var w = _fw;
            w.X = x; w.Y = y; w.Rows = rows; w.Op = this;
            if (_pool is null || (long)rows * F < 1 << 16) w.Run(0, 1); else _pool.Run(w);
        }
        else
        {
            BatchNorm.ForwardPortable<TA, TB>(new ReadOnlySpan<float>(x, rows * F), new ReadOnlySpan<float>(_gain, F), new ReadOnlySpan<float>(_bias, F),
                _mean, _var, _varInv, Raw, new Span<float>(y, rows * F), rows, F, _eps);
        }
        // running statistics, with the unbiased variance
        float m = _momentum, keep = 1 - m, unbias = TB.OverN ? (float)rows / (rows - 1) : 1f;
        int c = 0;
        if (System.Numerics.Vector.IsHardwareAccelerated)
        {
            // the same multiplies and add per element as the scalar loop (no fusing), so bitwise the same
            int w = System.Numerics.Vector<float>.Count;
            var vm = new System.Numerics.Vector<float>(m); var vk = new System.Numerics.Vector<float>(keep); var vu = new System.Numerics.Vector<float>(unbias);
            fixed (float* mean = _mean, bvar = _var)
                for (; c + w <= F; c += w)
                {
                    var rm = System.Runtime.CompilerServices.Unsafe.ReadUnaligned<System.Numerics.Vector<float>>(_runMean + c);
                    var rv = System.Runtime.CompilerServices.Unsafe.ReadUnaligned<System.Numerics.Vector<float>>(_runVar + c);
                    var bm = System.Runtime.CompilerServices.Unsafe.ReadUnaligned<System.Numerics.Vector<float>>(mean + c);
                    var bv = System.Runtime.CompilerServices.Unsafe.ReadUnaligned<System.Numerics.Vector<float>>(bvar + c);
                    System.Runtime.CompilerServices.Unsafe.WriteUnaligned(_runMean + c, vk * rm + vm * bm);
                    System.Runtime.CompilerServices.Unsafe.WriteUnaligned(_runVar + c, vk * rv + vm * (bv * vu));
                }
        }
        for (; c < F; c++)
        {
            _runMean[c] = keep * _runMean[c] + m * _mean[c];
            _runVar[c] = keep * _runVar[c] + m * (_var[c] * unbias);
        }
        (*_tracked)++;
    }

    public override void Backward(float* x, int* ids, float* y, float* dy, float* dx, int rows)
    {
        int F = _f;
        if (dx == null) dx = dy; // the input gradient is not wanted, but the sweep writes one: let it overwrite dy
        _ = Raw;
        if (Avx512F.IsSupported && !Gemm.ForceVector256)
        {
            var w = _bw;
            w.X = dx; w.Y = y; w.Dy = dy; w.Rows = rows; w.Op = this;
            if (_pool is null || (long)rows * F < 1 << 16) w.Run(0, 1); else _pool.Run(w);
        }
        else
        {
            BatchNorm.BackwardPortable<TA, TB>(new ReadOnlySpan<float>(dy, rows * F), new ReadOnlySpan<float>(y, rows * F), Raw,
                new ReadOnlySpan<float>(_gain, F), _varInv, new Span<float>(dx, rows * F), new Span<float>(_dgain, F), new Span<float>(_dbias, F), _scratch, rows, F);
            if (InputBiasGradient != null) Linear.ColumnSum(dx, InputBiasGradient, rows, F);
        }
    }

    /// <summary>Column blocks of 16 shared out contiguously, so each column is computed the same way on any thread count.</summary>
    private sealed class Work(bool forward) : ParallelWork
    {
        public float* X, Y, Dy;
        public int Rows;
        public BatchNormOp<TA, TB>? Op;

        public override void Run(int thread, int threads)
        {
            var o = Op!;
            int F = o._f;
            var (b0, b1) = Share((F + 15) / 16, thread, threads);
            if (b1 <= b0) return;
            int c0 = b0 * 16, c1 = Math.Min(F, b1 * 16);
            if (forward)
                BatchNorm.Forward512<TA, TB>(X, o._gain, o._bias, P(o._mean), P(o._var), P(o._varInv), P(o._raw!), Y, Rows, F, o._eps, c0, c1);
            else
                BatchNorm.Backward512<TA, TB>(Dy, Y, P(o._raw!), o._gain, P(o._varInv), X, o._dgain, o._dbias, Rows, F, c0, c1, o.InputBiasGradient);
        }
    }
}
