using System.Numerics;
using System.Runtime.CompilerServices;

namespace HpBackprop.Cpu;

/// <summary>
/// The row-block pipeline's elementwise sweeps at the machine's vector width (<see cref="Vector{T}"/>: 256-bit with AVX2,
/// 128-bit with SSE or NEON), for CPUs without AVX-512: the same arithmetic as the 512-bit loops. Each row is swept in
/// whole vectors; when H is not a multiple of the width W, one more vector at H − W overlaps the last, with the lanes
/// already done kept out of the sums and out of in-place stores (so the loops hold no call and no per-lane code; H ≥ W).
/// Multiply-adds are estimates: fused where the CPU has FMA, a multiply then an add where it has not, rather than a
/// software fused multiply-add. The products and everything between the sweeps are the same code at every width.
/// </summary>
internal sealed unsafe partial class RowBlockPipeline<TA, TB>
{
    /// <summary>The block's column sums and squared deviations about its own mean (two passes over the block in cache).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void StatisticsV(float* x, int rows, float* s, float* q)
    {
        int H = _h, w = Vector<float>.Count, full = H - H % w;
        var all = Vector<float>.AllBitsSet;
        var tail = TailLanes(H);
        new Span<float>(s, H).Clear();
        new Span<float>(q, H).Clear();
        for (int i = 0; i < rows; i++)
        {
            float* xr = x + (nint)i * H;
            for (int c = 0; c < full; c += w) Sum(s + c, xr + c, all);
            if (full < H) Sum(s + H - w, xr + H - w, tail);
        }
        var inv = new Vector<float>(1f / rows);
        for (int i = 0; i < rows; i++)
        {
            float* xr = x + (nint)i * H;
            for (int c = 0; c < full; c += w) SquaredDeviation(q + c, xr + c, s + c, inv, all);
            if (full < H) SquaredDeviation(q + H - w, xr + H - w, s + H - w, inv, tail);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Sum(float* s, float* x, Vector<float> keep) => StV(s, LdV(s) + (LdV(x) & keep));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SquaredDeviation(float* q, float* x, float* s, Vector<float> inv, Vector<float> keep)
    {
        var d = LdV(x) - LdV(s) * inv;
        StV(q, Vector.MultiplyAddEstimate(d, d & keep, LdV(q)));
    }

    /// <summary><c>h = act(gain·bnraw + bias)</c> for the block's rows (the overlapping vector rewrites the same values).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void NormalizeV(float* x, float* hh, int rows)
    {
        int H = _h, w = Vector<float>.Count;
        float* mean = Ptr(_mean), vi = Ptr(_varInv), g = _w.Gain, bias = _w.Bias;
        for (int i = 0; i < rows; i++)
        {
            nint o = (nint)i * H;
            for (int c = 0; ; c += w)
            {
                if (c > H - w) c = H - w;
                var r = (LdV(x + o + c) - LdV(mean + c)) * LdV(vi + c);
                StV(hh + o + c, TA.Forward(Vector.MultiplyAddEstimate(r, LdV(g + c), LdV(bias + c))));
                if (c == H - w) break;
            }
        }
    }

    /// <summary><c>dhpreact = act′·dh</c> into <paramref name="dp"/>, and the block's sums of <c>dhpreact</c> and <c>bnraw·dhpreact</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void DhpreactV(float* hh, float* dhb, float* x, float* dp, int rows, float* sb, float* sg)
    {
        int H = _h, w = Vector<float>.Count, full = H - H % w;
        var all = Vector<float>.AllBitsSet;
        var tail = TailLanes(H);
        float* mean = Ptr(_mean), vi = Ptr(_varInv);
        for (int i = 0; i < rows; i++)
        {
            nint o = (nint)i * H;
            for (int c = 0; c < full; c += w) Dhpreact(hh + o + c, dhb + o + c, x + o + c, dp + o + c, mean + c, vi + c, sb + c, sg + c, all);
            if (full < H)
            {
                int c = H - w;
                Dhpreact(hh + o + c, dhb + o + c, x + o + c, dp + o + c, mean + c, vi + c, sb + c, sg + c, tail);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Dhpreact(float* hh, float* dhb, float* x, float* dp, float* mean, float* vi, float* sb, float* sg, Vector<float> keep)
    {
        var p = TA.Backward(LdV(hh), LdV(dhb));
        StV(dp, p);
        var raw = (LdV(x) - LdV(mean)) * LdV(vi);
        p &= keep;
        StV(sb, LdV(sb) + p);
        StV(sg, Vector.MultiplyAddEstimate(raw, p, LdV(sg)));
    }

    /// <summary><c>dhprebn = gain·var_inv·(dhpreact − dbias/n − bnraw·dgain/(n−1))</c> in place, and its block sum.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void DhprebnV(float* x, float* d, int rows, float* ds)
    {
        int H = _h, w = Vector<float>.Count, full = H - H % w;
        var all = Vector<float>.AllBitsSet;
        var tail = TailLanes(H);
        float* mean = Ptr(_mean), vi = Ptr(_varInv), ca = Ptr(_coefA), ce = Ptr(_coefE), cs = Ptr(_coefS);
        for (int i = 0; i < rows; i++)
        {
            nint o = (nint)i * H;
            for (int c = 0; c < full; c += w) Dhprebn(x + o + c, d + o + c, mean + c, vi + c, ca + c, ce + c, cs + c, ds + c, all);
            if (full < H)
            {
                int c = H - w;
                Dhprebn(x + o + c, d + o + c, mean + c, vi + c, ca + c, ce + c, cs + c, ds + c, tail);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Dhprebn(float* x, float* d, float* mean, float* vi, float* ca, float* ce, float* cs, float* ds, Vector<float> keep)
    {
        var raw = (LdV(x) - LdV(mean)) * LdV(vi);
        var old = LdV(d);
        var r = LdV(cs) * (old - LdV(ca) - raw * LdV(ce));
        // in place: the lanes the overlapping vector already did keep their new value
        StV(d, Vector.ConditionalSelect(keep, r, old));
        StV(ds, LdV(ds) + (r & keep));
    }

    /// <summary>The lanes of the vector at H − W that the whole vectors before it have not covered.</summary>
    private static Vector<float> TailLanes(int H)
    {
        int w = Vector<float>.Count, done = w - H % w;
        return Vector.AsVectorSingle(Vector.GreaterThanOrEqual(Vector<int>.Indices, new Vector<int>(H % w == 0 ? 0 : done)));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<float> LdV(float* p) => Unsafe.ReadUnaligned<Vector<float>>(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StV(float* p, Vector<float> v) => Unsafe.WriteUnaligned(p, v);
}
