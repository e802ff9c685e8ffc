using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace HpBackprop.Cpu;

/// <summary>
/// Batch norm with the Bessel-corrected variance, fused with the tanh that follows it
/// (SPEC §2), and its fused backward (SPEC §4, exercise 3). Row-major <c>[n,H]</c>; every
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
        if (!Avx512F.IsSupported || Gemm.ForceVector256)
        {
            ForwardTanhPortable(hprebn, bngain, bnbias, bnmeani, bnvar, bnvar_inv, bnraw, h, n, H, eps);
            return;
        }
        Need(hprebn, n * H); Need(bnraw, n * H); Need(h, n * H);
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
        if (!Avx512F.IsSupported || Gemm.ForceVector256)
        {
            BackwardPortable(dh, h, bnraw, bngain, bnvar_inv, dhprebn, dbngain, dbnbias, scratch, n, H);
            return;
        }
        Need(dh, n * H); Need(h, n * H); Need(bnraw, n * H); Need(dhprebn, n * H);
        Need(bngain, H); Need(bnvar_inv, H); Need(dbngain, H); Need(dbnbias, H);
        fixed (float* pdh = dh, ph = h, raw = bnraw, g = bngain, vi = bnvar_inv, d = dhprebn, dg = dbngain, db = dbnbias)
            Backward512(pdh, ph, raw, g, vi, d, dg, db, n, H, 0, H);
    }

    private static void Need(ReadOnlySpan<float> s, int length)
    {
        if (s.Length < length) throw new ArgumentException($"a batch-norm buffer has {s.Length} elements, needs {length}.");
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Mask(int cols) =>
        Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(cols)).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Ld(float* p, Vector512<float> mask, bool full) =>
        full ? Vector512.Load(p) : Avx512F.MaskLoad(p, mask, Vector512<float>.Zero);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void St(float* p, Vector512<float> v, Vector512<float> mask, bool full)
    {
        if (full) v.Store(p); else Avx512F.MaskStore(p, mask, v);
    }

    /// <summary><c>tanh(x) = 1 − 2/(exp(2x)+1)</c>, argument clamped to ±9 (where tanh rounds to ±1 in float).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Tanh(Vector512<float> x)
    {
        x = Vector512.Min(Vector512.Max(x, Vector512.Create(-9f)), Vector512.Create(9f));
        var e = Vector512.Exp(x + x);
        return Vector512<float>.One - Vector512.Create(2f) / (e + Vector512<float>.One);
    }

    /// <summary>The forward on columns <c>[c0,c1)</c>, 16 columns per vector, two vectors per block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Forward512Columns(float* x, float* g, float* b, float* mean, float* v, float* vi, float* raw, float* hh,
        int n, int H, float eps, int c0, int c1)
    {
        float invN = 1f / n, invNm1 = 1f / (n - 1);
        for (int c = c0; c < c1; c += 16)
        {
            int cols = Math.Min(16, c1 - c);
            bool full = cols == 16;
            var mask = Mask(cols);
            // pass 1: mean
            var s0 = Vector512<float>.Zero;
            float* xc = x + c;
            for (int i = 0; i < n; i++) s0 += Ld(xc + (nint)i * H, mask, full);
            var mu = s0 * invN;
            // pass 2: Bessel variance about the mean
            var q0 = Vector512<float>.Zero;
            for (int i = 0; i < n; i++)
            {
                var d = Ld(xc + (nint)i * H, mask, full) - mu;
                q0 = Vector512.FusedMultiplyAdd(d, d, q0);
            }
            var va = q0 * invNm1;
            var inv = Vector512<float>.One / Vector512.Sqrt(va + Vector512.Create(eps));
            St(mean + c, mu, mask, full); St(v + c, va, mask, full); St(vi + c, inv, mask, full);
            var gain = Ld(g + c, mask, full);
            var bias = Ld(b + c, mask, full);
            // pass 3: normalise, scale and shift, tanh
            for (int i = 0; i < n; i++)
            {
                nint o = (nint)i * H + c;
                var r = (Ld(x + o, mask, full) - mu) * inv;
                St(raw + o, r, mask, full);
                St(hh + o, FastMath.Tanh(Vector512.FusedMultiplyAdd(r, gain, bias)), mask, full);
            }
        }
    }

    /// <summary>The backward on columns <c>[c0,c1)</c>.</summary>
    /// <remarks>When <paramref name="dsum"/> is not null it receives <c>sum0(dhprebn)</c> (the next layer's bias gradient), summed in row order.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Backward512Columns(float* dh, float* h, float* raw, float* g, float* vi, float* d, float* dg, float* db,
        int n, int H, int c0, int c1, float* dsum = null)
    {
        float invN = 1f / n, invNm1 = 1f / (n - 1);
        var one = Vector512<float>.One;
        for (int c = c0; c < c1; c += 16)
        {
            int cols = Math.Min(16, c1 - c);
            bool full = cols == 16;
            var mask = Mask(cols);
            var sb = Vector512<float>.Zero;
            var sg = Vector512<float>.Zero;
            // pass 1: dhpreact = (1−h²)·dh; dbnbias = sum0(dhpreact); dbngain = sum0(bnraw·dhpreact)
            for (int i = 0; i < n; i++)
            {
                nint o = (nint)i * H + c;
                var hv = Ld(h + o, mask, full);
                var dp = (one - hv * hv) * Ld(dh + o, mask, full);
                sb += dp;
                sg = Vector512.FusedMultiplyAdd(Ld(raw + o, mask, full), dp, sg);
            }
            St(db + c, sb, mask, full); St(dg + c, sg, mask, full);
            var scale = Ld(g + c, mask, full) * Ld(vi + c, mask, full);
            var k1 = sb * invN;
            var k2 = sg * invNm1;
            var ds = Vector512<float>.Zero;
            // pass 2: dhprebn = bngain·bnvar_inv·(dhpreact − dbnbias/n − bnraw·dbngain/(n−1))
            for (int i = 0; i < n; i++)
            {
                nint o = (nint)i * H + c;
                var hv = Ld(h + o, mask, full);
                var dp = (one - hv * hv) * Ld(dh + o, mask, full);
                var r = scale * (dp - k1 - Ld(raw + o, mask, full) * k2);
                St(d + o, r, mask, full);
                ds += r;
            }
            if (dsum != null) St(dsum + c, ds, mask, full);
        }
    }
    /// <summary>Batches of at least this many rows sweep whole rows (streaming) instead of column blocks (cache-resident).</summary>
    internal const int RowSweepRows = 128;

    /// <summary>
    /// The forward on columns <c>[c0,c1)</c>: small batches one column block at a time (all rows in
    /// cache), large ones as three streaming sweeps over the rows with the column statistics held in
    /// a stack buffer — each column is summed in row order either way.
    /// </summary>
    internal static void Forward512(float* x, float* g, float* b, float* mean, float* v, float* vi, float* raw, float* hh,
        int n, int H, float eps, int c0, int c1)
    {
        if (n < RowSweepRows || c1 - c0 > 16384) { Forward512Columns(x, g, b, mean, v, vi, raw, hh, n, H, eps, c0, c1); return; }
        int w = c1 - c0;
        float* acc = stackalloc float[w + 16];
        Forward512Rows(x, g, b, mean, v, vi, raw, hh, n, H, eps, c0, c1, acc);
    }

    /// <summary>The backward on columns <c>[c0,c1)</c> (see <see cref="Forward512"/> for the two layouts).</summary>
    internal static void Backward512(float* dh, float* h, float* raw, float* g, float* vi, float* d, float* dg, float* db,
        int n, int H, int c0, int c1, float* dsum = null)
    {
        if (n < RowSweepRows || c1 - c0 > 16384) { Backward512Columns(dh, h, raw, g, vi, d, dg, db, n, H, c0, c1, dsum); return; }
        int w = c1 - c0;
        float* acc = stackalloc float[4 * (w + 16)];
        Backward512Rows(dh, h, raw, g, vi, d, dg, db, n, H, c0, c1, dsum, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Forward512Rows(float* x, float* g, float* b, float* mean, float* v, float* vi, float* raw, float* hh,
        int n, int H, float eps, int c0, int c1, float* acc)
    {
        float invN = 1f / n, invNm1 = 1f / (n - 1);
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
                St(hh + o + c, FastMath.Tanh(Vector512.FusedMultiplyAdd(r, Ld(g + c0 + c, m, full), Ld(b + c0 + c, m, full))), m, full);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Backward512Rows(float* dh, float* h, float* raw, float* g, float* vi, float* d, float* dg, float* db,
        int n, int H, int c0, int c1, float* dsum, float* acc)
    {
        float invN = 1f / n, invNm1 = 1f / (n - 1);
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
                var dp = (one - hv * hv) * Ld(dh + o + c, m, full);
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
                var dp = (one - hv * hv) * Ld(dh + o + c, m, full);
                var scale = Ld(g + c0 + c, m, full) * Ld(vi + c0 + c, m, full);
                var r = scale * (dp - Ld(sb + c, m, full) * invN - Ld(raw + o + c, m, full) * (Ld(sg + c, m, full) * invNm1));
                St(d + o + c, r, m, full);
                St(ds + c, Ld(ds + c, m, full) + r, m, full);
            }
        }
        if (dsum != null) new Span<float>(ds, w).CopyTo(new Span<float>(dsum + c0, w));
    }
}
