using System.Reflection;
using System.Runtime.InteropServices;

namespace HpBackprop.Cuda.Native;

/// <summary>
/// The cuBLAS entry points the backend uses. The library is found as <c>libcublas.so.12</c>,
/// falling back to <c>libcublas.so.11</c> (see <see cref="Resolve"/>).
/// </summary>
internal static unsafe partial class Cublas
{
    private const string Lib = "hpbackprop-cublas"; // resolved by Resolve()

    public const int OpN = 0, OpT = 1;
    public const int DefaultMath = 0, Tf32TensorOpMath = 3;

    /// <summary>The cuBLAS file names tried, newest first.</summary>
    public static readonly string[] Candidates = ["libcublas.so.12", "libcublas.so.11"];

    static Cublas() => NativeLibrary.SetDllImportResolver(typeof(Cublas).Assembly, Resolve);

    /// <summary>Maps the logical library name to the first cuBLAS that loads.</summary>
    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (name != Lib) return 0;
        foreach (string c in Candidates) if (NativeLibrary.TryLoad(c, out var h)) return h;
        throw new DllNotFoundException($"cuBLAS not found: tried {string.Join(", ", Candidates)}. Install the CUDA toolkit's cuBLAS (libcublas12 or libcublas11).");
    }

    [LibraryImport(Lib, EntryPoint = "cublasCreate_v2")] public static partial int cublasCreate(nint* handle);
    [LibraryImport(Lib, EntryPoint = "cublasDestroy_v2")] public static partial int cublasDestroy(nint handle);
    [LibraryImport(Lib, EntryPoint = "cublasGetVersion_v2")] public static partial int cublasGetVersion(nint handle, int* version);
    [LibraryImport(Lib, EntryPoint = "cublasSetStream_v2")] public static partial int cublasSetStream(nint handle, nint stream);
    [LibraryImport(Lib, EntryPoint = "cublasSetMathMode")] public static partial int cublasSetMathMode(nint handle, int mode);
    [LibraryImport(Lib, EntryPoint = "cublasSgemm_v2")]
    public static partial int cublasSgemm(nint handle, int transa, int transb, int m, int n, int k,
        float* alpha, ulong a, int lda, ulong b, int ldb, float* beta, ulong c, int ldc);
    [LibraryImport(Lib, EntryPoint = "cublasGetStatusName")] public static partial byte* cublasGetStatusName(int status);

    /// <summary>Throws <see cref="CudaException"/> naming <paramref name="call"/> unless the status is success.</summary>
    public static void Check(int status, string call)
    {
        if (status == 0) return;
        string name;
        try { name = Marshal.PtrToStringUTF8((nint)cublasGetStatusName(status)) ?? "CUBLAS_STATUS_" + status; }
        catch (EntryPointNotFoundException) { name = "CUBLAS_STATUS_" + status; }
        throw new CudaException(call, status, name);
    }
}
