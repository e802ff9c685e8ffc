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

    internal static string? WhyUnavailable(string driverLibrary)
    {
        if (!NativeLibrary.TryLoad(driverLibrary, out var handle))
            return $"no CUDA driver: {driverLibrary} could not be loaded. Install the NVIDIA driver (it provides {driverLibrary}) on a machine with an NVIDIA GPU, or use --device cpu.";
        try
        {
            if (!NativeLibrary.TryGetExport(handle, "cuInit", out var init) || !NativeLibrary.TryGetExport(handle, "cuDeviceGetCount", out var count))
                return $"{DriverLibrary} does not export cuInit/cuDeviceGetCount: the driver is broken or too old. Reinstall the NVIDIA driver, or use --device cpu.";
            unsafe
            {
                int rc = ((delegate* unmanaged<uint, int>)init)(0);
                if (rc == NoDevice) return $"the CUDA driver ({DriverLibrary}) found no GPU (cuInit: CUDA_ERROR_NO_DEVICE). Run on a machine with an NVIDIA GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES), or use --device cpu.";
                if (rc != 0) return $"the CUDA driver ({DriverLibrary}) failed to initialise (cuInit returned error {rc}); check the driver installation with nvidia-smi, or use --device cpu.";
                int n = 0;
                rc = ((delegate* unmanaged<int*, int>)count)(&n);
                if (rc != 0 || n == 0) return $"the CUDA driver ({DriverLibrary}) found no GPU; check nvidia-smi and CUDA_VISIBLE_DEVICES, or use --device cpu.";
            }
            return null;
        }
        finally
        {
            NativeLibrary.Free(handle);
        }
    }
}
