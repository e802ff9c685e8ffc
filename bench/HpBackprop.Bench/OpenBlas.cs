using System.Runtime.InteropServices;

namespace HpBackprop.Bench;

/// <summary>OpenBLAS (Debian's libopenblas0-openmp) through its CBLAS interface, for comparison only.</summary>
public static unsafe partial class OpenBlas
{
    private const string Lib = "libopenblas.so.0";
    public const int RowMajor = 101, NoTrans = 111, Trans = 112;

    [LibraryImport(Lib, EntryPoint = "cblas_sgemm")]
    public static partial void Sgemm(int order, int transA, int transB, int m, int n, int k, float alpha, float* a, int lda,
        float* b, int ldb, float beta, float* c, int ldc);

    [LibraryImport(Lib, EntryPoint = "openblas_set_num_threads")]
    public static partial void SetNumThreads(int threads);

    public static bool Available
    {
        get
        {
            try { return NativeLibrary.TryLoad(Lib, out _); }
            catch { return false; }
        }
    }
}
