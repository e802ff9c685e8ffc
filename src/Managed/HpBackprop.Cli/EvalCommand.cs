using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Networks;

namespace HpBackprop.Cli;

/// <summary>
/// <c>hpbackprop eval</c>: the mean loss of a saved model over every example of a word list or an examples file, with its
/// inference batch-norm statistics; or, with --csv, its loss and metrics over every row of a table (read with the model's
/// columns, labels and standardisation).
/// </summary>
internal static class EvalCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model") { Description = "A model saved by 'train --out'", Required = true };
        var data = new Option<string?>("--data")
        {
            Description = "Words to evaluate on, one per line (default: the built-in corpus), all of them, no split; or a .safetensors file of examples (x and y, as 'grads' takes them)",
        };
        var csv = new Option<string?>("--csv") { Description = "A CSV table to evaluate a model trained on a table on: every row, with the model's columns, labels and standardisation" };
        var json = new Option<bool>("--json") { Description = "Print the loss and metrics as one JSON line" };
        var device = Backends.DeviceOption();
        var cmd = new Command("eval", "Print a saved model's mean loss over all examples of a word list or an examples file, or its loss and metrics over a table (--csv).") { model, data, csv, json, device };
        cmd.SetAction(pr =>
        {
            string modelPath = pr.GetValue(model)!;
            string? path = pr.GetValue(data), csvPath = pr.GetValue(csv);
            if (path != null && csvPath != null) throw new UserErrorException("--data and --csv cannot be given together: --data is a word list or an examples file, --csv a table; give one.");
            Inputs.CheckExistingFile("--model", modelPath);
            Inputs.CheckExistingFile("--csv", csvPath);
            var loaded = StackCheckpoint.Load(modelPath);
            if (csvPath != null)
            {
                if (loaded.Table is not { } schema)
                {
                    loaded.Network.Dispose();
                    throw new UserErrorException($"--model {Inputs.Clip(modelPath)}: this model was not trained on a table (its file holds no table columns); --csv is for a model of 'train --csv'.");
                }
                using var tnet = Backends.Move(loaded.Network, pr.GetValue(device)!, m => stderr.WriteLine(m));
                var table = Table.ReadCsv(csvPath, schema.ReadOptions(targetOptional: false));
                var rows = table.ToExampleSet();
                if (schema.Scaler != null) rows = schema.Scaler.Apply(rows);
                var report = TableReport.Measure(tnet, rows, schema);
                if (pr.GetValue(json))
                {
                    stdout.WriteLine(Json(w => { w.WriteString("model", modelPath); w.WriteString("table", csvPath); w.WritePropertyName("metrics"); TableReport.Json(w, report); }));
                    return Program.Ok;
                }
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"loss {report.Loss:R} over {rows.Count} rows of {csvPath}"));
                TableReport.Print(stdout, "all", report, perClass: true);
                return Program.Ok;
            }
            using var net = Backends.Move(loaded.Network, pr.GetValue(device)!, m => stderr.WriteLine(m));
            ExampleSet examples;
            if (path != null && path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            {
                examples = ExampleFile.Read(path);
            }
            else
            {
                if (loaded.Vocabulary == null)
                    throw new UserErrorException($"--model {pr.GetValue(model)}: this model takes float features, not words: give --data a .safetensors file of examples{(loaded.Table != null ? ", or --csv a table with its columns" : "")}.");
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
            if (pr.GetValue(json))
                stdout.WriteLine(Json(w => { w.WriteString("model", modelPath); w.WriteNumber("loss", loss); w.WriteNumber("examples", examples.Count); }));
            else
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"loss {loss:R} over {examples.Count} examples"));
            return Program.Ok;
        });
        return cmd;
    }

    /// <summary>One JSON object written field by field (no reflection: the CLI stays trim- and NativeAOT-safe).</summary>
    internal static string Json(Action<Utf8JsonWriter> fields)
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            fields(w);
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }
}
