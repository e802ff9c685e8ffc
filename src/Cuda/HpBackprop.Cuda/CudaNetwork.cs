using HpBackprop.Cuda.Gpu;
using HpBackprop.Cuda.Runtime;
using HpBackprop.Networks;

namespace HpBackprop.Cuda;

/// <summary>How the embedding gradient is accumulated on the device.</summary>
public enum ScatterMode
{
    /// <summary>Bitwise reproducible: each cell of the gradient summed by one thread in a fixed order (small V) or sort-and-segment (large V).</summary>
    Deterministic,
    /// <summary><c>atomicAdd</c>: fewer passes, but the order of float additions varies from run to run.</summary>
    Atomic,
}

/// <summary>
/// Compiles a <see cref="Sequential"/> stack into a <see cref="Network"/> on a CUDA GPU, or on the kernel emulator (the same
/// kernels on the host, no GPU needed). The network is the one the CPU gets from <see cref="Network.Create(Sequential, NetworkOptions)"/>:
/// every layer, loss, optimiser and schedule of docs/stacks.md, the same validation, training loop, evaluation, calibration
/// and checkpoints; only its steps run as CUDA kernels and cuBLAS products over device buffers. Parameters, gradients,
/// optimiser state and running statistics live on the device in the store's flat layout (PyTorch's);
/// <see cref="Network.Parameters"/> is the host copy that <see cref="Network.PullParameters"/> refreshes and
/// <see cref="Network.PushParameters"/> sends back. Every reduction runs in an order fixed by the shape, so two runs give
/// the same bits.
/// </summary>
/// <example>
/// <code>
/// var stack = Sequential.Makemore(vocabSize: 27);
/// var options = new NetworkOptions { BatchSize = 32, Schedule = new StepSchedule(100_000, 0.1f) };
/// using Network net = CudaProbe.WhyUnavailable() == null ? CudaNetwork.OnDevice(stack, options) : Network.Create(stack, options);
/// net.Initialize(seed: 42);
/// net.Fit(ExampleSet.FromWords(split.Train), steps: 200_000);
/// net.Calibrate(ExampleSet.FromWords(split.Train));
/// net.PullParameters();   // net.Parameters now holds the trained values
/// </code>
/// </example>
public static class CudaNetwork
{
    /// <summary>
    /// Compiles <paramref name="stack"/> for the first CUDA device. Every check happens first (<see cref="Network.Check"/>, the same as on
    /// the CPU), before the driver is opened or anything is allocated.
    /// </summary>
    /// <exception cref="StackException">The stack or a setting does not fit; the message names the layer.</exception>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    /// <exception cref="CudaUnavailableException">There is no usable GPU here; the message says why and what to do.</exception>
    public static Network OnDevice(Sequential stack, NetworkOptions options, ScatterMode scatter = ScatterMode.Deterministic) =>
        Create(stack, options, () => new DriverRuntime(), true, scatter, CudaDevice.DefaultRowsPerChunk);

    /// <summary>Compiles <paramref name="stack"/> for the kernel emulator (the CUDA kernels run on the host; slow, for tests). Checks as <see cref="OnDevice"/>.</summary>
    /// <exception cref="StackException">The stack or a setting does not fit; the message names the layer.</exception>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    /// <exception cref="CudaUnavailableException">The emulator library was not built.</exception>
    public static Network OnEmulator(Sequential stack, NetworkOptions options, ScatterMode scatter = ScatterMode.Deterministic) =>
        Create(stack, options, () => new EmulatorRuntime(), true, scatter, CudaDevice.DefaultRowsPerChunk);

    /// <summary>Compiles <paramref name="stack"/> on <paramref name="runtime"/>. Checks as <see cref="OnDevice"/>, before the runtime is used.</summary>
    /// <param name="runtime">The device runtime.</param>
    /// <param name="stack">The layers.</param>
    /// <param name="options">Batch size, loss, optimiser, schedule and the rest, as on the CPU.</param>
    /// <param name="scatter">How the embedding gradient is accumulated.</param>
    /// <param name="ownsRuntime">Dispose the runtime with the network (also when this method throws after the checks).</param>
    /// <exception cref="StackException">The stack or a setting does not fit; the message names the layer.</exception>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    public static Network On(IDeviceRuntime runtime, Sequential stack, NetworkOptions options, ScatterMode scatter = ScatterMode.Deterministic, bool ownsRuntime = false) =>
        On(runtime, stack, options, scatter, ownsRuntime, CudaDevice.DefaultRowsPerChunk);

    /// <summary>As <see cref="On(IDeviceRuntime, Sequential, NetworkOptions, ScatterMode, bool)"/> with the rows of one reduction chunk (tests take small chunks to run the multi-chunk kernels at small n).</summary>
    internal static Network On(IDeviceRuntime runtime, Sequential stack, NetworkOptions options, ScatterMode scatter, bool ownsRuntime, int rowsPerChunk)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        bool taken = false;
        try
        {
            return Create(stack, options, () => { taken = true; return runtime; }, ownsRuntime, scatter, rowsPerChunk);
        }
        catch when (ownsRuntime && !taken)
        {
            runtime.Dispose(); // the checks failed before the backend took the runtime (which disposes it on its own failures)
            throw;
        }
    }

    private static Network Create(Sequential stack, NetworkOptions options, Func<IDeviceRuntime> open, bool ownsRuntime, ScatterMode scatter, int rowsPerChunk)
    {
        if (!Enum.IsDefined(scatter)) throw new ArgumentOutOfRangeException(nameof(scatter), scatter, "not a scatter mode.");
        ArgumentOutOfRangeException.ThrowIfLessThan(rowsPerChunk, 1);
        return Network.Create(stack, options, new CudaDevice(open, ownsRuntime, scatter, rowsPerChunk));
    }

    /// <summary>The GPU backend of a network made here (for tests, the GPU kit and the benchmarks: launches and copies per step).</summary>
    internal static GpuBackend? Backend(Network network) => network.Backend as GpuBackend;
}
