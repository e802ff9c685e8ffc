using System.Numerics;
using System.Numerics.Tensors;

namespace HpBackprop.Cpu;

/// <summary>
/// Batch norm (portable TensorPrimitives path) with the Bessel-corrected variance, fused with the tanh that follows it
/// (docs/makemore.md §2), and its fused backward (docs/makemore.md §4, exercise 3). Row-major <c>[n,H]</c>; every
/// column is independent, the loops run over rows and vectorise across columns.
/// </summary>
public static partial class BatchNorm
{
    /// <summary>
    /// Forward: <c>bnmeani = sum0(hprebn)/n</c>, <c>bnvar = sum0((hprebn-bnmeani)²)/(n-1)</c>,
    /// <c>bnvar_inv = (bnvar+eps)^-½</c>, <c>bnraw = (hprebn-bnmeani)·bnvar_inv</c>,
    /// <c>h = tanh(bngain·bnraw + bnbias)</c>. <paramref name="bnraw"/> and <paramref name="h"/> are kept for the backward.
    /// </summary>
    internal static void ForwardTanhPortable(ReadOnlySpan<float> hprebn, ReadOnlySpan<float> bngain, ReadOnlySpan<float> bnbias,
        Span<float> bnmeani, Span<float> bnvar, Span<float> bnvar_inv, Span<float> bnraw, Span<float> h, int n, int H, float eps)
        => ForwardPortable<TanhAct, Bessel>(hprebn, bngain, bnbias, bnmeani, bnvar, bnvar_inv, bnraw, h, n, H, eps);

    /// <summary>The forward followed by activation <typeparamref name="TA"/>, the variance over n−1 or n (<typeparamref name="TB"/>).</summary>
    internal static void ForwardPortable<TA, TB>(ReadOnlySpan<float> hprebn, ReadOnlySpan<float> bngain, ReadOnlySpan<float> bnbias,
        Span<float> bnmeani, Span<float> bnvar, Span<float> bnvar_inv, Span<float> bnraw, Span<float> h, int n, int H, float eps)
        where TA : struct, IActivation where TB : struct, IBnMode
    {
        if (n < 2) throw new ArgumentOutOfRangeException(nameof(n), n, "batch norm needs at least 2 rows: a batch of 1 has no variance.");
        // bnmeani
        Linear.ColumnSum(hprebn, bnmeani, n, H);
        TensorPrimitives.Multiply(bnmeani[..H], 1f / n, bnmeani[..H]);
        // bndiff, kept in bnraw for now; bnvar = sum0(bndiff²)/(n-1)
        bnvar[..H].Clear();
        for (int i = 0; i < n; i++)
        {
            Span<float> d = bnraw.Slice(i * H, H);
            TensorPrimitives.Subtract(hprebn.Slice(i * H, H), bnmeani[..H], d);
            TensorPrimitives.MultiplyAdd(d, d, bnvar[..H], bnvar[..H]);
        }
        TensorPrimitives.Multiply(bnvar[..H], 1f / (TB.OverN ? n : n - 1), bnvar[..H]);
        // bnvar_inv = 1/sqrt(bnvar + eps)
        TensorPrimitives.Add(bnvar[..H], eps, bnvar_inv[..H]);
        TensorPrimitives.ReciprocalSqrt(bnvar_inv[..H], bnvar_inv[..H]);
        int W = Vector<float>.Count;
        if (H < W)
        {
            for (int i = 0; i < n; i++)
            {
                Span<float> raw = bnraw.Slice(i * H, H), hi = h.Slice(i * H, H);
                TensorPrimitives.Multiply(raw, bnvar_inv[..H], raw);               // bnraw
                TensorPrimitives.FusedMultiplyAdd(raw, bngain[..H], bnbias[..H], hi); // hpreact
                TA.Forward(hi, hi);                                                 // h
            }
            return;
        }
        // bnraw = (hprebn − mean)·var_inv (the same subtraction as bndiff's) and h in one sweep per row, whole vectors;
        // when W does not divide H, one more vector at H − W recomputes the same values for the lanes it overlaps
        for (int i = 0; i < n; i++)
        {
            Span<float> raw = bnraw.Slice(i * H, H), hi = h.Slice(i * H, H);
            ReadOnlySpan<float> xi = hprebn.Slice(i * H, H);
            for (int c = 0; ; c += W)
            {
                if (c > H - W) c = H - W;
                var r = (new Vector<float>(xi[c..]) - new Vector<float>(bnmeani[c..])) * new Vector<float>(bnvar_inv[c..]);
                r.CopyTo(raw[c..]);
                TA.Forward(Vector.MultiplyAddEstimate(r, new Vector<float>(bngain[c..]), new Vector<float>(bnbias[c..]))).CopyTo(hi[c..]);
                if (c == H - W) break;
            }
        }
    }

    /// <summary>
    /// Inference forward with fixed statistics (running or calibrated): <c>h = tanh(bngain·(hprebn-mean)/√(var+eps) + bnbias)</c>.
    /// <paramref name="scratch"/> needs <c>H</c> elements.
    /// </summary>
    internal static void InferenceTanhPortable(ReadOnlySpan<float> hprebn, ReadOnlySpan<float> mean, ReadOnlySpan<float> variance,
        ReadOnlySpan<float> bngain, ReadOnlySpan<float> bnbias, Span<float> h, Span<float> scratch, int n, int H, float eps)
        => InferencePortable<TanhAct>(hprebn, mean, variance, bngain, bnbias, h, scratch, n, H, eps);

    /// <summary>The inference forward followed by activation <typeparamref name="TA"/>.</summary>
    internal static void InferencePortable<TA>(ReadOnlySpan<float> hprebn, ReadOnlySpan<float> mean, ReadOnlySpan<float> variance,
        ReadOnlySpan<float> bngain, ReadOnlySpan<float> bnbias, Span<float> h, Span<float> scratch, int n, int H, float eps)
        where TA : struct, IActivation
    {
        Span<float> scale = scratch[..H];
        TensorPrimitives.Add(variance[..H], eps, scale);
        TensorPrimitives.ReciprocalSqrt(scale, scale);
        TensorPrimitives.Multiply(scale, bngain[..H], scale);
        int W = Vector<float>.Count;
        for (int i = 0; i < n; i++)
        {
            Span<float> hi = h.Slice(i * H, H);
            ReadOnlySpan<float> xi = hprebn.Slice(i * H, H);
            if (H < W)
            {
                TensorPrimitives.Subtract(xi, mean[..H], hi);
                TensorPrimitives.FusedMultiplyAdd(hi, scale, bnbias[..H], hi);
                TA.Forward(hi, hi);
                continue;
            }
            // whole vectors, the last at H − W (it reads the input row, not hi, so overlapping lanes come out the same)
            for (int c = 0; ; c += W)
            {
                if (c > H - W) c = H - W;
                var r = new Vector<float>(xi[c..]) - new Vector<float>(mean[c..]);
                TA.Forward(Vector.MultiplyAddEstimate(r, new Vector<float>(scale[c..]), new Vector<float>(bnbias[c..]))).CopyTo(hi[c..]);
                if (c == H - W) break;
            }
        }
    }

    /// <summary>
    /// Fused backward through tanh and batch norm (exercise 3):
    /// <c>dhpreact = (1-h²)·dh</c>, <c>dbnbias = sum0(dhpreact)</c>, <c>dbngain = sum0(bnraw·dhpreact)</c>,
    /// <c>dhprebn = bngain·bnvar_inv/n · (n·dhpreact − dbnbias − n/(n−1)·bnraw·dbngain)</c>.
    /// <paramref name="dhprebn"/> may be the same buffer as <paramref name="dh"/>.
    /// </summary>
    internal static void BackwardPortable(ReadOnlySpan<float> dh, ReadOnlySpan<float> h, ReadOnlySpan<float> bnraw,
        ReadOnlySpan<float> bngain, ReadOnlySpan<float> bnvar_inv, Span<float> dhprebn, Span<float> dbngain, Span<float> dbnbias,
        Span<float> scratch, int n, int H)
        => BackwardPortable<TanhAct, Bessel>(dh, h, bnraw, bngain, bnvar_inv, dhprebn, dbngain, dbnbias, scratch, n, H);

    /// <summary>The backward through activation <typeparamref name="TA"/> and batch norm (<typeparamref name="TB"/>: n/(n−1) or 1).</summary>
    internal static void BackwardPortable<TA, TB>(ReadOnlySpan<float> dh, ReadOnlySpan<float> h, ReadOnlySpan<float> bnraw,
        ReadOnlySpan<float> bngain, ReadOnlySpan<float> bnvar_inv, Span<float> dhprebn, Span<float> dbngain, Span<float> dbnbias,
        Span<float> scratch, int n, int H) where TA : struct, IActivation where TB : struct, IBnMode
    {
        int W = Vector<float>.Count;
        dbngain[..H].Clear();
        dbnbias[..H].Clear();
        for (int i = 0; i < n; i++)
        {
            Span<float> dpre = dhprebn.Slice(i * H, H);               // dhpreact, stored in dhprebn
            ReadOnlySpan<float> hi = h.Slice(i * H, H), dhi = dh.Slice(i * H, H);
            int c0 = 0;
            for (; c0 + W <= H; c0 += W) TA.Backward(new Vector<float>(hi[c0..]), new Vector<float>(dhi[c0..])).CopyTo(dpre[c0..]);
            for (; c0 < H; c0++) dpre[c0] = TA.Backward(hi[c0], dhi[c0]);
            TensorPrimitives.Add(dbnbias[..H], dpre, dbnbias[..H]);
            TensorPrimitives.MultiplyAdd(bnraw.Slice(i * H, H), dpre, dbngain[..H], dbngain[..H]);
        }
        // scale = bngain·bnvar_inv (the 1/n and n cancel: dhprebn = scale·(dhpreact − dbnbias/n − bnraw·dbngain/(n−1)))
        Span<float> scale = scratch[..H];
        TensorPrimitives.Multiply(bngain[..H], bnvar_inv[..H], scale);
        float invN = 1f / n, invNm1 = 1f / (TB.OverN ? n : n - 1);
        for (int i = 0; i < n; i++)
        {
            Span<float> d = dhprebn.Slice(i * H, H);
            ReadOnlySpan<float> raw = bnraw.Slice(i * H, H);
            int c = 0;
            for (; c + W <= H; c += W)
                (new Vector<float>(scale[c..]) * (new Vector<float>(d[c..]) - new Vector<float>(dbnbias[c..]) * invN
                    - new Vector<float>(raw[c..]) * new Vector<float>(dbngain[c..]) * invNm1)).CopyTo(d[c..]);
            for (; c < H; c++)
                d[c] = scale[c] * (d[c] - dbnbias[c] * invN - raw[c] * dbngain[c] * invNm1);
        }
    }
}
