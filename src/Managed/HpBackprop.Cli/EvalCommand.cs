using System.CommandLine;
using System.Globalization;
using HpBackprop.Cpu;
using HpBackprop.Data;
using HpBackprop.IO;

namespace HpBackprop.Cli;

/// <summary><c>hpbackprop eval</c>: the mean loss of a saved model over every example of a word list, with its inference batch-norm statistics.</summary>
internal static class EvalCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "A model saved by 'train --out'", Required = true };
        var data = new Option<string?>("--data") { Description = "Words to evaluate on, one per line (default: the built-in corpus); all of them, no split" };
        var cmd = new Command("eval", "Print a saved model's mean loss over all examples of a word list.") { model, data };
        cmd.SetAction(pr =>
        {
            var (parameters, vocab, _) = Checkpoint.Load(pr.GetValue(model)!);
            var corpus = Program.LoadCorpus(pr.GetValue(data));
            var examples = Dataset.Build(corpus, vocab, parameters.Config.BlockSize);
            using var backend = new CpuBackend(parameters);
            float loss = backend.Evaluate(examples);
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"loss {loss:R} over {examples.Count} examples"));
            return Program.Ok;
        });
        return cmd;
    }
}
