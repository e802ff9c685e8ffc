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

    /// <summary>
    /// Ends the test as not run unless the kernel emulator library is beside the tests: the build
    /// makes it only where cmake and a C++20 compiler are installed (CI has them).
    /// </summary>
    public static void RequireEmulator()
    {
        if (!File.Exists(Path.Combine(AppContext.BaseDirectory, EmulatorRuntime.LibraryName)))
            Assert.Inconclusive("not run: needs the kernel emulator " + EmulatorRuntime.LibraryName + ", which the build makes only where cmake and a C++20 compiler are installed");
    }

    /// <summary>The stand-in libcuda built with the emulator (tests of the driver probe and the cuBLAS resolver); ends the test as not run without it.</summary>
    public static string FakeDriver
    {
        get
        {
            RequireEmulator();
            string path = Path.Combine(AppContext.BaseDirectory, "libhpb_fake_cuda.so");
            if (!File.Exists(path)) Assert.Inconclusive("not run: needs the stand-in libcuda libhpb_fake_cuda.so, built with the kernel emulator");
            return path;
        }
    }

    /// <summary>A new runtime: the emulator (after <see cref="RequireEmulator"/>), or the first GPU (after <see cref="RequireGpu"/>).</summary>
    public static IDeviceRuntime Open(bool onDriver)
    {
        if (!onDriver)
        {
            RequireEmulator();
            return new EmulatorRuntime();
        }
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
