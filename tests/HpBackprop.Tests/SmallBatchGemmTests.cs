using System.Runtime.Intrinsics.X86;
using HpBackprop.Cpu;

namespace HpBackprop.Tests;

/// <summary>
/// The small-batch product (<c>Gemm.SmallNT</c>: at most 32 rows of C, computed as <c>Cᵀ = B·Aᵀ</c> and transposed in
/// registers as it is stored): against a double-precision reference within the float32 error bound, and bitwise against
/// the general kernel (the same chain of fused multiply-adds per element), at every row count 1..32, odd K and N, both
/// layouts of B (a linear's forward <c>x·Wᵀ</c> and its input gradient <c>dy·W</c>), with and without bias, with padded
/// rows of C whose padding must stay untouched. And the transposed right edge of a weight gradient (<c>Gemm.EdgeT</c>:
/// <c>Aᵀ·B</c> with N mod 32 ≤ 4, with and without the fused SGD), the same two ways, across the 64-row blocks.
/// </summary>
[TestClass]
[DoNotParallelize]
public sealed class SmallBatchGemmTests
{
    private static float[] Random(int count, int seed)
    {
        var r = new Random(seed);
        var a = new float[count];
        for (int i = 0; i < a.Length; i++) a[i] = (float)(r.NextDouble() * 2 - 1);
        return a;
    }

    public static IEnumerable<object[]> Shapes()
    {
        int[] ms = [1, 2, 7, 8, 15, 16, 17, 24, 31, 32];
        (int K, int N)[] kn = [(1, 1), (7, 3), (16, 8), (17, 9), (30, 100), (100, 27), (100, 100), (33, 129), (300, 17), (513, 40)];
        int s = 0;
        foreach (int m in ms)
            foreach (var (k, n) in kn)
            {
                s++;
                // both B layouts and bias on/off, rotated through the shapes so every combination meets many shapes
                yield return [m, k, n, s % 2 == 0, s % 3 != 0];
            }
    }

    /// <summary>
    /// <c>C = A·B (+ bias)</c> with <c>B(p,j) = b[p·brs + j·bcs]</c> (<c>transB</c>: <c>b</c> is <c>[N,K]</c>), C with leading
    /// dimension <c>N + 5</c> and 3 spare rows, all of the padding filled with a sentinel.
    /// </summary>
    private static unsafe float[] Product(float[] a, float[] b, float[]? bias, int m, int k, int n, bool transB, bool small)
    {
        int ldc = n + 5;
        var c = new float[(m + 3) * ldc];
        Array.Fill(c, 12345f);
        Gemm.SmallN = small;
        try
        {
            fixed (float* pa = a, pb = b, pbias = bias, pc = c)
            {
                nint brs = transB ? 1 : n, bcs = transB ? k : 1;
                Gemm.Run(new Gemm.Args(m, n, k, pa, k, 1, pb, brs, bcs, pc, ldc, bias == null ? null : pbias, false), null);
            }
        }
        finally { Gemm.SmallN = true; }
        return c;
    }

    [TestMethod]
    [DynamicData(nameof(Shapes))]
    public void SmallBatchProductMatchesTheDoubleReference(int m, int k, int n, bool transB, bool withBias)
    {
        if (!Avx512F.IsSupported) Assert.Inconclusive("the small-batch kernel needs AVX-512 (the general kernel runs without it)");
        var a = Random(m * k, 1 + m);
        var b = Random(k * n, 2 + k);
        var bias = withBias ? Random(n, 3 + n) : null;
        var got = Product(a, b, bias, m, k, n, transB, small: true);
        int ldc = n + 5;
        // float32 error bound of a chain of K fused multiply-adds: |ĉ − c| ≤ γ·(|bias| + Σp |a·b|) with γ = K·u/(1 − K·u),
        // u = 2⁻²⁴; over these cases the worst measured error is 0.85 of it (2026-12-07; printed per case below), and a wrong
        // index is off by O(1). The bitwise comparison with the general kernel (SmallBatchProductIsBitwiseTheGeneralKernel) is the sharper check
        double u = Math.Pow(2, -24), gamma = k * u / (1 - k * u);
        double worst = 0;
        for (int i = 0; i < m + 3; i++)
            for (int j = 0; j < ldc; j++)
            {
                float v = got[i * ldc + j];
                if (i >= m || j >= n) { Assert.AreEqual(12345f, v, $"padding at row {i} column {j} was written"); continue; }
                double s = bias?[j] ?? 0, abs = Math.Abs(s);
                for (int p = 0; p < k; p++)
                {
                    double x = a[i * k + p], y = transB ? b[j * k + p] : b[p * n + j];
                    s += x * y; abs += Math.Abs(x * y);
                }
                double err = Math.Abs(v - s), tol = gamma * abs + 1e-30;
                worst = Math.Max(worst, err / tol);
                Assert.IsTrue(err <= tol, $"{m}x{k}x{n} transB={transB} bias={withBias}: C[{i},{j}] = {v}, reference {s}, error {err} > bound {tol}");
            }
        Console.WriteLine($"{m}x{k}x{n}: worst error / bound = {worst:F3}");
    }

    [TestMethod]
    [DynamicData(nameof(Shapes))]
    public void SmallBatchProductIsBitwiseTheGeneralKernel(int m, int k, int n, bool transB, bool withBias)
    {
        var a = Random(m * k, 4 + m);
        var b = Random(k * n, 5 + k);
        var bias = withBias ? Random(n, 6 + n) : null;
        CollectionAssert.AreEqual(Product(a, b, bias, m, k, n, transB, small: false), Product(a, b, bias, m, k, n, transB, small: true),
            $"{m}x{k}x{n} transB={transB} bias={withBias}");
    }

    public static IEnumerable<object[]> EdgeShapes()
    {
        // M rows (A = Aᵀ of a row-major [K,M], as a weight gradient dyᵀ·x reads dy), K, N with N mod 32 in 1..4 (and 0, 5 as controls)
        int[] ms = [1, 5, 16, 17, 27, 63, 64, 65, 100, 130];
        (int K, int N)[] kn = [(1, 1), (32, 4), (7, 3), (32, 100), (33, 98), (17, 65), (256, 36), (300, 100), (32, 96), (32, 37)];
        int s = 0;
        foreach (int m in ms)
            foreach (var (k, n) in kn)
                yield return [m, k, n, ++s % 2 == 0];
    }

    /// <summary>
    /// <c>C = Aᵀ·B</c> (A is <c>[K,M]</c>, B <c>[K,N]</c>) through <c>Gemm.Run</c>, with the fused SGD <c>W −= lr·C</c> when
    /// <paramref name="sgd"/>; C and W with leading dimension <c>N + 3</c>, padding filled with a sentinel.
    /// </summary>
    private static unsafe (float[] C, float[] W) WeightGradient(float[] a, float[] b, float[] w0, int m, int k, int n, bool sgd, bool small)
    {
        int ldc = n + 3;
        var c = new float[m * ldc];
        var w = (float[])w0.Clone();
        Array.Fill(c, 12345f);
        Gemm.SmallN = small;
        try
        {
            fixed (float* pa = a, pb = b, pc = c, pw = w)
                Gemm.Run(new Gemm.Args(m, n, k, pa, 1, m, pb, n, 1, pc, ldc, null, false, sgd ? pw : null, sgd ? 0.25f : 0f), null);
        }
        finally { Gemm.SmallN = true; }
        return (c, w);
    }

    [TestMethod]
    [DynamicData(nameof(EdgeShapes))]
    public void WeightGradientEdgeMatchesTheDoubleReference(int m, int k, int n, bool sgd)
    {
        var a = Random(k * m, 7 + m);
        var b = Random(k * n, 8 + k);
        int ldc = n + 3;
        var w0 = Random(m * ldc, 9 + n);
        var (c, w) = WeightGradient(a, b, w0, m, k, n, sgd, small: true);
        double u = Math.Pow(2, -24), gamma = k * u / (1 - k * u);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < ldc; j++)
            {
                if (j >= n)
                {
                    Assert.AreEqual(12345f, c[i * ldc + j], $"padding of C at row {i} column {j} was written");
                    Assert.AreEqual(w0[i * ldc + j], w[i * ldc + j], $"padding of W at row {i} column {j} was written");
                    continue;
                }
                double s = 0, abs = 0;
                for (int p = 0; p < k; p++) { double x = (double)a[p * m + i] * b[p * n + j]; s += x; abs += Math.Abs(x); }
                double got = c[i * ldc + j], tol = gamma * abs + 1e-30;
                Assert.IsTrue(Math.Abs(got - s) <= tol, $"{m}x{k}x{n}: C[{i},{j}] = {got}, reference {s}, error {Math.Abs(got - s)} > bound {tol}");
                // the update is w − 0.25·c in float (multiply, then add)
                float want = sgd ? c[i * ldc + j] * -0.25f + w0[i * ldc + j] : w0[i * ldc + j];
                Assert.AreEqual(want, w[i * ldc + j], $"{m}x{k}x{n}: W[{i},{j}] after the fused SGD");
            }
    }

    [TestMethod]
    [DynamicData(nameof(EdgeShapes))]
    public void WeightGradientEdgeIsBitwiseTheGeneralKernel(int m, int k, int n, bool sgd)
    {
        var a = Random(k * m, 10 + m);
        var b = Random(k * n, 11 + k);
        var w0 = Random(m * (n + 3), 12 + n);
        var (c1, w1) = WeightGradient(a, b, w0, m, k, n, sgd, small: false);
        var (c2, w2) = WeightGradient(a, b, w0, m, k, n, sgd, small: true);
        CollectionAssert.AreEqual(c1, c2, $"C {m}x{k}x{n} sgd={sgd}");
        CollectionAssert.AreEqual(w1, w2, $"W {m}x{k}x{n} sgd={sgd}");
    }
}
