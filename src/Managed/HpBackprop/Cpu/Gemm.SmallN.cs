using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static HpBackprop.Cpu.FastMath;

namespace HpBackprop.Cpu;

public static unsafe partial class Gemm
{
    /// <summary>The most rows of C the small-batch <c>A·Bᵀ</c> kernel takes: two 512-bit vectors of rows.</summary>
    internal const int SmallRows = 32;

    /// <summary>Off: products <see cref="SmallNT"/> would take run through the general kernel instead (tests and benchmarks compare the two).</summary>
    internal static bool SmallN { get; set; } = true;

    /// <summary>
    /// Whether <see cref="SmallNT"/> runs a product: at most 32 rows of C with <c>A</c>'s rows contiguous, any layout of
    /// <c>B</c>, no accumulate or epilogue — a linear layer's forward <c>x·Wᵀ (+ bias)</c> and input gradient <c>dy·W</c> at a small batch.
    /// </summary>
    private static bool SmallNTApplies(in Args g) =>
        SmallN && Avx512F.IsSupported && !ForceVector256 && g.M <= SmallRows && g.Acs == 1 && g.Packed == null && g.Upd == null && !g.Accumulate;

    /// <summary>
    /// <c>C[M,N] = A[M,K]·B[K,N] (+ bias)</c> for M ≤ 32 (B in place whatever its strides: <c>Wᵀ</c> or <c>W</c>), computed as <c>Cᵀ = Bᵀ·Aᵀ</c>: <c>Aᵀ</c> (M ≤ 32 rows, cheap) is
    /// packed once as a <c>K×32</c> panel, each 8 columns of <c>B</c> are broadcast against it into an 8×32 tile of <c>Cᵀ</c>
    /// held in sixteen registers, and the tile is transposed in registers as it is stored. The large operand (the weight)
    /// is read in place, never packed. Each element is the same chain of fused multiply-adds, from the bias (or zero)
    /// over p = 0..K−1, as in <see cref="Rect"/>, so the result is bitwise the same.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SmallNT(in Args g)
    {
        int M = g.M, N = g.N, K = g.K;
        float* at = Scratch(K * SmallRows);
        for (int p0 = 0; p0 < K; p0 += 16)
        {
            int pl = Math.Min(16, K - p0);
            var mp = Mask(pl);
            Transpose16(g.A + p0, g.Ars, M, mp, pl, at + (nint)p0 * SmallRows);
            Transpose16(g.A + 16 * g.Ars + p0, g.Ars, M - 16, mp, pl, at + (nint)p0 * SmallRows + 16);
        }
        for (int j0 = 0; j0 < N; j0 += 8)
        {
            float* b = g.B + j0 * g.Bcs, bias = g.Bias == null ? null : g.Bias + j0, c = g.C + j0;
            switch (Math.Min(8, N - j0))
            {
                case 8: KernelNT<R8>(K, at, b, g.Bcs, g.Brs, bias, c, g.Ldc, M); break;
                case 7: KernelNT<R7>(K, at, b, g.Bcs, g.Brs, bias, c, g.Ldc, M); break;
                case 6: KernelNT<R6>(K, at, b, g.Bcs, g.Brs, bias, c, g.Ldc, M); break;
                case 5: KernelNT<R5>(K, at, b, g.Bcs, g.Brs, bias, c, g.Ldc, M); break;
                case 4: KernelNT<R4>(K, at, b, g.Bcs, g.Brs, bias, c, g.Ldc, M); break;
                case 3: KernelNT<R3>(K, at, b, g.Bcs, g.Brs, bias, c, g.Ldc, M); break;
                case 2: KernelNT<R2>(K, at, b, g.Bcs, g.Brs, bias, c, g.Ldc, M); break;
                default: KernelNT<R1>(K, at, b, g.Bcs, g.Brs, bias, c, g.Ldc, M); break;
            }
        }
    }

    /// <summary>
    /// One 8×32 tile of <c>Cᵀ</c>: <c>Cᵀ[r, i] = bias[r] + Σp B(p,r)·at[p,i]</c> for R = <typeparamref name="TR"/> columns of B
    /// (<c>B(p,r) = b[p·brs + r·bcs]</c>), stored transposed as columns <c>0..R)</c> of rows <c>0..M)</c> of C.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void KernelNT<TR>(int kc, float* at, float* b, nint bcs, nint brs, float* bias, float* c, nint ldc, int M) where TR : struct, IRows
    {
        int R = TR.N;
        Vector512<float> c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = Vector512<float>.Zero;
        if (bias != null)
        {
            c00 = c01 = Vector512.Create(bias[0]);
            if (R > 1) c10 = c11 = Vector512.Create(bias[1]);
            if (R > 2) c20 = c21 = Vector512.Create(bias[2]);
            if (R > 3) c30 = c31 = Vector512.Create(bias[3]);
            if (R > 4) c40 = c41 = Vector512.Create(bias[4]);
            if (R > 5) c50 = c51 = Vector512.Create(bias[5]);
            if (R > 6) c60 = c61 = Vector512.Create(bias[6]);
            if (R > 7) c70 = c71 = Vector512.Create(bias[7]);
        }
        nint sb = bcs * sizeof(float), step = brs * sizeof(float);
        byte* q0 = (byte*)b, q3 = q0 + 3 * sb, q6 = q0 + 6 * sb;
        float* bp = at;
        for (int p = 0; p < kc; p++)
        {
            var v0 = Vector512.Load(bp);
            var v1 = Vector512.Load(bp + 16);
            bp += SmallRows;
            var x = Vector512.Create(*(float*)q0); c00 = Vector512.FusedMultiplyAdd(x, v0, c00); c01 = Vector512.FusedMultiplyAdd(x, v1, c01);
            if (R > 1) { x = Vector512.Create(*(float*)(q0 + sb)); c10 = Vector512.FusedMultiplyAdd(x, v0, c10); c11 = Vector512.FusedMultiplyAdd(x, v1, c11); }
            if (R > 2) { x = Vector512.Create(*(float*)(q0 + 2 * sb)); c20 = Vector512.FusedMultiplyAdd(x, v0, c20); c21 = Vector512.FusedMultiplyAdd(x, v1, c21); }
            if (R > 3) { x = Vector512.Create(*(float*)q3); c30 = Vector512.FusedMultiplyAdd(x, v0, c30); c31 = Vector512.FusedMultiplyAdd(x, v1, c31); }
            if (R > 4) { x = Vector512.Create(*(float*)(q0 + 4 * sb)); c40 = Vector512.FusedMultiplyAdd(x, v0, c40); c41 = Vector512.FusedMultiplyAdd(x, v1, c41); }
            if (R > 5) { x = Vector512.Create(*(float*)(q3 + 2 * sb)); c50 = Vector512.FusedMultiplyAdd(x, v0, c50); c51 = Vector512.FusedMultiplyAdd(x, v1, c51); }
            if (R > 6) { x = Vector512.Create(*(float*)q6); c60 = Vector512.FusedMultiplyAdd(x, v0, c60); c61 = Vector512.FusedMultiplyAdd(x, v1, c61); }
            if (R > 7) { x = Vector512.Create(*(float*)(q3 + 4 * sb)); c70 = Vector512.FusedMultiplyAdd(x, v0, c70); c71 = Vector512.FusedMultiplyAdd(x, v1, c71); }
            q0 += step; q3 += step; q6 += step;
        }
        var m = Vector256.LessThan(Vector256<int>.Indices, Vector256.Create(R)).AsSingle();
        StoreT(c00, c10, c20, c30, c40, c50, c60, c70, c, ldc, M, m, R == 8);
        if (M > 16) StoreT(c01, c11, c21, c31, c41, c51, c61, c71, c + 16 * ldc, ldc, M - 16, m, R == 8);
    }

    /// <summary>
    /// Stores eight vectors <c>r0..r7</c> (row r of a tile of Cᵀ, 16 rows i of C each) transposed: row i of C gets
    /// <c>(r0[i], …, r7[i])</c>, the first <paramref name="rows"/> rows, the columns in <paramref name="m"/> (all when <paramref name="full"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreT(Vector512<float> r0, Vector512<float> r1, Vector512<float> r2, Vector512<float> r3,
        Vector512<float> r4, Vector512<float> r5, Vector512<float> r6, Vector512<float> r7, float* c, nint ldc, int rows, Vector256<float> m, bool full)
    {
        // in each 128-bit lane L: u[q] holds element 4L+q of rows 0..3, u[4+q] the same of rows 4..7
        var t0 = Avx512F.UnpackLow(r0, r1).AsDouble(); var t1 = Avx512F.UnpackHigh(r0, r1).AsDouble();
        var t2 = Avx512F.UnpackLow(r2, r3).AsDouble(); var t3 = Avx512F.UnpackHigh(r2, r3).AsDouble();
        var t4 = Avx512F.UnpackLow(r4, r5).AsDouble(); var t5 = Avx512F.UnpackHigh(r4, r5).AsDouble();
        var t6 = Avx512F.UnpackLow(r6, r7).AsDouble(); var t7 = Avx512F.UnpackHigh(r6, r7).AsDouble();
        var lo = Vector512.Create(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
        var hi = Vector512.Create(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
        Rows4(Avx512F.UnpackLow(t0, t2).AsSingle(), Avx512F.UnpackLow(t4, t6).AsSingle(), lo, hi, c, ldc, rows, 0, m, full);
        Rows4(Avx512F.UnpackHigh(t0, t2).AsSingle(), Avx512F.UnpackHigh(t4, t6).AsSingle(), lo, hi, c, ldc, rows, 1, m, full);
        Rows4(Avx512F.UnpackLow(t1, t3).AsSingle(), Avx512F.UnpackLow(t5, t7).AsSingle(), lo, hi, c, ldc, rows, 2, m, full);
        Rows4(Avx512F.UnpackHigh(t1, t3).AsSingle(), Avx512F.UnpackHigh(t5, t7).AsSingle(), lo, hi, c, ldc, rows, 3, m, full);
    }

    /// <summary>Rows q, 4+q, 8+q, 12+q of C from <paramref name="a"/> (their columns 0..3 per 128-bit lane) and <paramref name="b"/> (columns 4..7).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Rows4(Vector512<float> a, Vector512<float> b, Vector512<int> lo, Vector512<int> hi, float* c, nint ldc, int rows, int q,
        Vector256<float> m, bool full)
    {
        var x = Avx512F.PermuteVar16x32x2(a, lo, b); // rows q | 4+q
        var y = Avx512F.PermuteVar16x32x2(a, hi, b); // rows 8+q | 12+q
        Row8(x.GetLower(), c + q * ldc, q < rows, m, full);
        Row8(x.GetUpper(), c + (4 + q) * ldc, 4 + q < rows, m, full);
        Row8(y.GetLower(), c + (8 + q) * ldc, 8 + q < rows, m, full);
        Row8(y.GetUpper(), c + (12 + q) * ldc, 12 + q < rows, m, full);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Row8(Vector256<float> v, float* p, bool valid, Vector256<float> m, bool full)
    {
        if (!valid) return;
        if (full) v.Store(p); else Avx.MaskStore(p, m, v);
    }
}

public static unsafe partial class Gemm
{
    /// <summary>
    /// Whether <see cref="EdgeT"/> takes the right edge of a product: at most 4 columns past the last full panel, <c>A</c>
    /// with contiguous rows of Aᵀ (a weight gradient <c>dyᵀ·x</c>), one k-block, C overwritten (no bias or accumulate).
    /// </summary>
    private static bool EdgeTApplies(in Args g, int lastCols, int mode, bool pre) =>
        SmallN && lastCols <= 4 && g.Ars == 1 && mode == 0 && g.K <= KC && !pre && g.B != null;

    /// <summary>
    /// The right edge of at most 4 columns, computed transposed: <c>Cᵀ[r, i-vector] = Σp B(p, jc+r)·A(i-vector, p)</c>, the
    /// rows of C in 512-bit vectors of A's contiguous rows (up to 64 rows, sixteen accumulators, at a time), B broadcast,
    /// then transposed in registers as it is stored (and, with <paramref name="upd"/>, the fused SGD <c>upd = c·nlr + upd</c>).
    /// The 32-column kernel would spend a whole vector of lanes per row on these few columns, with only eight chains of
    /// multiply-adds. Each element is the same chain, from zero over p = 0..K−1, so the result is bitwise the same.
    /// </summary>
    private static void EdgeT(in Args g, int ib, int ie, int jc, int cols, float* upd, float nlr)
    {
        float* a = g.A + ib, b = g.B + jc * g.Bcs, c = g.C + ib * g.Ldc + jc, u = upd == null ? null : upd + jc;
        int rows = ie - ib;
        switch (cols)
        {
            case 4: EdgeTKernel<R4>(g.K, a, g.Acs, b, g.Brs, g.Bcs, c, g.Ldc, u, nlr, rows); break;
            case 3: EdgeTKernel<R3>(g.K, a, g.Acs, b, g.Brs, g.Bcs, c, g.Ldc, u, nlr, rows); break;
            case 2: EdgeTKernel<R2>(g.K, a, g.Acs, b, g.Brs, g.Bcs, c, g.Ldc, u, nlr, rows); break;
            default: EdgeTKernel<R1>(g.K, a, g.Acs, b, g.Brs, g.Bcs, c, g.Ldc, u, nlr, rows); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void EdgeTKernel<TC>(int kc, float* a, nint acs, float* b, nint brs, nint bcs, float* c, nint ldc, float* upd, float nlr, int rows)
        where TC : struct, IRows
    {
        int C = TC.N;
        var s = Vector128.Create(nlr);
        for (int i0 = 0; i0 < rows; i0 += 64, a += 64, c += 64 * ldc, upd = upd == null ? null : upd + 64 * ldc)
        {
            int left = rows - i0;
            var m0 = Mask(left); var m1 = Mask(left - 16); var m2 = Mask(left - 32); var m3 = Mask(left - 48);
            Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default, c10 = default, c11 = default, c12 = default, c13 = default;
            Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default, c30 = default, c31 = default, c32 = default, c33 = default;
            float* ap = a, bp = b;
            for (int p = 0; p < kc; p++, ap += acs, bp += brs)
            {
                var v0 = Avx512F.MaskLoad(ap, m0, Vector512<float>.Zero);
                var v1 = Avx512F.MaskLoad(ap + 16, m1, Vector512<float>.Zero);
                var v2 = Avx512F.MaskLoad(ap + 32, m2, Vector512<float>.Zero);
                var v3 = Avx512F.MaskLoad(ap + 48, m3, Vector512<float>.Zero);
                var x = Vector512.Create(*bp);
                c00 = Vector512.FusedMultiplyAdd(v0, x, c00); c01 = Vector512.FusedMultiplyAdd(v1, x, c01);
                c02 = Vector512.FusedMultiplyAdd(v2, x, c02); c03 = Vector512.FusedMultiplyAdd(v3, x, c03);
                if (C > 1)
                {
                    x = Vector512.Create(bp[bcs]);
                    c10 = Vector512.FusedMultiplyAdd(v0, x, c10); c11 = Vector512.FusedMultiplyAdd(v1, x, c11);
                    c12 = Vector512.FusedMultiplyAdd(v2, x, c12); c13 = Vector512.FusedMultiplyAdd(v3, x, c13);
                }
                if (C > 2)
                {
                    x = Vector512.Create(bp[2 * bcs]);
                    c20 = Vector512.FusedMultiplyAdd(v0, x, c20); c21 = Vector512.FusedMultiplyAdd(v1, x, c21);
                    c22 = Vector512.FusedMultiplyAdd(v2, x, c22); c23 = Vector512.FusedMultiplyAdd(v3, x, c23);
                }
                if (C > 3)
                {
                    x = Vector512.Create(bp[3 * bcs]);
                    c30 = Vector512.FusedMultiplyAdd(v0, x, c30); c31 = Vector512.FusedMultiplyAdd(v1, x, c31);
                    c32 = Vector512.FusedMultiplyAdd(v2, x, c32); c33 = Vector512.FusedMultiplyAdd(v3, x, c33);
                }
            }
            var cm = Vector128.LessThan(Vector128<int>.Indices, Vector128.Create(C)).AsSingle();
            StoreEdge<TC>(c00, c10, c20, c30, c, ldc, upd, s, Math.Min(16, left), cm);
            if (left > 16) StoreEdge<TC>(c01, c11, c21, c31, c + 16 * ldc, ldc, upd == null ? null : upd + 16 * ldc, s, Math.Min(16, left - 16), cm);
            if (left > 32) StoreEdge<TC>(c02, c12, c22, c32, c + 32 * ldc, ldc, upd == null ? null : upd + 32 * ldc, s, Math.Min(16, left - 32), cm);
            if (left > 48) StoreEdge<TC>(c03, c13, c23, c33, c + 48 * ldc, ldc, upd == null ? null : upd + 48 * ldc, s, Math.Min(16, left - 48), cm);
        }
    }

    /// <summary>
    /// Columns <c>r0..r3</c> (16 rows each) stored as the first <typeparamref name="TC"/> columns of <paramref name="rows"/> rows
    /// of C: a 4×16 transpose in registers, so each 128-bit lane is one row; then the SGD epilogue on the same rows.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreEdge<TC>(Vector512<float> r0, Vector512<float> r1, Vector512<float> r2, Vector512<float> r3, float* c, nint ldc,
        float* upd, Vector128<float> s, int rows, Vector128<float> cm) where TC : struct, IRows
    {
        var t0 = Avx512F.UnpackLow(r0, r1).AsDouble(); var t1 = Avx512F.UnpackHigh(r0, r1).AsDouble();
        var t2 = Avx512F.UnpackLow(r2, r3).AsDouble(); var t3 = Avx512F.UnpackHigh(r2, r3).AsDouble();
        // u[m], lane L: row 4L+m
        var u0 = Avx512F.UnpackLow(t0, t2).AsSingle(); var u1 = Avx512F.UnpackHigh(t0, t2).AsSingle();
        var u2 = Avx512F.UnpackLow(t1, t3).AsSingle(); var u3 = Avx512F.UnpackHigh(t1, t3).AsSingle();
        Quad<TC>(Avx512F.ExtractVector128(u0, 0), Avx512F.ExtractVector128(u1, 0), Avx512F.ExtractVector128(u2, 0), Avx512F.ExtractVector128(u3, 0), c, ldc, upd, s, rows, cm);
        if (rows <= 4) return;
        Quad<TC>(Avx512F.ExtractVector128(u0, 1), Avx512F.ExtractVector128(u1, 1), Avx512F.ExtractVector128(u2, 1), Avx512F.ExtractVector128(u3, 1),
            c + 4 * ldc, ldc, upd == null ? null : upd + 4 * ldc, s, rows - 4, cm);
        if (rows <= 8) return;
        Quad<TC>(Avx512F.ExtractVector128(u0, 2), Avx512F.ExtractVector128(u1, 2), Avx512F.ExtractVector128(u2, 2), Avx512F.ExtractVector128(u3, 2),
            c + 8 * ldc, ldc, upd == null ? null : upd + 8 * ldc, s, rows - 8, cm);
        if (rows <= 12) return;
        Quad<TC>(Avx512F.ExtractVector128(u0, 3), Avx512F.ExtractVector128(u1, 3), Avx512F.ExtractVector128(u2, 3), Avx512F.ExtractVector128(u3, 3),
            c + 12 * ldc, ldc, upd == null ? null : upd + 12 * ldc, s, rows - 12, cm);
    }

    /// <summary>Rows 0..3 (those below <paramref name="rows"/>) of C from one 128-bit lane of each of the four transposed vectors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Quad<TC>(Vector128<float> w0, Vector128<float> w1, Vector128<float> w2, Vector128<float> w3, float* c, nint ldc,
        float* upd, Vector128<float> s, int rows, Vector128<float> cm) where TC : struct, IRows
    {
        Row4<TC>(w0, c, upd, s, cm);
        if (rows > 1) Row4<TC>(w1, c + ldc, upd == null ? null : upd + ldc, s, cm);
        if (rows > 2) Row4<TC>(w2, c + 2 * ldc, upd == null ? null : upd + 2 * ldc, s, cm);
        if (rows > 3) Row4<TC>(w3, c + 3 * ldc, upd == null ? null : upd + 3 * ldc, s, cm);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Row4<TC>(Vector128<float> v, float* c, float* upd, Vector128<float> s, Vector128<float> cm) where TC : struct, IRows
    {
        if (TC.N == 4)
        {
            v.Store(c);
            if (upd != null) (v * s + Vector128.Load(upd)).Store(upd);
        }
        else
        {
            Avx.MaskStore(c, cm, v);
            if (upd != null) Avx.MaskStore(upd, cm, v * s + Avx.MaskLoad(upd, cm));
        }
    }
}
