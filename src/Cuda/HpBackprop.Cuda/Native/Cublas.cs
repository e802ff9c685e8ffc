using System.Reflection;
using System.Runtime.InteropServices;

namespace HpBackprop.Cuda.Native;

/// <summary>
/// The cuBLAS entry points the backend uses, bound to whichever cuBLAS <see cref="Load"/> found:
/// <c>libcublas.so.13</c> (CUDA 13), <c>.so.12</c> or <c>.so.11</c>, on the loader's path or in
/// the places a CUDA toolkit or PyTorch puts it (see <see cref="SearchOrder"/>).
/// </summary>
internal static unsafe partial class Cublas
{
    private const string Lib = "hpbackprop-cublas"; // mapped to the loaded cuBLAS by Resolve()

    public const int OpN = 0, OpT = 1;
    public const int DefaultMath = 0, Tf32TensorOpMath = 3;

    /// <summary>The cuBLAS file names tried, newest first.</summary>
    public static readonly string[] SoNames = ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11"];

    /// <summary>Environment variable: directories or files (':'-separated) searched before anything else.</summary>
    public const string PathVariable = "HPB_CUBLAS_PATH";

    private static readonly Lock Gate = new();
    private static nint _handle;

    static Cublas() => NativeLibrary.SetDllImportResolver(typeof(Cublas).Assembly, Resolve);

    /// <summary>Where the loaded cuBLAS came from (a path, or a file name the loader resolved); null before <see cref="Load"/>.</summary>
    public static string? LoadedFrom { get; private set; }

    /// <summary>
    /// Loads cuBLAS once (later calls return at once). Call it before creating anything on the
    /// device, so that a missing cuBLAS fails before a context exists.
    /// </summary>
    /// <exception cref="CudaUnavailableException">No cuBLAS in any place of <see cref="SearchOrder"/>; the message lists them.</exception>
    public static void Load()
    {
        lock (Gate)
        {
            if (_handle != 0) return;
            var order = SearchOrder(Environment.GetEnvironmentVariable);
            (_handle, LoadedFrom) = LoadFirst(order);
        }
    }

    /// <summary>
    /// The candidates in the order they are tried: the entries of <c>HPB_CUBLAS_PATH</c> (a file
    /// as is, a directory with each of <see cref="SoNames"/>); the bare file names (LD_LIBRARY_PATH,
    /// the ldconfig cache); then existing files in <c>$CUDA_HOME</c>, <c>$CUDA_PATH</c>,
    /// <c>/usr/local/cuda</c>, <c>/usr/local/cuda-*</c> (newest first) — <c>lib64</c>,
    /// <c>targets/x86_64-linux/lib</c> — and in PyTorch's wheels (<c>nvidia/cu13/lib</c>,
    /// <c>nvidia/cublas/lib</c> under the usual site-packages). Within a place, newer cuBLAS first.
    /// </summary>
    internal static IReadOnlyList<string> SearchOrder(Func<string, string?> getenv)
    {
        var o = new List<string>();
        void Add(string c) { if (!o.Contains(c)) o.Add(c); }
        foreach (string entry in (getenv(PathVariable) ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (Directory.Exists(entry)) foreach (string so in SoNames) Add(Path.Combine(entry, so));
            else Add(entry);
        }
        foreach (string so in SoNames) Add(so);
        foreach (string dir in ToolkitAndWheelDirectories(getenv))
            foreach (string so in SoNames)
                if (File.Exists(Path.Combine(dir, so))) Add(Path.Combine(dir, so));
        return o;
    }

    private static IEnumerable<string> ToolkitAndWheelDirectories(Func<string, string?> getenv)
    {
        var roots = new List<string>();
        foreach (string v in new[] { "CUDA_HOME", "CUDA_PATH", "CUDA_ROOT" })
            if (getenv(v) is { Length: > 0 } r) roots.Add(r);
        roots.Add("/usr/local/cuda");
        roots.AddRange(Glob("/usr/local", "cuda-*").OrderByDescending(d => d, VersionOrder.Instance));
        foreach (string r in roots)
        {
            yield return Path.Combine(r, "lib64");
            yield return Path.Combine(r, "targets", "x86_64-linux", "lib");
        }
        var sites = new List<string>();
        foreach (string v in new[] { "VIRTUAL_ENV", "CONDA_PREFIX" })
            if (getenv(v) is { Length: > 0 } p) sites.AddRange(Glob(Path.Combine(p, "lib"), "python3*").Select(d => Path.Combine(d, "site-packages")));
        if (getenv("HOME") is { Length: > 0 } home) sites.AddRange(Glob(Path.Combine(home, ".local", "lib"), "python3*").Select(d => Path.Combine(d, "site-packages")));
        foreach (string prefix in new[] { "/usr/local/lib", "/usr/lib", "/opt/conda/lib" })
            foreach (string py in Glob(prefix, "python3*"))
            {
                sites.Add(Path.Combine(py, "dist-packages"));
                sites.Add(Path.Combine(py, "site-packages"));
            }
        sites.Add("/usr/lib/python3/dist-packages");
        foreach (string s in sites)
        {
            yield return Path.Combine(s, "nvidia", "cu13", "lib");
            yield return Path.Combine(s, "nvidia", "cublas", "lib");
        }
    }

    private static IEnumerable<string> Glob(string dir, string pattern)
    {
        try { return Directory.Exists(dir) ? Directory.GetDirectories(dir, pattern) : []; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return []; }
    }

    /// <summary>Loads the first candidate that loads; a path's sibling <c>libcublasLt</c> is loaded first, so that the loader finds it.</summary>
    /// <exception cref="CudaUnavailableException">None loads; the message names every candidate and what to do.</exception>
    internal static (nint Handle, string From) LoadFirst(IReadOnlyList<string> candidates)
    {
        foreach (string c in candidates)
        {
            if (Path.IsPathRooted(c))
            {
                if (!File.Exists(c)) continue;
                string lt = Path.Combine(Path.GetDirectoryName(c)!, Path.GetFileName(c).Replace("libcublas.", "libcublasLt.", StringComparison.Ordinal));
                if (lt != c && File.Exists(lt)) NativeLibrary.TryLoad(lt, out _); // stays loaded with cuBLAS
            }
            if (NativeLibrary.TryLoad(c, out nint h)) return (h, c);
        }
        throw new CudaUnavailableException(
            $"cuBLAS not found: tried {string.Join(", ", candidates)}. Set {PathVariable} to the directory that holds libcublas.so.13 "
            + "(the CUDA toolkit's lib64, or PyTorch's site-packages/nvidia/cu13/lib), add it to LD_LIBRARY_PATH, or train on the CPU (Network.Create).");
    }

    /// <summary>Maps the logical library name to the cuBLAS <see cref="Load"/> found.</summary>
    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (name != Lib) return 0;
        Load();
        return _handle;
    }

    [LibraryImport(Lib, EntryPoint = "cublasCreate_v2")] public static partial int cublasCreate(nint* handle);
    [LibraryImport(Lib, EntryPoint = "cublasDestroy_v2")] public static partial int cublasDestroy(nint handle);
    [LibraryImport(Lib, EntryPoint = "cublasGetVersion_v2")] public static partial int cublasGetVersion(nint handle, int* version);
    [LibraryImport(Lib, EntryPoint = "cublasSetStream_v2")] public static partial int cublasSetStream(nint handle, nint stream);
    [LibraryImport(Lib, EntryPoint = "cublasSetMathMode")] public static partial int cublasSetMathMode(nint handle, int mode);
    [LibraryImport(Lib, EntryPoint = "cublasSetWorkspace_v2")] public static partial int cublasSetWorkspace(nint handle, ulong workspace, nuint bytes);
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

    /// <summary>Orders "cuda-13.0" after "cuda-12.4" and "cuda-12.10" after "cuda-12.9" (by the numbers in the name).</summary>
    private sealed class VersionOrder : IComparer<string>
    {
        public static readonly VersionOrder Instance = new();

        public int Compare(string? a, string? b)
        {
            static Version V(string? s) => Version.TryParse(Path.GetFileName(s ?? "").Replace("cuda-", "", StringComparison.Ordinal), out var v) ? v : new Version(0, 0);
            int c = V(a).CompareTo(V(b));
            return c != 0 ? c : string.CompareOrdinal(a, b);
        }
    }
}
