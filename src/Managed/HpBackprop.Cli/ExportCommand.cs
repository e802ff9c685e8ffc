using System.CommandLine;
using System.Globalization;
using HpBackprop.IO;
using HpBackprop.Onnx;

namespace HpBackprop.Cli;

/// <summary>
/// <c>hpbackprop export</c>: a finished checkpoint as an ONNX inference model (<see cref="OnnxExport"/>); the model of
/// <c>train --csv</c> standardises its input with the checkpoint's scaler, so it takes the raw feature values as
/// <c>predict --csv</c> does.
/// </summary>
internal static class ExportCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model") { Description = "A model saved by 'train --out' (a finished run)", Required = true };
        var output = new Option<string>("--out") { Description = "The ONNX file to write", Required = true };
        var opset = new Option<int?>("--opset")
        {
            Description = $"The ONNX operator set, {OnnxExport.MinimumOpset} to {OnnxExport.MaximumOpset} (default: the lowest the layers allow: {OnnxExport.MinimumOpset}, or 11 with a linear layer without bias)",
        };
        var cmd = new Command("export", "Write a trained model as an ONNX inference model (for ONNX Runtime, ML.NET, ...).") { model, output, opset };
        cmd.SetAction(pr =>
        {
            string m = pr.GetValue(model)!, o = pr.GetValue(output)!;
            int? set = pr.GetValue(opset);
            if (set is int s && (s < OnnxExport.MinimumOpset || s > OnnxExport.MaximumOpset))
                throw new UserErrorException($"--opset {s}: the exporter writes opsets {OnnxExport.MinimumOpset} to {OnnxExport.MaximumOpset} ({OnnxExport.MinimumOpset} is the oldest ONNX Runtime reads).");
            Inputs.CheckExistingFile("--model", m);
            Inputs.CheckDistinct(("--model", m), ("--out", o));
            Inputs.CheckWritable("--out", o);
            LoadedModel loaded;
            try { loaded = StackCheckpoint.Load(m); }
            catch (Exception e) when (e is SafeTensorsFormatException or FileNotFoundException or DirectoryNotFoundException)
            {
                throw new UserErrorException($"--model {Inputs.Clip(m)}: {e.Message}");
            }
            using var net = loaded.Network;
            if (loaded.Training is { } t)
                throw new UserErrorException(string.Create(CultureInfo.InvariantCulture,
                    $"--model {Inputs.Clip(m)}: saved in the middle of a run (step {t.Run.Completed:N0} of {t.Run.TotalSteps:N0}), so it is not a finished model (batch norm is calibrated at the end); finish it with 'train --resume {Inputs.Clip(m)} --out ...' and export what that saves."));
            if (set is int want && want < OnnxExport.LowestOpset(net.Stack))
            {
                int i = Enumerable.Range(0, net.Stack.Layers.Count).First(j => OnnxExport.LayerOpset(net.Stack.Layers[j]) > want);
                throw new UserErrorException($"--opset {want}: too low for layer {i} ({net.Stack.Layers[i]}) of --model: a linear layer without bias is a Gemm without its C input, which needs opset {OnnxExport.LayerOpset(net.Stack.Layers[i])}; give --opset {OnnxExport.LowestOpset(net.Stack)} or more, or leave it out.");
            }
            var summary = OnnxExport.Save(net, o, new OnnxExportOptions { Opset = set, Vocabulary = loaded.Vocabulary, Table = loaded.Table });
            stdout.WriteLine($"wrote {o}: {summary}");
            if (loaded.Table is { } table)
                stdout.WriteLine((table.Scaler != null ? "the model standardises its input with the checkpoint's scaler: give it the raw values of " : "its input is ")
                    + $"the columns {string.Join(",", table.Features.Select(PredictCommand.Cell))} in that order, as 'predict --csv' reads them (the columns, labels and scaler are in its metadata).");
            return Program.Ok;
        });
        return cmd;
    }
}
