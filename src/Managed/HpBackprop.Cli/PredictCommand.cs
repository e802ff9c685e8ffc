using System.CommandLine;
using System.Globalization;
using System.Text;
using HpBackprop.Data;
using HpBackprop.IO;

namespace HpBackprop.Cli;

/// <summary>
/// <c>hpbackprop predict --model M --csv FILE [--out FILE]</c>: the predictions of a model trained on a table for every row
/// of a table with its feature columns (the target column may be absent), as CSV: the 1-based row, the predicted label or
/// value and, for classes, the probability of each.
/// </summary>
internal static class PredictCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model") { Description = "A model saved by 'train --csv … --out'", Required = true };
        var csv = new Option<string>("--csv") { Description = "The CSV table to predict: a header with the model's feature columns (the target column may be absent)", Required = true };
        var outFile = new Option<string?>("--out") { Description = "Write the predictions to this CSV file (default: standard output)" };
        var device = Backends.DeviceOption();
        var cmd = new Command("predict", "Predict every row of a CSV table with a model trained on a table: the label (and the probability of each class) or the value.") { model, csv, outFile, device };
        cmd.SetAction(pr =>
        {
            string modelPath = pr.GetValue(model)!, csvPath = pr.GetValue(csv)!;
            string? outPath = pr.GetValue(outFile);
            Inputs.CheckExistingFile("--model", modelPath);
            Inputs.CheckExistingFile("--csv", csvPath);
            Inputs.CheckDistinct(("--csv", csvPath), ("--out", outPath));
            Inputs.CheckDistinct(("--model", modelPath), ("--out", outPath));
            Inputs.CheckWritable("--out", outPath);
            var loaded = StackCheckpoint.Load(modelPath);
            if (loaded.Table is not { } schema)
            {
                loaded.Network.Dispose();
                throw new UserErrorException($"--model {Inputs.Clip(modelPath)}: this model was not trained on a table (its file holds no table columns); 'predict' is for a model of 'train --csv' ('sample' draws words from a word model).");
            }
            using var net = Backends.Move(loaded.Network, pr.GetValue(device)!, m => stderr.WriteLine(m));
            var table = Table.ReadCsv(csvPath, schema.ReadOptions(targetOptional: true));
            float[] features = table.Features;
            if (schema.Scaler != null)
            {
                features = (float[])features.Clone();
                schema.Scaler.Transform(features);
            }
            int n = table.Count, k = net.OutputWidth;
            var outputs = new float[(long)n * k];
            net.Predict(features, n, outputs);   // probabilities for classes, values for a regression
            var text = new StringBuilder();
            var labels = schema.Classes;
            text.Append("row,").Append(Cell("predicted_" + schema.Target));
            if (schema.TargetKind == TableTarget.Classes) foreach (var l in labels!) text.Append(',').Append(Cell("p_" + l));
            else if (schema.TargetKind == TableTarget.Binary) text.Append(',').Append(Cell("p_" + labels![^1]));
            text.Append('\n');
            var classes = new int[n];
            if (net.IsClassifier) net.PredictClasses(features, n, classes);
            for (int i = 0; i < n; i++)
            {
                text.Append((i + 1).ToString(CultureInfo.InvariantCulture)).Append(',');
                if (schema.TargetKind == TableTarget.Values) text.Append(outputs[i].ToString("R", CultureInfo.InvariantCulture));
                else
                {
                    text.Append(Cell(labels![Math.Min(classes[i], labels.Count - 1)]));
                    for (int j = 0; j < k; j++) text.Append(',').Append(outputs[(long)i * k + j].ToString("R", CultureInfo.InvariantCulture));
                }
                text.Append('\n');
            }
            if (outPath != null)
            {
                AtomicFile.Write(outPath, Encoding.UTF8.GetBytes(text.ToString()));
                stderr.WriteLine($"predicted {n:N0} rows of {csvPath} into {outPath}");
            }
            else stdout.Write(text.ToString());
            return Program.Ok;
        });
        return cmd;
    }

    /// <summary>A CSV cell: quoted (quotes doubled) when it holds a comma, a quote, a line break or spaces at its ends.</summary>
    internal static string Cell(string s) =>
        s.AsSpan().IndexOfAny(",\"\r\n") >= 0 || (s.Length > 0 && (char.IsWhiteSpace(s[0]) || char.IsWhiteSpace(s[^1]))) ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;
}
