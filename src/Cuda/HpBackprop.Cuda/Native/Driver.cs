using System.Runtime.InteropServices;

namespace HpBackprop.Cuda.Native;

/// <summary>
/// The CUDA driver API entry points the backend uses (libcuda.so.1), bound with
/// <c>LibraryImport</c>: blittable arguments only, no marshalling stubs, no allocation per call.
/// Handles are <see cref="nint"/>, device pointers <see cref="ulong"/> (CUdeviceptr).
/// </summary>
internal static unsafe partial class Driver
{
    private const string Lib = "libcuda.so.1";

    // Error codes with their own handling (cuda.h, CUresult).
    public const int Success = 0;
    public const int ErrorNoDevice = 100;
    public const int ErrorInvalidPtx = 218;
    public const int ErrorUnsupportedPtxVersion = 222;
    public const int ErrorNoBinaryForGpu = 209;

    // CUjit_option
    public const int JitInfoLogBuffer = 3, JitInfoLogBufferSizeBytes = 4, JitErrorLogBuffer = 5, JitErrorLogBufferSizeBytes = 6;
    // CUstreamCaptureMode: only this thread's unsafe calls (synchronisation, allocation) are refused during a capture
    public const int CaptureModeThreadLocal = 1;
    // CUdevice_attribute
    public const int AttrMultiprocessorCount = 16, AttrComputeCapabilityMajor = 75, AttrComputeCapabilityMinor = 76;

    [LibraryImport(Lib, EntryPoint = "cuInit")] public static partial int cuInit(uint flags);
    [LibraryImport(Lib, EntryPoint = "cuDriverGetVersion")] public static partial int cuDriverGetVersion(int* version);
    [LibraryImport(Lib, EntryPoint = "cuDeviceGetCount")] public static partial int cuDeviceGetCount(int* count);
    [LibraryImport(Lib, EntryPoint = "cuDeviceGet")] public static partial int cuDeviceGet(int* device, int ordinal);
    [LibraryImport(Lib, EntryPoint = "cuDeviceGetName")] public static partial int cuDeviceGetName(byte* name, int length, int device);
    [LibraryImport(Lib, EntryPoint = "cuDeviceGetAttribute")] public static partial int cuDeviceGetAttribute(int* value, int attribute, int device);
    [LibraryImport(Lib, EntryPoint = "cuDeviceTotalMem_v2")] public static partial int cuDeviceTotalMem(nuint* bytes, int device);
    [LibraryImport(Lib, EntryPoint = "cuDevicePrimaryCtxRetain")] public static partial int cuDevicePrimaryCtxRetain(nint* context, int device);
    [LibraryImport(Lib, EntryPoint = "cuDevicePrimaryCtxRelease_v2")] public static partial int cuDevicePrimaryCtxRelease(int device);
    [LibraryImport(Lib, EntryPoint = "cuCtxSetCurrent")] public static partial int cuCtxSetCurrent(nint context);
    [LibraryImport(Lib, EntryPoint = "cuCtxSynchronize")] public static partial int cuCtxSynchronize();
    [LibraryImport(Lib, EntryPoint = "cuModuleLoadDataEx")] public static partial int cuModuleLoadDataEx(nint* module, void* image, uint numOptions, int* options, void** optionValues);
    [LibraryImport(Lib, EntryPoint = "cuModuleUnload")] public static partial int cuModuleUnload(nint module);
    /// <summary>CU_FUNC_ATTRIBUTE_BINARY_VERSION: the architecture (major·10 + minor) of the machine code a function runs.</summary>
    public const int FuncAttrBinaryVersion = 6;
    [LibraryImport(Lib, EntryPoint = "cuFuncGetAttribute")] public static partial int cuFuncGetAttribute(int* value, int attribute, nint function);
    [LibraryImport(Lib, EntryPoint = "cuModuleGetFunction")] public static partial int cuModuleGetFunction(nint* function, nint module, byte* name);
    [LibraryImport(Lib, EntryPoint = "cuLaunchKernel")]
    public static partial int cuLaunchKernel(nint function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedMemBytes, nint stream, void** kernelParams, void** extra);
    [LibraryImport(Lib, EntryPoint = "cuMemAlloc_v2")] public static partial int cuMemAlloc(ulong* pointer, nuint bytes);
    [LibraryImport(Lib, EntryPoint = "cuMemFree_v2")] public static partial int cuMemFree(ulong pointer);
    [LibraryImport(Lib, EntryPoint = "cuMemcpyHtoDAsync_v2")] public static partial int cuMemcpyHtoDAsync(ulong dst, void* src, nuint bytes, nint stream);
    [LibraryImport(Lib, EntryPoint = "cuMemcpyDtoHAsync_v2")] public static partial int cuMemcpyDtoHAsync(void* dst, ulong src, nuint bytes, nint stream);
    [LibraryImport(Lib, EntryPoint = "cuMemcpyDtoDAsync_v2")] public static partial int cuMemcpyDtoDAsync(ulong dst, ulong src, nuint bytes, nint stream);
    [LibraryImport(Lib, EntryPoint = "cuMemsetD8Async")] public static partial int cuMemsetD8Async(ulong dst, byte value, nuint count, nint stream);
    [LibraryImport(Lib, EntryPoint = "cuStreamCreate")] public static partial int cuStreamCreate(nint* stream, uint flags);
    [LibraryImport(Lib, EntryPoint = "cuStreamDestroy_v2")] public static partial int cuStreamDestroy(nint stream);
    [LibraryImport(Lib, EntryPoint = "cuStreamSynchronize")] public static partial int cuStreamSynchronize(nint stream);
    [LibraryImport(Lib, EntryPoint = "cuEventCreate")] public static partial int cuEventCreate(nint* evt, uint flags);
    [LibraryImport(Lib, EntryPoint = "cuEventDestroy_v2")] public static partial int cuEventDestroy(nint evt);
    [LibraryImport(Lib, EntryPoint = "cuEventRecord")] public static partial int cuEventRecord(nint evt, nint stream);
    [LibraryImport(Lib, EntryPoint = "cuEventSynchronize")] public static partial int cuEventSynchronize(nint evt);
    [LibraryImport(Lib, EntryPoint = "cuEventElapsedTime")] public static partial int cuEventElapsedTime(float* milliseconds, nint start, nint end);
    [LibraryImport(Lib, EntryPoint = "cuMemAllocHost_v2")] public static partial int cuMemAllocHost(void** pointer, nuint bytes);
    [LibraryImport(Lib, EntryPoint = "cuMemFreeHost")] public static partial int cuMemFreeHost(void* pointer);
    [LibraryImport(Lib, EntryPoint = "cuStreamBeginCapture_v2")] public static partial int cuStreamBeginCapture(nint stream, int mode);
    [LibraryImport(Lib, EntryPoint = "cuStreamEndCapture")] public static partial int cuStreamEndCapture(nint stream, nint* graph);
    [LibraryImport(Lib, EntryPoint = "cuGraphInstantiateWithFlags")] public static partial int cuGraphInstantiateWithFlags(nint* exec, nint graph, ulong flags);
    [LibraryImport(Lib, EntryPoint = "cuGraphGetNodes")] public static partial int cuGraphGetNodes(nint graph, nint* nodes, nuint* count);
    [LibraryImport(Lib, EntryPoint = "cuGraphLaunch")] public static partial int cuGraphLaunch(nint exec, nint stream);
    [LibraryImport(Lib, EntryPoint = "cuGraphExecDestroy")] public static partial int cuGraphExecDestroy(nint exec);
    [LibraryImport(Lib, EntryPoint = "cuGraphDestroy")] public static partial int cuGraphDestroy(nint graph);
    [LibraryImport(Lib, EntryPoint = "cuGetErrorName")] public static partial int cuGetErrorName(int error, byte** name);
    [LibraryImport(Lib, EntryPoint = "cuGetErrorString")] public static partial int cuGetErrorString(int error, byte** text);

    /// <summary>The symbolic name and description of a CUresult.</summary>
    public static (string Name, string Text) Describe(int code)
    {
        byte* name = null, text = null;
        try
        {
            string n = cuGetErrorName(code, &name) == Success && name != null ? Marshal.PtrToStringUTF8((nint)name)! : "CUDA_ERROR_" + code;
            string t = cuGetErrorString(code, &text) == Success && text != null ? Marshal.PtrToStringUTF8((nint)text)! : "";
            return (n, t);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return ("CUDA_ERROR_" + code, ""); // the error came from somewhere the driver library is not loaded
        }
    }

    /// <summary>Throws <see cref="CudaException"/> naming <paramref name="call"/> unless <paramref name="code"/> is success.</summary>
    public static void Check(int code, string call)
    {
        if (code == Success) return;
        var (name, text) = Describe(code);
        throw new CudaException(call, code, name, text);
    }
}
