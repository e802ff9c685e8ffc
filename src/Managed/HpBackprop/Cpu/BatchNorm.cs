using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static HpBackprop.Cpu.FastMath;

namespace HpBackprop.Cpu;

/// <summary>
/// Batch norm with the Bessel-corrected variance, fused with the tanh that follows it
/// (docs/makemore.md §2), and its fused backward (docs/makemore.md §4, exercise 3). Row-major <c>[n,H]</c>; every
/// column is independent. With AVX-512 each block of 32 columns is done in one sweep of
/// three row loops that stay in cache (statistics, then normalise + tanh; backward: the two
/// column sums, then <c>dhprebn</c>), the last block masked; blocks split over threads.
/// Without AVX-512 the portable TensorPrimitives path runs.
/// </summary>
public static unsafe partial class BatchNorm
{
    internal const int Block = 32;

    /// <summary>
    /// Forward: <c>bnmeani = sum0(hprebn)/n</c>, <c>bnvar = sum0((hprebn-bnmeani)²)/(n-1)</c>,
    /// <c>bnvar_inv = (bnvar+eps)^-½</c>, <c>bnraw = (hprebn-bnmeani)·bnvar_inv</c>,
    /// <c>h = tanh(bngain·bnraw + bnbias)</c>. <paramref name="bnraw"/> and <paramref name="h"/> are kept for the backward.
    /// </summary>
    public static void ForwardTanh(ReadOnlySpan<float> hprebn, ReadOnlySpan<float> bngain, ReadOnlySpan<float> bnbias,
        Span<float> bnmeani, Span<float> bnvar, Span<float> bnvar_inv, Span<float> bnraw, Span<float> h, int n, int H, float eps)
    {
        if (n < 2) throw new ArgumentOutOfRangeException(nameof(n), n, "batch norm needs at least 2 rows: a batch of 1 has no variance.");
        KernelArgs.Positive(H, nameof(H));
        if (!Avx512F.IsSupported || Gemm.ForceVector256)
        {
            ForwardTanhPortable(hprebn, bngain, bnbias, bnmeani, bnvar, bnvar_inv, bnraw, h, n, H, eps);
            return;
        }
        Need(hprebn, (long)n * H); Need(bnraw, (long)n * H); Need(h, (long)n * H);
        Need(bngain, H); Need(bnbias, H); Need(bnmeani, H); Need(bnvar, H); Need(bnvar_inv, H);
        fixed (float* x = hprebn, g = bngain, b = bnbias, mean = bnmeani, v = bnvar, vi = bnvar_inv, raw = bnraw, hh = h)
            Forward512(x, g, b, mean, v, vi, raw, hh, n, H, eps, 0, H);
    }

    /// <summary>
    /// Inference forward with fixed statistics (running or calibrated): <c>h = tanh(bngain·(hprebn-mean)/√(var+eps) + bnbias)</c>.
    /// <paramref name="scratch"/> needs <c>H</c> elements.
    /// </summary>
    public static void InferenceTanh(ReadOnlySpan<float> hprebn, ReadOnlySpan<float> mean, ReadOnlySpan<float> variance,
        ReadOnlySpan<float> bngain, ReadOnlySpan<float> bnbias, Span<float> h, Span<float> scratch, int n, int H, float eps)
        => InferenceTanhPortable(hprebn, mean, variance, bngain, bnbias, h, scratch, n, H, eps);

    /// <summary>
    /// Fused backward through tanh and batch norm (exercise 3):
    /// <c>dhpreact = (1-h²)·dh</c>, <c>dbnbias = sum0(dhpreact)</c>, <c>dbngain = sum0(bnraw·dhpreact)</c>,
    /// <c>dhprebn = bngain·bnvar_inv/n · (n·dhpreact − dbnbias − n/(n−1)·bnraw·dbngain)</c>.
    /// <paramref name="dhprebn"/> may be the same buffer as <paramref name="dh"/>.
    /// </summary>
    public static void Backward(ReadOnlySpan<float> dh, ReadOnlySpan<float> h, ReadOnlySpan<float> bnraw,
        ReadOnlySpan<float> bngain, ReadOnlySpan<float> bnvar_inv, Span<float> dhprebn, Span<float> dbngain, Span<float> dbnbias,
        Span<float> scratch, int n, int H)
    {
        KernelArgs.Positive(n, nameof(n)); KernelArgs.Positive(H, nameof(H));
        if (!Avx512F.IsSupported || Gemm.ForceVector256)
        {
            BackwardPortable(dh, h, bnraw, bngain, bnvar_inv, dhprebn, dbngain, dbnbias, scratch, n, H);
            return;
        }
        Need(dh, (long)n * H); Need(h, (long)n * H); Need(bnraw, (long)n * H); Need(dhprebn, (long)n * H);
        Need(bngain, H); Need(bnvar_inv, H); Need(dbngain, H); Need(dbnbias, H);
        fixed (float* pdh = dh, ph = h, raw = bnraw, g = bngain, vi = bnvar_inv, d = dhprebn, dg = dbngain, db = dbnbias)
            Backward512(pdh, ph, raw, g, vi, d, dg, db, n, H, 0, H);
    }

    private static void Need(ReadOnlySpan<float> s, long length)
    {
        if (s.Length < length) throw new ArgumentException($"a batch-norm buffer has {s.Length} elements, needs {length}.");
    }

    /// <summary><c>tanh(x) = 1 − 2/(exp(2x)+1)</c>, argument clamped to ±9 (where tanh rounds to ±1 in float).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Tanh(Vector512<float> x)
    {
        x = Vector512.Min(Vector512.Max(x, Vector512.Create(-9f)), Vector512.Create(9f));
        var e = Vector512.Exp(x + x);
        return Vector512<float>.One - Vector512.Create(2f) / (e + Vector512<float>.One);
    }

    /// <summary>How the batch variance is normalised: over n−1 (<see cref="Bessel"/>) or over n (<see cref="Biased"/>, PyTorch's training mode).</summary>
    internal interface IBnMode { static abstract bool OverN { get; } }
    internal struct Bessel : IBnMode { public static bool OverN => false; }
    internal struct Biased : IBnMode { public static bool OverN => true; }

    /// <summary>Whether a column group's loads and stores are masked (the right edge) or whole vectors.</summary>
    internal interface IMasking { static abstract bool Masked { get; } }
    internal struct Whole : IMasking { public static bool Masked => false; }
    internal struct Edge : IMasking { public static bool Masked => true; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> GLd<TM>(float* p, Vector512<float> k) where TM : struct, IMasking =>
        TM.Masked ? Avx512F.MaskLoad(p, k, Vector512<float>.Zero) : Vector512.Load(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GSt<TM>(float* p, Vector512<float> v, Vector512<float> k) where TM : struct, IMasking
    {
        if (TM.Masked) Avx512F.MaskStore(p, k, v); else v.Store(p);
    }

    /// <summary>
    /// The forward on columns <c>[c0,c1)</c>: groups of four 16-column vectors with whole loads and stores (the four
    /// column sums of a group are independent chains, each still summed in row order, so the adds overlap), then the
    /// right edge (under 64 columns) in one group of just the 1–4 vectors it needs, masked.
    /// </summary>
    private static void Forward512Columns<TA, TB>(float* x, float* g, float* b, float* mean, float* v, float* vi, float* raw, float* hh,
        int n, int H, float eps, int c0, int c1) where TA : struct, IActivation where TB : struct, IBnMode
    {
        int c = c0;
        for (; c + 64 <= c1; c += 64) ForwardGroup<Gemm.R4, Whole, TA, TB>(x, g, b, mean, v, vi, raw, hh, n, H, eps, c, 64);
        switch ((c1 - c + 15) / 16)
        {
            case 1: ForwardGroup<Gemm.R1, Edge, TA, TB>(x, g, b, mean, v, vi, raw, hh, n, H, eps, c, c1 - c); break;
            case 2: ForwardGroup<Gemm.R2, Edge, TA, TB>(x, g, b, mean, v, vi, raw, hh, n, H, eps, c, c1 - c); break;
            case 3: ForwardGroup<Gemm.R3, Edge, TA, TB>(x, g, b, mean, v, vi, raw, hh, n, H, eps, c, c1 - c); break;
            case 4: ForwardGroup<Gemm.R4, Edge, TA, TB>(x, g, b, mean, v, vi, raw, hh, n, H, eps, c, c1 - c); break;
        }
    }

    /// <summary>One group of <typeparamref name="TV"/> ≤ 4 vectors at column <paramref name="c"/> (<paramref name="cols"/> columns) of the forward.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardGroup<TV, TM, TA, TB>(float* x, float* g, float* b, float* mean, float* v, float* vi, float* raw, float* hh,
        int n, int H, float eps, int c, int cols) where TV : struct, Gemm.IRows where TM : struct, IMasking where TA : struct, IActivation where TB : struct, IBnMode
    {
        int V = TV.N;
        float invN = 1f / n, invNm1 = 1f / (TB.OverN ? n : n - 1);
        var veps = Vector512.Create(eps);
        var k0 = Mask(cols); var k1 = Mask(cols - 16); var k2 = Mask(cols - 32); var k3 = Mask(cols - 48);
        float* xc = x + c;
        // pass 1: mean
        Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
        for (int i = 0; i < n; i++)
        {
            float* r = xc + (nint)i * H;
            s0 += GLd<TM>(r, k0); if (V > 1) { s1 += GLd<TM>(r + 16, k1); } if (V > 2) { s2 += GLd<TM>(r + 32, k2); } if (V > 3) { s3 += GLd<TM>(r + 48, k3); }
        }
        var mu0 = s0 * invN; var mu1 = s1 * invN; var mu2 = s2 * invN; var mu3 = s3 * invN;
        // pass 2: Bessel variance about the mean
        Vector512<float> q0 = default, q1 = default, q2 = default, q3 = default;
        for (int i = 0; i < n; i++)
        {
            float* r = xc + (nint)i * H;
            var d0 = GLd<TM>(r, k0) - mu0; q0 = Vector512.FusedMultiplyAdd(d0, d0, q0);
            if (V > 1) { var d1 = GLd<TM>(r + 16, k1) - mu1; q1 = Vector512.FusedMultiplyAdd(d1, d1, q1); }
            if (V > 2) { var d2 = GLd<TM>(r + 32, k2) - mu2; q2 = Vector512.FusedMultiplyAdd(d2, d2, q2); }
            if (V > 3) { var d3 = GLd<TM>(r + 48, k3) - mu3; q3 = Vector512.FusedMultiplyAdd(d3, d3, q3); }
        }
        var va0 = q0 * invNm1; var va1 = q1 * invNm1; var va2 = q2 * invNm1; var va3 = q3 * invNm1;
        var in0 = Vector512<float>.One / Vector512.Sqrt(va0 + veps);
        var in1 = Vector512<float>.One / Vector512.Sqrt(va1 + veps);
        var in2 = Vector512<float>.One / Vector512.Sqrt(va2 + veps);
        var in3 = Vector512<float>.One / Vector512.Sqrt(va3 + veps);
        GSt<TM>(mean + c, mu0, k0); GSt<TM>(v + c, va0, k0); GSt<TM>(vi + c, in0, k0);
        if (V > 1) { GSt<TM>(mean + c + 16, mu1, k1); GSt<TM>(v + c + 16, va1, k1); GSt<TM>(vi + c + 16, in1, k1); }
        if (V > 2) { GSt<TM>(mean + c + 32, mu2, k2); GSt<TM>(v + c + 32, va2, k2); GSt<TM>(vi + c + 32, in2, k2); }
        if (V > 3) { GSt<TM>(mean + c + 48, mu3, k3); GSt<TM>(v + c + 48, va3, k3); GSt<TM>(vi + c + 48, in3, k3); }
        Vector512<float> g0 = default, g1 = default, g2 = default, g3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        g0 = GLd<TM>(g + c, k0); b0 = GLd<TM>(b + c, k0);
        if (V > 1) { g1 = GLd<TM>(g + c + 16, k1); b1 = GLd<TM>(b + c + 16, k1); }
        if (V > 2) { g2 = GLd<TM>(g + c + 32, k2); b2 = GLd<TM>(b + c + 32, k2); }
        if (V > 3) { g3 = GLd<TM>(g + c + 48, k3); b3 = GLd<TM>(b + c + 48, k3); }
        // pass 3: normalise, scale and shift, tanh
        for (int i = 0; i < n; i++)
        {
            nint o = (nint)i * H + c;
            var r0 = (GLd<TM>(x + o, k0) - mu0) * in0; GSt<TM>(raw + o, r0, k0); GSt<TM>(hh + o, TA.Forward(Vector512.FusedMultiplyAdd(r0, g0, b0)), k0);
            if (V > 1) { var r1 = (GLd<TM>(x + o + 16, k1) - mu1) * in1; GSt<TM>(raw + o + 16, r1, k1); GSt<TM>(hh + o + 16, TA.Forward(Vector512.FusedMultiplyAdd(r1, g1, b1)), k1); }
            if (V > 2) { var r2 = (GLd<TM>(x + o + 32, k2) - mu2) * in2; GSt<TM>(raw + o + 32, r2, k2); GSt<TM>(hh + o + 32, TA.Forward(Vector512.FusedMultiplyAdd(r2, g2, b2)), k2); }
            if (V > 3) { var r3 = (GLd<TM>(x + o + 48, k3) - mu3) * in3; GSt<TM>(raw + o + 48, r3, k3); GSt<TM>(hh + o + 48, TA.Forward(Vector512.FusedMultiplyAdd(r3, g3, b3)), k3); }
        }
    }

    /// <summary>The backward on columns <c>[c0,c1)</c>, grouped like the forward.</summary>
    /// <remarks>When <paramref name="dsum"/> is not null it receives <c>sum0(dhprebn)</c> (the next layer's bias gradient), summed in row order.</remarks>
    private static void Backward512Columns<TA, TB>(float* dh, float* h, float* raw, float* g, float* vi, float* d, float* dg, float* db,
        int n, int H, int c0, int c1, float* dsum = null) where TA : struct, IActivation where TB : struct, IBnMode
    {
        int c = c0;
        for (; c + 64 <= c1; c += 64) BackwardGroup<Gemm.R4, Whole, TA, TB>(dh, h, raw, g, vi, d, dg, db, n, H, c, 64, dsum);
        switch ((c1 - c + 15) / 16)
        {
            case 1: BackwardGroup<Gemm.R1, Edge, TA, TB>(dh, h, raw, g, vi, d, dg, db, n, H, c, c1 - c, dsum); break;
            case 2: BackwardGroup<Gemm.R2, Edge, TA, TB>(dh, h, raw, g, vi, d, dg, db, n, H, c, c1 - c, dsum); break;
            case 3: BackwardGroup<Gemm.R3, Edge, TA, TB>(dh, h, raw, g, vi, d, dg, db, n, H, c, c1 - c, dsum); break;
            case 4: BackwardGroup<Gemm.R4, Edge, TA, TB>(dh, h, raw, g, vi, d, dg, db, n, H, c, c1 - c, dsum); break;
        }
    }

    /// <summary>One group of <typeparamref name="TV"/> ≤ 4 vectors at column <paramref name="c"/> (<paramref name="cols"/> columns) of the backward.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BackwardGroup<TV, TM, TA, TB>(float* dh, float* h, float* raw, float* g, float* vi, float* d, float* dg, float* db,
        int n, int H, int c, int cols, float* dsum) where TV : struct, Gemm.IRows where TM : struct, IMasking where TA : struct, IActivation where TB : struct, IBnMode
    {
        int V = TV.N;
        float invN = 1f / n, invNm1 = 1f / (TB.OverN ? n : n - 1);
        var one = Vector512<float>.One;
        var k0 = Mask(cols); var k1 = Mask(cols - 16); var k2 = Mask(cols - 32); var k3 = Mask(cols - 48);
        Vector512<float> sb0 = default, sb1 = default, sb2 = default, sb3 = default;
        Vector512<float> sg0 = default, sg1 = default, sg2 = default, sg3 = default;
        // pass 1: dhpreact = (1−h²)·dh; dbnbias = sum0(dhpreact); dbngain = sum0(bnraw·dhpreact)
        for (int i = 0; i < n; i++)
        {
            nint o = (nint)i * H + c;
            var h0 = GLd<TM>(h + o, k0); var p0 = TA.Backward(h0, GLd<TM>(dh + o, k0)); sb0 += p0; sg0 = Vector512.FusedMultiplyAdd(GLd<TM>(raw + o, k0), p0, sg0);
            if (V > 1) { var h1 = GLd<TM>(h + o + 16, k1); var p1 = TA.Backward(h1, GLd<TM>(dh + o + 16, k1)); sb1 += p1; sg1 = Vector512.FusedMultiplyAdd(GLd<TM>(raw + o + 16, k1), p1, sg1); }
            if (V > 2) { var h2 = GLd<TM>(h + o + 32, k2); var p2 = TA.Backward(h2, GLd<TM>(dh + o + 32, k2)); sb2 += p2; sg2 = Vector512.FusedMultiplyAdd(GLd<TM>(raw + o + 32, k2), p2, sg2); }
            if (V > 3) { var h3 = GLd<TM>(h + o + 48, k3); var p3 = TA.Backward(h3, GLd<TM>(dh + o + 48, k3)); sb3 += p3; sg3 = Vector512.FusedMultiplyAdd(GLd<TM>(raw + o + 48, k3), p3, sg3); }
        }
        GSt<TM>(db + c, sb0, k0); GSt<TM>(dg + c, sg0, k0);
        if (V > 1) { GSt<TM>(db + c + 16, sb1, k1); GSt<TM>(dg + c + 16, sg1, k1); }
        if (V > 2) { GSt<TM>(db + c + 32, sb2, k2); GSt<TM>(dg + c + 32, sg2, k2); }
        if (V > 3) { GSt<TM>(db + c + 48, sb3, k3); GSt<TM>(dg + c + 48, sg3, k3); }
        Vector512<float> sc0 = default, sc1 = default, sc2 = default, sc3 = default;
        sc0 = GLd<TM>(g + c, k0) * GLd<TM>(vi + c, k0);
        if (V > 1) { sc1 = GLd<TM>(g + c + 16, k1) * GLd<TM>(vi + c + 16, k1); }
        if (V > 2) { sc2 = GLd<TM>(g + c + 32, k2) * GLd<TM>(vi + c + 32, k2); }
        if (V > 3) { sc3 = GLd<TM>(g + c + 48, k3) * GLd<TM>(vi + c + 48, k3); }
        var a0 = sb0 * invN; var a1 = sb1 * invN; var a2 = sb2 * invN; var a3 = sb3 * invN;
        var e0 = sg0 * invNm1; var e1 = sg1 * invNm1; var e2 = sg2 * invNm1; var e3 = sg3 * invNm1;
        Vector512<float> ds0 = default, ds1 = default, ds2 = default, ds3 = default;
        // pass 2: dhprebn = bngain·bnvar_inv·(dhpreact − dbnbias/n − bnraw·dbngain/(n−1))
        for (int i = 0; i < n; i++)
        {
            nint o = (nint)i * H + c;
            var h0 = GLd<TM>(h + o, k0); var r0 = sc0 * (TA.Backward(h0, GLd<TM>(dh + o, k0)) - a0 - GLd<TM>(raw + o, k0) * e0); GSt<TM>(d + o, r0, k0); ds0 += r0;
            if (V > 1) { var h1 = GLd<TM>(h + o + 16, k1); var r1 = sc1 * (TA.Backward(h1, GLd<TM>(dh + o + 16, k1)) - a1 - GLd<TM>(raw + o + 16, k1) * e1); GSt<TM>(d + o + 16, r1, k1); ds1 += r1; }
            if (V > 2) { var h2 = GLd<TM>(h + o + 32, k2); var r2 = sc2 * (TA.Backward(h2, GLd<TM>(dh + o + 32, k2)) - a2 - GLd<TM>(raw + o + 32, k2) * e2); GSt<TM>(d + o + 32, r2, k2); ds2 += r2; }
            if (V > 3) { var h3 = GLd<TM>(h + o + 48, k3); var r3 = sc3 * (TA.Backward(h3, GLd<TM>(dh + o + 48, k3)) - a3 - GLd<TM>(raw + o + 48, k3) * e3); GSt<TM>(d + o + 48, r3, k3); ds3 += r3; }
        }
        if (dsum != null)
        {
            GSt<TM>(dsum + c, ds0, k0);
            if (V > 1) { GSt<TM>(dsum + c + 16, ds1, k1); }
            if (V > 2) { GSt<TM>(dsum + c + 32, ds2, k2); }
            if (V > 3) { GSt<TM>(dsum + c + 48, ds3, k3); }
        }
    }

    /// <summary>The lecture's batch norm + tanh (Bessel) on columns <c>[c0,c1)</c>.</summary>
    internal static void Forward512(float* x, float* g, float* b, float* mean, float* v, float* vi, float* raw, float* hh,
        int n, int H, float eps, int c0, int c1) => Forward512<TanhAct, Bessel>(x, g, b, mean, v, vi, raw, hh, n, H, eps, c0, c1);

    /// <summary>The backward of <see cref="Forward512(float*, float*, float*, float*, float*, float*, float*, float*, int, int, float, int, int)"/>.</summary>
    internal static void Backward512(float* dh, float* h, float* raw, float* g, float* vi, float* d, float* dg, float* db,
        int n, int H, int c0, int c1, float* dsum = null) => Backward512<TanhAct, Bessel>(dh, h, raw, g, vi, d, dg, db, n, H, c0, c1, dsum);

    /// <summary>Batches of at least this many rows sweep whole rows (streaming) instead of column blocks (cache-resident).</summary>
    internal const int RowSweepRows = 128;

    /// <summary>
    /// The forward on columns <c>[c0,c1)</c>: small batches one column block at a time (all rows in
    /// cache), large ones as three streaming sweeps over the rows with the column statistics held in
    /// a stack buffer — each column is summed in row order either way.
    /// </summary>
    internal static void Forward512<TA, TB>(float* x, float* g, float* b, float* mean, float* v, float* vi, float* raw, float* hh,
        int n, int H, float eps, int c0, int c1) where TA : struct, IActivation where TB : struct, IBnMode
    {
        if (n < RowSweepRows || c1 - c0 > 16384) { Forward512Columns<TA, TB>(x, g, b, mean, v, vi, raw, hh, n, H, eps, c0, c1); return; }
        int w = c1 - c0;
        float* acc = stackalloc float[w + 16];
        Forward512Rows<TA, TB>(x, g, b, mean, v, vi, raw, hh, n, H, eps, c0, c1, acc);
    }

    /// <summary>The backward on columns <c>[c0,c1)</c> (see <see cref="Forward512"/> for the two layouts).</summary>
    internal static void Backward512<TA, TB>(float* dh, float* h, float* raw, float* g, float* vi, float* d, float* dg, float* db,
        int n, int H, int c0, int c1, float* dsum = null) where TA : struct, IActivation where TB : struct, IBnMode
    {
        if (n < RowSweepRows || c1 - c0 > 16384) { Backward512Columns<TA, TB>(dh, h, raw, g, vi, d, dg, db, n, H, c0, c1, dsum); return; }
        int w = c1 - c0;
        float* acc = stackalloc float[4 * (w + 16)];
        Backward512Rows<TA, TB>(dh, h, raw, g, vi, d, dg, db, n, H, c0, c1, dsum, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Forward512Rows<TA, TB>(float* x, float* g, float* b, float* mean, float* v, float* vi, float* raw, float* hh,
        int n, int H, float eps, int c0, int c1, float* acc) where TA : struct, IActivation where TB : struct, IBnMode
    {
        float invN = 1f / n, invNm1 = 1f / (TB.OverN ? n : n - 1);
        int w = c1 - c0;
        new Span<float>(acc, w).Clear();
        for (int i = 0; i < n; i++)
        {
            float* xr = x + (nint)i * H + c0;
            for (int c = 0; c < w; c += 16)
            {
                int cols = Math.Min(16, w - c); bool full = cols == 16; var m = Mask(cols);
                St(acc + c, Ld(acc + c, m, full) + Ld(xr + c, m, full), m, full);
            }
        }
        for (int c = 0; c < w; c += 16)
        {
            int cols = Math.Min(16, w - c); bool full = cols == 16; var m = Mask(cols);
            St(mean + c0 + c, Ld(acc + c, m, full) * invN, m, full);
        }
        new Span<float>(acc, w).Clear();
        for (int i = 0; i < n; i++)
        {
            float* xr = x + (nint)i * H + c0;
            for (int c = 0; c < w; c += 16)
            {
                int cols = Math.Min(16, w - c); bool full = cols == 16; var m = Mask(cols);
                var dd = Ld(xr + c, m, full) - Ld(mean + c0 + c, m, full);
                St(acc + c, Vector512.FusedMultiplyAdd(dd, dd, Ld(acc + c, m, full)), m, full);
            }
        }
        for (int c = 0; c < w; c += 16)
        {
            int cols = Math.Min(16, w - c); bool full = cols == 16; var m = Mask(cols);
            var va = Ld(acc + c, m, full) * invNm1;
            St(v + c0 + c, va, m, full);
            St(vi + c0 + c, Vector512<float>.One / Vector512.Sqrt(va + Vector512.Create(eps)), m, full);
        }
        for (int i = 0; i < n; i++)
        {
            nint o = (nint)i * H + c0;
            for (int c = 0; c < w; c += 16)
            {
                int cols = Math.Min(16, w - c); bool full = cols == 16; var m = Mask(cols);
                var r = (Ld(x + o + c, m, full) - Ld(mean + c0 + c, m, full)) * Ld(vi + c0 + c, m, full);
                St(raw + o + c, r, m, full);
                St(hh + o + c, TA.Forward(Vector512.FusedMultiplyAdd(r, Ld(g + c0 + c, m, full), Ld(b + c0 + c, m, full))), m, full);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Backward512Rows<TA, TB>(float* dh, float* h, float* raw, float* g, float* vi, float* d, float* dg, float* db,
        int n, int H, int c0, int c1, float* dsum, float* acc) where TA : struct, IActivation where TB : struct, IBnMode
    {
        float invN = 1f / n, invNm1 = 1f / (TB.OverN ? n : n - 1);
        int w = c1 - c0, stride = w + 16;
        float* sb = acc, sg = acc + stride, ds = acc + 2 * stride;
        new Span<float>(acc, 3 * stride).Clear();
        var one = Vector512<float>.One;
        for (int i = 0; i < n; i++)
        {
            nint o = (nint)i * H + c0;
            for (int c = 0; c < w; c += 16)
            {
                int cols = Math.Min(16, w - c); bool full = cols == 16; var m = Mask(cols);
                var hv = Ld(h + o + c, m, full);
                var dp = TA.Backward(hv, Ld(dh + o + c, m, full));
                St(sb + c, Ld(sb + c, m, full) + dp, m, full);
                St(sg + c, Vector512.FusedMultiplyAdd(Ld(raw + o + c, m, full), dp, Ld(sg + c, m, full)), m, full);
            }
        }
        for (int c = 0; c < w; c += 16)
        {
            int cols = Math.Min(16, w - c); bool full = cols == 16; var m = Mask(cols);
            St(db + c0 + c, Ld(sb + c, m, full), m, full);
            St(dg + c0 + c, Ld(sg + c, m, full), m, full);
        }
        for (int i = 0; i < n; i++)
        {
            nint o = (nint)i * H + c0;
            for (int c = 0; c < w; c += 16)
            {
                int cols = Math.Min(16, w - c); bool full = cols == 16; var m = Mask(cols);
                var hv = Ld(h + o + c, m, full);
                var dp = TA.Backward(hv, Ld(dh + o + c, m, full));
                var scale = Ld(g + c0 + c, m, full) * Ld(vi + c0 + c, m, full);
                var r = scale * (dp - Ld(sb + c, m, full) * invN - Ld(raw + o + c, m, full) * (Ld(sg + c, m, full) * invNm1));
                St(d + o + c, r, m, full);
                St(ds + c, Ld(ds + c, m, full) + r, m, full);
            }
        }
        if (dsum != null) new Span<float>(ds, w).CopyTo(new Span<float>(dsum + c0, w));
    }
}
