using System.CommandLine;
using HpBackprop.Cpu;
using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Reference;

namespace HpBackprop.Cli;

/// <summary>
/// <c>hpbackprop grads</c>: the interchange for outside harnesses. Reads <c>Xb, Yb</c> and the seven
/// parameters from a safetensors file and writes <c>loss</c> and the gradients named <c>d</c> + SPEC name:
/// fused mode (float32) writes dC dW1 db1 dW2 db2 dbngain dbnbias dlogits dhprebn; atomic mode
/// writes all 26 of SPEC §3 in the input's precision.
/// </summary>
internal static class GradsCommand
{
    private static readonly string[] FusedGradients = ["dC", "dW1", "db1", "dW2", "db2", "dbngain", "dbnbias"];

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var input = new Option<string>("--in") { Description = "Input safetensors: Xb [n,B], Yb [n] (I32/I64), C W1 b1 W2 b2 bngain bnbias (F32/F64)", Required = true };
        var output = new Option<string>("--out") { Description = "Output safetensors with loss and the gradients", Required = true };
        var mode = new Option<string>("--mode") { Description = "fused (float32) or atomic (all 26 gradients, in the input's precision)", DefaultValueFactory = _ => "fused" };
        mode.AcceptOnlyFromAmong("fused", "atomic");
        var device = new Option<string>("--device") { Description = "cpu, cuda, auto or emulator (the CUDA kernels on the host)", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong(Backends.Devices);
        var cmd = new Command("grads", "Compute the loss and gradients of one minibatch given in a safetensors file.") { input, output, mode, device };
        cmd.SetAction(pr =>
        {
            var bundle = BatchBundle.Load(pr.GetValue(input)!);
            var result = new SafeTensorsFile();
            var c = bundle.Config;
            if (pr.GetValue(mode) == "atomic")
            {
                if (pr.GetValue(device) == "cuda") throw new UserErrorException("--mode atomic runs the exercise-1 reference chain, which exists on the CPU only; use --device cpu.");
                if (bundle.FloatType == DType.F64)
                {
                    var chain = new ReferenceChain<double>(c, bundle.ParametersAs<double>(), bundle.Xb, bundle.Yb);
                    result.Add("loss", new[] { chain.Loss });
                    foreach (string g in ReferenceChain<double>.GradientNames) result.Add(g, chain[g], chain.Tensors[g].Shape);
                }
                else
                {
                    var chain = new ReferenceChain<float>(c, bundle.ParametersAs<float>(), bundle.Xb, bundle.Yb);
                    result.Add("loss", new[] { chain.Loss });
                    foreach (string g in ReferenceChain<float>.GradientNames) result.Add(g, chain[g], chain.Tensors[g].Shape);
                }
            }
            else
            {
                var p = new ParameterSet(c);
                bundle.CopyTo(p);
                using var backend = Backends.Create(pr.GetValue(device)!, p, m => stderr.WriteLine(m));
                float loss = backend.ForwardBackward(bundle.Xb, bundle.Yb);
                backend.PullParameters();
                result.Add("loss", new[] { loss });
                foreach (string g in FusedGradients) result.Add(g, (ReadOnlySpan<float>)p.Gradient(g[1..]), p.Info(g[1..]).Shape);
                if (backend is CpuBackend cpu)
                {
                    result.Add("dlogits", cpu.Intermediate("dlogits"), c.BatchSize, c.VocabSize);
                    result.Add("dhprebn", cpu.Intermediate("dhprebn"), c.BatchSize, c.HiddenSize);
                }
                else if (backend is HpBackprop.Cuda.CudaBackend gpu)
                {
                    result.Add("dlogits", gpu.Download("dlogits"), c.BatchSize, c.VocabSize);
                    result.Add("dhprebn", gpu.Download("dhprebn"), c.BatchSize, c.HiddenSize);
                }
            }
            result.Metadata["mode"] = pr.GetValue(mode)!;
            result.Metadata["producer"] = "hpbackprop grads";
            result.Save(pr.GetValue(output)!);
            stdout.WriteLine($"wrote {result.Tensors.Count} tensors to {pr.GetValue(output)}");
            return Program.Ok;
        });
        return cmd;
    }
}
