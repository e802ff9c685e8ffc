using TorchSharp;

namespace HpBackprop.TorchSharpTests;

/// <summary>
/// Whether LibTorch (TorchSharp's native library) loads in this process. Every test calls <see cref="Require"/> first:
/// where it cannot load (glibc older than 2.38 or libstdc++ older than GCC 13, as on Debian 12 without the runtime of
/// tests/torchsharp/run.sh; another OS), the test ends as not run (inconclusive) with the reason and the command that
/// runs the suite, never as passed. With <c>HPB_TORCHSHARP_REQUIRED=1</c> (run.sh sets it, so CI does) it fails instead.
/// </summary>
internal static class TorchSharpRuntime
{
    public const string HowToRun = "bash tests/torchsharp/run.sh (it unpacks Debian 13's C/C++ runtime for LibTorch where the system's is older, and runs this suite)";

    private static readonly Lazy<string?> WhyNot = new(Probe, LazyThreadSafetyMode.ExecutionAndPublication);

    private static string? Probe()
    {
        // (a failed load is not retried here: the type initialiser of torch stays failed for the process; run.sh
        // runs the suite a second time when the first run could not load LibTorch)
        try
        {
            if (!torch.TryInitializeDeviceType(DeviceType.CPU)) return "torch.TryInitializeDeviceType(CPU) returned false";
            using var t = torch.ones(2, 3);
            if (t.sum().item<float>() != 6f) return "LibTorch loaded but computed a wrong sum";
            // one thread for LibTorch's operators: the parity tests compare values, and the machine has 2 cores
            torch.set_num_threads(1);
            return null;
        }
        catch (Exception e)
        {
            var inner = e;
            while (inner.InnerException != null) inner = inner.InnerException;
            return $"{inner.GetType().Name}: {inner.Message}";
        }
    }

    /// <summary>Ends the test as not run (or failed under HPB_TORCHSHARP_REQUIRED=1) unless LibTorch loads.</summary>
    public static void Require()
    {
        if (WhyNot.Value is not string why) return;
        string message = $"not run: TorchSharp 0.107 cannot load LibTorch 2.10 here ({why}). Run: {HowToRun}";
        if (Environment.GetEnvironmentVariable("HPB_TORCHSHARP_REQUIRED") == "1") Assert.Fail(message);
        Assert.Inconclusive(message);
    }
}
