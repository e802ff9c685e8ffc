using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static HpBackprop.Cpu.FastMath;

namespace HpBackprop.Cpu;

/// <summary>
/// Row-major single-precision matrix products: the three forms a training step needs
/// (<c>A·B</c>, <c>A·Bᵀ</c>, <c>Aᵀ·B</c>). Every method overwrites <c>c</c> unless
/// <c>accumulate</c> is set, in which case it adds to it.
/// </summary>
/// <remarks>
/// One register-blocked kernel serves all three forms: an 8×32 tile of <c>C</c> held in
/// sixteen 512-bit registers (without AVX-512: 4×2 tiles of <c>Vector&lt;float&gt;</c>, whatever its width), <c>A</c> read in
/// place through eight row pointers (its layout is a pair of strides, so <c>Aᵀ</c> costs no
/// copy), <c>B</c> read as 32-column panels — in place when its rows are contiguous and the
/// panel is full, otherwise packed (transposed for <c>Bᵀ</c>, zero-padded at the right
/// edge). Large products are blocked over <c>k</c> (KC) and rows (MC), and the whole of
/// <c>B</c>'s k-block is packed once so its panels stream from L1/L2. Work is split over
/// output tiles only, never over <c>k</c>: every element is summed in the same order whatever
/// the thread count, so results are bitwise independent of it.
/// At a small batch (at most 32 rows of C, one thread, AVX-512) a linear layer's forward and input gradient run
/// transposed instead (<c>Gemm.SmallN.cs</c>: the weight read in place, never packed), and a weight gradient's right edge of
/// at most 4 columns is computed transposed too; both keep every element's chain of multiply-adds, so the results are
/// bitwise those of the general kernel.
/// </remarks>
public static unsafe partial class Gemm
{
    internal const int MR = 8, NR = 32, KC = 256, MC = 64;

    /// <summary>Forces the kernel used without AVX-512 (the <c>Vector&lt;float&gt;</c> tiles), for tests of that path.</summary>
    internal static bool ForceVector256 { get; set; }

    /// <summary>Products below this many multiply-adds run on one thread.</summary>
    internal const long ParallelThreshold = 1L << 20;

    [ThreadStatic] private static float* t_pack;
    [ThreadStatic] private static int t_packCap;

    /// <summary><c>c[m,n] (+)= a[m,k] · b[k,n]</c>.</summary>
    public static void NN(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int m, int k, int n, bool accumulate = false)
    {
        Check(a, (long)m * k, b, (long)k * n, c, (long)m * n, m, k, n);
        fixed (float* pa = a, pb = b, pc = c)
            Run(new Args(m, n, k, pa, k, 1, pb, n, 1, pc, n, null, accumulate), null);
    }

    /// <summary><c>c[m,n] (+)= a[m,k] · b[n,k]ᵀ</c>.</summary>
    public static void NT(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int m, int k, int n, bool accumulate = false)
    {
        Check(a, (long)m * k, b, (long)n * k, c, (long)m * n, m, k, n);
        fixed (float* pa = a, pb = b, pc = c)
            Run(new Args(m, n, k, pa, k, 1, pb, 1, k, pc, n, null, accumulate), null);
    }

    /// <summary><c>c[k,n] (+)= a[m,k]ᵀ · b[m,n]</c>.</summary>
    public static void TN(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int m, int k, int n, bool accumulate = false)
    {
        Check(a, (long)m * k, b, (long)m * n, c, (long)k * n, m, k, n);
        fixed (float* pa = a, pb = b, pc = c)
            Run(new Args(k, n, m, pa, 1, k, pb, n, 1, pc, n, null, accumulate), null);
    }

    /// <summary>
    /// One product <c>C[M,N] = A·B (+ bias row) (+ C)</c>, with <c>A(i,p) = a[i·ars + p·acs]</c> and
    /// <c>B(p,j) = b[p·brs + j·bcs]</c>; <c>C</c> row-major with leading dimension <c>ldc</c>.
    /// </summary>
    /// <remarks>
    /// With <paramref name="upd"/> set (a matrix laid out like <c>C</c>), each finished tile also does the
    /// SGD update <c>upd −= lr·C</c> (as <c>C·(−lr) + upd</c>, the same arithmetic as <see cref="Sgd.Update"/>) while it is in registers.
    /// With <paramref name="packed"/> set (the whole of <c>B</c> as <see cref="PackB"/> lays it out), the panels are read from there
    /// and <c>b</c> is not touched: a B reused by many small products is packed once.
    /// </remarks>
    internal readonly struct Args(int m, int n, int k, float* a, nint ars, nint acs, float* b, nint brs, nint bcs, float* c, nint ldc, float* bias, bool accumulate,
        float* upd = null, float lr = 0f, float* packed = null)
    {
        public readonly int M = m, N = n, K = k;
        public readonly float* A = a, B = b, C = c, Bias = bias, Upd = upd, Packed = packed;
        public readonly nint Ars = ars, Acs = acs, Brs = brs, Bcs = bcs, Ldc = ldc;
        public readonly bool Accumulate = accumulate;
        public readonly float Lr = lr;
    }

    private sealed class Work : ParallelWork
    {
        public Args Args;
        public bool SplitColumns;
        public override void Run(int thread, int threads)
        {
            ref readonly Args g = ref Args;
            int panels = (g.N + NR - 1) / NR;
            if (SplitColumns)
            {
                var (p0, p1) = Share(panels, thread, threads);
                if (p1 > p0) Rect(in g, 0, g.M, p0, p1);
            }
            else
            {
                int slivers = (g.M + MR - 1) / MR;
                var (s0, s1) = Share(slivers, thread, threads);
                if (s1 > s0) Rect(in g, s0 * MR, Math.Min(g.M, s1 * MR), 0, panels);
            }
        }
    }

    [ThreadStatic] private static Work? t_work;

    /// <summary>Runs a product, on <paramref name="pool"/> when it is large enough to pay.</summary>
    internal static void Run(in Args g, WorkerPool? pool)
    {
        if (g.M <= 0 || g.N <= 0) return;
        if (g.K <= 0)
        {
            for (int i = 0; i < g.M; i++)
            {
                float* ci = g.C + i * g.Ldc;
                for (int j = 0; j < g.N; j++) ci[j] = (g.Accumulate ? ci[j] : 0f) + (g.Bias != null ? g.Bias[j] : 0f);
            }
            return;
        }
        int panels = (g.N + NR - 1) / NR;
        if (pool is null || pool.Threads == 1 || (long)g.M * g.N * g.K < ParallelThreshold)
        {
            if (SmallNTApplies(in g)) { SmallNT(in g); return; }
            Rect(in g, 0, g.M, 0, panels);
            return;
        }
        var w = t_work ??= new Work();
        w.Args = g;
        // split the wider side; columns when there are enough panels to share evenly
        w.SplitColumns = panels >= 4 * pool.Threads || panels >= (g.M + MR - 1) / MR;
        pool.Run(w);
    }

    /// <summary>The blocked algorithm on rows <c>[i0,i1)</c> and panels <c>[p0,p1)</c> of C.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rect(in Args g, int i0, int i1, int p0, int p1)
    {
        int j0 = p0 * NR, j1 = Math.Min(g.N, p1 * NR);
        int width = (p1 - p0) * NR;
        // pack B when it is not row-contiguous, or when it is reused by many row slivers
        // (also when B's rows are 2 KB+ apart and a long k is reused by several slivers: strided rows thrash L1 sets and the TLB)
        bool pre = g.Packed != null;
        bool wide = Avx512F.IsSupported && !ForceVector256;
        bool packAll = !pre && (g.Bcs != 1 || (i1 - i0) >= 4 * MC || (g.Brs >= 512 && (g.K >= 256 || !wide) && i1 - i0 > MR));
        bool hasTail = !pre && (j1 - j0) % NR != 0;
        int panelsAll = (g.N + NR - 1) / NR;
        int kcMax = Math.Min(KC, g.K);
        float* pack = packAll || hasTail ? Scratch(kcMax * (packAll ? width : NR)) : null;
        float* biasTile = stackalloc float[NR];
        // A with strided rows (Aᵀ of a row-major matrix) and a long k: pack each MC×kc block as
        // slivers [p][8] so the kernel's broadcasts walk one dense stream instead of 4 KB strides
        bool packA = g.Acs != 1 && (g.K >= 128 || !wide) && (i1 - i0) >= 2 * MR;
        float* apack = packA ? ScratchA(MC * kcMax) : null;
        for (int kb = 0; kb < g.K; kb += KC)
        {
            int kc = Math.Min(KC, g.K - kb);
            bool first = kb == 0;
            if (packAll) for (int p = p0; p < p1; p++) PackPanel(in g, kb, kc, p * NR, pack + (nint)(p - p0) * kc * NR);
            for (int ib = i0; ib < i1; ib += MC)
            {
                int ie = Math.Min(i1, ib + MC);
                if (packA) PackA(in g, ib, ie, kb, kc, apack);
                if (Avx512F.IsSupported && !ForceVector256)
                {
                    Panels512(in g, kb, kc, ib, ie, i0, p0, p1, pre, packAll, pack, packA, apack, biasTile);
                    continue;
                }
                for (int p = p0; p < p1; p++)
                {
                    int jc = p * NR, cols = Math.Min(NR, g.N - jc);
                    float* bp; nint bstride;
                    if (pre) { bp = g.Packed + (nint)kb * panelsAll * NR + (nint)p * kc * NR; bstride = NR; }
                    else if (packAll) { bp = pack + (nint)(p - p0) * kc * NR; bstride = NR; }
                    else if (cols < NR)
                    {
                        bp = pack; bstride = NR;
                        if (ib == i0) PackPanel(in g, kb, kc, jc, pack);
                    }
                    else { bp = g.B + kb * g.Brs + jc; bstride = g.Brs; }
                    int mode = first ? (g.Bias != null ? 2 : g.Accumulate ? 1 : 0) : 1;
                    if (mode == 2)
                    {
                        if (Avx512F.IsSupported)
                        {
                            Avx512F.MaskLoad(g.Bias + jc, Mask(cols), Vector512<float>.Zero).Store(biasTile);
                            Avx512F.MaskLoad(g.Bias + jc + 16, Mask(cols - 16), Vector512<float>.Zero).Store(biasTile + 16);
                        }
                        else for (int j = 0; j < NR; j++) biasTile[j] = j < cols ? g.Bias[jc + j] : 0f;
                    }
                    for (int i = ib; i < ie; i += MR)
                    {
                        int rows = Math.Min(MR, ie - i);
                        float* a = packA ? apack + (nint)(i - ib) * kc : g.A + i * g.Ars + kb * g.Acs;
                        nint ars = packA ? 1 : g.Ars, acs = packA ? MR : g.Acs;
                        float* c = g.C + i * g.Ldc + jc;
                        float* upd = g.Upd != null && kb + kc >= g.K ? g.Upd + i * g.Ldc + jc : null;
                        Kernel256(kc, a, ars, acs, rows, bp, bstride, c, g.Ldc, cols, mode, biasTile, first && g.Bias != null && g.Accumulate);
                        if (upd != null) UpdateRows(upd, c, g.Ldc, rows, cols, -g.Lr);
                    }
                }
            }
        }
    }

    /// <summary>
    /// Rows <c>[ib,ie)</c> × panels <c>[p0,p1)</c> of one k-block with AVX-512: all full panels in one kernel call
    /// per row count (8-row slivers, then the remainder), the right edge (fewer than 32 columns) in its own.
    /// </summary>
    private static void Panels512(in Args g, int kb, int kc, int ib, int ie, int i0, int p0, int p1, bool pre, bool packAll, float* pack,
        bool packA, float* apack, float* biasTile)
    {
        bool first = kb == 0;
        int panelsAll = (g.N + NR - 1) / NR;
        int lastCols = Math.Min(NR, g.N - (p1 - 1) * NR);
        int pFull = lastCols == NR ? p1 : p1 - 1;
        int mode = first ? (g.Bias != null ? 2 : g.Accumulate ? 1 : 0) : 1;
        bool addC = first && g.Bias != null && g.Accumulate;
        int all = ie - ib, full = all / MR, rem = all % MR;
        float* a = packA ? apack : g.A + ib * g.Ars + kb * g.Acs;
        nint ars = packA ? 1 : g.Ars, acs = packA ? MR : g.Acs, aStep = packA ? (nint)MR * kc : MR * g.Ars;
        float* c = g.C + ib * g.Ldc;
        float* upd = g.Upd != null && kb + kc >= g.K ? g.Upd + ib * g.Ldc : null;
        nint remRows = (nint)full * MR * g.Ldc;
        float* aRem = a + full * aStep;
        float nlr = -g.Lr;
        if (pFull > p0)
        {
            int np = pFull - p0, jc = p0 * NR;
            float* bp; nint bstride, bstep;
            if (pre) { bp = g.Packed + (nint)kb * panelsAll * NR + (nint)p0 * kc * NR; bstride = NR; bstep = (nint)kc * NR; }
            else if (packAll) { bp = pack; bstride = NR; bstep = (nint)kc * NR; }
            else { bp = g.B + kb * g.Brs + jc; bstride = g.Brs; bstep = NR; }
            float* bias = mode == 2 ? g.Bias + jc : null;
            float* u = upd == null ? null : upd + jc;
            if (full > 0) Tile512(np, full, MR, kc, a, ars, acs, aStep, bp, bstride, bstep, c + jc, g.Ldc, NR, mode, bias, addC, u, nlr);
            if (rem > 0) Tile512(np, 1, rem, kc, aRem, ars, acs, aStep, bp, bstride, bstep, c + remRows + jc, g.Ldc, NR, mode, bias, addC,
                u == null ? null : u + remRows, nlr);
        }
        if (pFull < p1 && EdgeTApplies(in g, lastCols, mode, pre))
            EdgeT(in g, ib, ie, (p1 - 1) * NR, lastCols, upd, nlr);
        else if (pFull < p1)
        {
            int p = p1 - 1, jc = p * NR;
            float* bp;
            if (pre) bp = g.Packed + (nint)kb * panelsAll * NR + (nint)p * kc * NR;
            else if (packAll) bp = pack + (nint)(p - p0) * kc * NR;
            else
            {
                bp = pack;
                if (ib == i0) PackPanel(in g, kb, kc, jc, pack);
            }
            if (mode == 2)
            {
                Avx512F.MaskLoad(g.Bias + jc, Mask(lastCols), Vector512<float>.Zero).Store(biasTile);
                Avx512F.MaskLoad(g.Bias + jc + 16, Mask(lastCols - 16), Vector512<float>.Zero).Store(biasTile + 16);
            }
            float* u = upd == null ? null : upd + jc;
            if (full > 0) Tile512(1, full, MR, kc, a, ars, acs, aStep, bp, NR, 0, c + jc, g.Ldc, lastCols, mode, biasTile, addC, u, nlr);
            if (rem > 0) Tile512(1, 1, rem, kc, aRem, ars, acs, aStep, bp, NR, 0, c + remRows + jc, g.Ldc, lastCols, mode, biasTile, addC,
                u == null ? null : u + remRows, nlr);
        }
    }

    /// <summary>Floats <see cref="PackB"/> writes for a <c>k×n</c> B: every k-block's 32-column panels, zero-padded.</summary>
    internal static long PackedSize(int k, int n) => (long)k * ((n + NR - 1) / NR) * NR;

    /// <summary>
    /// Packs all of <c>B</c> (as described by <paramref name="g"/>) the way <see cref="Rect"/> reads it: for each
    /// k-block of <see cref="KC"/>, each panel as a dense <c>kc×32</c> block. Pass the result as <c>Args.Packed</c>.
    /// </summary>
    internal static void PackB(in Args g, float* dst)
    {
        int panels = (g.N + NR - 1) / NR;
        for (int kb = 0; kb < g.K; kb += KC)
        {
            int kc = Math.Min(KC, g.K - kb);
            for (int p = 0; p < panels; p++) PackPanel(in g, kb, kc, p * NR, dst + (nint)kb * panels * NR + (nint)p * kc * NR);
        }
    }

    /// <summary>Copies <c>B[kb..kb+kc, jc..jc+32)</c> into a dense <c>kc×32</c> panel, zero past column N.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackPanel(in Args g, int kb, int kc, int jc, float* dst)
    {
        int cols = Math.Min(NR, g.N - jc);
        if (g.Bcs == 1)
        {
            for (int p = 0; p < kc; p++)
            {
                float* src = g.B + (kb + p) * g.Brs + jc;
                float* d = dst + p * NR;
                if (cols == NR)
                {
                    Vector512.Store(Vector512.Load(src), d);
                    Vector512.Store(Vector512.Load(src + 16), d + 16);
                }
                else if (Avx512F.IsSupported)
                {
                    var m0 = Mask(cols);
                    var m1 = Mask(cols - 16);
                    Avx512F.MaskLoad(src, m0, Vector512<float>.Zero).Store(d);
                    Avx512F.MaskLoad(src + 16, m1, Vector512<float>.Zero).Store(d + 16);
                }
                else
                {
                    int j = 0;
                    for (; j < cols; j++) d[j] = src[j];
                    for (; j < NR; j++) d[j] = 0f;
                }
            }
        }
        else if (g.Brs == 1 && Avx512F.IsSupported && !ForceVector256)
        {
            // Bᵀ of a row-major matrix: source column j is contiguous in p; 16×16 blocks transposed in registers
            for (int p0 = 0; p0 < kc; p0 += 16)
            {
                int pl = Math.Min(16, kc - p0);
                var mp = Mask(pl);
                for (int half = 0; half < 2; half++)
                    Transpose16(g.B + (nint)(jc + 16 * half) * g.Bcs + kb + p0, g.Bcs, cols - 16 * half, mp, pl, dst + (nint)p0 * NR + 16 * half);
            }
        }
        else if (Avx2.IsSupported && (long)g.Bcs * NR < int.MaxValue)
        {
            // B(p,j) = b[p·brs + j·bcs]: gather 8 columns of one row p at a time, write rows contiguously
            var idx = Vector256<int>.Indices * Vector256.Create((int)g.Bcs);
            float* col0 = g.B + jc * g.Bcs + kb * g.Brs;
            nint step8 = 8 * g.Bcs;
            for (int p = 0; p < kc; p++)
            {
                float* src = col0 + p * g.Brs;
                float* d = dst + p * NR;
                for (int q = 0; q < 4; q++)
                {
                    int left = cols - 8 * q;
                    Vector256<float> v;
                    if (left >= 8) v = Avx2.GatherVector256(src + q * step8, idx, 4);
                    else if (left > 0)
                        v = Avx2.GatherMaskVector256(Vector256<float>.Zero, src + q * step8, idx,
                            Vector256.LessThan(Vector256<int>.Indices, Vector256.Create(left)).AsSingle(), 4);
                    else v = Vector256<float>.Zero;
                    v.Store(d + 8 * q);
                }
            }
        }
        else
        {
            // B(p,j) = b[p·brs + j·bcs]: walk each source column (contiguous in p when brs = 1)
            for (int j = 0; j < cols; j++)
            {
                float* src = g.B + (jc + j) * g.Bcs + kb * g.Brs;
                for (int p = 0; p < kc; p++) dst[p * NR + j] = src[p * g.Brs];
            }
            if (cols < NR)
                for (int p = 0; p < kc; p++) new Span<float>(dst + p * NR + cols, NR - cols).Clear();
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Col(float* src, nint stride, int jj, int valid, Vector512<float> mask) =>
        jj < valid ? Avx512F.MaskLoad(src + jj * stride, mask, Vector512<float>.Zero) : Vector512<float>.Zero;

    /// <summary>
    /// <c>dst[e·32 + jj] = src[jj·stride + e]</c> for <c>e &lt; pl</c>, <c>jj &lt; 16</c> (zero for <c>jj ≥ valid</c>):
    /// sixteen source rows of up to 16 elements (masked by <paramref name="mp"/>) transposed in registers
    /// (unpack 32-bit, unpack 64-bit, then two 128-bit lane shuffles).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Transpose16(float* src, nint stride, int valid, Vector512<float> mp, int pl, float* dst)
    {
        if (valid <= 0)
        {
            for (int e = 0; e < pl; e++) Vector512<float>.Zero.Store(dst + e * NR);
            return;
        }
        var r0 = Col(src, stride, 0, valid, mp); var r1 = Col(src, stride, 1, valid, mp);
        var r2 = Col(src, stride, 2, valid, mp); var r3 = Col(src, stride, 3, valid, mp);
        var r4 = Col(src, stride, 4, valid, mp); var r5 = Col(src, stride, 5, valid, mp);
        var r6 = Col(src, stride, 6, valid, mp); var r7 = Col(src, stride, 7, valid, mp);
        var r8 = Col(src, stride, 8, valid, mp); var r9 = Col(src, stride, 9, valid, mp);
        var r10 = Col(src, stride, 10, valid, mp); var r11 = Col(src, stride, 11, valid, mp);
        var r12 = Col(src, stride, 12, valid, mp); var r13 = Col(src, stride, 13, valid, mp);
        var r14 = Col(src, stride, 14, valid, mp); var r15 = Col(src, stride, 15, valid, mp);
        // stage 1: pairs of rows interleaved per 32-bit element
        var t0 = Avx512F.UnpackLow(r0, r1).AsDouble(); var t1 = Avx512F.UnpackHigh(r0, r1).AsDouble();
        var t2 = Avx512F.UnpackLow(r2, r3).AsDouble(); var t3 = Avx512F.UnpackHigh(r2, r3).AsDouble();
        var t4 = Avx512F.UnpackLow(r4, r5).AsDouble(); var t5 = Avx512F.UnpackHigh(r4, r5).AsDouble();
        var t6 = Avx512F.UnpackLow(r6, r7).AsDouble(); var t7 = Avx512F.UnpackHigh(r6, r7).AsDouble();
        var t8 = Avx512F.UnpackLow(r8, r9).AsDouble(); var t9 = Avx512F.UnpackHigh(r8, r9).AsDouble();
        var t10 = Avx512F.UnpackLow(r10, r11).AsDouble(); var t11 = Avx512F.UnpackHigh(r10, r11).AsDouble();
        var t12 = Avx512F.UnpackLow(r12, r13).AsDouble(); var t13 = Avx512F.UnpackHigh(r12, r13).AsDouble();
        var t14 = Avx512F.UnpackLow(r14, r15).AsDouble(); var t15 = Avx512F.UnpackHigh(r14, r15).AsDouble();
        // stage 2: u[m + 4q] holds, in each 128-bit lane L, element 4L+m of rows 4q..4q+3
        var u0 = Avx512F.UnpackLow(t0, t2).AsSingle(); var u1 = Avx512F.UnpackHigh(t0, t2).AsSingle();
        var u2 = Avx512F.UnpackLow(t1, t3).AsSingle(); var u3 = Avx512F.UnpackHigh(t1, t3).AsSingle();
        var u4 = Avx512F.UnpackLow(t4, t6).AsSingle(); var u5 = Avx512F.UnpackHigh(t4, t6).AsSingle();
        var u6 = Avx512F.UnpackLow(t5, t7).AsSingle(); var u7 = Avx512F.UnpackHigh(t5, t7).AsSingle();
        var u8 = Avx512F.UnpackLow(t8, t10).AsSingle(); var u9 = Avx512F.UnpackHigh(t8, t10).AsSingle();
        var u10 = Avx512F.UnpackLow(t9, t11).AsSingle(); var u11 = Avx512F.UnpackHigh(t9, t11).AsSingle();
        var u12 = Avx512F.UnpackLow(t12, t14).AsSingle(); var u13 = Avx512F.UnpackHigh(t12, t14).AsSingle();
        var u14 = Avx512F.UnpackLow(t13, t15).AsSingle(); var u15 = Avx512F.UnpackHigh(t13, t15).AsSingle();
        Emit(u0, u4, u8, u12, 0, pl, dst);
        Emit(u1, u5, u9, u13, 1, pl, dst);
        Emit(u2, u6, u10, u14, 2, pl, dst);
        Emit(u3, u7, u11, u15, 3, pl, dst);
    }

    /// <summary>Stages 3–4 of <see cref="Transpose16"/> for element offset <paramref name="m"/>: writes rows m, 4+m, 8+m, 12+m.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Emit(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d, int m, int pl, float* dst)
    {
        var vlo = Avx512F.Shuffle4x128(a, b, 0x44); var vhi = Avx512F.Shuffle4x128(a, b, 0xEE);
        var wlo = Avx512F.Shuffle4x128(c, d, 0x44); var whi = Avx512F.Shuffle4x128(c, d, 0xEE);
        if (m < pl) Avx512F.Shuffle4x128(vlo, wlo, 0x88).Store(dst + m * NR);
        if (4 + m < pl) Avx512F.Shuffle4x128(vlo, wlo, 0xDD).Store(dst + (4 + m) * NR);
        if (8 + m < pl) Avx512F.Shuffle4x128(vhi, whi, 0x88).Store(dst + (8 + m) * NR);
        if (12 + m < pl) Avx512F.Shuffle4x128(vhi, whi, 0xDD).Store(dst + (12 + m) * NR);
    }

    /// <summary>Packs rows <c>[ib,ie)</c>, columns <c>[kb,kb+kc)</c> of A as slivers of 8 rows: <c>dst[s·kc·8 + p·8 + r] = A(ib+8s+r, kb+p)</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackA(in Args g, int ib, int ie, int kb, int kc, float* dst)
    {
        int rows = ie - ib;
        for (int s = 0; s * MR < rows; s++)
        {
            int r0 = ib + s * MR, valid = Math.Min(MR, ie - r0);
            float* d = dst + (nint)s * kc * MR;
            if (g.Ars == 1 && valid == MR)
            {
                float* src = g.A + r0 + kb * g.Acs;
                for (int p = 0; p < kc; p++) Vector256.Store(Vector256.Load(src + p * g.Acs), d + p * MR);
            }
            else
            {
                for (int p = 0; p < kc; p++)
                    for (int r = 0; r < MR; r++)
                        d[p * MR + r] = g.A[(r0 + Math.Min(r, valid - 1)) * g.Ars + (kb + p) * g.Acs];
            }
        }
    }

    [ThreadStatic] private static float* t_apack;
    [ThreadStatic] private static int t_apackCap;

    private static float* ScratchA(int floats)
    {
        if (t_apackCap < floats)
        {
            if (t_apack != null) NativeMemory.AlignedFree(t_apack);
            t_apack = (float*)NativeMemory.AlignedAlloc((nuint)floats * sizeof(float), 64);
            t_apackCap = floats;
        }
        return t_apack;
    }

    private static float* Scratch(int floats)
    {
        if (t_packCap < floats)
        {
            if (t_pack != null) NativeMemory.AlignedFree(t_pack);
            int cap = Math.Max(floats, 64 * 1024);
            t_pack = (float*)NativeMemory.AlignedAlloc((nuint)cap * sizeof(float), 64);
            t_packCap = cap;
        }
        return t_pack;
    }

    /// <summary>A row count known to the JIT: the kernels are specialised for each.</summary>
    internal interface IRows { static abstract int N { get; } }
    internal struct R1 : IRows { public static int N => 1; }
    internal struct R2 : IRows { public static int N => 2; }
    internal struct R3 : IRows { public static int N => 3; }
    internal struct R4 : IRows { public static int N => 4; }
    internal struct R5 : IRows { public static int N => 5; }
    internal struct R6 : IRows { public static int N => 6; }
    internal struct R7 : IRows { public static int N => 7; }
    internal struct R8 : IRows { public static int N => 8; }

    /// <summary><paramref name="panels"/> panels of <paramref name="slivers"/> tiles of <paramref name="rows"/> rows, through the kernel specialised for the rows and width.</summary>
    private static void Tile512(int panels, int slivers, int rows, int kc, float* a, nint ars, nint acs, nint aStep, float* bp, nint bstride, nint bstep,
        float* c, nint ldc, int cols, int mode, float* bias, bool addC, float* upd, float nlr)
    {
        if (cols <= 16)
        {
            switch (rows)
            {
                case 8: Kernel512x16<R8>(panels, slivers, kc, a, ars, acs, aStep, bp, bstride, bstep, c, ldc, cols, mode, bias, addC, upd, nlr); break;
                case 7: Kernel512x16<R7>(panels, slivers, kc, a, ars, acs, aStep, bp, bstride, bstep, c, ldc, cols, mode, bias, addC, upd, nlr); break;
                case 6: Kernel512x16<R6>(panels, slivers, kc, a, ars, acs, aStep, bp, bstride, bstep, c, ldc, cols, mode, bias, addC, upd, nlr); break;
                case 5: Kernel512x16<R5>(panels, slivers, kc, a, ars, acs, aStep, bp, bstride, bstep, c, ldc, cols, mode, bias, addC, upd, nlr); break;
                case 4: Kernel512x16<R4>(panels, slivers, kc, a, ars, acs, aStep, bp, bstride, bstep, c, ldc, cols, mode, bias, addC, upd, nlr); break;
                case 3: Kernel512x16<R3>(panels, slivers, kc, a, ars, acs, aStep, bp, bstride, bstep, c, ldc, cols, mode, bias, addC, upd, nlr); break;
                case 2: Kernel512x16<R2>(panels, slivers, kc, a, ars, acs, aStep, bp, bstride, bstep, c, ldc, cols, mode, bias, addC, upd, nlr); break;
                default: Kernel512x16<R1>(panels, slivers, kc, a, ars, acs, aStep, bp, bstride, bstep, c, ldc, cols, mode, bias, addC, upd, nlr); break;
            }
            return;
        }
        switch (rows)
        {
            case 8: Kernel512<R8>(panels, slivers, kc, a, ars, acs, aStep, bp, bstride, bstep, c, ldc, cols, mode, bias, addC, upd, nlr); break;
            case 7: Kernel512<R7>(panels, slivers, kc, a, ars, acs, aStep, bp, bstride, bstep, c, ldc, cols, mode, bias, addC, upd, nlr); break;
            case 6: Kernel512<R6>(panels, slivers, kc, a, ars, acs, aStep, bp, bstride, bstep, c, ldc, cols, mode, bias, addC, upd, nlr); break;
            case 5: Kernel512<R5>(panels, slivers, kc, a, ars, acs, aStep, bp, bstride, bstep, c, ldc, cols, mode, bias, addC, upd, nlr); break;
            case 4: Kernel512<R4>(panels, slivers, kc, a, ars, acs, aStep, bp, bstride, bstep, c, ldc, cols, mode, bias, addC, upd, nlr); break;
            case 3: Kernel512<R3>(panels, slivers, kc, a, ars, acs, aStep, bp, bstride, bstep, c, ldc, cols, mode, bias, addC, upd, nlr); break;
            case 2: Kernel512<R2>(panels, slivers, kc, a, ars, acs, aStep, bp, bstride, bstep, c, ldc, cols, mode, bias, addC, upd, nlr); break;
            default: Kernel512<R1>(panels, slivers, kc, a, ars, acs, aStep, bp, bstride, bstep, c, ldc, cols, mode, bias, addC, upd, nlr); break;
        }
    }

    /// <summary>
    /// <paramref name="panels"/> panels (B <paramref name="bstep"/> floats apart, C 32 columns apart) of <paramref name="slivers"/>
    /// tiles each: C[R×cols] (mode 0: =, 1: +=, 2: = bias +) A[R×kc]·Bpanel[kc×32] for each sliver of R = <typeparamref name="TR"/> ≤ 8
    /// rows (a type argument, so the JIT emits the multiply-adds of exactly R rows), the next sliver's A <paramref name="aStep"/>
    /// floats on and its C 8 rows down. cols ≤ 32; columns past <paramref name="cols"/> are masked out of the loads and stores
    /// of C. <paramref name="addC"/> adds C on top of the bias (bias with accumulate); with <paramref name="upd0"/>, also
    /// <c>upd += nlr·C</c> (the fused SGD). Looping over panels and slivers here, not in the caller, keeps the per-call
    /// cost off small products.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel512<TR>(int panels, int slivers, int kc, float* a0, nint ars, nint acs, nint aStep, float* bpanel, nint bstride, nint bstep,
        float* c0, nint ldc, int cols, int mode, float* bias, bool addC, float* upd0, float nlr) where TR : struct, IRows
    {
        int R = TR.N;
        bool fc = cols == 32;
        var m0 = Mask(cols);
        var m1 = Mask(cols - 16);
        bool loadC = mode != 0 && (mode == 1 || addC);
        var s = Vector512.Create(nlr);
        // rows 0..7 of A as three walking pointers and a byte stride (base + stride·{1,2,4} addressing), so the
        // loop keeps every pointer in a register
        nint sb = ars * sizeof(float), step = acs * sizeof(float);
        for (int pan = 0; pan < panels; pan++, bpanel += bstep, c0 += NR, bias += mode == 2 ? NR : 0, upd0 = upd0 == null ? null : upd0 + NR)
        {
        var i0 = mode == 2 ? Vector512.Load(bias) : Vector512<float>.Zero;
        var i1 = mode == 2 && NR > 16 ? Vector512.Load(bias + 16) : Vector512<float>.Zero;
        float* a = a0, c = c0, upd = upd0, bp0 = bpanel;
        for (int sl = 0; sl < slivers; sl++, a += aStep, c += 8 * ldc, upd = upd == null ? null : upd + 8 * ldc)
        {
            Vector512<float> c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
            if (loadC)
            {
                c00 = R > 0 ? i0 + Ld(c + 0 * ldc, m0, fc) : i0; c01 = R > 0 ? i1 + Ld(c + 0 * ldc + 16, m1, fc) : i1;
                c10 = R > 1 ? i0 + Ld(c + 1 * ldc, m0, fc) : i0; c11 = R > 1 ? i1 + Ld(c + 1 * ldc + 16, m1, fc) : i1;
                c20 = R > 2 ? i0 + Ld(c + 2 * ldc, m0, fc) : i0; c21 = R > 2 ? i1 + Ld(c + 2 * ldc + 16, m1, fc) : i1;
                c30 = R > 3 ? i0 + Ld(c + 3 * ldc, m0, fc) : i0; c31 = R > 3 ? i1 + Ld(c + 3 * ldc + 16, m1, fc) : i1;
                c40 = R > 4 ? i0 + Ld(c + 4 * ldc, m0, fc) : i0; c41 = R > 4 ? i1 + Ld(c + 4 * ldc + 16, m1, fc) : i1;
                c50 = R > 5 ? i0 + Ld(c + 5 * ldc, m0, fc) : i0; c51 = R > 5 ? i1 + Ld(c + 5 * ldc + 16, m1, fc) : i1;
                c60 = R > 6 ? i0 + Ld(c + 6 * ldc, m0, fc) : i0; c61 = R > 6 ? i1 + Ld(c + 6 * ldc + 16, m1, fc) : i1;
                c70 = R > 7 ? i0 + Ld(c + 7 * ldc, m0, fc) : i0; c71 = R > 7 ? i1 + Ld(c + 7 * ldc + 16, m1, fc) : i1;
            }
            else
            {
                c00 = c10 = c20 = c30 = c40 = c50 = c60 = c70 = i0;
                c01 = c11 = c21 = c31 = c41 = c51 = c61 = c71 = i1;
            }
            byte* q0 = (byte*)a, q3 = q0 + 3 * sb, q6 = q0 + 6 * sb;
            float* bp = bp0;
            for (int p = 0; p < kc; p++)
            {
                var b0 = Vector512.Load(bp);
                var b1 = Vector512.Load(bp + 16);
                bp += bstride;
                var x = Vector512.Create(*(float*)q0); c00 = Vector512.FusedMultiplyAdd(x, b0, c00); c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
                if (R > 1) { x = Vector512.Create(*(float*)(q0 + sb)); c10 = Vector512.FusedMultiplyAdd(x, b0, c10); c11 = Vector512.FusedMultiplyAdd(x, b1, c11); }
                if (R > 2) { x = Vector512.Create(*(float*)(q0 + 2 * sb)); c20 = Vector512.FusedMultiplyAdd(x, b0, c20); c21 = Vector512.FusedMultiplyAdd(x, b1, c21); }
                if (R > 3) { x = Vector512.Create(*(float*)(q3)); c30 = Vector512.FusedMultiplyAdd(x, b0, c30); c31 = Vector512.FusedMultiplyAdd(x, b1, c31); }
                if (R > 4) { x = Vector512.Create(*(float*)(q0 + 4 * sb)); c40 = Vector512.FusedMultiplyAdd(x, b0, c40); c41 = Vector512.FusedMultiplyAdd(x, b1, c41); }
                if (R > 5) { x = Vector512.Create(*(float*)(q3 + 2 * sb)); c50 = Vector512.FusedMultiplyAdd(x, b0, c50); c51 = Vector512.FusedMultiplyAdd(x, b1, c51); }
                if (R > 6) { x = Vector512.Create(*(float*)(q6)); c60 = Vector512.FusedMultiplyAdd(x, b0, c60); c61 = Vector512.FusedMultiplyAdd(x, b1, c61); }
                if (R > 7) { x = Vector512.Create(*(float*)(q3 + 4 * sb)); c70 = Vector512.FusedMultiplyAdd(x, b0, c70); c71 = Vector512.FusedMultiplyAdd(x, b1, c71); }
                q0 += step; q3 += step; q6 += step;
            }
            { St(c + 0 * ldc, c00, m0, fc); St(c + 0 * ldc + 16, c01, m1, fc); }
            if (R > 1) { St(c + 1 * ldc, c10, m0, fc); St(c + 1 * ldc + 16, c11, m1, fc); }
            if (R > 2) { St(c + 2 * ldc, c20, m0, fc); St(c + 2 * ldc + 16, c21, m1, fc); }
            if (R > 3) { St(c + 3 * ldc, c30, m0, fc); St(c + 3 * ldc + 16, c31, m1, fc); }
            if (R > 4) { St(c + 4 * ldc, c40, m0, fc); St(c + 4 * ldc + 16, c41, m1, fc); }
            if (R > 5) { St(c + 5 * ldc, c50, m0, fc); St(c + 5 * ldc + 16, c51, m1, fc); }
            if (R > 6) { St(c + 6 * ldc, c60, m0, fc); St(c + 6 * ldc + 16, c61, m1, fc); }
            if (R > 7) { St(c + 7 * ldc, c70, m0, fc); St(c + 7 * ldc + 16, c71, m1, fc); }
            if (upd != null)
            {
                Upd(upd + 0 * ldc, c00, c01, s, m0, m1, fc);
                if (R > 1) Upd(upd + 1 * ldc, c10, c11, s, m0, m1, fc);
                if (R > 2) Upd(upd + 2 * ldc, c20, c21, s, m0, m1, fc);
                if (R > 3) Upd(upd + 3 * ldc, c30, c31, s, m0, m1, fc);
                if (R > 4) Upd(upd + 4 * ldc, c40, c41, s, m0, m1, fc);
                if (R > 5) Upd(upd + 5 * ldc, c50, c51, s, m0, m1, fc);
                if (R > 6) Upd(upd + 6 * ldc, c60, c61, s, m0, m1, fc);
                if (R > 7) Upd(upd + 7 * ldc, c70, c71, s, m0, m1, fc);
            }
        }
        }
    }

    /// <summary>
    /// The right-edge panel of at most 16 columns (N mod 32 ≤ 16, e.g. H = 200): <see cref="Kernel512{TR}"/> on one
    /// vector per row, so an edge of 8 columns costs half a full tile instead of a whole one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel512x16<TR>(int panels, int slivers, int kc, float* a0, nint ars, nint acs, nint aStep, float* bpanel, nint bstride, nint bstep,
        float* c0, nint ldc, int cols, int mode, float* bias, bool addC, float* upd0, float nlr) where TR : struct, IRows
    {
        int R = TR.N;
        bool fc = cols == 16;
        var m0 = Mask(cols);
        bool loadC = mode != 0 && (mode == 1 || addC);
        var s = Vector512.Create(nlr);
        // rows 0..7 of A as three walking pointers and a byte stride (base + stride·{1,2,4} addressing), so the
        // loop keeps every pointer in a register
        nint sb = ars * sizeof(float), step = acs * sizeof(float);
        for (int pan = 0; pan < panels; pan++, bpanel += bstep, c0 += NR, bias += mode == 2 ? NR : 0, upd0 = upd0 == null ? null : upd0 + NR)
        {
        var i0 = mode == 2 ? Vector512.Load(bias) : Vector512<float>.Zero;
        var i1 = mode == 2 && NR > 16 ? Vector512.Load(bias + 16) : Vector512<float>.Zero;
        float* a = a0, c = c0, upd = upd0, bp0 = bpanel;
        for (int sl = 0; sl < slivers; sl++, a += aStep, c += 8 * ldc, upd = upd == null ? null : upd + 8 * ldc)
        {
            Vector512<float> c00, c10, c20, c30, c40, c50, c60, c70;
            if (loadC)
            {
                c00 = R > 0 ? i0 + Ld(c + 0 * ldc, m0, fc) : i0;
                c10 = R > 1 ? i0 + Ld(c + 1 * ldc, m0, fc) : i0;
                c20 = R > 2 ? i0 + Ld(c + 2 * ldc, m0, fc) : i0;
                c30 = R > 3 ? i0 + Ld(c + 3 * ldc, m0, fc) : i0;
                c40 = R > 4 ? i0 + Ld(c + 4 * ldc, m0, fc) : i0;
                c50 = R > 5 ? i0 + Ld(c + 5 * ldc, m0, fc) : i0;
                c60 = R > 6 ? i0 + Ld(c + 6 * ldc, m0, fc) : i0;
                c70 = R > 7 ? i0 + Ld(c + 7 * ldc, m0, fc) : i0;
            }
            else
            {
                c00 = c10 = c20 = c30 = c40 = c50 = c60 = c70 = i0;
            }
            byte* q0 = (byte*)a, q3 = q0 + 3 * sb, q6 = q0 + 6 * sb;
            float* bp = bp0;
            for (int p = 0; p < kc; p++)
            {
                var b0 = Vector512.Load(bp);
                bp += bstride;
                var x = Vector512.Create(*(float*)q0); c00 = Vector512.FusedMultiplyAdd(x, b0, c00);
                if (R > 1) { x = Vector512.Create(*(float*)(q0 + sb)); c10 = Vector512.FusedMultiplyAdd(x, b0, c10); }
                if (R > 2) { x = Vector512.Create(*(float*)(q0 + 2 * sb)); c20 = Vector512.FusedMultiplyAdd(x, b0, c20); }
                if (R > 3) { x = Vector512.Create(*(float*)(q3)); c30 = Vector512.FusedMultiplyAdd(x, b0, c30); }
                if (R > 4) { x = Vector512.Create(*(float*)(q0 + 4 * sb)); c40 = Vector512.FusedMultiplyAdd(x, b0, c40); }
                if (R > 5) { x = Vector512.Create(*(float*)(q3 + 2 * sb)); c50 = Vector512.FusedMultiplyAdd(x, b0, c50); }
                if (R > 6) { x = Vector512.Create(*(float*)(q6)); c60 = Vector512.FusedMultiplyAdd(x, b0, c60); }
                if (R > 7) { x = Vector512.Create(*(float*)(q3 + 4 * sb)); c70 = Vector512.FusedMultiplyAdd(x, b0, c70); }
                q0 += step; q3 += step; q6 += step;
            }
            { St(c + 0 * ldc, c00, m0, fc); }
            if (R > 1) { St(c + 1 * ldc, c10, m0, fc); }
            if (R > 2) { St(c + 2 * ldc, c20, m0, fc); }
            if (R > 3) { St(c + 3 * ldc, c30, m0, fc); }
            if (R > 4) { St(c + 4 * ldc, c40, m0, fc); }
            if (R > 5) { St(c + 5 * ldc, c50, m0, fc); }
            if (R > 6) { St(c + 6 * ldc, c60, m0, fc); }
            if (R > 7) { St(c + 7 * ldc, c70, m0, fc); }
            if (upd != null)
            {
                UpdRow(upd + 0 * ldc, c00, s, m0, fc);
                if (R > 1) UpdRow(upd + 1 * ldc, c10, s, m0, fc);
                if (R > 2) UpdRow(upd + 2 * ldc, c20, s, m0, fc);
                if (R > 3) UpdRow(upd + 3 * ldc, c30, s, m0, fc);
                if (R > 4) UpdRow(upd + 4 * ldc, c40, s, m0, fc);
                if (R > 5) UpdRow(upd + 5 * ldc, c50, s, m0, fc);
                if (R > 6) UpdRow(upd + 6 * ldc, c60, s, m0, fc);
                if (R > 7) UpdRow(upd + 7 * ldc, c70, s, m0, fc);
            }
        }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void UpdRow(float* p, Vector512<float> g, Vector512<float> nlr, Vector512<float> m, bool fc) =>
        St(p, g * nlr + Ld(p, m, fc), m, fc);

    /// <summary>One row of the fused SGD epilogue: <c>p = g·(−lr) + p</c> on 32 columns (masked).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Upd(float* p, Vector512<float> g0, Vector512<float> g1, Vector512<float> nlr, Vector512<float> m0, Vector512<float> m1, bool fc)
    {
        St(p, g0 * nlr + Ld(p, m0, fc), m0, fc);
        St(p + 16, g1 * nlr + Ld(p + 16, m1, fc), m1, fc);
    }

    /// <summary>
    /// The same tile without AVX-512, at the width the machine's vectors have (<c>Vector&lt;float&gt;</c>: 8 lanes with AVX2,
    /// 4 with SSE or ARM64 NEON): the 32 columns in groups of two vectors, four rows at a time (eight accumulators, two
    /// loads of B and four broadcasts of A per k: few enough registers for the 16 of AVX2 and SSE, so nothing spills).
    /// The multiply-add is fused where the CPU has FMA.
    /// </summary>
    private static void Kernel256(int kc, float* a, nint ars, nint acs, int rows, float* bp, nint bstride,
        float* c, nint ldc, int cols, int mode, float* bias, bool addC)
    {
        int w = Vector<float>.Count, group = 2 * w; // at most 2·16 = NR: Vector<float> is 4, 8 or (by request) 16 lanes
        float* tile = stackalloc float[4 * NR];
        for (int j0 = 0; j0 < NR && j0 < cols; j0 += group)
        {
            int gc = Math.Min(group, cols - j0);
            for (int r0 = 0; r0 < rows; r0 += 4)
                Micro4x2(kc, a + r0 * ars, ars, acs, Math.Min(4, rows - r0), bp + j0, bstride, c + r0 * ldc + j0, ldc, gc, mode, bias + j0, addC, tile);
        }
    }

    /// <summary>The plain SGD epilogue of the vector kernels: <c>upd = c·(−lr) + upd</c> over a tile (multiply, then add, as the AVX-512 kernel does).</summary>
    private static void UpdateRows(float* upd, float* c, nint ldc, int rows, int cols, float nlr)
    {
        int w = Vector<float>.Count;
        var v = new Vector<float>(nlr);
        for (int r = 0; r < rows; r++)
        {
            float* u = upd + r * ldc, cr = c + r * ldc;
            int j = 0;
            for (; j + w <= cols; j += w) VStore(u + j, VLoad(cr + j) * v + VLoad(u + j));
            for (; j < cols; j++) u[j] = cr[j] * nlr + u[j];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<float> VLoad(float* p) => Unsafe.ReadUnaligned<Vector<float>>(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void VStore(float* p, Vector<float> v) => Unsafe.WriteUnaligned(p, v);

    /// <summary>Up to 4 rows × 2 vectors of C (<paramref name="cols"/> of them valid; a cut group goes through <paramref name="tile"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Micro4x2(int kc, float* a, nint ars, nint acs, int rows, float* b, nint bstride, float* c, nint ldc, int cols, int mode,
        float* bias, bool addC, float* tile)
    {
        int w = Vector<float>.Count, group = 2 * w;
        bool full = cols == group;
        float* c0 = full ? c : tile, c1 = full ? c + ldc : tile + group, c2 = full ? c + 2 * ldc : tile + 2 * group, c3 = full ? c + 3 * ldc : tile + 3 * group;
        bool load = mode == 1 || addC;
        if (!full)
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < group; j++) tile[r * group + j] = j < cols && load ? c[r * ldc + j] : 0f;
        Vector<float> s00, s01, s10, s11, s20, s21, s30, s31;
        s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = Vector<float>.Zero;
        if (load)
        {
            s00 = VLoad(c0); s01 = VLoad(c0 + w);
            if (rows > 1) { s10 = VLoad(c1); s11 = VLoad(c1 + w); }
            if (rows > 2) { s20 = VLoad(c2); s21 = VLoad(c2 + w); }
            if (rows > 3) { s30 = VLoad(c3); s31 = VLoad(c3 + w); }
        }
        if (mode == 2)
        {
            Vector<float> b0 = VLoad(bias), b1 = VLoad(bias + w);
            s00 += b0; s01 += b1; s10 += b0; s11 += b1; s20 += b0; s21 += b1; s30 += b0; s31 += b1;
        }
        // rows past the last valid one read row 0 again (their sums are never stored)
        float* a0 = a, a1 = a + (rows > 1 ? ars : 0), a2 = a + (rows > 2 ? 2 * ars : 0), a3 = a + (rows > 3 ? 3 * ars : 0);
        for (int p = 0; p < kc; p++)
        {
            Vector<float> v0 = VLoad(b), v1 = VLoad(b + w);
            nint o = p * acs;
            var x = new Vector<float>(a0[o]);
            s00 = Vector.MultiplyAddEstimate(x, v0, s00); s01 = Vector.MultiplyAddEstimate(x, v1, s01);
            x = new Vector<float>(a1[o]);
            s10 = Vector.MultiplyAddEstimate(x, v0, s10); s11 = Vector.MultiplyAddEstimate(x, v1, s11);
            x = new Vector<float>(a2[o]);
            s20 = Vector.MultiplyAddEstimate(x, v0, s20); s21 = Vector.MultiplyAddEstimate(x, v1, s21);
            x = new Vector<float>(a3[o]);
            s30 = Vector.MultiplyAddEstimate(x, v0, s30); s31 = Vector.MultiplyAddEstimate(x, v1, s31);
            b += bstride;
        }
        VStore(c0, s00); VStore(c0 + w, s01);
        if (rows > 1) { VStore(c1, s10); VStore(c1 + w, s11); }
        if (rows > 2) { VStore(c2, s20); VStore(c2 + w, s21); }
        if (rows > 3) { VStore(c3, s30); VStore(c3 + w, s31); }
        if (!full)
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < cols; j++) c[r * ldc + j] = tile[r * group + j];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Axpy(float alpha, ReadOnlySpan<float> x, Span<float> y)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && x.Length >= Vector<float>.Count)
        {
            var va = new Vector<float>(alpha);
            ref float rx = ref MemoryMarshal.GetReference(x);
            ref float ry = ref MemoryMarshal.GetReference(y);
            for (; i <= x.Length - Vector<float>.Count; i += Vector<float>.Count)
            {
                var vy = Vector.LoadUnsafe(ref ry, (nuint)i);
                (vy + va * Vector.LoadUnsafe(ref rx, (nuint)i)).StoreUnsafe(ref ry, (nuint)i);
            }
        }
        for (; i < x.Length; i++) y[i] += alpha * x[i];
    }

    private static void Check(ReadOnlySpan<float> a, long la, ReadOnlySpan<float> b, long lb, ReadOnlySpan<float> c, long lc, int m, int k, int n)
    {
        KernelArgs.Size(m, nameof(m)); KernelArgs.Size(k, nameof(k)); KernelArgs.Size(n, nameof(n));
        if (a.Length < la) throw new ArgumentException($"A has {a.Length} elements, needs {la}.", nameof(a));
        if (b.Length < lb) throw new ArgumentException($"B has {b.Length} elements, needs {lb}.", nameof(b));
        if (c.Length < lc) throw new ArgumentException($"C has {c.Length} elements, needs {lc}.", nameof(c));
    }
}
