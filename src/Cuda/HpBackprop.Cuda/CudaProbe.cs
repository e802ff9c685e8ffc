using System.Runtime.InteropServices;

namespace HpBackprop.Cuda;

/// <summary>Finds out, without throwing, whether a CUDA driver and a device are present.</summary>
public static class CudaProbe
{
    /// <summary>The driver library's file name on Linux.</summary>
    public const string DriverLibrary = "libcuda.so.1";

    private const int NoDevice = 100; // CUDA_ERROR_NO_DEVICE

    /// <summary>
    /// Returns null when a CUDA driver is loadable and reports at least one device, otherwise a
    /// sentence saying what is missing and what to do.
    /// </summary>
    public static string? WhyUnavailable() => WhyUnavailable(DriverLibrary);

    // Libraries the probe loaded, by name. They stay loaded for the life of the process: once cuInit
    // has run, the driver holds threads and state inside the mapped library, so unloading it (and
    // letting the [LibraryImport] bindings map it a second time) risks a crash at exit and confuses
    // tools that inject into the driver (compute-sanitizer). The bindings resolve the same file name
    // and get this same mapping.
    private static readonly Dictionary<string, nint> Loaded = new(StringComparer.Ordinal);

    internal static string? WhyUnavailable(string driverLibrary)
    {
        nint handle;
        lock (Loaded)
        {
            if (!Loaded.TryGetValue(driverLibrary, out handle))
            {
                if (!NativeLibrary.TryLoad(driverLibrary, out handle))
                    return $"no CUDA driver: {driverLibrary} could not be loaded. Install the NVIDIA driver (it provides {driverLibrary}) on a machine with an NVIDIA GPU, or train on the CPU (Network.Create).";
                Loaded[driverLibrary] = handle;
            }
        }
        if (!NativeLibrary.TryGetExport(handle, "cuInit", out var init) || !NativeLibrary.TryGetExport(handle, "cuDeviceGetCount", out var count))
            return $"{driverLibrary} does not export cuInit/cuDeviceGetCount: the driver is broken or too old. Reinstall the NVIDIA driver, or train on the CPU (Network.Create).";
        unsafe
        {
            int rc = ((delegate* unmanaged<uint, int>)init)(0);
            if (rc == NoDevice) return $"the CUDA driver ({driverLibrary}) found no GPU (cuInit: CUDA_ERROR_NO_DEVICE). Run on a machine with an NVIDIA GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES), or train on the CPU (Network.Create).";
            if (rc != 0) return $"the CUDA driver ({driverLibrary}) failed to initialise (cuInit returned error {rc}); check the driver installation with nvidia-smi, or train on the CPU (Network.Create).";
            int n = 0;
            rc = ((delegate* unmanaged<int*, int>)count)(&n);
            if (rc != 0 || n == 0) return $"the CUDA driver ({driverLibrary}) found no GPU; check nvidia-smi and CUDA_VISIBLE_DEVICES, or train on the CPU (Network.Create).";
        }
        return null;
    }
}
