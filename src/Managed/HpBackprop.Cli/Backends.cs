using HpBackprop.Cuda;
using HpBackprop.Model;
using HpBackprop.Training;

namespace HpBackprop.Cli;

/// <summary>Device selection for the command: cpu, cuda, auto, or emulator (the CUDA kernels on the host, for testing).</summary>
internal static class Backends
{
    public static readonly string[] Devices = ["cpu", "cuda", "auto", "emulator"];

    /// <summary>
    /// Creates the GPU backend for <paramref name="device"/>, or null for the CPU (where the makemore MLP runs as a compiled
    /// network, <see cref="HpBackprop.IO.StackCheckpoint.FromParameterSet(ParameterSet, Networks.NetworkOptions)"/>);
    /// <paramref name="say"/> receives the one-line notice of an automatic choice.
    /// </summary>
    public static ITrainingBackend? Create(string device, ParameterSet parameters, Action<string> say, ScatterMode scatter = ScatterMode.Deterministic)
    {
        switch (device)
        {
            case "cpu":
                return null;
            case "cuda":
                try
                {
                    return CudaBackend.OnDevice(parameters, scatter);
                }
                catch (CudaUnavailableException e)
                {
                    throw new UserErrorException("--device cuda: " + e.Message);
                }
            case "emulator":
                return CudaBackend.OnEmulator(parameters, scatter);
            case "auto":
                {
                    string? why = CudaProbe.WhyUnavailable();
                    if (why == null)
                    {
                        try
                        {
                            var gpu = CudaBackend.OnDevice(parameters, scatter);
                            say($"device auto: using {gpu.Name}.");
                            return gpu;
                        }
                        catch (CudaUnavailableException e)
                        {
                            why = e.Message;
                        }
                    }
                    say("device auto: using the CPU; " + why.Split(". ")[0] + ".");
                    return null;
                }
            default:
                throw new UserErrorException($"--device '{device}' is not one of {string.Join(", ", Devices)}.");
        }
    }
}
