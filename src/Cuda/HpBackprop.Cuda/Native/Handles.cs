using System.Runtime.InteropServices;

namespace HpBackprop.Cuda.Native;

/// <summary>A retained primary context of one device; released (cuDevicePrimaryCtxRelease) when disposed or finalized.</summary>
internal sealed class PrimaryContextHandle : SafeHandle
{
    private readonly int _device;

    public PrimaryContextHandle(nint context, int device) : base(0, true) { SetHandle(context); _device = device; }

    public override bool IsInvalid => handle == 0;

    public nint Context => handle;

    protected override bool ReleaseHandle() => Driver.cuDevicePrimaryCtxRelease(_device) == Driver.Success;
}

/// <summary>Base for handles that must be freed with their context current.</summary>
internal abstract class ContextBoundHandle : SafeHandle
{
    protected ContextBoundHandle(nint value, nint context) : base(0, true) { SetHandle(value); Context = context; }

    protected nint Context { get; }

    public override bool IsInvalid => handle == 0;

    public nint Value => handle;

    protected bool MakeCurrent() => Driver.cuCtxSetCurrent(Context) == Driver.Success;
}

/// <summary>A CUmodule, unloaded with cuModuleUnload.</summary>
internal sealed class CuModuleHandle(nint module, nint context) : ContextBoundHandle(module, context)
{
    protected override bool ReleaseHandle() => MakeCurrent() && Driver.cuModuleUnload(handle) == Driver.Success;
}

/// <summary>A CUstream, destroyed with cuStreamDestroy.</summary>
internal sealed class StreamHandle(nint stream, nint context) : ContextBoundHandle(stream, context)
{
    protected override bool ReleaseHandle() => MakeCurrent() && Driver.cuStreamDestroy(handle) == Driver.Success;
}

/// <summary>A CUevent, destroyed with cuEventDestroy.</summary>
internal sealed class EventHandle(nint evt, nint context) : ContextBoundHandle(evt, context)
{
    protected override bool ReleaseHandle() => MakeCurrent() && Driver.cuEventDestroy(handle) == Driver.Success;
}

/// <summary>A cuBLAS handle, destroyed with cublasDestroy.</summary>
internal sealed class CublasHandle(nint cublas, nint context) : ContextBoundHandle(cublas, context)
{
    protected override bool ReleaseHandle() => MakeCurrent() && Cublas.cublasDestroy(handle) == 0;
}
