using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using HpBackprop.Cuda.Native;

namespace HpBackprop.Cuda.Runtime;

/// <summary>
/// The device runtime on a real GPU: the CUDA driver API (primary context of one device, one
/// stream, the embedded PTX loaded with the JIT's error log) and cuBLAS for SGEMM (default math:
/// no TF32 unless asked). Every failing call throws <see cref="CudaException"/> naming the call.
/// </summary>
public sealed unsafe class DriverRuntime : IDeviceRuntime
{
    private readonly PrimaryContextHandle _context;
    private readonly ContextBinding _binding;
    private readonly StreamHandle? _stream;
    private readonly CublasHandle? _cublas;
    private readonly List<CuModuleHandle> _modules = [];
    private readonly CaptureState _capture = new();
    private DeviceMemory? _cublasWorkspace;

    /// <summary>Opens device <paramref name="ordinal"/>.</summary>
    /// <param name="ordinal">Device number.</param>
    /// <param name="allowTf32">Let cuBLAS use TF32 tensor cores (faster, about 10 bits of mantissa).</param>
    /// <exception cref="CudaUnavailableException">No driver, no device, or the PTX cannot be JIT-compiled by this driver.</exception>
    public DriverRuntime(int ordinal = 0, bool allowTf32 = false)
    {
        string? why = CudaProbe.WhyUnavailable();
        if (why != null) throw new CudaUnavailableException(why);
        // cuBLAS first: if it is missing, fail before any device resource exists
        Cublas.Load();
        Driver.Check(Driver.cuInit(0), "cuInit");
        int device, count;
        Driver.Check(Driver.cuDeviceGetCount(&count), "cuDeviceGetCount");
        if (ordinal < 0 || ordinal >= count) throw new CudaUnavailableException($"CUDA device {ordinal} does not exist ({count} device(s)); choose 0..{count - 1}.");
        Driver.Check(Driver.cuDeviceGet(&device, ordinal), "cuDeviceGet");
        byte* name = stackalloc byte[256];
        Driver.Check(Driver.cuDeviceGetName(name, 256, device), "cuDeviceGetName");
        int major, minor, version;
        Driver.Check(Driver.cuDeviceGetAttribute(&major, Driver.AttrComputeCapabilityMajor, device), "cuDeviceGetAttribute");
        Driver.Check(Driver.cuDeviceGetAttribute(&minor, Driver.AttrComputeCapabilityMinor, device), "cuDeviceGetAttribute");
        Driver.Check(Driver.cuDriverGetVersion(&version), "cuDriverGetVersion");
        DeviceName = Marshal.PtrToStringUTF8((nint)name) ?? "?";
        ComputeCapability = (major, minor);
        DriverVersion = version;
        CublasLibrary = Cublas.LoadedFrom ?? "?";
        nint ctx;
        Driver.Check(Driver.cuDevicePrimaryCtxRetain(&ctx, device), "cuDevicePrimaryCtxRetain");
        _context = new PrimaryContextHandle(ctx, device);
        _binding = new ContextBinding(ctx);
        try
        {
            _binding.Bind();
            nint stream;
            Driver.Check(Driver.cuStreamCreate(&stream, 1 /* CU_STREAM_NON_BLOCKING */), "cuStreamCreate");
            _stream = new StreamHandle(stream, _binding);
            foreach (var (resource, image) in EmbeddedPtx.Fatbins()) _modules.Add(LoadModule(resource, image));
            LoadedCode = DescribeLoadedCode(major, minor);
            nint cublas;
            Cublas.Check(Cublas.cublasCreate(&cublas), "cublasCreate_v2");
            _cublas = new CublasHandle(cublas, _binding);
            Cublas.Check(Cublas.cublasSetStream(cublas, stream), "cublasSetStream_v2");
            // a workspace of its own, set after the stream: cuBLAS then allocates nothing inside a graph capture
            // (NVIDIA's recommended sizes: 32 MiB on Hopper and later, 4 MiB before)
            _cublasWorkspace = Allocate(major >= 9 ? 32L << 20 : 4L << 20);
            Cublas.Check(Cublas.cublasSetWorkspace(cublas, _cublasWorkspace.Pointer, (nuint)_cublasWorkspace.Bytes), "cublasSetWorkspace_v2");
            Cublas.Check(Cublas.cublasSetMathMode(cublas, allowTf32 ? Cublas.Tf32TensorOpMath : Cublas.DefaultMath), "cublasSetMathMode");
        }
        catch
        {
            // release what exists now, in order, instead of leaving it to finalizers
            Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public string Name => $"cuda ({DeviceName}, sm_{ComputeCapability.Major}{ComputeCapability.Minor})";

    /// <summary>The device's name.</summary>
    public string DeviceName { get; }

    /// <summary>The device's compute capability.</summary>
    public (int Major, int Minor) ComputeCapability { get; }

    /// <summary>The driver's CUDA version (for example 13000).</summary>
    public int DriverVersion { get; }

    /// <summary>Where cuBLAS was loaded from (a path, or the file name the loader resolved).</summary>
    public string CublasLibrary { get; }

    private nint Stream => _stream!.Value;

    /// <summary>
    /// Which code of the fatbins the driver runs: "sm_80 machine code" or "sm_90 machine code" (no JIT), or "compute_80 PTX,
    /// JIT-compiled for sm_XY" on any other GPU — read from a kernel's CU_FUNC_ATTRIBUTE_BINARY_VERSION (the driver
    /// prefers machine code of the device's family, so a binary version of a family the fatbin carries is that code).
    /// </summary>
    public string LoadedCode { get; private set; } = "";

    private string DescribeLoadedCode(int major, int minor)
    {
        nint f = GetKernel("step_begin").Handle;
        int binary;
        Driver.Check(Driver.cuFuncGetAttribute(&binary, Driver.FuncAttrBinaryVersion, f), "cuFuncGetAttribute");
        return (binary is 80 or 90) && binary / 10 == major ? $"sm_{binary} machine code from the fatbin"
            : $"compute_80 PTX, JIT-compiled for sm_{major}{minor} (binary version {binary})";
    }

    private CuModuleHandle LoadModule(string resource, byte[] ptx)
    {
        const int logSize = 16384;
        byte* errorLog = stackalloc byte[logSize];
        int* options = stackalloc int[2] { Driver.JitErrorLogBuffer, Driver.JitErrorLogBufferSizeBytes };
        void** values = stackalloc void*[2] { errorLog, (void*)logSize };
        nint module;
        int rc;
        fixed (byte* image = ptx) rc = Driver.cuModuleLoadDataEx(&module, image, 2, options, values);
        if (rc != Driver.Success)
        {
            string log = Marshal.PtrToStringUTF8((nint)errorLog) ?? "";
            var (errName, _) = Driver.Describe(rc);
            if (rc is Driver.ErrorInvalidPtx or Driver.ErrorUnsupportedPtxVersion or Driver.ErrorNoBinaryForGpu)
                throw new CudaUnavailableException($"the CUDA driver (version {DriverVersion / 1000}.{DriverVersion % 1000 / 10}) cannot load {resource} ({errName}): "
                    + $"it carries machine code for sm_80 and sm_90 and PTX for compute_80, which needs a driver for CUDA 11.8 or newer and a GPU of compute capability 8.0 or newer. Update the NVIDIA driver, or train on the CPU (Network.Create). JIT log: {log.Trim()}");
            throw new CudaException($"cuModuleLoadDataEx({resource})", rc, errName, log.Trim());
        }
        return new CuModuleHandle(module, _binding);
    }

    /// <inheritdoc />
    public DeviceMemory Allocate(long bytes)
    {
        _capture.Forbid("Allocate (cuMemAlloc)", Name);
        _binding.Ensure();
        ulong p;
        Driver.Check(Driver.cuMemAlloc(&p, (nuint)Math.Max(bytes, 1)), "cuMemAlloc_v2");
        return new DriverMemory(p, bytes, _binding);
    }

    /// <inheritdoc />
    public PinnedMemory AllocatePinned(long bytes)
    {
        _capture.Forbid("AllocatePinned (cuMemAllocHost)", Name);
        _binding.Ensure();
        void* p;
        Driver.Check(Driver.cuMemAllocHost(&p, (nuint)Math.Max(bytes, 1)), "cuMemAllocHost_v2");
        return new DriverPinnedMemory(p, bytes, _binding);
    }

    /// <inheritdoc />
    public void CopyToDeviceAsync(ulong dst, void* pinnedSource, long bytes)
    {
        _binding.Ensure();
        Driver.Check(Driver.cuMemcpyHtoDAsync(dst, pinnedSource, (nuint)bytes, Stream), "cuMemcpyHtoDAsync_v2");
    }

    /// <inheritdoc />
    public void CopyToDevice(ulong dst, void* src, long bytes)
    {
        _capture.Forbid("CopyToDevice (a synchronous copy from pageable memory)", Name);
        _binding.Ensure();
        Driver.Check(Driver.cuMemcpyHtoDAsync(dst, src, (nuint)bytes, Stream), "cuMemcpyHtoDAsync_v2");
        // the host buffer may be reused as soon as this returns
        Driver.Check(Driver.cuStreamSynchronize(Stream), "cuStreamSynchronize");
    }

    /// <inheritdoc />
    public void CopyToHost(void* dst, ulong src, long bytes)
    {
        _capture.Forbid("CopyToHost (cuMemcpyDtoH)", Name);
        _binding.Ensure();
        Driver.Check(Driver.cuMemcpyDtoHAsync(dst, src, (nuint)bytes, Stream), "cuMemcpyDtoHAsync_v2");
        Driver.Check(Driver.cuStreamSynchronize(Stream), "cuStreamSynchronize");
    }

    /// <inheritdoc />
    public void CopyOnDevice(ulong dst, ulong src, long bytes)
    {
        _binding.Ensure();
        Driver.Check(Driver.cuMemcpyDtoDAsync(dst, src, (nuint)bytes, Stream), "cuMemcpyDtoDAsync_v2");
    }

    /// <inheritdoc />
    public void Zero(ulong dst, long bytes)
    {
        _binding.Ensure();
        Driver.Check(Driver.cuMemsetD8Async(dst, 0, (nuint)bytes, Stream), "cuMemsetD8Async");
    }

    /// <inheritdoc />
    public Kernel GetKernel(string name)
    {
        _binding.Ensure();
        byte[] utf8 = Encoding.UTF8.GetBytes(name + "\0");
        foreach (var m in _modules)
        {
            nint f;
            int rc;
            fixed (byte* p = utf8) rc = Driver.cuModuleGetFunction(&f, m.Value, p);
            if (rc == Driver.Success) return new Kernel(name, f);
        }
        throw new ArgumentException($"no kernel '{name}' in the embedded kernel modules.", nameof(name));
    }

    /// <inheritdoc />
    public void Launch(Kernel kernel, Dim3 grid, Dim3 block, uint sharedBytes, void** args)
    {
        _binding.Ensure();
        int rc = Driver.cuLaunchKernel(kernel.Handle, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, sharedBytes, Stream, args, null);
        if (rc != Driver.Success) Driver.Check(rc, $"cuLaunchKernel({kernel.Name})");
    }

    /// <inheritdoc />
    public void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha, ulong a, int lda, ulong b, int ldb, float beta, ulong c, int ldc)
    {
        _binding.Ensure();
        int rc = Cublas.cublasSgemm(_cublas!.Value, transA ? Cublas.OpT : Cublas.OpN, transB ? Cublas.OpT : Cublas.OpN, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc);
        if (rc != 0) Cublas.Check(rc, "cublasSgemm_v2");
    }

    /// <inheritdoc />
    public void Synchronize()
    {
        _capture.Forbid("Synchronize (cuStreamSynchronize)", Name);
        _binding.Ensure();
        Driver.Check(Driver.cuStreamSynchronize(Stream), "cuStreamSynchronize");
    }

    /// <inheritdoc />
    public bool IsCapturing => _capture.Active;

    /// <inheritdoc />
    public void BeginCapture()
    {
        _capture.Begin(Name);
        _binding.Ensure();
        try
        {
            Driver.Check(Driver.cuStreamBeginCapture(Stream, Driver.CaptureModeThreadLocal), "cuStreamBeginCapture_v2");
        }
        catch
        {
            try { _capture.End(Name); } catch (InvalidOperationException) { }
            throw;
        }
    }

    /// <inheritdoc />
    public DeviceGraph EndCapture()
    {
        _binding.Ensure();
        nint graph = 0;
        int rc = Driver.cuStreamEndCapture(Stream, &graph);
        try
        {
            _capture.End(Name); // throws when a refused call invalidated the capture
            Driver.Check(rc, "cuStreamEndCapture");
            nuint nodes = 0;
            Driver.Check(Driver.cuGraphGetNodes(graph, null, &nodes), "cuGraphGetNodes");
            nint exec;
            Driver.Check(Driver.cuGraphInstantiateWithFlags(&exec, graph, 0), "cuGraphInstantiateWithFlags");
            return new DriverGraph(new GraphExecHandle(exec, _binding), (int)nodes);
        }
        finally
        {
            if (graph != 0) Driver.cuGraphDestroy(graph); // the instantiated graph does not need it
        }
    }

    /// <inheritdoc />
    public void Launch(DeviceGraph graph)
    {
        _capture.Forbid("Launch(DeviceGraph)", Name);
        if (graph is not DriverGraph g) throw new ArgumentException("the graph was not captured by a CUDA driver runtime.", nameof(graph));
        _binding.Ensure();
        int rc = Driver.cuGraphLaunch(g.Exec.Value, Stream);
        if (rc != Driver.Success) Driver.Check(rc, "cuGraphLaunch");
    }

    /// <inheritdoc />
    public DeviceEvent CreateEvent()
    {
        _capture.Forbid("CreateEvent (cuEventCreate)", Name);
        _binding.Ensure();
        nint e;
        Driver.Check(Driver.cuEventCreate(&e, 2 /* CU_EVENT_DISABLE_TIMING */), "cuEventCreate");
        return new DriverEvent(this, new EventHandle(e, _binding));
    }

    private sealed class DriverEvent(DriverRuntime rt, EventHandle handle) : DeviceEvent
    {
        private bool _recorded;

        public override void Record()
        {
            rt._capture.Forbid("DeviceEvent.Record (cuEventRecord)", rt.Name);
            rt._binding.Ensure();
            Driver.Check(Driver.cuEventRecord(handle.Value, rt.Stream), "cuEventRecord");
            _recorded = true;
        }

        public override void Wait()
        {
            rt._capture.Forbid("DeviceEvent.Wait (cuEventSynchronize)", rt.Name);
            if (!_recorded) return;
            rt._binding.Ensure();
            Driver.Check(Driver.cuEventSynchronize(handle.Value), "cuEventSynchronize");
        }

        public override void Dispose() => handle.Dispose();
    }

    private sealed class DriverGraph(GraphExecHandle exec, int nodes) : DeviceGraph
    {
        public GraphExecHandle Exec { get; } = exec;

        public override int NodeCount { get; } = nodes;

        public override void Dispose() => Exec.Dispose();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _cublas?.Dispose();
        _cublasWorkspace?.Dispose();
        foreach (var m in _modules) m.Dispose();
        _stream?.Dispose();
        _context.Dispose();
    }
}

/// <summary>The PTX modules embedded in this assembly (generated from native/kernels by build-ptx.sh).</summary>
public static class EmbeddedPtx
{
    private const string Prefix = "HpBackprop.Cuda.Ptx.";

    private const string FatbinPrefix = "HpBackprop.Cuda.Fatbin.";

    /// <summary>
    /// Each embedded fatbin (what the driver loads): resource name (<c>layer.fatbin</c>) and bytes, with sm_80 and sm_90
    /// machine code and the module's PTX, in the order of <see cref="All"/>.
    /// </summary>
    public static IEnumerable<(string Name, byte[] Image)> Fatbins()
    {
        var asm = Assembly.GetExecutingAssembly();
        foreach (string r in asm.GetManifestResourceNames().Where(n => n.StartsWith(FatbinPrefix, StringComparison.Ordinal)).Order(StringComparer.Ordinal))
        {
            using var s = asm.GetManifestResourceStream(r)!;
            var bytes = new byte[s.Length];
            s.ReadExactly(bytes);
            yield return (r[FatbinPrefix.Length..], bytes);
        }
    }

    /// <summary>Each embedded PTX module: resource name and bytes with a terminating NUL (as cuModuleLoadData wants).</summary>
    public static IEnumerable<(string Name, byte[] Ptx)> All()
    {
        var asm = Assembly.GetExecutingAssembly();
        foreach (string r in asm.GetManifestResourceNames().Where(n => n.StartsWith(Prefix, StringComparison.Ordinal)).Order(StringComparer.Ordinal))
        {
            using var s = asm.GetManifestResourceStream(r)!;
            var bytes = new byte[s.Length + 1];
            s.ReadExactly(bytes, 0, (int)s.Length);
            yield return (r[Prefix.Length..], bytes);
        }
    }
}
