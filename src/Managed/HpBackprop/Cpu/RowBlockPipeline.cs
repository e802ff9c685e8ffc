using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static HpBackprop.Cpu.FastMath;

namespace HpBackprop.Cpu;

/// <summary>The training step of a whole stack as one fused pattern (see <see cref="RowBlockPipeline{TA,TB}"/>).</summary>
internal unsafe interface IRowBlockPipeline
{
    /// <summary>The pattern's name for <c>Network.Plan</c>.</summary>
    string Pattern { get; }

    /// <summary>
    /// Forward, cross-entropy and backward of one minibatch of ids <c>[n,B]</c> and class ids <c>[n]</c>: fills every
    /// gradient and updates the running statistics; with <paramref name="sgd"/> set to update, also applies plain SGD to
    /// both linear weights. Returns the mean loss.
    /// </summary>
    float ForwardBackward(int* ids, int* classes, StepState? sgd);

    /// <summary>The batch statistics of the last step: mean, variance (over n−1, or n in the biased mode) and 1/√(var + eps).</summary>
    (float[] Mean, float[] Variance, float[] VarInv) Statistics { get; }
}

/// <summary>The parameters and gradients of the five layers (pointers into the network's flat buffers; biases may be null).</summary>
internal unsafe struct PipelineWeights
{
    public float* C, DC, W1, DW1, B1, DB1, Gain, Bias, DGain, DBias, RunMean, RunVar, W2, DW2, B2, DB2;
    public long* Tracked;
}

/// <summary>The network's activation buffers the pipeline writes (makemore names).</summary>
internal unsafe struct PipelineBuffers
{
    public float* Embcat, Hprebn, H, Logits, Dlogits, Dhprebn, Dembcat;
}

/// <summary>The row-block pipeline's sizes and where it applies (see <see cref="RowBlockPipeline{TA,TB}"/>).</summary>
internal static class RowBlockPipeline
{
    /// <summary>Rows per block (a block of a 1024-wide layer is 256 KB).</summary>
    internal const int BlockRows = 64;

    /// <summary>Batches of at least this many rows take the pipeline.</summary>
    internal const int MinRows = 256;

    /// <summary>At most this many chunks of consecutive blocks: the unit threads share, each with its own dW2 partial.</summary>
    internal const int MaxChunks = 8;

    /// <summary>The parts of a pipelined step <see cref="Profile"/> times (the stages, and the products inside the block stages).</summary>
    internal enum Part { Pack, Forward1, Combine, Forward2, Backward1, Sums, FinishW2, Backward2, FinishW1, EmbeddingBackward, GemmHprebn, GemmLogits, CrossEntropy, GemmDh, GemmDW2, GemmDembcat, GemmDW1, Steps }

    /// <summary>Stopwatch ticks per <see cref="Part"/> summed over steps (the last slot counts the steps), for <c>bench -- stages</c>; null: not timed.</summary>
    internal static long[]? Profile;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static long Stamp() => Profile is null ? 0 : System.Diagnostics.Stopwatch.GetTimestamp();

    /// <summary>Adds the time since <paramref name="t"/> to <paramref name="part"/> and restarts <paramref name="t"/> (nothing when not timing).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Mark(ref long t, Part part)
    {
        var p = Profile;
        if (p is null) return;
        long now = System.Diagnostics.Stopwatch.GetTimestamp();
        Interlocked.Add(ref p[(int)part], now - t);
        t = now;
    }

    /// <summary>
    /// Whether the pipeline can run here: a batch of at least <see cref="MinRows"/> rows on a CPU with vector instructions
    /// (512-bit sweeps with AVX-512, the machine's <see cref="System.Numerics.Vector{T}"/> width W otherwise, which needs
    /// a hidden width <paramref name="hidden"/> ≥ W).
    /// </summary>
    internal static bool Applies(int n, int hidden) => n >= MinRows && System.Numerics.Vector.IsHardwareAccelerated
        && ((Avx512F.IsSupported && !Gemm.ForceVector256) || hidden >= System.Numerics.Vector<float>.Count);
}

/// <summary>
/// The row-block pipeline: the training step of <c>embedding:VxE, flatten, linear:KxH, batchnorm:H, ACT,
/// linear:HxV</c> with cross-entropy, for large batches (a named fusion pattern the network compiler
/// chooses for n ≥ <see cref="RowBlockPipeline.MinRows"/>). A large step is bound by memory traffic over the <c>[n,H]</c> matrices,
/// not by arithmetic, so the batch is cut into blocks of <see cref="RowBlockPipeline.BlockRows"/> rows and each block is carried
/// through several layers while it is in the core's L2 cache:
/// <list type="number">
/// <item>gather <c>embcat</c>, <c>hprebn = embcat·W1ᵀ + b1</c>, and the block's column sums and squared deviations about
/// its own mean (two passes over the block in cache);</item>
/// <item>the blocks' statistics combined in double (Chan's formula for a variance from parts);</item>
/// <item>normalise + activation into <c>h</c>, <c>logits = h·W2ᵀ + b2</c>, cross-entropy forward and backward;</item>
/// <item><c>dh = dlogits·W2</c> into a per-thread block buffer (never stored whole), <c>dhpreact = act′·dh</c>,
/// the block's sums of <c>dhpreact</c> and <c>bnraw·dhpreact</c>, and its share of <c>dW2 = dlogitsᵀ·h</c>;</item>
/// <item><c>dhprebn</c> from the combined sums, its block sum (for <c>db1</c>), <c>dembcat = dhprebn·W1</c>, and its share of
/// <c>dW1 = dhprebnᵀ·embcat</c>.</item>
/// </list>
/// <c>bnraw</c> is recomputed from <c>hprebn</c> where it is needed. <c>dW2</c> and <c>dW1</c> (PyTorch's
/// <c>[out,in]</c> layout) are summed per chunk of consecutive blocks while each block is in cache, then over chunks (<c>dW1</c>
/// as its transpose when <c>K</c> leaves GEMM panels part-empty and <c>H</c> does not). Blocks and chunks are fixed by the batch size, partial sums are combined in block (chunk) order and
/// threads take whole chunks, so the result is bitwise the same on any number of threads. The weights the blocks'
/// products read are packed once per step. The batch-norm mode is <typeparamref name="TB"/> (variance over n−1 or n)
/// and the activation <typeparamref name="TA"/>; a linear without bias simply has none.
/// </summary>
internal sealed unsafe partial class RowBlockPipeline<TA, TB> : IRowBlockPipeline
    where TA : struct, IActivation where TB : struct, BatchNorm.IBnMode
{
    private readonly PipelineWeights _w;
    private readonly PipelineBuffers _x;
    private readonly int _n, _b, _e, _h, _v, _k, _blocks, _chunks;
    private readonly float _eps, _momentum;
    private readonly WorkerPool? _pool;
    private readonly float[] _mean, _var, _varInv, _pW2, _pW1, _pA, _pB, _pC, _pDh, _packW1, _packW2, _packW2t, _packW1t, _coefA, _coefE, _coefS;
    private readonly double[] _pLoss;
    private readonly float[]? _dW1t;
    private readonly Work _work;
    private readonly bool _wide;
    private bool _update;
    private float _lr;
    private int* _ids, _classes;

    public RowBlockPipeline(PipelineWeights weights, PipelineBuffers buffers, int n, int block, int embedding, int hidden, int vocab, float eps, float momentum, int threads, WorkerPool? pool)
    {
        _w = weights; _x = buffers;
        _wide = Avx512F.IsSupported && !Gemm.ForceVector256;
        _n = n; _b = block; _e = embedding; _h = hidden; _v = vocab; _k = block * embedding;
        _eps = eps; _momentum = momentum; _pool = pool;
        _blocks = (n + RowBlockPipeline.BlockRows - 1) / RowBlockPipeline.BlockRows;
        _chunks = Math.Min(_blocks, RowBlockPipeline.MaxChunks);
        int H = hidden, V = vocab, K = _k;
        _mean = Buf(H); _var = Buf(H); _varInv = Buf(H);
        _pW2 = Buf((long)_chunks * V * H);
        _pW1 = Buf((long)_chunks * K * H);
        _pA = Buf((long)_blocks * H); _pB = Buf((long)_blocks * H); _pC = Buf((long)_blocks * H);
        _pLoss = new double[_blocks];
        _pDh = Buf((long)threads * RowBlockPipeline.BlockRows * H);
        _packW1 = Buf(Gemm.PackedSize(K, H)); _packW2 = Buf(Gemm.PackedSize(H, V));
        _packW2t = Buf(Gemm.PackedSize(V, H)); _packW1t = Buf(Gemm.PackedSize(H, K));
        _coefA = Buf(H); _coefE = Buf(H); _coefS = Buf(H);
        // dW1 [H,K] as a product has K output columns: when K leaves a panel partly empty and H does not, its transpose is cheaper
        if (K % Gemm.NR != 0 && H % Gemm.NR == 0) _dW1t = Buf((long)K * H);
        _work = new Work(this);
    }

    public (float[] Mean, float[] Variance, float[] VarInv) Statistics => (_mean, _var, _varInv);

    public string Pattern => $"row-block pipeline ({RowBlockPipeline.BlockRows}-row blocks, {_chunks} chunks, {(_wide ? 512 : System.Numerics.Vector<float>.Count * 32)}-bit sweeps): embedding+flatten, linear, " +
        $"{(TB.OverN ? "batchnorm:biased" : "batchnorm")}+{typeof(TA).Name.Replace("Act", "", StringComparison.Ordinal).ToLowerInvariant()}, linear, cross-entropy, in cache";

    private static float[] Buf(long length) => GC.AllocateArray<float>(checked((int)Math.Max(length, 1)), pinned: true);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float* Ptr(float[] a) => (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(a));

    /// <summary>The block stages, then the whole-matrix ones threads share by ranges (packing, summing the chunks' weight-gradient partials with the SGD step, dW1's transposition).</summary>
    private enum Stage { Forward1, Forward2, Backward1, Backward2, Pack, FinishW2, FinishW1, TransposeW1 }

    /// <summary>One stage over this thread's share of the chunks (threads take whole chunks, so each chunk's partials are summed in one order).</summary>
    private sealed class Work(RowBlockPipeline<TA, TB> owner) : ParallelWork
    {
        public Stage Stage;

        public override void Run(int thread, int threads)
        {
            if (Stage >= Stage.Pack) { owner.Finish(Stage, thread, threads); return; }
            var (c0, c1) = Share(owner._chunks, thread, threads);
            for (int ch = c0; ch < c1; ch++)
            {
                var (b0, b1) = Share(owner._blocks, ch, owner._chunks);
                for (int b = b0; b < b1; b++)
                {
                    switch (Stage)
                    {
                        case Stage.Forward1: owner.BlockForward1(b); break;
                        case Stage.Forward2: owner.BlockForward2(b); break;
                        case Stage.Backward1: owner.BlockBackward1(b, thread, ch, b == b0); break;
                        default: owner.BlockBackward2(b, ch, b == b0); break;
                    }
                }
            }
        }
    }

    private void RunStage(Stage stage)
    {
        _work.Stage = stage;
        if (_pool is null) _work.Run(0, 1); else _pool.Run(_work);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public float ForwardBackward(int* ids, int* classes, StepState? sgd)
    {
        var w = _w;
        int n = _n, H = _h, V = _v, K = _k;
        _ids = ids; _classes = classes;
        long t = RowBlockPipeline.Stamp();
        _update = sgd is { Update: true };
        _lr = _update ? sgd!.Lr : 0f;
        // the B operands of the per-block products, packed once: W1ᵀ [K,H], W2ᵀ [H,V], W2 [V,H], W1 [H,K] (weights are [out,in])
        RunStage(Stage.Pack);

        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.Pack);
        // forward: hprebn and block statistics; combine; normalise, activate, logits, cross-entropy
        RunStage(Stage.Forward1);
        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.Forward1);
        CombineStatistics();
        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.Combine);
        RunStage(Stage.Forward2);
        double total = 0;
        for (int b = 0; b < _blocks; b++) total += _pLoss[b];
        float loss = (float)(total / n);
        UpdateRunningStatistics();

        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.Forward2);
        // backward: dhpreact and its column sums per block
        RunStage(Stage.Backward1);
        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.Backward1);
        SumBlocks(Ptr(_pA), w.DBias);
        SumBlocks(Ptr(_pB), w.DGain);
        float invN = 1f / n, invNm1 = 1f / (TB.OverN ? n : n - 1);
        float* ca = Ptr(_coefA), ce = Ptr(_coefE), cs = Ptr(_coefS), vi = Ptr(_varInv);
        for (int j = 0; j < H; j++) { ca[j] = w.DBias[j] * invN; ce[j] = w.DGain[j] * invNm1; cs[j] = w.Gain[j] * vi[j]; }

        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.Sums);
        // dW2 = the chunks' dlogitsᵀ·h partials summed in chunk order, and the SGD step on W2 (last read when packed)
        RunStage(Stage.FinishW2);
        if (w.DB2 != null) Linear.ColumnSum(_x.Dlogits, w.DB2, n, V);

        // dhprebn, dembcat and the chunks' dW1 partials per block; db1 from the block sums; dW1 from the partials, and the SGD step on W1
        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.FinishW2);
        RunStage(Stage.Backward2);
        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.Backward2);
        if (w.DB1 != null) SumBlocks(Ptr(_pC), w.DB1);
        // dW1 from the chunks' partials with the SGD step on W1 (or dW1ᵀ from them, then transposed into place with the step)
        RunStage(Stage.FinishW1);
        if (_dW1t != null) RunStage(Stage.TransposeW1);
        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.FinishW1);
        Embedding.Backward(_x.Dembcat, ids, w.DC, _v * _e, n * _b, _e);
        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.EmbeddingBackward);
        if (RowBlockPipeline.Profile is { } prof) prof[(int)RowBlockPipeline.Part.Steps]++;
        return loss;
    }

    /// <summary>
    /// This thread's share of a whole-matrix stage. Ranges are cut at multiples of 64 floats (whole vectors at every
    /// width) and each element is summed over the chunks in chunk order, so the result is the same on any thread count.
    /// </summary>
    private void Finish(Stage stage, int thread, int threads)
    {
        var w = _w;
        int H = _h, V = _v, K = _k;
        switch (stage)
        {
            case Stage.Pack:
                if (0 % threads == thread) Gemm.PackB(new Gemm.Args(0, H, K, null, 0, 0, w.W1, 1, K, null, 0, null, false), Ptr(_packW1));
                if (1 % threads == thread) Gemm.PackB(new Gemm.Args(0, K, H, null, 0, 0, w.W1, K, 1, null, 0, null, false), Ptr(_packW1t));
                if (2 % threads == thread) Gemm.PackB(new Gemm.Args(0, V, H, null, 0, 0, w.W2, 1, H, null, 0, null, false), Ptr(_packW2));
                if (3 % threads == thread) Gemm.PackB(new Gemm.Args(0, H, V, null, 0, 0, w.W2, H, 1, null, 0, null, false), Ptr(_packW2t));
                break;
            case Stage.FinishW2:
            {
                var (s, e) = Range(V * H, thread, threads);
                SumChunks(Ptr(_pW2), w.DW2, V * H, s, e);
                if (_update) OptimizerKernels.Sgd(w.W2 + s, w.DW2 + s, null, e - s, _lr, 0, 0);
                break;
            }
            case Stage.FinishW1:
            {
                var (s, e) = Range(H * K, thread, threads);
                if (_dW1t is null)
                {
                    SumChunks(Ptr(_pW1), w.DW1, H * K, s, e);
                    if (_update) OptimizerKernels.Sgd(w.W1 + s, w.DW1 + s, null, e - s, _lr, 0, 0);
                }
                else SumChunks(Ptr(_pW1), Ptr(_dW1t), K * H, s, e);
                break;
            }
            default:
            {
                // rows [j0, j1) of dW1, in tiles of 16
                var (p0, p1) = ParallelWork.Share((H + 15) / 16, thread, threads);
                int j0 = p0 * 16, j1 = Math.Min(H, p1 * 16);
                if (j1 <= j0) break;
                float* tr = Ptr(_dW1t!);
                if (_wide) { TransposeWithSgd512(tr, j0, j1); break; }
                // tiles of 16 rows of dW1 (they stay in L1 while K columns are written), then the SGD pass over those rows
                for (int a = j0; a < j1; a += 16)
                    for (int kk = 0; kk < K; kk++)
                    {
                        float* src = tr + (nint)kk * H;
                        for (int j = a; j < Math.Min(j1, a + 16); j++) w.DW1[(nint)j * K + kk] = src[j];
                    }
                if (_update) OptimizerKernels.Sgd(w.W1 + (nint)j0 * K, w.DW1 + (nint)j0 * K, null, (long)(j1 - j0) * K, _lr, 0, 0);
                break;
            }
        }
    }

    /// <summary>This thread's share of <paramref name="length"/> floats, cut at multiples of 64.</summary>
    private static (int Begin, int End) Range(int length, int thread, int threads)
    {
        var (a, b) = ParallelWork.Share((length + 63) / 64, thread, threads);
        return (Math.Min(length, a * 64), Math.Min(length, b * 64));
    }

    /// <summary>
    /// Rows [<paramref name="j0Begin"/>, <paramref name="j1End"/>) of dW1 [H,K] from its transpose <paramref name="t"/> [K,H] in 16×16
    /// tiles transposed in registers, with the SGD step on the way (<c>p = g·(−lr) + p</c>) when the step updates.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void TransposeWithSgd512(float* t, int j0Begin, int j1End)
    {
        int H = _h, K = _k;
        bool update = _update;
        float* dw = _w.DW1, wt = _w.W1;
        var nlr = Vector512.Create(-_lr);
        float* tile = stackalloc float[16 * Gemm.NR];
        for (int j0 = j0Begin; j0 < j1End; j0 += 16)
        {
            int cols = Math.Min(16, j1End - j0);
            var mj = Mask(cols);
            for (int k0 = 0; k0 < K; k0 += 16)
            {
                // tile[e·32 + r] = dW1ᵀ[k0 + r, j0 + e] = dW1[j0 + e, k0 + r]
                int valid = Math.Min(16, K - k0);
                Gemm.Transpose16(t + (nint)k0 * H + j0, H, valid, mj, cols, tile);
                bool full = valid == 16; var mk = Mask(valid);
                for (int e = 0; e < cols; e++)
                {
                    nint o = (nint)(j0 + e) * K + k0;
                    var g = Vector512.Load(tile + e * Gemm.NR);
                    St(dw + o, g, mk, full);
                    if (update) St(wt + o, Vector512.FusedMultiplyAdd(g, nlr, Ld(wt + o, mk, full)), mk, full);
                }
            }
        }
    }

    /// <summary><c>running = (1 − momentum)·running + momentum·batch</c>, with the unbiased variance in both modes.</summary>
    private void UpdateRunningStatistics()
    {
        float m = _momentum, keep = 1 - m, unbias = TB.OverN ? (float)_n / (_n - 1) : 1f;
        for (int c = 0; c < _h; c++)
        {
            _w.RunMean[c] = keep * _w.RunMean[c] + m * _mean[c];
            _w.RunVar[c] = keep * _w.RunVar[c] + m * (_var[c] * unbias);
        }
        (*_w.Tracked)++;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private (int R0, int Rows) RowsOf(int b) { int r0 = b * RowBlockPipeline.BlockRows; return (r0, Math.Min(RowBlockPipeline.BlockRows, _n - r0)); }

    /// <summary>embcat and hprebn of block <paramref name="b"/>, then its column sums and squared deviations about the block mean.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void BlockForward1(int b)
    {
        var (r0, rows) = RowsOf(b);
        int H = _h, K = _k;
        float* e = _x.Embcat + (nint)r0 * K, x = _x.Hprebn + (nint)r0 * H;
        Embedding.Forward(_w.C, _ids + (nint)r0 * _b, e, rows * _b, _e);
        long t = RowBlockPipeline.Stamp();
        Gemm.Run(new Gemm.Args(rows, H, K, e, K, 1, null, 0, 0, x, H, _w.B1, false, packed: Ptr(_packW1)), null);
        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.GemmHprebn);
        float* s = Ptr(_pA) + (nint)b * H, q = Ptr(_pB) + (nint)b * H;
        if (!_wide) { StatisticsV(x, rows, s, q); return; }
        new Span<float>(s, H).Clear();
        new Span<float>(q, H).Clear();
        for (int i = 0; i < rows; i++)
        {
            float* xr = x + (nint)i * H;
            for (int c = 0; c < H; c += 16)
            {
                int cols = Math.Min(16, H - c); bool full = cols == 16; var m = Mask(cols);
                St(s + c, Ld(s + c, m, full) + Ld(xr + c, m, full), m, full);
            }
        }
        var inv = Vector512.Create(1f / rows);
        for (int i = 0; i < rows; i++)
        {
            float* xr = x + (nint)i * H;
            for (int c = 0; c < H; c += 16)
            {
                int cols = Math.Min(16, H - c); bool full = cols == 16; var m = Mask(cols);
                var d = Ld(xr + c, m, full) - Ld(s + c, m, full) * inv;
                St(q + c, Vector512.FusedMultiplyAdd(d, d, Ld(q + c, m, full)), m, full);
            }
        }
    }

    /// <summary>
    /// The batch mean, variance and its inverse square root from the blocks' sums <c>S_b</c> and squared deviations
    /// <c>Q_b</c> (in double): <c>mean = ΣS_b/n</c>, <c>var = Σ(Q_b + n_b·(S_b/n_b − mean)²)/(n−1)</c> (or <c>/n</c>, biased).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void CombineStatistics()
    {
        int H = _h, n = _n, blocks = _blocks;
        float* s = Ptr(_pA), q = Ptr(_pB), mean = Ptr(_mean), va = Ptr(_var), vi = Ptr(_varInv);
        int lastRows = n - (blocks - 1) * RowBlockPipeline.BlockRows;
        double invN = 1.0 / n, invD = 1.0 / (TB.OverN ? n : n - 1);
        int j = 0;
        for (; Avx512F.IsSupported && j + 8 <= H; j += 8)
        {
            var sum = Vector512<double>.Zero;
            for (int b = 0; b < blocks; b++) sum += Avx512F.ConvertToVector512Double(Vector256.Load(s + (nint)b * H + j));
            var mu = sum * invN;
            var m2 = Vector512<double>.Zero;
            for (int b = 0; b < blocks; b++)
            {
                double nb = b == blocks - 1 ? lastRows : RowBlockPipeline.BlockRows;
                var d = Avx512F.ConvertToVector512Double(Vector256.Load(s + (nint)b * H + j)) * (1.0 / nb) - mu;
                m2 += Avx512F.ConvertToVector512Double(Vector256.Load(q + (nint)b * H + j)) + d * d * nb;
            }
            var muF = Avx512F.ConvertToVector256Single(mu);
            var vF = Avx512F.ConvertToVector256Single(m2 * invD);
            muF.Store(mean + j);
            vF.Store(va + j);
            (Vector256<float>.One / Vector256.Sqrt(vF + Vector256.Create(_eps))).Store(vi + j);
        }
        for (; j < H; j++)
        {
            double sum = 0;
            for (int b = 0; b < blocks; b++) sum += s[(nint)b * H + j];
            double mu = sum * invN, m2 = 0;
            for (int b = 0; b < blocks; b++)
            {
                double nb = b == blocks - 1 ? lastRows : RowBlockPipeline.BlockRows;
                double d = s[(nint)b * H + j] * (1.0 / nb) - mu;
                m2 += q[(nint)b * H + j] + d * d * nb;
            }
            mean[j] = (float)mu;
            va[j] = (float)(m2 * invD);
            vi[j] = 1f / MathF.Sqrt(va[j] + _eps);
        }
    }

    /// <summary><c>dst[j] = Σ_b part[b,j]</c>, in block order.</summary>
    private void SumBlocks(float* part, float* dst)
    {
        int H = _h;
        new ReadOnlySpan<float>(part, H).CopyTo(new Span<float>(dst, H));
        for (int b = 1; b < _blocks; b++) Gemm.Axpy(1f, new ReadOnlySpan<float>(part + (nint)b * H, H), new Span<float>(dst, H));
    }

    /// <summary><c>dst[i] = Σ_c part[c, i]</c> for <c>i</c> in [<paramref name="begin"/>, <paramref name="end"/>) of the chunks' partials of <paramref name="length"/> floats, in chunk order.</summary>
    private void SumChunks(float* part, float* dst, int length, int begin, int end)
    {
        int count = end - begin;
        if (count <= 0) return;
        new ReadOnlySpan<float>(part + begin, count).CopyTo(new Span<float>(dst + begin, count));
        for (int c = 1; c < _chunks; c++) Gemm.Axpy(1f, new ReadOnlySpan<float>(part + (nint)c * length + begin, count), new Span<float>(dst + begin, count));
    }

    /// <summary>Block <paramref name="b"/>: <c>h = act(gain·bnraw + bias)</c>, logits, and cross-entropy forward + backward.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void BlockForward2(int b)
    {
        var (r0, rows) = RowsOf(b);
        int H = _h, V = _v;
        float* x = _x.Hprebn + (nint)r0 * H, hh = _x.H + (nint)r0 * H;
        float* mean = Ptr(_mean), vi = Ptr(_varInv), g = _w.Gain, bias = _w.Bias;
        if (!_wide) NormalizeV(x, hh, rows);
        else for (int i = 0; i < rows; i++)
        {
            nint o = (nint)i * H;
            for (int c = 0; c < H; c += 16)
            {
                int cols = Math.Min(16, H - c); bool full = cols == 16; var m = Mask(cols);
                var r = (Ld(x + o + c, m, full) - Ld(mean + c, m, full)) * Ld(vi + c, m, full);
                St(hh + o + c, TA.Forward(Vector512.FusedMultiplyAdd(r, Ld(g + c, m, full), Ld(bias + c, m, full))), m, full);
            }
        }
        float* lg = _x.Logits + (nint)r0 * V;
        long t = RowBlockPipeline.Stamp();
        Gemm.Run(new Gemm.Args(rows, V, H, hh, H, 1, null, 0, 0, lg, V, _w.B2, false, packed: Ptr(_packW2)), null);
        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.GemmLogits);
        _pLoss[b] = CrossEntropy.Rows(lg, _classes + r0, _x.Dlogits + (nint)r0 * V, rows, V, 1f / _n);
        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.CrossEntropy);
    }

    /// <summary>Block <paramref name="b"/>: dh into this thread's block buffer, <c>dhpreact = act′·dh</c> (stored in dhprebn), and its column sums.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void BlockBackward1(int b, int thread, int chunk, bool firstInChunk)
    {
        var (r0, rows) = RowsOf(b);
        int H = _h, V = _v;
        float* dhb = Ptr(_pDh) + (nint)thread * RowBlockPipeline.BlockRows * H;
        long t = RowBlockPipeline.Stamp();
        Gemm.Run(new Gemm.Args(rows, H, V, _x.Dlogits + (nint)r0 * V, V, 1, null, 0, 0, dhb, H, null, false, packed: Ptr(_packW2t)), null);
        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.GemmDh);
        float* x = _x.Hprebn + (nint)r0 * H, hh = _x.H + (nint)r0 * H, dp = _x.Dhprebn + (nint)r0 * H;
        float* mean = Ptr(_mean), vi = Ptr(_varInv);
        float* sb = Ptr(_pA) + (nint)b * H, sg = Ptr(_pB) + (nint)b * H;
        new Span<float>(sb, H).Clear();
        new Span<float>(sg, H).Clear();
        if (!_wide) DhpreactV(hh, dhb, x, dp, rows, sb, sg);
        else for (int i = 0; i < rows; i++)
        {
            nint o = (nint)i * H;
            for (int c = 0; c < H; c += 16)
            {
                int cols = Math.Min(16, H - c); bool full = cols == 16; var m = Mask(cols);
                var p = TA.Backward(Ld(hh + o + c, m, full), Ld(dhb + o + c, m, full));
                St(dp + o + c, p, m, full);
                var raw = (Ld(x + o + c, m, full) - Ld(mean + c, m, full)) * Ld(vi + c, m, full);
                St(sb + c, Ld(sb + c, m, full) + p, m, full);
                St(sg + c, Vector512.FusedMultiplyAdd(raw, p, Ld(sg + c, m, full)), m, full);
            }
        }
        // this chunk's share of dW2 = dlogitsᵀ·h, while the block of h is in cache
        t = RowBlockPipeline.Stamp();
        Gemm.Run(new Gemm.Args(V, H, rows, _x.Dlogits + (nint)r0 * V, 1, V, hh, H, 1, Ptr(_pW2) + (nint)chunk * V * H, H, null, !firstInChunk), null);
        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.GemmDW2);
    }

    /// <summary>Block <paramref name="b"/>: <c>dhprebn = gain·var_inv·(dhpreact − dbias/n − bnraw·dgain/(n−1))</c> in place, its column sum, and dembcat.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void BlockBackward2(int b, int chunk, bool firstInChunk)
    {
        var (r0, rows) = RowsOf(b);
        int H = _h, K = _k;
        float* x = _x.Hprebn + (nint)r0 * H, d = _x.Dhprebn + (nint)r0 * H;
        float* mean = Ptr(_mean), vi = Ptr(_varInv), ca = Ptr(_coefA), ce = Ptr(_coefE), cs = Ptr(_coefS);
        float* ds = Ptr(_pC) + (nint)b * H;
        new Span<float>(ds, H).Clear();
        if (!_wide) DhprebnV(x, d, rows, ds);
        else for (int i = 0; i < rows; i++)
        {
            nint o = (nint)i * H;
            for (int c = 0; c < H; c += 16)
            {
                int cols = Math.Min(16, H - c); bool full = cols == 16; var m = Mask(cols);
                var raw = (Ld(x + o + c, m, full) - Ld(mean + c, m, full)) * Ld(vi + c, m, full);
                var r = Ld(cs + c, m, full) * (Ld(d + o + c, m, full) - Ld(ca + c, m, full) - raw * Ld(ce + c, m, full));
                St(d + o + c, r, m, full);
                St(ds + c, Ld(ds + c, m, full) + r, m, full);
            }
        }
        long t = RowBlockPipeline.Stamp();
        Gemm.Run(new Gemm.Args(rows, K, H, d, H, 1, null, 0, 0, _x.Dembcat + (nint)r0 * K, K, null, false, packed: Ptr(_packW1t)), null);
        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.GemmDembcat);
        // this chunk's share of dW1 [H,K] = dhprebnᵀ·embcat (or of its transpose), while the block of dhprebn is in cache
        float* e = _x.Embcat + (nint)r0 * K, pw = Ptr(_pW1) + (nint)chunk * K * H;
        if (_dW1t is null) Gemm.Run(new Gemm.Args(H, K, rows, d, 1, H, e, K, 1, pw, K, null, !firstInChunk), null);
        else Gemm.Run(new Gemm.Args(K, H, rows, e, 1, K, d, H, 1, pw, H, null, !firstInChunk), null);
        RowBlockPipeline.Mark(ref t, RowBlockPipeline.Part.GemmDW1);
    }
}
