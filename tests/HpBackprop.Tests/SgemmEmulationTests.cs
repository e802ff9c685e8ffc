using HpBackprop.Cpu;
using HpBackprop.Cuda.Runtime;
using HpBackprop.Model;

namespace HpBackprop.Tests;

/// <summary>The emulator's SGEMM has exactly cuBLAS's column-major semantics (checked against the CPU's row-major GEMM), and so has the real cuBLAS (on a GPU).</summary>
[TestClass]
public sealed unsafe class SgemmEmulationTests
{
    [TestMethod]
    [DataRow(false, false)]
    [DataRow(true, false)]
    [DataRow(false, true)]
    [DataRow(true, true)]
    public void AllTransposesWithPaddedLeadingDimensions(bool ta, bool tb)
    {
        const int m = 7, n = 5, k = 9, pad = 3;
        var rng = new NormalRng(ta ? 1 : 2 + (tb ? 10 : 0));
        // op(A) is m×k, op(B) is k×n, column-major with padded leading dimensions
        int rowsA = ta ? k : m, colsA = ta ? m : k, rowsB = tb ? n : k, colsB = tb ? k : n;
        int lda = rowsA + pad, ldb = rowsB + pad, ldc = m + pad;
        var a = new float[lda * colsA]; var b = new float[ldb * colsB]; var c = new float[ldc * n];
        Fill(a, rng); Fill(b, rng); Fill(c, rng);
        var c0 = (float[])c.Clone();
        // opA, opB as row-major dense matrices for the CPU GEMM
        var opA = new float[m * k]; var opB = new float[k * n];
        for (int i = 0; i < m; i++) for (int p = 0; p < k; p++) opA[i * k + p] = ta ? a[p + i * lda] : a[i + p * lda];
        for (int p = 0; p < k; p++) for (int j = 0; j < n; j++) opB[p * n + j] = tb ? b[j + p * ldb] : b[p + j * ldb];
        var expected = new float[m * n];
        Gemm.NN(opA, opB, expected, m, k, n);
        const float alpha = 1.5f, beta = -0.5f;
        fixed (float* pa = a, pb = b, pc = c) ReferenceSgemm.Run(ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc);
        for (int j = 0; j < n; j++)
        {
            for (int i = 0; i < m; i++)
                Assert.AreEqual(alpha * expected[i * n + j] + beta * c0[i + j * ldc], c[i + j * ldc], 1e-5f, $"C[{i},{j}]");
            for (int i = m; i < ldc; i++) Assert.AreEqual(c0[i + j * ldc], c[i + j * ldc], $"padding C[{i},{j}] was written");
        }
    }

    [TestMethod]
    public void BetaZeroDoesNotReadC()
    {
        var a = new float[] { 1, 2 }; var b = new float[] { 3, 4 }; var c = new float[] { float.NaN };
        fixed (float* pa = a, pb = b, pc = c) ReferenceSgemm.Run(false, false, 1, 1, 2, 1f, pa, 1, pb, 2, 0f, pc, 1);
        Assert.AreEqual(11f, c[0]);
    }

    [TestMethod]
    public void ArgumentsCublasRejectsAreRejected()
    {
        var a = new float[16];
        fixed (float* p = a)
        {
            float* q = p;
            Assert.ThrowsExactly<ArgumentException>(() => ReferenceSgemm.Run(false, false, 4, 1, 1, 1, q, 3, q, 1, 0, q, 4)); // lda < m
            Assert.ThrowsExactly<ArgumentException>(() => ReferenceSgemm.Run(false, true, 1, 4, 1, 1, q, 1, q, 3, 0, q, 1));  // ldb < n for op(B)=Bᵀ
            Assert.ThrowsExactly<ArgumentException>(() => ReferenceSgemm.Run(false, false, 2, 1, 1, 1, q, 2, q, 1, 0, q, 1)); // ldc < m
        }
    }

    /// <summary>
    /// The real cublasSgemm (default math: no TF32) against the emulator's reference with every
    /// transpose, padded leading dimensions, alpha and beta: the backend's row-major GEMMs rest on
    /// these semantics being the same. Not run without a GPU.
    /// </summary>
    [TestMethod]
    [TestCategory(Devices.DriverCategory)]
    [DataRow(false, false)]
    [DataRow(true, false)]
    [DataRow(false, true)]
    [DataRow(true, true)]
    public void CublasHasTheReferenceSemantics(bool ta, bool tb)
    {
        IDeviceRuntime rt = Devices.SharedDriver;
        const int m = 37, n = 29, k = 300, pad = 5;
        var rng = new NormalRng(ta ? 3 : 4 + (tb ? 10 : 0));
        int rowsA = ta ? k : m, colsA = ta ? m : k, rowsB = tb ? n : k, colsB = tb ? k : n;
        int lda = rowsA + pad, ldb = rowsB + pad, ldc = m + pad;
        var a = new float[lda * colsA]; var b = new float[ldb * colsB]; var c = new float[ldc * n];
        Fill(a, rng); Fill(b, rng); Fill(c, rng);
        var expected = (float[])c.Clone();
        const float alpha = 0.75f, beta = -1.25f;
        fixed (float* pa = a, pb = b, pc = expected) ReferenceSgemm.Run(ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc);
        using var da = rt.Allocate(a.Length * 4L); using var db = rt.Allocate(b.Length * 4L); using var dc = rt.Allocate(c.Length * 4L);
        fixed (float* pa = a, pb = b, pc = c)
        {
            rt.CopyToDevice(da.Pointer, pa, a.Length * 4L);
            rt.CopyToDevice(db.Pointer, pb, b.Length * 4L);
            rt.CopyToDevice(dc.Pointer, pc, c.Length * 4L);
        }
        rt.Sgemm(ta, tb, m, n, k, alpha, da.Pointer, lda, db.Pointer, ldb, beta, dc.Pointer, ldc);
        var got = new float[c.Length];
        fixed (float* pg = got) rt.CopyToHost(pg, dc.Pointer, got.Length * 4L);
        double scale = expected.Max(x => Math.Abs((double)x));
        for (int j = 0; j < n; j++)
        {
            for (int i = 0; i < m; i++)
                Assert.AreEqual(expected[i + j * ldc], got[i + j * ldc], 1e-4 * scale, $"C[{i},{j}] (sums of 300 products in another order)");
            for (int i = m; i < ldc; i++) Assert.AreEqual(c[i + j * ldc], got[i + j * ldc], $"padding C[{i},{j}] was written");
        }
    }

    private static void Fill(float[] x, NormalRng rng) { for (int i = 0; i < x.Length; i++) x[i] = (float)rng.Next(); }
}
