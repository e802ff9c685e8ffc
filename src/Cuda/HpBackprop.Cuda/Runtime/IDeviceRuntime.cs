namespace HpBackprop.Cuda.Runtime;

/// <summary>Grid or block dimensions of a launch.</summary>
/// <param name="X">x extent.</param>
/// <param name="Y">y extent.</param>
/// <param name="Z">z extent.</param>
public readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1);

/// <summary>A kernel resolved once by name; launching it allocates nothing.</summary>
/// <param name="Name">The <c>extern "C"</c> kernel name.</param>
/// <param name="Handle">The runtime's handle (a CUfunction, or the emulator's name pointer).</param>
public readonly record struct Kernel(string Name, nint Handle);

/// <summary>
/// What the CUDA backend needs from a device: memory, copies, kernel launches by name with a
/// <c>cuLaunchKernel</c>-style argument array, column-major SGEMM with cuBLAS's exact
/// argument semantics, and graphs captured from the stream and replayed. Two implementations: <see cref="DriverRuntime"/> (libcuda + cuBLAS) and
/// <see cref="EmulatorRuntime"/> (the host emulator of the same kernels).
/// </summary>
public interface IDeviceRuntime : IDisposable
{
    /// <summary>"cuda" or "cuda-emulator", with the device name where there is one.</summary>
    string Name { get; }

    /// <summary>Allocates device memory (not initialised).</summary>
    DeviceMemory Allocate(long bytes);

    /// <summary>Allocates page-locked host memory (not initialised). Not allowed during a capture.</summary>
    PinnedMemory AllocatePinned(long bytes);

    /// <summary>Copies host memory to the device and waits for it (the host buffer may be reused at once). Not allowed during a capture.</summary>
    unsafe void CopyToDevice(ulong dst, void* src, long bytes);

    /// <summary>
    /// Queues a copy from pinned host memory (<see cref="AllocatePinned"/>) to the device on the runtime's stream and returns
    /// at once: the host must not change the source until the stream has passed the copy. May be captured (a replay reads
    /// the source as it is then).
    /// </summary>
    unsafe void CopyToDeviceAsync(ulong dst, void* pinnedSource, long bytes);

    /// <summary>Copies device memory to the host and waits for it.</summary>
    unsafe void CopyToHost(void* dst, ulong src, long bytes);

    /// <summary>Copies within the device.</summary>
    void CopyOnDevice(ulong dst, ulong src, long bytes);

    /// <summary>Sets <paramref name="bytes"/> bytes to zero.</summary>
    void Zero(ulong dst, long bytes);

    /// <summary>Resolves a kernel by name.</summary>
    /// <exception cref="ArgumentException">No kernel has that name.</exception>
    Kernel GetKernel(string name);

    /// <summary>Launches a kernel; <paramref name="args"/> points to one pointer per kernel parameter, each to the argument's value.</summary>
    unsafe void Launch(Kernel kernel, Dim3 grid, Dim3 block, uint sharedBytes, void** args);

    /// <summary>
    /// Column-major <c>C = alpha·op(A)·op(B) + beta·C</c> exactly as <c>cublasSgemm</c>: op(A) is
    /// m×k, op(B) is k×n, C is m×n with leading dimension <paramref name="ldc"/>; when beta is 0, C is not read.
    /// </summary>
    void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha, ulong a, int lda, ulong b, int ldb, float beta, ulong c, int ldc);

    /// <summary>Waits until all queued work is done. Not allowed during a capture.</summary>
    void Synchronize();

    /// <summary>Whether this runtime's stream is being captured.</summary>
    bool IsCapturing { get; }

    /// <summary>
    /// Starts capturing what is queued on the runtime's stream (kernels, cuBLAS products, memsets, device copies, copies
    /// from pinned memory) into a graph instead of running it. Until <see cref="EndCapture"/>, a call that would
    /// synchronise, allocate or copy to the host throws and invalidates the capture.
    /// </summary>
    void BeginCapture();

    /// <summary>Ends the capture and returns the graph, ready to launch.</summary>
    /// <exception cref="InvalidOperationException">A refused call invalidated the capture (the message names it); nothing was captured.</exception>
    DeviceGraph EndCapture();

    /// <summary>Queues one replay of <paramref name="graph"/> on the runtime's stream. Not allowed during a capture.</summary>
    void Launch(DeviceGraph graph);

    /// <summary>Creates an event on the runtime's stream (<see cref="DeviceEvent"/>). Not allowed during a capture.</summary>
    DeviceEvent CreateEvent();
}
