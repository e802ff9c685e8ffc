using System.CommandLine;
using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Networks;
using HpBackprop.Reference;

namespace HpBackprop.Cli;

/// <summary>
/// <c>hpbackprop grads</c>: the interchange for outside harnesses. A file with metadata <c>layers</c> is a layer
/// stack bundle (docs/stacks.md): F64 input is computed in double by the plain-loop reference, F32 input in float by the fast path
/// (<see cref="Network"/>), or with <c>--mode atomic</c> by the reference in float; the output holds <c>loss</c>,
/// <c>grad.{name}</c> for every parameter and <c>grad.x</c>/<c>grad.y</c> for float x/y. Any other file is the
/// makemore bundle: <c>Xb, Yb</c> and the seven parameters, written as <c>loss</c> and <c>d</c> + makemore name:
/// fused mode (float32) writes dC dW1 db1 dW2 db2 dbngain dbnbias dlogits dhprebn; atomic mode
/// writes all 26 of docs/makemore.md §3 in the input's precision.
/// </summary>
internal static class GradsCommand
{
    private static readonly string[] FusedGradients = ["dC", "dW1", "db1", "dW2", "db2", "dbngain", "dbnbias"];

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var input = new Option<string>("--in") { Description = "Input safetensors: a stack bundle as docs/stacks.md describes it (metadata layers, loss; x, y, every parameter by state-dict name), or the makemore bundle Xb [n,B], Yb [n] (I32/I64), C W1 b1 W2 b2 bngain bnbias (F32/F64)", Required = true };
        var output = new Option<string>("--out") { Description = "Output safetensors with loss and the gradients", Required = true };
        var mode = new Option<string>("--mode") { Description = "fused (float32; a stack bundle: F32 by the fast path, F64 by the double reference) or atomic (the reference in the input's precision; makemore: all 26 gradients)", DefaultValueFactory = _ => "fused" };
        mode.AcceptOnlyFromAmong("fused", "atomic");
        var device = Backends.DeviceOption();
        var cmd = new Command("grads", "Compute the loss and gradients of one minibatch given in a safetensors file.") { input, output, mode, device };
        cmd.SetAction(pr =>
        {
            string inPath = pr.GetValue(input)!, outPath = pr.GetValue(output)!;
            Inputs.CheckInputFile("--in", inPath);
            Inputs.CheckDistinct(("--in", inPath), ("--out", outPath));
            Inputs.CheckWritable("--out", outPath);
            var file = SafeTensorsFile.Read(inPath);
            if (file.Metadata.ContainsKey("layers")) return Stack(file, inPath, outPath, pr.GetValue(mode)!, pr.GetValue(device)!, stdout, stderr);
            var bundle = CheckCommand.LoadBundle(inPath, "--in");
            var result = new SafeTensorsFile();
            var c = bundle.Config;
            if (pr.GetValue(mode) == "atomic")
            {
                if (pr.GetValue(device) is "cuda" or "emulator") throw new UserErrorException($"--mode atomic and --device {pr.GetValue(device)}: the exercise-1 reference chain runs on the CPU only; use --device cpu.");
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
                // the makemore bundle runs through the one network path on every device, read back under the makemore names
                var p = new ParameterSet(c);
                bundle.CopyTo(p);
                using var net = Backends.Makemore(pr.GetValue(device)!, p, m => stderr.WriteLine(m));
                float loss = Backends.MakemoreForwardBackward(net, p, bundle.Xb, bundle.Yb);
                result.Add("loss", new[] { loss });
                foreach (string g in FusedGradients) result.Add(g, (ReadOnlySpan<float>)p.Gradient(g[1..]), p.Info(g[1..]).Shape);
                result.Add("dlogits", MakemoreView.Intermediate(net, "dlogits"), c.BatchSize, c.VocabSize);
                result.Add("dhprebn", MakemoreView.Intermediate(net, "dhprebn"), c.BatchSize, c.HiddenSize);
            }
            result.Metadata["mode"] = pr.GetValue(mode)!;
            result.Metadata["producer"] = "hpbackprop grads";
            result.Save(outPath);
            stdout.WriteLine($"wrote {result.Tensors.Count} tensors to {outPath}");
            return Program.Ok;
        });
        return cmd;
    }

    /// <summary>A stack bundle (docs/stacks.md): F64 by the double reference, F32 by the fast path (atomic: the float reference).</summary>
    private static int Stack(SafeTensorsFile file, string inPath, string outPath, string mode, string device, TextWriter stdout, TextWriter stderr)
    {
        var bundle = StackBundle.From(file, Path.GetFileName(inPath));
        StackGrads.CheckRows(bundle);
        if (device is "cuda" or "emulator" && (bundle.Precision == DType.F64 || mode == "atomic"))
            throw new UserErrorException($"--device {device}: {bundle.Source} is computed by the plain-loop reference on the CPU ({(mode == "atomic" ? "--mode atomic" : "an F64 bundle is computed in double")}); the GPU computes the float fast path: give an F32 bundle without --mode atomic, or --device cpu.");
        SafeTensorsFile result;
        string path;
        if (bundle.Precision == DType.F64 || mode == "atomic")
        {
            result = bundle.RunReference();
            path = bundle.Precision == DType.F64 ? "reference (double)" : "reference (float)";
        }
        else
        {
            result = StackGrads.Output(bundle, StackGrads.RunFast(bundle, (stack, options) => Backends.Create(device, stack, options, m => stderr.WriteLine(m))));
            path = "fast path (float)";
        }
        result.Metadata["producer"] = "hpbackprop grads";
        result.Metadata["path"] = path;
        result.Save(outPath);
        stdout.WriteLine($"{bundle.Source}: {bundle.Stack} with {bundle.Loss.ToText()}, n={bundle.N}, {bundle.Precision}, {path}: loss {FormatLoss(result)}");
        stdout.WriteLine($"wrote {result.Tensors.Count} tensors to {outPath}");
        return Program.Ok;
    }

    private static string FormatLoss(SafeTensorsFile f) => f["loss"].ToDouble()[0].ToString("R", System.Globalization.CultureInfo.InvariantCulture);
}
