using System.CommandLine;
using HpBackprop.IO;
using HpBackprop.Training;

namespace HpBackprop.Cli;

/// <summary><c>hpbackprop sample</c>: words from a saved model.</summary>
internal static class SampleCommand
{
    /// <summary>The longest word --max-length allows.</summary>
    public const int MaxLength = 1_000_000;

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model") { Description = "A model saved by 'train --out'", Required = true };
        var count = new Option<int>("-n") { Description = "How many words", DefaultValueFactory = _ => 20 };
        var seed = new Option<int>("--seed") { Description = "Seed of the draws", DefaultValueFactory = _ => 42 };
        var temperature = Inputs.Double("--temperature", "Below 1: safer words; above 1: wilder ones", 1.0);
        var maxLength = new Option<int>("--max-length") { Description = "Longest word", DefaultValueFactory = _ => 50 };
        var device = Backends.DeviceOption();
        var cmd = new Command("sample", "Sample words from a trained model.") { model, count, seed, temperature, maxLength, device };
        cmd.SetAction(pr =>
        {
            int n = pr.GetValue(count);
            double t = pr.GetValue(temperature);
            int max = pr.GetValue(maxLength);
            if (n < 0) throw new UserErrorException("-n must not be negative.");
            if (!(t > 0) || !double.IsFinite(t)) throw new UserErrorException($"--temperature {t}: must be a positive number.");
            if (max < 1 || max > MaxLength) throw new UserErrorException($"--max-length {max}: must be between 1 and {MaxLength:N0} (a word is built in memory before it is printed).");
            Inputs.CheckExistingFile("--model", pr.GetValue(model));
            var loaded = StackCheckpoint.Load(pr.GetValue(model)!);
            if (loaded.Vocabulary == null)
            {
                loaded.Network.Dispose();
                throw new UserErrorException($"--model {pr.GetValue(model)}: this model was not trained on words; there is nothing to sample.");
            }
            using var net = Backends.Move(loaded.Network, pr.GetValue(device)!, m => stderr.WriteLine(m));
            foreach (string w in new Sampler(net, loaded.Vocabulary).Generate(n, pr.GetValue(seed), t, max)) stdout.WriteLine(w);
            return Program.Ok;
        });
        return cmd;
    }
}
