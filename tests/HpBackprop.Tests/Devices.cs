using HpBackprop.Cuda;
using HpBackprop.Cuda.Runtime;

namespace HpBackprop.Tests;

/// <summary>
/// The device runtimes the CUDA tests run on. Every device test has an emulator twin and a driver
/// twin (a class in <see cref="DriverCategory"/>); the driver twin is reported as not run —
/// inconclusive, with the probe's reason — where there is no usable GPU, never as passed.
/// </summary>
internal static class Devices
{
    /// <summary>The test category of the tests that run on the real CUDA driver: <c>--filter TestCategory=GpuDriver</c> selects them alone.</summary>
    public const string DriverCategory = "GpuDriver";

    private static readonly Lazy<string?> WhyNoGpu = new(CudaProbe.WhyUnavailable);
    private static readonly Lazy<DriverRuntime> Shared = new(() => new DriverRuntime());

    /// <summary>Ends the test as not run unless a CUDA GPU is usable here.</summary>
    public static void RequireGpu()
    {
        if (WhyNoGpu.Value is string why) Assert.Inconclusive("not run: needs a CUDA GPU (" + why + ")");
    }

    /// <summary>A new runtime: the emulator, or the first GPU (after <see cref="RequireGpu"/>).</summary>
    public static IDeviceRuntime Open(bool onDriver)
    {
        if (!onDriver) return new EmulatorRuntime();
        RequireGpu();
        return new DriverRuntime();
    }

    /// <summary>One driver runtime for the whole test process (kernel tests: a context per test would cost more than the test).</summary>
    public static DriverRuntime SharedDriver
    {
        get
        {
            RequireGpu();
            return Shared.Value;
        }
    }
}
