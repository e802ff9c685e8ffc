using System.Runtime.InteropServices;
using System.Text;

namespace HpBackprop.Cuda.Runtime;

/// <summary>
/// The device runtime backed by the host emulator: the unchanged <c>native/kernels/*.cu</c>
/// compiled by the host C++ compiler into <c>libhpbackprop_kernels_emu.so</c> (built by
/// <c>dotnet build</c>), with real thread-block semantics, plus a reference column-major SGEMM
/// with cuBLAS's argument semantics. "Device" memory is host memory.
/// </summary>
public sealed unsafe partial class EmulatorRuntime : IDeviceRuntime
{
    /// <summary>The emulator library's file name.</summary>
    public const string LibraryName = "libhpbackprop_kernels_emu.so";

    private readonly nint _lib;
    private readonly delegate* unmanaged<byte*, uint, uint, uint, uint, uint, uint, uint, void**, int> _launch;
    private readonly delegate* unmanaged<byte*> _lastError;
    private readonly List<nint> _names = [];
    private readonly Dictionary<string, int[]> _argSizes = new(StringComparer.Ordinal);
    private readonly Dictionary<nint, long> _pinned = [];
    private readonly CaptureState _capture = new();
    private List<EmulatedGraph.Node>? _recording;
    private bool _disposed;

    /// <summary>
    /// Loads the emulator library from the application directory, the native assets of the
    /// HpBackprop.Cuda package (<c>runtimes/linux-x64/native/</c>, through the application's
    /// dependency manifest) or the loader's search path.
    /// </summary>
    /// <exception cref="CudaUnavailableException">The library is not there: the package carries it for linux-x64 only, and a build from source makes it only where cmake and a C++20 compiler are installed.</exception>
    public EmulatorRuntime()
    {
        string local = Path.Combine(AppContext.BaseDirectory, LibraryName);
        if (!NativeLibrary.TryLoad(local, out _lib)
            && !NativeLibrary.TryLoad(LibraryName, typeof(EmulatorRuntime).Assembly, null, out _lib))
            throw new CudaUnavailableException(WhyMissing);
        _launch = (delegate* unmanaged<byte*, uint, uint, uint, uint, uint, uint, uint, void**, int>)NativeLibrary.GetExport(_lib, "hpb_emu_launch");
        _lastError = (delegate* unmanaged<byte*>)NativeLibrary.GetExport(_lib, "hpb_emu_last_error");
        var count = (delegate* unmanaged<int>)NativeLibrary.GetExport(_lib, "hpb_emu_kernel_count");
        var name = (delegate* unmanaged<int, byte*>)NativeLibrary.GetExport(_lib, "hpb_emu_kernel_name");
        var argSizes = (delegate* unmanaged<int, int*, int, int>)NativeLibrary.GetExport(_lib, "hpb_emu_kernel_arg_sizes");
        var names = new List<string>();
        int* sizes = stackalloc int[64];
        for (int i = 0; i < count(); i++)
        {
            string n = Marshal.PtrToStringUTF8((nint)name(i))!;
            names.Add(n);
            int arity = argSizes(i, sizes, 64);
            _argSizes[n] = new ReadOnlySpan<int>(sizes, Math.Clamp(arity, 0, 64)).ToArray();
        }
        KernelNames = names;
    }

    /// <summary>Why the library could not be loaded: the message of the exception the constructor throws.</summary>
    internal static string WhyMissing =>
        $"the kernel emulator {LibraryName} was not found beside the application ({AppContext.BaseDirectory}) nor among its native assets: "
        + "the HpBackprop.Cuda package carries it for linux-x64 only, and a build from source makes it only where cmake and a C++20 compiler are installed.";

    /// <inheritdoc />
    public string Name => "cuda-emulator";

    /// <summary>Every kernel the emulator library contains.</summary>
    public IReadOnlyList<string> KernelNames { get; }

    /// <inheritdoc />
    public DeviceMemory Allocate(long bytes)
    {
        _capture.Forbid("Allocate (cuMemAlloc)", Name);
        return new HostMemory(bytes);
    }

    /// <inheritdoc />
    public PinnedMemory AllocatePinned(long bytes)
    {
        _capture.Forbid("AllocatePinned (cuMemAllocHost)", Name);
        var m = new HostPinnedMemory(bytes, p => { lock (_pinned) _pinned.Remove(p); });
        lock (_pinned) _pinned[(nint)m.Pointer] = bytes;
        return m;
    }

    /// <inheritdoc />
    public void CopyToDevice(ulong dst, void* src, long bytes)
    {
        _capture.Forbid("CopyToDevice (a synchronous copy from pageable memory)", Name);
        Buffer.MemoryCopy(src, (void*)dst, bytes, bytes);
    }

    /// <inheritdoc />
    public void CopyToDeviceAsync(ulong dst, void* pinnedSource, long bytes)
    {
        if (!IsPinned(pinnedSource, bytes))
        {
            _capture.Forbid("CopyToDeviceAsync from memory that is not pinned", Name);
            throw new ArgumentException($"{Name}: CopyToDeviceAsync needs a source inside memory from AllocatePinned.", nameof(pinnedSource));
        }
        if (_recording != null) _recording.Add(new EmulatedGraph.Copy(dst, (ulong)pinnedSource, bytes));
        else Buffer.MemoryCopy(pinnedSource, (void*)dst, bytes, bytes);
    }

    /// <summary>Whether [p, p + bytes) lies inside one block from <see cref="AllocatePinned"/> (a handful: a linear search).</summary>
    private bool IsPinned(void* p, long bytes)
    {
        lock (_pinned)
            foreach (var (start, size) in _pinned)
                if ((long)p >= (long)start && (long)p + bytes <= (long)start + size) return true;
        return false;
    }

    /// <inheritdoc />
    public void CopyToHost(void* dst, ulong src, long bytes)
    {
        _capture.Forbid("CopyToHost (cuMemcpyDtoH)", Name);
        Buffer.MemoryCopy((void*)src, dst, bytes, bytes);
    }

    /// <inheritdoc />
    public void CopyOnDevice(ulong dst, ulong src, long bytes)
    {
        if (_recording != null) _recording.Add(new EmulatedGraph.Copy(dst, src, bytes));
        else Buffer.MemoryCopy((void*)src, (void*)dst, bytes, bytes);
    }

    /// <inheritdoc />
    public void Zero(ulong dst, long bytes)
    {
        if (_recording != null) _recording.Add(new EmulatedGraph.Memset(dst, bytes));
        else NativeMemory.Clear((void*)dst, (nuint)bytes);
    }

    /// <inheritdoc />
    public Kernel GetKernel(string name)
    {
        if (!KernelNames.Contains(name)) throw new ArgumentException($"the emulator has no kernel '{name}'.", nameof(name));
        byte[] utf8 = Encoding.UTF8.GetBytes(name + "\0");
        nint p = (nint)NativeMemory.Alloc((nuint)utf8.Length);
        utf8.CopyTo(new Span<byte>((void*)p, utf8.Length));
        lock (_names) _names.Add(p);
        return new Kernel(name, p);
    }

    /// <inheritdoc />
    public void Launch(Kernel kernel, Dim3 grid, Dim3 block, uint sharedBytes, void** args)
    {
        if (_recording != null)
        {
            // as cuLaunchKernel does during a capture: the argument values are copied now
            _recording.Add(new EmulatedGraph.KernelNode(this, kernel, grid, block, sharedBytes, args, _argSizes[kernel.Name]));
            return;
        }
        RunKernel(kernel, grid, block, sharedBytes, args);
    }

    internal void RunKernel(Kernel kernel, Dim3 grid, Dim3 block, uint sharedBytes, void** args)
    {
        int rc = _launch((byte*)kernel.Handle, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, sharedBytes, args);
        if (rc != 0)
            throw new Native.CudaException($"hpb_emu_launch({kernel.Name})", rc, "HPB_EMU_ERROR", Marshal.PtrToStringUTF8((nint)_lastError()));
    }

    /// <inheritdoc />
    public void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha, ulong a, int lda, ulong b, int ldb, float beta, ulong c, int ldc)
    {
        if (_recording != null)
        {
            ReferenceSgemm.Check(transA, transB, m, n, k, lda, ldb, ldc); // cuBLAS checks its arguments at the call
            _recording.Add(new EmulatedGraph.Gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc));
            return;
        }
        ReferenceSgemm.Run(transA, transB, m, n, k, alpha, (float*)a, lda, (float*)b, ldb, beta, (float*)c, ldc);
    }

    /// <inheritdoc />
    public void Synchronize() => _capture.Forbid("Synchronize (cuStreamSynchronize)", Name);

    /// <inheritdoc />
    public DeviceEvent CreateEvent()
    {
        _capture.Forbid("CreateEvent (cuEventCreate)", Name);
        return new EmulatedEvent(this);
    }

    /// <summary>Events recorded and waited for (tests: the order of a staged step's uploads).</summary>
    internal (long Records, long Waits) EventCalls => (_records, _waits);

    private long _records, _waits;

    /// <summary>
    /// An event of the emulator: every call runs when it is queued, so the stream is always past the last mark and a wait
    /// returns at once; the calls are counted, and refused during a capture as the driver's are.
    /// </summary>
    private sealed class EmulatedEvent(EmulatorRuntime rt) : DeviceEvent
    {
        public override void Record()
        {
            rt._capture.Forbid("DeviceEvent.Record (cuEventRecord)", rt.Name);
            rt._records++;
        }

        public override void Wait()
        {
            rt._capture.Forbid("DeviceEvent.Wait (cuEventSynchronize)", rt.Name);
            rt._waits++;
        }

        public override void Dispose() { }
    }

    /// <inheritdoc />
    public bool IsCapturing => _capture.Active;

    /// <inheritdoc />
    public void BeginCapture()
    {
        _capture.Begin(Name);
        _recording = [];
    }

    /// <inheritdoc />
    public DeviceGraph EndCapture()
    {
        var nodes = _recording;
        _recording = null;
        try
        {
            _capture.End(Name);
        }
        catch
        {
            if (nodes != null) foreach (var node in nodes) node.Dispose();
            throw;
        }
        return new EmulatedGraph(this, nodes ?? []);
    }

    /// <inheritdoc />
    public void Launch(DeviceGraph graph)
    {
        _capture.Forbid("Launch(DeviceGraph)", Name);
        if (graph is not EmulatedGraph g || g.Runtime != this) throw new ArgumentException("the graph was not captured by this emulator runtime.", nameof(graph));
        g.Replay();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        lock (_names) { foreach (nint p in _names) NativeMemory.Free((void*)p); _names.Clear(); }
        // The library stays loaded: its worker threads may outlive this object, and it is shared by every instance.
    }
}

/// <summary>
/// A straightforward column-major SGEMM with cuBLAS's argument semantics (the emulator's
/// stand-in for <c>cublasSgemm</c>): validates the arguments as cuBLAS does, accumulates each
/// dot product in float in k order, and does not read C when beta is 0.
/// </summary>
public static unsafe class ReferenceSgemm
{
    /// <summary>Runs <c>C = alpha·op(A)·op(B) + beta·C</c> on host pointers.</summary>
    /// <exception cref="ArgumentException">An argument cuBLAS would reject (CUBLAS_STATUS_INVALID_VALUE).</exception>
    public static void Run(bool transA, bool transB, int m, int n, int k, float alpha, float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
    {
        Check(transA, transB, m, n, k, lda, ldb, ldc);
        for (int j = 0; j < n; j++)
        {
            for (int i = 0; i < m; i++)
            {
                float s = 0;
                for (int p = 0; p < k; p++)
                {
                    float av = transA ? a[p + (long)i * lda] : a[i + (long)p * lda];
                    float bv = transB ? b[j + (long)p * ldb] : b[p + (long)j * ldb];
                    s += av * bv;
                }
                float* cij = c + i + (long)j * ldc;
                *cij = beta == 0 ? alpha * s : alpha * s + beta * *cij;
            }
        }
    }

    /// <summary>The argument checks of <see cref="Run"/> alone.</summary>
    /// <exception cref="ArgumentException">An argument cuBLAS would reject (CUBLAS_STATUS_INVALID_VALUE).</exception>
    public static void Check(bool transA, bool transB, int m, int n, int k, int lda, int ldb, int ldc)
    {
        if (m < 0 || n < 0 || k < 0) throw new ArgumentException($"sgemm: negative dimension (m={m}, n={n}, k={k}).");
        if (lda < Math.Max(1, transA ? k : m)) throw new ArgumentException($"sgemm: lda={lda} < {(transA ? k : m)}.");
        if (ldb < Math.Max(1, transB ? n : k)) throw new ArgumentException($"sgemm: ldb={ldb} < {(transB ? n : k)}.");
        if (ldc < Math.Max(1, m)) throw new ArgumentException($"sgemm: ldc={ldc} < {m}.");
    }
}
