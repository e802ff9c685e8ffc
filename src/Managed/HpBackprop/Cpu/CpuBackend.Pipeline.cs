using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static HpBackprop.Cpu.FastMath;

namespace HpBackprop.Cpu;

/// <summary>
/// The row-block pipeline for large batches (AVX-512). A large step is bound by memory traffic over
/// the <c>[n,H]</c> matrices, not by arithmetic, so the batch is cut into blocks of <see cref="PipeRows"/>
/// rows and each block is carried through several layers while it is in the core's L2 cache:
/// <list type="number">
/// <item>gather <c>embcat</c>, <c>hprebn = embcat·W1 + b1</c>, and the block's column sum and squared
/// deviations about its own mean (two passes over the block in cache);</item>
/// <item>the blocks' statistics combined in double (Chan's formula for a variance from parts);</item>
/// <item>normalise + tanh into <c>h</c>, <c>logits = h·W2 + b2</c>, cross-entropy forward and backward;</item>
/// <item><c>dh = dlogits·W2ᵀ</c> into a per-thread block buffer (never stored whole), <c>dhpreact = (1−h²)·dh</c>,
/// the block's sums of <c>dhpreact</c> and <c>bnraw·dhpreact</c>, and its share of <c>dW2ᵀ = dlogitsᵀ·h</c>;</item>
/// <item><c>dhprebn</c> from the combined sums, its block sum (for <c>db1</c>), and <c>dembcat = dhprebn·W1ᵀ</c>.</item>
/// </list>
/// <c>bnraw</c> is recomputed from <c>hprebn</c> where it is needed (one formula everywhere, so the values are
/// bitwise those of a stored copy). <c>dW2ᵀ</c> is summed per chunk of consecutive blocks (while each block of
/// <c>h</c> is in cache), then over chunks; <c>dW1</c> remains a whole product over all rows, split by output
/// columns (summing it per chunk as well was tried and was slower). Blocks and chunks are fixed by the batch size,
/// their partial sums are combined in block (chunk) order and threads take whole chunks, so the result is bitwise
/// the same on any number of threads. The matrices a block's products reuse (W1, W2, W2ᵀ, W1ᵀ) are packed once
/// per step.
/// </summary>
public sealed unsafe partial class CpuBackend
{
    /// <summary>Rows per block of the pipelined step (a block of a 1024-wide layer is 256 KB).</summary>
    internal const int PipeRows = 64;

    /// <summary>Batches of at least this many rows take the pipelined step (on AVX-512).</summary>
    internal const int PipelineMinRows = 256;

    /// <summary>At most this many chunks of consecutive blocks: the unit threads share, each with its own dW2 partial.</summary>
    internal const int MaxChunks = 8;

    private readonly int _blocks, _chunks;
    private readonly float[]? _pW2;                // [chunks, V, H] each chunk's dW2ᵀ partial
    private readonly float[]? _pA, _pB, _pC;        // [blocks, H] partial column sums of each block
    private readonly double[]? _pLoss;             // [blocks] summed losses of each block
    private readonly float[]? _pDh;                // [threads, PipeRows, H] a block's dh
    private readonly float[]? _packW1, _packW2, _packW2t, _packW1t;
    private readonly float[]? _coefA, _coefE, _coefS;
    private readonly PipeWork? _pipe;
    private bool _bnrawLazy, _dhLazy;

    /// <summary>Whether steps of this backend take the row-block pipeline.</summary>
    internal bool Pipelined => _pipe is not null && PipelineEnabled && Avx512F.IsSupported && !Gemm.ForceVector256;

    /// <summary>Off: large batches take the whole-matrix step as well (for tests that compare the two).</summary>
    internal bool PipelineEnabled { get; set; } = true;

    private static bool UsesPipeline(int n) => n >= PipelineMinRows;

    private enum PipeStage { Forward1, Forward2, Backward1, Backward2 }

    /// <summary>One stage of the pipeline over this thread's share of the blocks.</summary>
    private sealed class PipeWork(CpuBackend owner) : ParallelWork
    {
        public PipeStage Stage;
        public int* X, Y;
        public float* P;

        public override void Run(int thread, int threads)
        {
            // threads take whole chunks (fixed by the batch size), so each chunk's dW2 partial is summed in the same order
            var (c0, c1) = Share(owner._chunks, thread, threads);
            for (int ch = c0; ch < c1; ch++)
            {
                var (b0, b1) = Share(owner._blocks, ch, owner._chunks);
                for (int b = b0; b < b1; b++)
                {
                    switch (Stage)
                    {
                        case PipeStage.Forward1: owner.BlockForward1(b, P, X); break;
                        case PipeStage.Forward2: owner.BlockForward2(b, P, Y); break;
                        case PipeStage.Backward1: owner.BlockBackward1(b, thread, ch, b == b0); break;
                        default: owner.BlockBackward2(b); break;
                    }
                }
            }
        }
    }

    private void RunPipe(PipeStage stage)
    {
        _pipe!.Stage = stage;
        if (_pool is null) _pipe.Run(0, 1); else _pool.Run(_pipe);
    }

    /// <summary>The AVX-512 forward and backward of a large batch (see the class remarks).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private float ForwardBackwardPipelined(int* px, int* py)
    {
        float* P = Ptr(Parameters.Data), G = Ptr(Parameters.Grad);
        int n = _n, H = _h, V = _v, K = _k;
        var pool = _pool;
        var w = _pipe!;
        w.P = P; w.X = px; w.Y = py;
        // B operands of the per-block products, packed once: W1 [K,H], W2 [H,V], W2ᵀ [V,H], W1ᵀ [H,K]
        Gemm.PackB(new Gemm.Args(0, H, K, null, 0, 0, P + _oW1, H, 1, null, 0, null, false), Ptr(_packW1!));
        Gemm.PackB(new Gemm.Args(0, V, H, null, 0, 0, P + _oW2, V, 1, null, 0, null, false), Ptr(_packW2!));
        Gemm.PackB(new Gemm.Args(0, H, V, null, 0, 0, P + _oW2, 1, V, null, 0, null, false), Ptr(_packW2t!));
        Gemm.PackB(new Gemm.Args(0, K, H, null, 0, 0, P + _oW1, 1, H, null, 0, null, false), Ptr(_packW1t!));

        // forward: hprebn and block statistics; combine; normalise, tanh, logits, cross-entropy
        RunPipe(PipeStage.Forward1);
        CombineStatistics();
        RunPipe(PipeStage.Forward2);
        double total = 0;
        for (int b = 0; b < _blocks; b++) total += _pLoss![b];
        float loss = (float)(total / n);

        // backward: dhpreact and its column sums per block
        RunPipe(PipeStage.Backward1);
        float* db = G + _oBias, dg = G + _oGain;
        SumBlocks(Ptr(_pA!), db);
        SumBlocks(Ptr(_pB!), dg);
        float invN = 1f / n, invNm1 = 1f / (n - 1);
        float* ca = Ptr(_coefA!), ce = Ptr(_coefE!), cs = Ptr(_coefS!), gain = P + _oGain, vi = Ptr(bnvar_inv);
        for (int j = 0; j < H; j++) { ca[j] = db[j] * invN; ce[j] = dg[j] * invNm1; cs[j] = gain[j] * vi[j]; }

        // dW2ᵀ = the chunks' dlogitsᵀ·h partials summed in chunk order, then transposed into dW2 (and W2 updated)
        SumChunks(Ptr(_pW2!), Ptr(_dW2t), V * H);
        TransposeInto(Ptr(_dW2t), G + _oW2, V, H);
        Linear.ColumnSum(Ptr(dlogits), G + _ob2, n, V);

        // dhprebn and dembcat per block; db1 from the block sums
        RunPipe(PipeStage.Backward2);
        SumBlocks(Ptr(_pC!), G + _ob1);
        Gemm.Run(new Gemm.Args(K, H, n, Ptr(embcat), 1, K, Ptr(dhprebn), H, 1, G + _oW1, H, null, false), pool);
        Embedding.Backward(Ptr(dembcat), px, G + _oC, _v * _e, n * _b, _e);
        _bnrawLazy = true;
        _dhLazy = true;
        return loss;
    }

    /// <summary>Block <paramref name="b"/>: rows <c>[r0, r0+rows)</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private (int R0, int Rows) BlockRows(int b) { int r0 = b * PipeRows; return (r0, Math.Min(PipeRows, _n - r0)); }

    /// <summary>embcat and hprebn of block <paramref name="b"/>, then its column sums and squared deviations about the block mean.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void BlockForward1(int b, float* P, int* px)
    {
        var (r0, rows) = BlockRows(b);
        int H = _h, K = _k;
        float* e = Ptr(embcat) + (nint)r0 * K, x = Ptr(hprebn) + (nint)r0 * H;
        Embedding.Forward(P + _oC, px + (nint)r0 * _b, e, rows * _b, _e);
        Gemm.Run(new Gemm.Args(rows, H, K, e, K, 1, null, 0, 0, x, H, P + _ob1, false, packed: Ptr(_packW1!)), null);
        float* s = Ptr(_pA!) + (nint)b * H, q = Ptr(_pB!) + (nint)b * H;
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
    /// bnmeani, bnvar, bnvar_inv from the blocks' sums <c>S_b</c> and squared deviations <c>Q_b</c> (in double):
    /// <c>mean = ΣS_b/n</c>, <c>bnvar = Σ(Q_b + n_b·(S_b/n_b − mean)²)/(n−1)</c>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void CombineStatistics()
    {
        int H = _h, n = _n, blocks = _blocks;
        float* s = Ptr(_pA!), q = Ptr(_pB!), mean = Ptr(bnmeani), va = Ptr(bnvar), vi = Ptr(bnvar_inv);
        int lastRows = n - (blocks - 1) * PipeRows;
        double invN = 1.0 / n, invNm1 = 1.0 / (n - 1);
        int j = 0;
        for (; j + 8 <= H; j += 8)
        {
            var sum = Vector512<double>.Zero;
            for (int b = 0; b < blocks; b++) sum += Avx512F.ConvertToVector512Double(Vector256.Load(s + (nint)b * H + j));
            var mu = sum * invN;
            var m2 = Vector512<double>.Zero;
            for (int b = 0; b < blocks; b++)
            {
                double nb = b == blocks - 1 ? lastRows : PipeRows;
                var d = Avx512F.ConvertToVector512Double(Vector256.Load(s + (nint)b * H + j)) * (1.0 / nb) - mu;
                m2 += Avx512F.ConvertToVector512Double(Vector256.Load(q + (nint)b * H + j)) + d * d * nb;
            }
            var muF = Avx512F.ConvertToVector256Single(mu);
            var vF = Avx512F.ConvertToVector256Single(m2 * invNm1);
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
                double nb = b == blocks - 1 ? lastRows : PipeRows;
                double d = s[(nint)b * H + j] * (1.0 / nb) - mu;
                m2 += q[(nint)b * H + j] + d * d * nb;
            }
            mean[j] = (float)mu;
            va[j] = (float)(m2 * invNm1);
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

    /// <summary><c>dst = Σ_c part[c]</c> over the chunks' partials of <paramref name="length"/> floats, in chunk order.</summary>
    private void SumChunks(float* part, float* dst, int length)
    {
        new ReadOnlySpan<float>(part, length).CopyTo(new Span<float>(dst, length));
        for (int c = 1; c < _chunks; c++) Gemm.Axpy(1f, new ReadOnlySpan<float>(part + (nint)c * length, length), new Span<float>(dst, length));
    }

    /// <summary>Block <paramref name="b"/>: <c>h = tanh(bngain·bnraw + bnbias)</c>, logits, and cross-entropy forward + backward.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void BlockForward2(int b, float* P, int* py)
    {
        var (r0, rows) = BlockRows(b);
        int H = _h, V = _v;
        float* x = Ptr(hprebn) + (nint)r0 * H, hh = Ptr(h) + (nint)r0 * H;
        float* mean = Ptr(bnmeani), vi = Ptr(bnvar_inv), g = P + _oGain, bias = P + _oBias;
        for (int i = 0; i < rows; i++)
        {
            nint o = (nint)i * H;
            for (int c = 0; c < H; c += 16)
            {
                int cols = Math.Min(16, H - c); bool full = cols == 16; var m = Mask(cols);
                var r = (Ld(x + o + c, m, full) - Ld(mean + c, m, full)) * Ld(vi + c, m, full);
                St(hh + o + c, FastMath.Tanh(Vector512.FusedMultiplyAdd(r, Ld(g + c, m, full), Ld(bias + c, m, full))), m, full);
            }
        }
        float* lg = Ptr(logits) + (nint)r0 * V;
        Gemm.Run(new Gemm.Args(rows, V, H, hh, H, 1, null, 0, 0, lg, V, P + _ob2, false, packed: Ptr(_packW2!)), null);
        _pLoss![b] = CrossEntropy.Rows(lg, py + r0, Ptr(dlogits) + (nint)r0 * V, rows, V, 1f / _n);
    }

    /// <summary>Block <paramref name="b"/>: dh into this thread's block buffer, <c>dhpreact = (1−h²)·dh</c> (stored in dhprebn), and its column sums.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void BlockBackward1(int b, int thread, int chunk, bool firstInChunk)
    {
        var (r0, rows) = BlockRows(b);
        int H = _h, V = _v;
        float* dhb = Ptr(_pDh!) + (nint)thread * PipeRows * H;
        Gemm.Run(new Gemm.Args(rows, H, V, Ptr(dlogits) + (nint)r0 * V, V, 1, null, 0, 0, dhb, H, null, false, packed: Ptr(_packW2t!)), null);
        float* x = Ptr(hprebn) + (nint)r0 * H, hh = Ptr(h) + (nint)r0 * H, dp = Ptr(dhprebn) + (nint)r0 * H;
        float* mean = Ptr(bnmeani), vi = Ptr(bnvar_inv);
        float* sb = Ptr(_pA!) + (nint)b * H, sg = Ptr(_pB!) + (nint)b * H;
        new Span<float>(sb, H).Clear();
        new Span<float>(sg, H).Clear();
        var one = Vector512<float>.One;
        for (int i = 0; i < rows; i++)
        {
            nint o = (nint)i * H;
            for (int c = 0; c < H; c += 16)
            {
                int cols = Math.Min(16, H - c); bool full = cols == 16; var m = Mask(cols);
                var hv = Ld(hh + o + c, m, full);
                var p = (one - hv * hv) * Ld(dhb + o + c, m, full);
                St(dp + o + c, p, m, full);
                var raw = (Ld(x + o + c, m, full) - Ld(mean + c, m, full)) * Ld(vi + c, m, full);
                St(sb + c, Ld(sb + c, m, full) + p, m, full);
                St(sg + c, Vector512.FusedMultiplyAdd(raw, p, Ld(sg + c, m, full)), m, full);
            }
        }
        // this chunk's share of dW2ᵀ = dlogitsᵀ·h, while the block of h is in cache
        Gemm.Run(new Gemm.Args(V, H, rows, Ptr(dlogits) + (nint)r0 * V, 1, V, hh, H, 1, Ptr(_pW2!) + (nint)chunk * V * H, H, null, !firstInChunk), null);
    }

    /// <summary>Block <paramref name="b"/>: <c>dhprebn = bngain·bnvar_inv·(dhpreact − dbnbias/n − bnraw·dbngain/(n−1))</c> in place, its column sum, and dembcat.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void BlockBackward2(int b)
    {
        var (r0, rows) = BlockRows(b);
        int H = _h, K = _k;
        float* x = Ptr(hprebn) + (nint)r0 * H, d = Ptr(dhprebn) + (nint)r0 * H;
        float* mean = Ptr(bnmeani), vi = Ptr(bnvar_inv), ca = Ptr(_coefA!), ce = Ptr(_coefE!), cs = Ptr(_coefS!);
        float* ds = Ptr(_pC!) + (nint)b * H;
        new Span<float>(ds, H).Clear();
        for (int i = 0; i < rows; i++)
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
        Gemm.Run(new Gemm.Args(rows, K, H, d, H, 1, null, 0, 0, Ptr(dembcat) + (nint)r0 * K, K, null, false, packed: Ptr(_packW1t!)), null);
    }

    /// <summary>bnraw and dh of the last pipelined step, computed on request (the step itself never stores them whole).</summary>
    private void MaterialiseLazy(string name)
    {
        if (name == "bnraw" && _bnrawLazy)
        {
            int H = _h;
            float* x = Ptr(hprebn), raw = Ptr(bnraw), mean = Ptr(bnmeani), vi = Ptr(bnvar_inv);
            for (int i = 0; i < _n; i++)
            {
                nint o = (nint)i * H;
                for (int c = 0; c < H; c += 16)
                {
                    int cols = Math.Min(16, H - c); bool full = cols == 16; var m = Mask(cols);
                    St(raw + o + c, (Ld(x + o + c, m, full) - Ld(mean + c, m, full)) * Ld(vi + c, m, full), m, full);
                }
            }
            _bnrawLazy = false;
        }
        else if (name == "dh" && _dhLazy)
        {
            // the same product as each block's, with W2 as it was during the step (the packed copy)
            Gemm.Run(new Gemm.Args(_n, _h, _v, Ptr(dlogits), _v, 1, null, 0, 0, Ptr(dh), _h, null, false, packed: Ptr(_packW2t!)), null);
            _dhLazy = false;
        }
    }
}
