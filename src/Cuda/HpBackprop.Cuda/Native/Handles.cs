using System.Runtime.InteropServices;

namespace HpBackprop.Cuda.Native;

/// <summary>
/// Makes one CUDA context current on the calling thread before a driver call. The driver keeps a
/// current context per thread, so a runtime built on one thread and used from another (a worker,
/// a test runner's thread, the finalizer) must set it there too; this does so once per thread and
/// context and then costs one thread-static comparison per call.
/// </summary>
/// <param name="context">The CUcontext.</param>
/// <param name="setCurrent">cuCtxSetCurrent (a stand-in in tests).</param>
internal sealed class ContextBinding(nint context, Func<nint, int> setCurrent)
{
    // The context this thread last made current through any binding: the driver's own state is
    // per thread and not per binding, so this is static.
    [ThreadStatic] private static nint t_current;

    private static readonly Func<nint, int> DriverSetCurrent = Driver.cuCtxSetCurrent;

    /// <summary>A binding that calls the driver's cuCtxSetCurrent.</summary>
    public ContextBinding(nint context) : this(context, DriverSetCurrent) { }

    /// <summary>The context.</summary>
    public nint Context { get; } = context;

    /// <summary>Makes the context current on this thread unless it already is; throws <see cref="CudaException"/> on failure.</summary>
    public void Ensure()
    {
        int rc = TryEnsure();
        if (rc != Driver.Success) Driver.Check(rc, "cuCtxSetCurrent");
    }

    /// <summary>Makes the context current on this thread whatever this thread did before (a new runtime: the same primary-context handle may have been released and retained again since).</summary>
    public void Bind()
    {
        t_current = 0;
        Ensure();
    }

    /// <summary>As <see cref="Ensure"/>, returning the CUresult instead of throwing (for release paths).</summary>
    public int TryEnsure()
    {
        if (t_current == Context) return Driver.Success;
        int rc = setCurrent(Context);
        t_current = rc == Driver.Success ? Context : 0;
        return rc;
    }
}

/// <summary>A retained primary context of one device; released (cuDevicePrimaryCtxRelease) when disposed or finalized.</summary>
internal sealed class PrimaryContextHandle : SafeHandle
{
    private readonly int _device;

    public PrimaryContextHandle(nint context, int device) : base(0, true) { SetHandle(context); _device = device; }

    public override bool IsInvalid => handle == 0;

    public nint Context => handle;

    protected override bool ReleaseHandle() => Driver.cuDevicePrimaryCtxRelease(_device) == Driver.Success;
}

/// <summary>Base for handles that must be freed with their context current (on whatever thread frees them).</summary>
internal abstract class ContextBoundHandle : SafeHandle
{
    private readonly ContextBinding _binding;

    protected ContextBoundHandle(nint value, ContextBinding binding) : base(0, true) { SetHandle(value); _binding = binding; }

    public override bool IsInvalid => handle == 0;

    public nint Value => handle;

    protected bool MakeCurrent() => _binding.TryEnsure() == Driver.Success;
}

/// <summary>A CUmodule, unloaded with cuModuleUnload.</summary>
internal sealed class CuModuleHandle(nint module, ContextBinding binding) : ContextBoundHandle(module, binding)
{
    protected override bool ReleaseHandle() => MakeCurrent() && Driver.cuModuleUnload(handle) == Driver.Success;
}

/// <summary>A CUstream, destroyed with cuStreamDestroy.</summary>
internal sealed class StreamHandle(nint stream, ContextBinding binding) : ContextBoundHandle(stream, binding)
{
    protected override bool ReleaseHandle() => MakeCurrent() && Driver.cuStreamDestroy(handle) == Driver.Success;
}

/// <summary>A CUevent, destroyed with cuEventDestroy.</summary>
internal sealed class EventHandle(nint evt, ContextBinding binding) : ContextBoundHandle(evt, binding)
{
    protected override bool ReleaseHandle() => MakeCurrent() && Driver.cuEventDestroy(handle) == Driver.Success;
}

/// <summary>A cuBLAS handle, destroyed with cublasDestroy.</summary>
internal sealed class CublasHandle(nint cublas, ContextBinding binding) : ContextBoundHandle(cublas, binding)
{
    protected override bool ReleaseHandle() => MakeCurrent() && Cublas.cublasDestroy(handle) == 0;
}

/// <summary>An instantiated CUDA graph (CUgraphExec), destroyed with cuGraphExecDestroy.</summary>
internal sealed class GraphExecHandle(nint exec, ContextBinding binding) : ContextBoundHandle(exec, binding)
{
    protected override bool ReleaseHandle() => MakeCurrent() && Driver.cuGraphExecDestroy(handle) == Driver.Success;
}
