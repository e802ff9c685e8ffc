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

    [LibraryImport(Lib, EntryPoint = "openblas_get_corename")]
    private static partial nint GetCoreName();

    /// <summary>The kernel family OpenBLAS picked ("SkylakeX", "Haswell", "Prescott", ...).</summary>
    public static string CoreName => Marshal.PtrToStringUTF8(GetCoreName()) ?? "?";

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);

    /// <summary>
    /// OpenBLAS 0.3.21 does not know newer Intel models (family 6 model 207 here) and falls back to its
    /// generic Prescott kernels, 4–5× slower than its AVX-512 ones. Unless OPENBLAS_CORETYPE is already set
    /// (or <paramref name="core"/> is "auto"), this asks for <paramref name="core"/> in the native environment,
    /// which OpenBLAS reads when it is loaded, so it must run before the first call into the library.
    /// </summary>
    /// <remarks>Only on machines with AVX-512 (elsewhere SkylakeX kernels would fault). The managed environment is set
    /// too, so BenchmarkDotNet's child processes inherit the choice.</remarks>
    public static void SelectCore(string core)
    {
        if (core == "auto" || !System.Runtime.Intrinsics.X86.Avx512F.IsSupported) return;
        if (Environment.GetEnvironmentVariable("OPENBLAS_CORETYPE") is not null) return;
        if (SetEnv("OPENBLAS_CORETYPE", core, 0) != 0) throw new InvalidOperationException("setenv(OPENBLAS_CORETYPE) failed.");
        Environment.SetEnvironmentVariable("OPENBLAS_CORETYPE", core);
    }

    public static bool Available
    {
        get
        {
            try { return NativeLibrary.TryLoad(Lib, out _); }
            catch { return false; }
        }
    }
}
