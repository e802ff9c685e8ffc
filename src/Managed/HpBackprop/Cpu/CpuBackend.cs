using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using HpBackprop.Data;
using HpBackprop.Model;
using HpBackprop.Training;

namespace HpBackprop.Cpu;

/// <summary>Options of the <see cref="CpuBackend"/>.</summary>
public sealed record CpuBackendOptions
{
    /// <summary>
    /// Threads for a step (the caller plus <c>Threads − 1</c> persistent workers). Only large
    /// products, batch-norm passes and the row blocks of the large-batch pipeline are split; results
    /// are bitwise the same for every thread count, since work is divided by output elements or by
    /// fixed row blocks whose partial sums are combined in block order, never by thread. Default 1.
    /// </summary>
    public int Threads { get; init; } = 1;
}

/// <summary>
/// The fused CPU backend: embedding gather, linear with the bias folded into the GEMM, batch
/// norm + tanh in one sweep per column block, linear, one-pass cross-entropy forward+backward,
/// the fused batch-norm backward (which also sums <c>db1</c>), the register-blocked GEMMs of
/// the backward, the embedding scatter-add and SGD over the flat buffers. Batches of
/// <see cref="PipelineMinRows"/> rows or more go through the row-block pipeline instead (see
/// CpuBackend.Pipeline.cs), which carries blocks of 64 rows through several layers while they are in
/// cache. All buffers are sized once in the constructor; a step allocates nothing.
/// </summary>
public sealed unsafe partial class CpuBackend : ITrainingBackend
{
    /// <summary>Rows per chunk when evaluating or calibrating.</summary>
    public const int EvalChunk = 1024;

    /// <summary>Batch-norm passes over fewer elements than this run on one thread.</summary>
    private const int ParallelElements = 1 << 16;

    private readonly int _n, _b, _e, _h, _v, _k;
    private readonly float _eps;
    // forward buffers (SPEC names)
    private readonly float[] embcat, hprebn, bnmeani, bnvar, bnvar_inv, bnraw, h, logits;
    // backward buffers
    private readonly float[] dlogits, dh, dhprebn, dembcat, scratch;
    // evaluation buffers
    private readonly float[] _evEmbcat, _evHprebn, _evH, _evLogits;
    private readonly double[] _calSum, _calSq;
    private readonly float[] _dW2t;
    private readonly WorkerPool? _pool;
    private readonly BnForwardWork _bnForward = new();
    private readonly BnBackwardWork _bnBackward = new();
    private readonly int _oC, _oW1, _ob1, _oW2, _ob2, _oGain, _oBias;

    /// <summary>Creates a single-threaded backend over <paramref name="parameters"/> for minibatches of <see cref="ModelConfig.BatchSize"/> rows.</summary>
    public CpuBackend(ParameterSet parameters) : this(parameters, new CpuBackendOptions()) { }

    /// <summary>Creates a backend that runs large steps on <paramref name="threads"/> threads.</summary>
    public CpuBackend(ParameterSet parameters, int threads) : this(parameters, new CpuBackendOptions { Threads = threads }) { }

    /// <summary>Creates a backend over <paramref name="parameters"/> with <paramref name="options"/>.</summary>
    public CpuBackend(ParameterSet parameters, CpuBackendOptions options)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Threads < 1) throw new ArgumentOutOfRangeException(nameof(options), options.Threads, "CpuBackendOptions.Threads must be at least 1.");
        Parameters = parameters;
        Config = parameters.Config;
        Threads = options.Threads;
        _n = Config.BatchSize; _b = Config.BlockSize; _e = Config.EmbeddingSize; _h = Config.HiddenSize; _v = Config.VocabSize;
        _k = Config.ContextWidth; _eps = (float)Config.Eps;
        embcat = Buf(_n * _k); hprebn = Buf(_n * _h); bnmeani = Buf(_h); bnvar = Buf(_h); bnvar_inv = Buf(_h);
        bnraw = Buf(_n * _h); h = Buf(_n * _h); logits = Buf(_n * _v);
        dlogits = Buf(_n * _v); dh = Buf(_n * _h); dhprebn = Buf(_n * _h); dembcat = Buf(_n * _k); scratch = Buf(_h);
        int c = EvalChunk;
        _evEmbcat = Buf(c * _k); _evHprebn = Buf(c * _h); _evH = Buf(c * _h); _evLogits = Buf(c * _v);
        _dW2t = Buf(_v * _h);
        _calSum = new double[_h]; _calSq = new double[_h];
        var lay = parameters.Layout;
        _oC = lay[0].Offset; _oW1 = lay[1].Offset; _ob1 = lay[2].Offset; _oW2 = lay[3].Offset; _ob2 = lay[4].Offset; _oGain = lay[5].Offset; _oBias = lay[6].Offset;
        if (Threads > 1) _pool = new WorkerPool(Threads);
        if (UsesPipeline(_n))
        {
            _blocks = (_n + PipeRows - 1) / PipeRows;
            _chunks = Math.Min(_blocks, MaxChunks);
            _pW2 = Buf(_chunks * _v * _h);
            _pA = Buf(_blocks * _h); _pB = Buf(_blocks * _h); _pC = Buf(_blocks * _h);
            _pLoss = new double[_blocks];
            _pDh = Buf(Threads * PipeRows * _h);
            _packW1 = Buf((int)Gemm.PackedSize(_k, _h)); _packW2 = Buf((int)Gemm.PackedSize(_h, _v));
            _packW2t = Buf((int)Gemm.PackedSize(_v, _h)); _packW1t = Buf((int)Gemm.PackedSize(_h, _k));
            _coefA = Buf(_h); _coefE = Buf(_h); _coefS = Buf(_h);
            _pipe = new PipeWork(this);
        }
    }

    /// <summary>Pinned (never moved) so the step can hold raw pointers to it.</summary>
    private static float[] Buf(int length) => GC.AllocateArray<float>(length, pinned: true);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float* Ptr(float[] a) => (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(a));

    /// <summary>Threads a step may use.</summary>
    public int Threads { get; }

    /// <inheritdoc />
    public string Name => "cpu";

    /// <inheritdoc />
    public ModelConfig Config { get; }

    /// <inheritdoc />
    public ParameterSet Parameters { get; }

    /// <inheritdoc />
    public float RunningMomentum { get; set; } = 0.001f;

    /// <summary>
    /// A forward or backward buffer of the last step by SPEC name: embcat, hprebn, bnmeani, bnvar,
    /// bnvar_inv, bnraw, h, logits, dlogits, dh, dhprebn, dembcat.
    /// </summary>
    /// <remarks>
    /// Large batches (the row-block pipeline) never store bnraw and dh whole; the first request after a
    /// step computes them, with the same formulas and the parameters the step used.
    /// </remarks>
    public ReadOnlySpan<float> Intermediate(string name)
    {
        MaterialiseLazy(name);
        return name switch
        {
            "embcat" => embcat, "hprebn" => hprebn, "bnmeani" => bnmeani, "bnvar" => bnvar, "bnvar_inv" => bnvar_inv,
            "bnraw" => bnraw, "h" => h, "logits" => logits, "dlogits" => dlogits, "dh" => dh, "dhprebn" => dhprebn, "dembcat" => dembcat,
            _ => throw new ArgumentException($"the CPU backend keeps no buffer named '{name}'.", nameof(name)),
        };
    }

    /// <inheritdoc />
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public float ForwardBackward(ReadOnlySpan<int> xb, ReadOnlySpan<int> yb)
    {
        CheckBatch(xb, yb);
        if (!Avx512F.IsSupported || Gemm.ForceVector256) return ForwardBackwardPortable(xb, yb);
        return ForwardBackward512(xb, yb);
    }

    /// <summary>The AVX-512 forward and backward of one minibatch.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private float ForwardBackward512(ReadOnlySpan<int> xb, ReadOnlySpan<int> yb)
    {
        float* P = Ptr(Parameters.Data), G = Ptr(Parameters.Grad);
        float* pEmbcat = Ptr(embcat), pHprebn = Ptr(hprebn), pH = Ptr(h), pLogits = Ptr(logits), pDlogits = Ptr(dlogits);
        float* pDh = Ptr(dh), pDhprebn = Ptr(dhprebn), pDembcat = Ptr(dembcat), pRaw = Ptr(bnraw);
        int n = _n, H = _h, V = _v, K = _k;
        var pool = _pool;
        float loss;
        fixed (int* px = xb)
        {
            if (Pipelined)
                fixed (int* py = yb) return ForwardBackwardPipelined(px, py);
            _bnrawLazy = _dhLazy = false;
            // forward
            Embedding.Forward(P + _oC, px, pEmbcat, n * _b, _e);
            Linear.Forward(pEmbcat, P + _oW1, P + _ob1, pHprebn, n, K, H, pool);
            RunBnForward(pHprebn, P + _oGain, P + _oBias, pRaw, pH);
            Linear.Forward(pH, P + _oW2, P + _ob2, pLogits, n, H, V, pool);
            loss = CrossEntropy.ForwardBackward(new ReadOnlySpan<float>(pLogits, n * V), yb, new Span<float>(pDlogits, n * V), n, V);
            // backward
            if (n >= TransposedDW2MinRows)
            {
                // dh = dlogits · W2ᵀ; dW2 as its transpose dW2ᵀ[V,H] = dlogitsᵀ · h (h read in place as long rows), then
                // transposed into dW2. Pays off only for long batches.
                Gemm.Run(new Gemm.Args(n, H, V, pDlogits, V, 1, P + _oW2, 1, V, pDh, H, null, false), pool);
                Gemm.Run(new Gemm.Args(V, H, n, pDlogits, 1, V, pH, H, 1, Ptr(_dW2t), H, null, false), pool);
                TransposeInto(Ptr(_dW2t), G + _oW2, V, H);
                Linear.ColumnSum(pDlogits, G + _ob2, n, V);
            }
            else
            {
                Linear.Backward(pH, P + _oW2, pDlogits, pDh, G + _oW2, G + _ob2, n, H, V, pool);
            }
            RunBnBackward(pDh, pH, pRaw, P + _oGain, pDhprebn, G + _oGain, G + _oBias, G + _ob1);
            // dembcat = dhprebn · W1ᵀ, dW1 = embcatᵀ · dhprebn (db1 came out of the batch-norm backward)
            Gemm.Run(new Gemm.Args(n, K, H, pDhprebn, H, 1, P + _oW1, 1, H, pDembcat, K, null, false), pool);
            Gemm.Run(new Gemm.Args(K, H, n, pEmbcat, 1, K, pDhprebn, H, 1, G + _oW1, H, null, false), pool);
            Embedding.Backward(pDembcat, px, G + _oC, _v * _e, n * _b, _e);
        }
        return loss;
    }

    /// <summary>Batch rows from which dW2 is computed as dW2ᵀ = dlogitsᵀ·h and transposed (faster at n = 4096, slower at n = 32; the large oracle bundle, n = 1000, takes this path).</summary>
    internal const int TransposedDW2MinRows = 512;

    /// <summary><c>dst[j,i] = src[i,j]</c> for <c>src[rows,cols]</c>.</summary>
    private static void TransposeInto(float* src, float* dst, int rows, int cols)
    {
        for (int j = 0; j < cols; j++)
        {
            float* d = dst + (nint)j * rows;
            for (int i = 0; i < rows; i++) d[i] = src[(nint)i * cols + j];
        }
    }

    private void RunBnForward(float* x, float* gain, float* bias, float* raw, float* hh)
    {
        var w = _bnForward;
        w.X = x; w.Gain = gain; w.Bias = bias; w.Raw = raw; w.Hh = hh;
        w.Mean = Ptr(bnmeani); w.Var = Ptr(bnvar); w.VarInv = Ptr(bnvar_inv); w.N = _n; w.H = _h; w.Eps = _eps;
        if (_pool is null || (long)_n * _h < ParallelElements) w.Run(0, 1); else _pool.Run(w);
    }

    private void RunBnBackward(float* dhh, float* hh, float* raw, float* gain, float* d, float* dg, float* db, float* db1)
    {
        var w = _bnBackward;
        w.Dh = dhh; w.Hh = hh; w.Raw = raw; w.Gain = gain; w.VarInv = Ptr(bnvar_inv); w.D = d; w.Dg = dg; w.Db = db; w.Db1 = db1;
        w.N = _n; w.H = _h;
        if (_pool is null || (long)_n * _h < ParallelElements) w.Run(0, 1); else _pool.Run(w);
    }

    /// <summary>Column blocks of 16 shared out contiguously: each column is computed the same way on any thread count.</summary>
    private sealed class BnForwardWork : ParallelWork
    {
        public float* X, Gain, Bias, Raw, Hh, Mean, Var, VarInv;
        public int N, H;
        public float Eps;
        public override void Run(int thread, int threads)
        {
            var (b0, b1) = Share((H + 15) / 16, thread, threads);
            if (b1 > b0) BatchNorm.Forward512(X, Gain, Bias, Mean, Var, VarInv, Raw, Hh, N, H, Eps, b0 * 16, Math.Min(H, b1 * 16));
        }
    }

    private sealed class BnBackwardWork : ParallelWork
    {
        public float* Dh, Hh, Raw, Gain, VarInv, D, Dg, Db, Db1;
        public int N, H;
        public override void Run(int thread, int threads)
        {
            var (b0, b1) = Share((H + 15) / 16, thread, threads);
            if (b1 > b0) BatchNorm.Backward512(Dh, Hh, Raw, Gain, VarInv, D, Dg, Db, N, H, b0 * 16, Math.Min(H, b1 * 16), Db1);
        }
    }

    /// <summary>The same step through the span-based layer functions (machines without AVX-512).</summary>
    private float ForwardBackwardPortable(ReadOnlySpan<int> xb, ReadOnlySpan<int> yb)
    {
        var p = Parameters;
        int n = _n;
        _bnrawLazy = _dhLazy = false;
        Embedding.Forward(p.C, xb, embcat, n, _b, _e);
        Linear.Forward(embcat, p.W1, p.b1, hprebn, n, _k, _h);
        BatchNorm.ForwardTanh(hprebn, p.bngain, p.bnbias, bnmeani, bnvar, bnvar_inv, bnraw, h, n, _h, _eps);
        Linear.Forward(h, p.W2, p.b2, logits, n, _h, _v);
        float loss = CrossEntropy.ForwardBackward(logits, yb, dlogits, n, _v);
        Linear.Backward(h, p.W2, dlogits, dh, p.dW2, p.db2, n, _h, _v);
        BatchNorm.Backward(dh, h, bnraw, p.bngain, bnvar_inv, dhprebn, p.dbngain, p.dbnbias, scratch, n, _h);
        Linear.Backward(embcat, p.W1, dhprebn, dembcat, p.dW1, p.db1, n, _k, _h);
        Embedding.Backward(dembcat, xb, p.dC, n, _b, _e);
        return loss;
    }

    /// <inheritdoc />
    public float Step(ReadOnlySpan<int> xb, ReadOnlySpan<int> yb, float lr)
    {
        float loss = ForwardBackward(xb, yb);
        Sgd.Update(Parameters.Data, Parameters.Grad, lr);
        UpdateRunning();
        return loss;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private void UpdateRunning()
    {
        float m = RunningMomentum;
        var mean = Parameters.RunningMean;
        var variance = Parameters.RunningVar;
        float keep = 1 - m;
        var nm = System.Numerics.Vector<float>.Count;
        int c = 0;
        for (; c <= _h - nm; c += nm)
        {
            (new System.Numerics.Vector<float>(mean, c) * keep + new System.Numerics.Vector<float>(bnmeani, c) * m).CopyTo(mean, c);
            (new System.Numerics.Vector<float>(variance, c) * keep + new System.Numerics.Vector<float>(bnvar, c) * m).CopyTo(variance, c);
        }
        for (; c < _h; c++)
        {
            mean[c] = keep * mean[c] + m * bnmeani[c];
            variance[c] = keep * variance[c] + m * bnvar[c];
        }
        Parameters.IsCalibrated = false;
    }

    /// <inheritdoc />
    public float Evaluate(Dataset data)
    {
        ArgumentNullException.ThrowIfNull(data);
        CheckBlock(data);
        if (data.Count == 0) throw new ArgumentException("cannot evaluate an empty data set.", nameof(data));
        double total = 0;
        for (int start = 0; start < data.Count; start += EvalChunk)
        {
            int rows = Math.Min(EvalChunk, data.Count - start);
            InferLogits(data.X.AsSpan(start * _b, rows * _b), rows, _evLogits);
            total += (double)CrossEntropy.ForwardBackward(_evLogits, data.Y.AsSpan(start, rows), default, rows, _v) * rows;
        }
        return (float)(total / data.Count);
    }

    /// <inheritdoc />
    public void Calibrate(Dataset train)
    {
        ArgumentNullException.ThrowIfNull(train);
        CheckBlock(train);
        if (train.Count < 2) throw new ArgumentException("calibration needs at least 2 examples.", nameof(train));
        Array.Clear(_calSum);
        Array.Clear(_calSq);
        // pass 1: mean; pass 2: Bessel variance about that mean (two passes, in double)
        for (int pass = 0; pass < 2; pass++)
        {
            for (int start = 0; start < train.Count; start += EvalChunk)
            {
                int rows = Math.Min(EvalChunk, train.Count - start);
                Embedding.Forward(Parameters.C, train.X.AsSpan(start * _b, rows * _b), _evEmbcat, rows, _b, _e);
                Linear.Forward(_evEmbcat, Parameters.W1, Parameters.b1, _evHprebn, rows, _k, _h);
                for (int i = 0; i < rows; i++)
                {
                    for (int c = 0; c < _h; c++)
                    {
                        double x = _evHprebn[i * _h + c];
                        if (pass == 0) _calSum[c] += x;
                        else { double d = x - _calSum[c]; _calSq[c] += d * d; }
                    }
                }
            }
            if (pass == 0) for (int c = 0; c < _h; c++) _calSum[c] /= train.Count;
        }
        for (int c = 0; c < _h; c++)
        {
            Parameters.RunningMean[c] = (float)_calSum[c];
            Parameters.RunningVar[c] = (float)(_calSq[c] / (train.Count - 1));
        }
        Parameters.IsCalibrated = true;
    }

    /// <inheritdoc />
    public void InferLogits(ReadOnlySpan<int> contexts, int rows, Span<float> logits)
    {
        if (rows < 1 || rows > EvalChunk) throw new ArgumentOutOfRangeException(nameof(rows), rows, $"rows must be in [1, {EvalChunk}].");
        if (contexts.Length != rows * _b) throw new ShapeException("contexts", [rows, _b], [contexts.Length]);
        if (logits.Length < rows * _v) throw new ShapeException("logits", [rows, _v], [logits.Length]);
        foreach (int id in contexts) if ((uint)id >= (uint)_v) throw new ArgumentOutOfRangeException(nameof(contexts), id, $"context id is outside [0, {_v}).");
        var p = Parameters;
        Embedding.Forward(p.C, contexts, _evEmbcat, rows, _b, _e);
        Linear.Forward(_evEmbcat, p.W1, p.b1, _evHprebn, rows, _k, _h);
        BatchNorm.InferenceTanh(_evHprebn, p.RunningMean, p.RunningVar, p.bngain, p.bnbias, _evH, scratch, rows, _h, _eps);
        Linear.Forward(_evH, p.W2, p.b2, logits, rows, _h, _v);
    }

    /// <inheritdoc />
    public void PullParameters() { }

    /// <inheritdoc />
    public void PushParameters() { }

    /// <inheritdoc />
    public void Dispose() => _pool?.Dispose();

    private void CheckBatch(ReadOnlySpan<int> xb, ReadOnlySpan<int> yb)
    {
        if (yb.Length != _n) throw new ShapeException("Yb", [_n], [yb.Length]);
        if (xb.Length != _n * _b) throw new ShapeException("Xb", [_n, _b], [xb.Length / _b, _b]);
        for (int i = 0; i < xb.Length; i++) if ((uint)xb[i] >= (uint)_v) throw new ShapeException("Xb", $"id {xb[i]} at row {i / _b} is outside [0, {_v}).");
        for (int i = 0; i < yb.Length; i++) if ((uint)yb[i] >= (uint)_v) throw new ShapeException("Yb", $"id {yb[i]} at row {i} is outside [0, {_v}).");
    }

    private void CheckBlock(Dataset d)
    {
        if (d.BlockSize != _b) throw new ArgumentException($"the data set has block size {d.BlockSize} but the model has {_b}.", nameof(d));
    }
}
