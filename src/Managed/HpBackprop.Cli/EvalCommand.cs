using System.CommandLine;
using System.Globalization;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Networks;

namespace HpBackprop.Cli;

/// <summary><c>hpbackprop eval</c>: the mean loss of a saved model over every example of a word list or an examples file, with its inference batch-norm statistics.</summary>
internal static class EvalCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model") { Description = "A model saved by 'train --out'", Required = true };
        var data = new Option<string?>("--data")
        {
            Description = "Words to evaluate on, one per line (default: the built-in corpus), all of them, no split; or a .safetensors file of examples (x and y, as 'grads' takes them)",
        };
        var device = Backends.DeviceOption();
        var cmd = new Command("eval", "Print a saved model's mean loss over all examples of a word list or an examples file.") { model, data, device };
        cmd.SetAction(pr =>
        {
            var loaded = StackCheckpoint.Load(pr.GetValue(model)!);
            using var net = Backends.Move(loaded.Network, pr.GetValue(device)!, m => stderr.WriteLine(m));
            string? path = pr.GetValue(data);
            ExampleSet examples;
            if (path != null && path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            {
                examples = ExampleFile.Read(path);
            }
            else
            {
                if (loaded.Vocabulary == null) throw new UserErrorException($"--model {pr.GetValue(model)}: this model takes float features, not words: give --data a .safetensors file of examples.");
                var corpus = Program.LoadCorpus(path);
                examples = ExampleSet.FromWords(Dataset.Build(corpus, loaded.Vocabulary, net.InputWidth));
            }
            float loss;
            try { loss = net.Evaluate(examples); }
            catch (ArgumentException e) when (path != null && path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            {
                // the library names the example set's arrays; the file names them x and y
                throw new UserErrorException($"--data {Inputs.Clip(path)}: " + e.Message.StripParameterName()
                    .Replace("tensor 'ids'", "tensor 'x'").Replace("tensor 'features'", "tensor 'x'").Replace("the features must", "the inputs must")
                    .Replace("tensor 'classes'", "tensor 'y'").Replace("tensor 'targets'", "tensor 'y'").Replace("the targets must", "the targets must")
                    .Replace("the examples have", "the file has"));
            }
            if (!float.IsFinite(loss))
                throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                    $"the loss over the {examples.Count} examples is {loss}: the inputs are finite, but the model's outputs overflow float on them (inputs or weights too large); nothing to report."));
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"loss {loss:R} over {examples.Count} examples"));
            return Program.Ok;
        });
        return cmd;
    }
}
