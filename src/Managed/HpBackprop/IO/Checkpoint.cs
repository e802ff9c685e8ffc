using System.Globalization;
using HpBackprop.Data;
using HpBackprop.Model;

namespace HpBackprop.IO;

/// <summary>
/// A trained model in one safetensors file: the seven parameters (F32, makemore names and shapes),
/// the batch-norm inference statistics <c>bnmean</c> and <c>bnvar</c> (<c>[1,H]</c>), and in the
/// header's metadata the configuration and the vocabulary. PyTorch (or the <c>safetensors</c>
/// package) reads it directly. Saving goes through a temporary file and a rename.
/// </summary>
internal static class Checkpoint
{
    /// <summary>The value of the <c>format</c> metadata key.</summary>
    public const string Format = "hpbackprop-mlp/1";

    /// <summary>Writes a checkpoint atomically.</summary>
    public static void Save(string path, ParameterSet parameters, Vocabulary vocab, IReadOnlyDictionary<string, string>? extra = null)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(vocab);
        var c = parameters.Config;
        if (vocab.Size != c.VocabSize) throw new ArgumentException($"vocabulary of {vocab.Size} ids does not fit a model with V = {c.VocabSize}.", nameof(vocab));
        var f = new SafeTensorsFile();
        foreach (var p in parameters.Layout) f.Add(p.Name, (ReadOnlySpan<float>)parameters.Value(p.Name), p.Shape);
        f.Add("bnmean", (ReadOnlySpan<float>)parameters.RunningMean, 1, c.HiddenSize);
        f.Add("bnvar", (ReadOnlySpan<float>)parameters.RunningVar, 1, c.HiddenSize);
        if (extra != null) foreach (var kv in extra) f.Metadata[kv.Key] = kv.Value;
        f.Metadata["format"] = Format;
        f.Metadata["vocab"] = vocab.Characters;
        f.Metadata["vocab_size"] = I(c.VocabSize);
        f.Metadata["block_size"] = I(c.BlockSize);
        f.Metadata["n_embd"] = I(c.EmbeddingSize);
        f.Metadata["n_hidden"] = I(c.HiddenSize);
        f.Metadata["batch_size"] = I(c.BatchSize);
        f.Metadata["eps"] = c.Eps.ToString("R", CultureInfo.InvariantCulture);
        f.Metadata["bn_calibrated"] = parameters.IsCalibrated ? "true" : "false";
        f.Save(path);
    }

    /// <summary>Reads a checkpoint.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="SafeTensorsFormatException">The file is truncated, malformed or not an HpBackprop checkpoint.</exception>
    public static (ParameterSet Parameters, Vocabulary Vocabulary, IReadOnlyDictionary<string, string> Metadata) Load(string path)
    {
        var f = SafeTensorsFile.Read(path);
        string Meta(string key) => f.Metadata.TryGetValue(key, out var v) ? v
            : throw new SafeTensorsFormatException(path, $"metadata '{key}' is missing: this is not an HpBackprop checkpoint (format {Format}).");
        int Int(string key) => int.TryParse(Meta(key), NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) ? v
            : throw new SafeTensorsFormatException(path, $"metadata '{key}' = '{Meta(key)}' is not an integer.");
        if (Meta("format") != Format) throw new SafeTensorsFormatException(path, $"format '{Meta("format")}' is not {Format}.");
        Vocabulary vocab;
        ModelConfig config;
        try
        {
            vocab = Vocabulary.FromCharacters(Meta("vocab"));
            double eps = double.Parse(Meta("eps"), NumberStyles.Float, CultureInfo.InvariantCulture);
            config = new ModelConfig(Int("vocab_size"), Int("block_size"), Int("n_embd"), Int("n_hidden"), Int("batch_size"), eps).Validate();
        }
        catch (Exception e) when (e is ArgumentException or FormatException)
        {
            throw new SafeTensorsFormatException(path, "the configuration in the metadata is invalid: " + e.Message);
        }
        if (vocab.Size != config.VocabSize) throw new SafeTensorsFormatException(path, $"vocab has {vocab.Size} characters but vocab_size is {config.VocabSize}.");
        var ps = new ParameterSet(config);
        foreach (var p in ps.Layout) Copy(f, path, p.Name, p.Shape, ps.Value(p.Name));
        Copy(f, path, "bnmean", [1, config.HiddenSize], ps.RunningMean);
        Copy(f, path, "bnvar", [1, config.HiddenSize], ps.RunningVar);
        ps.IsCalibrated = Meta("bn_calibrated") == "true";
        return (ps, vocab, f.Metadata);
    }

    private static void Copy(SafeTensorsFile f, string path, string name, int[] shape, Span<float> dst)
    {
        if (!f.Contains(name)) throw new SafeTensorsFormatException(path, $"tensor '{name}' is missing.");
        var t = f[name];
        if (t.DType != DType.F32) throw new SafeTensorsFormatException(path, $"tensor '{name}' is {t.DType}; F32 expected.");
        if (!t.Shape.AsSpan().SequenceEqual(shape)) throw new SafeTensorsFormatException(path, $"tensor '{name}' has shape {ShapeException.Format(t.Shape)}, the configuration needs {ShapeException.Format(shape)}.");
        t.ToSingle().CopyTo(dst);
    }

    private static string I(int v) => v.ToString(CultureInfo.InvariantCulture);
}
