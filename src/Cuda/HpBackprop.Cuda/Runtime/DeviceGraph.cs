using System.Runtime.InteropServices;
using HpBackprop.Cuda.Native;

namespace HpBackprop.Cuda.Runtime;

/// <summary>
/// Work captured from a runtime's stream between <see cref="IDeviceRuntime.BeginCapture"/> and
/// <see cref="IDeviceRuntime.EndCapture"/>, replayed as a whole by <see cref="IDeviceRuntime.Launch(DeviceGraph)"/>: the
/// same kernels with the same argument values, reading whatever device memory and pinned host memory hold at replay.
/// </summary>
public abstract class DeviceGraph : IDisposable
{
    /// <summary>The graph's nodes: kernels, copies, memsets (a cuBLAS product may be more than one).</summary>
    public abstract int NodeCount { get; }

    /// <summary>Frees the graph.</summary>
    public abstract void Dispose();
}

/// <summary>
/// Page-locked host memory: the device copies from it without staging, so an asynchronous copy from it may be captured
/// in a graph (each replay reads what it holds then). Freed on dispose, or by the finalizer if forgotten.
/// </summary>
public abstract unsafe class PinnedMemory : SafeHandle
{
    /// <summary>Creates the handle.</summary>
    protected PinnedMemory(nint pointer, long bytes) : base(0, ownsHandle: true)
    {
        SetHandle(pointer);
        Bytes = bytes;
    }

    /// <summary>The host address.</summary>
    public void* Pointer => (void*)handle;

    /// <summary>Size in bytes.</summary>
    public long Bytes { get; }

    /// <inheritdoc />
    public override bool IsInvalid => handle == 0;
}

/// <summary>Pinned memory from <c>cuMemAllocHost</c>, freed with <c>cuMemFreeHost</c>.</summary>
internal sealed unsafe class DriverPinnedMemory(void* pointer, long bytes, ContextBinding binding) : PinnedMemory((nint)pointer, bytes)
{
    protected override bool ReleaseHandle() => binding.TryEnsure() == Driver.Success && Driver.cuMemFreeHost((void*)handle) == Driver.Success;
}

/// <summary>The emulator's pinned memory: aligned host memory the emulator knows as pinned.</summary>
internal sealed unsafe class HostPinnedMemory(long bytes, Action<nint> released)
    : PinnedMemory((nint)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), 256), bytes)
{
    protected override bool ReleaseHandle()
    {
        released(handle);
        NativeMemory.AlignedFree((void*)handle);
        return true;
    }
}

/// <summary>
/// Capture's rules, kept by both runtimes: while a graph is being captured, nothing may synchronise, allocate, or copy
/// to the host, and a copy to the device must come from pinned memory. The first call that breaks them throws and
/// invalidates the capture (as the driver does: <see cref="IDeviceRuntime.EndCapture"/> then fails, naming it).
/// </summary>
internal sealed class CaptureState
{
    public bool Active { get; private set; }

    /// <summary>The first call refused during this capture.</summary>
    public string? Violation { get; private set; }

    public void Begin(string runtime)
    {
        if (Active) Refuse("BeginCapture", runtime);
        Active = true;
        Violation = null;
    }

    /// <summary>Ends the capture; throws naming the first refused call when there was one.</summary>
    public void End(string runtime)
    {
        if (!Active) throw new InvalidOperationException($"{runtime}: EndCapture without BeginCapture.");
        Active = false;
        if (Violation != null)
            throw new InvalidOperationException($"{runtime}: the graph capture was invalidated by {Violation}, which is not allowed while capturing.");
    }

    /// <summary>Throws when a capture is under way: <paramref name="call"/> may not be captured.</summary>
    public void Forbid(string call, string runtime)
    {
        if (Active) Refuse(call, runtime);
    }

    private void Refuse(string call, string runtime)
    {
        Violation ??= call;
        throw new InvalidOperationException(
            $"{runtime}: {call} is not allowed while a graph is being captured (a capture may not synchronise, allocate, copy to the host, or copy from memory that is not pinned); the capture is invalidated.");
    }
}

/// <summary>
/// A mark on a runtime's stream that the host can wait for (a CUevent): <see cref="Record"/> marks the point the stream
/// has reached in what is queued so far, <see cref="Wait"/> blocks until the stream has passed the last mark. So the
/// host reuses a pinned buffer only once the copies that read it have run, without waiting for everything queued after.
/// </summary>
public abstract class DeviceEvent : IDisposable
{
    /// <summary>Marks the stream's current end (replaces the previous mark). Not allowed during a capture.</summary>
    public abstract void Record();

    /// <summary>Waits until the stream has passed the last mark (at once when none was recorded). Not allowed during a capture.</summary>
    public abstract void Wait();

    /// <summary>Frees the event.</summary>
    public abstract void Dispose();
}

