using HpBackprop.Cuda;
using HpBackprop.Model;
using HpBackprop.Networks;
using HpBackprop.Training;

namespace HpBackprop.Cli;

/// <summary>Device selection for the command: cpu, cuda, auto, or emulator (the CUDA kernels on the host, for testing).</summary>
internal static class Backends
{
    public static readonly string[] Devices = ["cpu", "cuda", "auto", "emulator"];

    /// <summary>
    /// Compiles <paramref name="stack"/> for <paramref name="device"/>: "cpu" the compiled CPU network (every stack),
    /// "cuda"/"emulator" a <see cref="CudaNetwork"/> (a stack or recipe the GPU does not run is a user error naming the
    /// first layer or setting), "auto" the GPU when there is one and it runs the stack, otherwise the CPU;
    /// <paramref name="say"/> receives the one-line notice of an automatic choice. The stack and options have passed
    /// <see cref="Network.Check"/>.
    /// </summary>
    public static INetwork Create(string device, Sequential stack, NetworkOptions options, Action<string> say, ScatterMode scatter = ScatterMode.Deterministic)
    {
        switch (device)
        {
            case "cpu":
                return Network.Create(stack, options);
            case "cuda":
            case "emulator":
                try
                {
                    return device == "cuda" ? CudaNetwork.OnDevice(stack, options, scatter) : CudaNetwork.OnEmulator(stack, options, scatter);
                }
                catch (StackException e)
                {
                    throw new UserErrorException($"--device {device}: {TrainCommand.OptionNames(e.Message)} Use --device cpu, which runs every stack.");
                }
                catch (CudaUnavailableException e)
                {
                    throw new UserErrorException($"--device {device}: " + e.Message);
                }
            case "auto":
                {
                    if (CudaNetwork.FirstUnsupported(stack, options) is string unsupported)
                    {
                        say($"device auto: using the CPU ({TrainCommand.OptionNames(unsupported.Split(": ")[0])}).");
                        return Network.Create(stack, options);
                    }
                    string? why = CudaProbe.WhyUnavailable();
                    if (why == null)
                    {
                        try
                        {
                            var gpu = CudaNetwork.OnDevice(stack, options, scatter);
                            say($"device auto: using {gpu.Device}.");
                            return gpu;
                        }
                        catch (CudaUnavailableException e)
                        {
                            why = e.Message;
                        }
                    }
                    say("device auto: using the CPU; " + why.Split(". ")[0] + ".");
                    return Network.Create(stack, options);
                }
            default:
                throw new UserErrorException($"--device '{device}' is not one of {string.Join(", ", Devices)}.");
        }
    }

    /// <summary>
    /// The CUDA backend over a <see cref="ParameterSet"/> for <c>grads</c> on the makemore bundle format (which also writes the
    /// intermediates dlogits and dhprebn), or null for the CPU, where the makemore stack runs as a compiled network;
    /// <paramref name="say"/> receives the one-line notice of an automatic choice.
    /// </summary>
    public static ITrainingBackend? CreateMakemore(string device, ParameterSet parameters, Action<string> say)
    {
        switch (device)
        {
            case "cpu":
                return null;
            case "cuda":
                try
                {
                    return CudaBackend.OnDevice(parameters);
                }
                catch (CudaUnavailableException e)
                {
                    throw new UserErrorException("--device cuda: " + e.Message);
                }
            case "emulator":
                return CudaBackend.OnEmulator(parameters);
            case "auto":
                {
                    string? why = CudaProbe.WhyUnavailable();
                    if (why == null)
                    {
                        try
                        {
                            var gpu = CudaBackend.OnDevice(parameters);
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
