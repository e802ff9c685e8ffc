using HpBackprop.Cpu;
using HpBackprop.Cuda;
using HpBackprop.Model;
using HpBackprop.Training;

namespace HpBackprop.Cli;

/// <summary>Device selection for the command: cpu, cuda or auto.</summary>
internal static class Backends
{
    public static readonly string[] Devices = ["cpu", "cuda", "auto"];

    /// <summary>Creates the backend for <paramref name="device"/>; <paramref name="say"/> receives the one-line notice of what was chosen.</summary>
    public static ITrainingBackend Create(string device, ParameterSet parameters, Action<string> say)
    {
        switch (device)
        {
            case "cpu":
                return new CpuBackend(parameters);
            case "cuda":
                {
                    string? why = CudaProbe.WhyUnavailable();
                    if (why != null) throw new UserErrorException("--device cuda: " + why);
                    throw new UserErrorException("--device cuda: a CUDA device is present, but this build has no CUDA training backend yet; use --device cpu.");
                }
            case "auto":
                {
                    string? why = CudaProbe.WhyUnavailable();
                    say(why == null
                        ? "device auto: a CUDA device is present but this build has no CUDA training backend yet; using the CPU."
                        : "device auto: using the CPU; " + why.Split(". ")[0] + ".");
                    return new CpuBackend(parameters);
                }
            default:
                throw new UserErrorException($"--device '{device}' is not one of {string.Join(", ", Devices)}.");
        }
    }
}
