using System.CommandLine;
using HpBackprop.Cuda;
using HpBackprop.Networks;

namespace HpBackprop.Cli;

/// <summary>Device selection for the command: cpu, cuda, auto, or emulator (the CUDA kernels on the host, for testing).</summary>
internal static class Backends
{
    public static readonly string[] Devices = ["cpu", "cuda", "auto", "emulator"];

    /// <summary>
    /// Compiles <paramref name="stack"/> for <paramref name="device"/>: "cpu" the CPU network, "cuda" the first GPU, "emulator" the
    /// CUDA kernels on the host (slow, for testing), "auto" the GPU when one is usable, otherwise the CPU; every device runs every
    /// stack. <paramref name="say"/> receives the one-line notice of an automatic choice. A stack or option that does not fit is
    /// a user error naming it (the CLI's option names).
    /// </summary>
    public static Network Create(string device, Sequential stack, NetworkOptions options, Action<string> say, ScatterMode scatter = ScatterMode.Deterministic)
    {
        try
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
                    catch (CudaUnavailableException e)
                    {
                        throw new UserErrorException($"--device {device}: " + e.Message);
                    }
                case "auto":
                    {
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
        catch (StackException e)
        {
            throw new UserErrorException(TrainCommand.OptionNames(e.Message));
        }
    }

    /// <summary>
    /// The makemore stack of <paramref name="p"/>'s configuration on <paramref name="device"/>, holding <paramref name="p"/>'s values
    /// (the makemore files and bundles, read through the one network path on every device).
    /// </summary>
    public static Network Makemore(string device, HpBackprop.Model.ParameterSet p, Action<string> say)
    {
        var c = p.Config;
        var net = Create(device, Sequential.Makemore(c.VocabSize, c.BlockSize, c.EmbeddingSize, c.HiddenSize),
            new NetworkOptions { BatchSize = c.BatchSize, Eps = (float)c.Eps }, say);
        HpBackprop.Model.MakemoreLayout.ToStore(p, net.Parameters, gradients: false);
        net.PushParameters();
        return net;
    }

    /// <summary>One forward and backward of <paramref name="net"/> (from <see cref="Makemore"/>) on a minibatch; the gradients back in <paramref name="p"/>.</summary>
    public static float MakemoreForwardBackward(Network net, HpBackprop.Model.ParameterSet p, int[] xb, int[] yb)
    {
        float loss = net.ForwardBackward(xb, yb);
        net.PullParameters();
        HpBackprop.Model.MakemoreLayout.FromStore(net.Parameters, p, gradients: true);
        return loss;
    }

    /// <summary>The option every command that computes takes.</summary>
    public static Option<string> DeviceOption()
    {
        var device = new Option<string>("--device") { Description = "cpu, cuda, auto, or emulator (the CUDA kernels on the host; slow, for testing)", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong(Devices);
        return device;
    }

    /// <summary>A network for <paramref name="device"/> holding the parameters, running statistics and counters of <paramref name="loaded"/> (a CPU network read from a file); <paramref name="loaded"/> itself when the device is the CPU.</summary>
    public static Network Move(Network loaded, string device, Action<string> say)
    {
        if (device == "cpu") return loaded;
        var net = Create(device, loaded.Stack, loaded.Options, say);
        if (net.Device == "cpu" && device == "auto") { net.Dispose(); return loaded; }
        net.Parameters.CopyFrom(loaded.Parameters);
        net.StepCount = loaded.StepCount;
        net.PushParameters();
        loaded.Dispose();
        return net;
    }
}
