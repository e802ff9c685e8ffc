using System.Runtime.InteropServices;
using HpBackprop.Cuda.Native;

namespace HpBackprop.Cuda.Runtime;

/// <summary>Device memory owned by a <see cref="SafeHandle"/>: freed on dispose, or by the finalizer if forgotten.</summary>
public abstract class DeviceMemory : SafeHandle
{
    /// <summary>Creates the handle.</summary>
    protected DeviceMemory(nint pointer, long bytes) : base(0, ownsHandle: true)
    {
        SetHandle(pointer);
        Bytes = bytes;
    }

    /// <summary>The device address.</summary>
    public ulong Pointer => (ulong)handle;

    /// <summary>Size in bytes.</summary>
    public long Bytes { get; }

    /// <inheritdoc />
    public override bool IsInvalid => handle == 0;

    /// <summary>The address <paramref name="elements"/> floats (or ints) past the start.</summary>
    public ulong At(long elements) => Pointer + (ulong)(elements * 4);
}

/// <summary>Memory from <c>cuMemAlloc</c>, freed with <c>cuMemFree</c> in the context that allocated it.</summary>
internal sealed class DriverMemory : DeviceMemory
{
    private readonly ContextBinding _binding;

    public DriverMemory(ulong pointer, long bytes, ContextBinding binding) : base((nint)pointer, bytes) => _binding = binding;

    protected override bool ReleaseHandle()
    {
        // The finalizer thread (or any other) may have no current context: make ours current so the free really happens.
        if (_binding.TryEnsure() != Driver.Success) return false;
        return Driver.cuMemFree((ulong)handle) == Driver.Success;
    }
}

/// <summary>Host memory standing in for device memory under the emulator.</summary>
internal sealed unsafe class HostMemory : DeviceMemory
{
    public HostMemory(long bytes) : base((nint)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), 256), bytes) { }

    protected override bool ReleaseHandle()
    {
        NativeMemory.AlignedFree((void*)handle);
        return true;
    }
}
