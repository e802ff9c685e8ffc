using System.Globalization;
using HpBackprop.Data;
using HpBackprop.Model;
using HpBackprop.Networks;

namespace HpBackprop.IO;

/// <summary>A network read from a checkpoint, with what the file says about it.</summary>
/// <param name="Network">The compiled network (CPU) holding the saved parameters and running statistics.</param>
/// <param name="Vocabulary">The vocabulary of a model trained on words (null for one trained on features).</param>
/// <param name="Metadata">The header's metadata.</param>
public sealed record LoadedModel(Network Network, Vocabulary? Vocabulary, IReadOnlyDictionary<string, string> Metadata);

/// <summary>
/// A network in one safetensors file that <c>torch.nn.Sequential(...).load_state_dict(..., strict=True)</c> takes as it
/// is: every parameter and batch-norm buffer under its state-dict name and PyTorch layout (F32;
/// <c>{i}.num_batches_tracked</c> an I64 scalar), and in the metadata the stack's text form (<c>layers</c>), the loss,
/// the input width and, for models trained on words, the vocabulary. Saving goes through a temporary file and a rename.
/// Files of the earlier makemore-only format (<c>hpbackprop-mlp/1</c>) are read too.
/// </summary>
public static class StackCheckpoint
{
    /// <summary>The value of the <c>format</c> metadata key.</summary>
    public const string Format = "hpbackprop-stack/1";

    /// <summary>Writes <paramref name="network"/>'s parameters and running statistics atomically.</summary>
    public static void Save(string path, Network network, Vocabulary? vocabulary, IReadOnlyDictionary<string, string>? extra = null)
    {
        ArgumentNullException.ThrowIfNull(network);
        var f = new SafeTensorsFile();
        var ps = network.Parameters;
        foreach (var s in ps.Parameters) f.Add(s.Name, (ReadOnlySpan<float>)ps.Data.AsSpan(s.Offset, s.Length), s.Shape);
        var bns = network.Stack.BatchNormLayers();
        for (int j = 0; j < bns.Count; j++)
        {
            string i = I(bns[j]);
            f.Add($"{i}.running_mean", (ReadOnlySpan<float>)ps.Value($"{i}.running_mean"), network.Stack.Layers[bns[j]].In);
            f.Add($"{i}.running_var", (ReadOnlySpan<float>)ps.Value($"{i}.running_var"), network.Stack.Layers[bns[j]].In);
            f.Add($"{i}.num_batches_tracked", (ReadOnlySpan<long>)ps.BatchesTracked.AsSpan(j, 1));
        }
        if (extra != null) foreach (var kv in extra) f.Metadata[kv.Key] = kv.Value;
        f.Metadata["format"] = Format;
        f.Metadata["layers"] = network.Stack.ToString();
        f.Metadata["loss"] = network.Options.Loss.ToText();
        f.Metadata["input_width"] = I(network.InputWidth);
        f.Metadata["batch_size"] = I(network.BatchSize);
        f.Metadata["eps"] = network.Options.Eps.ToString("R", CultureInfo.InvariantCulture);
        f.Metadata["bn_momentum"] = network.Options.BatchNormMomentum.ToString("R", CultureInfo.InvariantCulture);
        if (vocabulary != null)
        {
            f.Metadata["vocab"] = vocabulary.Characters;
            f.Metadata["block_size"] = I(network.InputWidth);
        }
        f.Save(path);
    }

    /// <summary>Reads a checkpoint into a CPU network compiled for <paramref name="batchSize"/> rows (default: the batch size it was trained with).</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="SafeTensorsFormatException">The file is truncated, malformed, or its tensors do not match its stack; the message names the file and the tensor.</exception>
    public static LoadedModel Load(string path, int? batchSize = null)
    {
        var f = SafeTensorsFile.Read(path);
        if (f.Metadata.TryGetValue("format", out var format) && format == Checkpoint.Format) return FromMakemore(path, batchSize);
        string Meta(string key) => f.Metadata.TryGetValue(key, out var v) ? v
            : throw new SafeTensorsFormatException(path, $"metadata '{key}' is missing: this is not an HpBackprop checkpoint (format {Format}).");
        if (Meta("format") != Format) throw new SafeTensorsFormatException(path, $"format '{Layer.Clip(Meta("format"))}' is not {Format} or {Checkpoint.Format}.");
        Network net;
        Vocabulary? vocab = null;
        try
        {
            var stack = Sequential.Parse(Meta("layers"));
            var loss = Losses.Parse(Meta("loss"));
            int width = Int("input_width");
            int n = batchSize ?? Int("batch_size");
            float eps = float.Parse(Meta("eps"), NumberStyles.Float, CultureInfo.InvariantCulture);
            float m = f.Metadata.TryGetValue("bn_momentum", out var mm) ? float.Parse(mm, NumberStyles.Float, CultureInfo.InvariantCulture) : 0.001f;
            if (f.Metadata.TryGetValue("vocab", out var chars)) vocab = Vocabulary.FromCharacters(chars);
            net = Network.Create(stack, new NetworkOptions { BatchSize = n, Loss = loss, InputWidth = width, Eps = eps, BatchNormMomentum = m });
        }
        catch (Exception e) when (e is ArgumentException or FormatException or CorpusException)
        {
            throw new SafeTensorsFormatException(path, "the network in the metadata is invalid: " + e.Message);
        }
        try
        {
            var ps = net.Parameters;
            var expected = new HashSet<string>(StringComparer.Ordinal);
            foreach (var s in ps.Parameters) { Copy(f, path, s.Name, s.Shape, ps.Value(s.Name)); expected.Add(s.Name); }
            var bns = net.Stack.BatchNormLayers();
            for (int j = 0; j < bns.Count; j++)
            {
                string i = I(bns[j]);
                int F = net.Stack.Layers[bns[j]].In;
                Copy(f, path, $"{i}.running_mean", [F], ps.Value($"{i}.running_mean"));
                Copy(f, path, $"{i}.running_var", [F], ps.Value($"{i}.running_var"));
                string nbt = $"{i}.num_batches_tracked";
                if (!f.Contains(nbt)) throw new SafeTensorsFormatException(path, $"tensor '{nbt}' is missing.");
                if (f[nbt].DType != DType.I64 || f[nbt].Shape.Length != 0) throw new SafeTensorsFormatException(path, $"tensor '{nbt}' must be an I64 scalar (shape []).");
                ps.BatchesTracked[j] = BitConverter.ToInt64(f[nbt].Data);
                expected.Add($"{i}.running_mean"); expected.Add($"{i}.running_var"); expected.Add(nbt);
            }
            foreach (var name in f.Tensors.Keys)
                if (!expected.Contains(name)) throw new SafeTensorsFormatException(path, $"tensor '{Layer.Clip(name)}' is not a parameter or buffer of '{Layer.Clip(net.Stack.ToString())}'.");
            if (vocab != null && (!net.Stack.TakesIds || net.Stack.Layers[0].In != vocab.Size))
                throw new SafeTensorsFormatException(path, $"the vocabulary has {vocab.Size} characters but layer 0 is {net.Stack.Layers[0]}.");
        }
        catch
        {
            net.Dispose();
            throw;
        }
        return new LoadedModel(net, vocab, f.Metadata);

        int Int(string key) => int.TryParse(Meta(key), NumberStyles.None, CultureInfo.InvariantCulture, out int v) ? v
            : throw new FormatException($"metadata '{key}' = '{Layer.Clip(Meta(key))}' is not a whole number.");
    }

    /// <summary>A makemore model of the earlier format as the equivalent stack (<see cref="Sequential.Makemore"/>).</summary>
    private static LoadedModel FromMakemore(string path, int? batchSize)
    {
        var (p, vocab, meta) = Checkpoint.Load(path);
        var net = FromParameterSet(p, batchSize ?? p.Config.BatchSize);
        return new LoadedModel(net, vocab, meta);
    }

    /// <summary>
    /// The makemore stack holding the values of a <see cref="ParameterSet"/> (C, W1, b1, bngain, bnbias, W2, b2 and the
    /// inference statistics), with the linear weights transposed to PyTorch's <c>[OUT,IN]</c>.
    /// </summary>
    public static Network FromParameterSet(ParameterSet p, int batchSize) => FromParameterSet(p, new NetworkOptions { BatchSize = batchSize });

    /// <summary>
    /// The makemore stack holding the values of a <see cref="ParameterSet"/>, compiled with <paramref name="options"/>
    /// (threads, optimiser, schedule, batch-norm momentum; the batch-norm epsilon is the parameter set's).
    /// </summary>
    public static Network FromParameterSet(ParameterSet p, NetworkOptions options)
    {
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(options);
        var c = p.Config;
        var net = Network.Create(Sequential.Makemore(c.VocabSize, c.BlockSize, c.EmbeddingSize, c.HiddenSize), options with { Eps = (float)c.Eps });
        var s = net.Parameters;
        p.C.CopyTo(s.Value("0.weight"));
        Transpose(p.W1, s.Value("2.weight"), c.ContextWidth, c.HiddenSize);
        p.b1.CopyTo(s.Value("2.bias"));
        p.bngain.CopyTo(s.Value("3.weight"));
        p.bnbias.CopyTo(s.Value("3.bias"));
        Transpose(p.W2, s.Value("5.weight"), c.HiddenSize, c.VocabSize);
        p.b2.CopyTo(s.Value("5.bias"));
        p.RunningMean.CopyTo(s.Value("3.running_mean"));
        p.RunningVar.CopyTo(s.Value("3.running_var"));
        return net;
    }

    /// <summary>
    /// The inverse of <see cref="FromParameterSet(ParameterSet, NetworkOptions)"/>: copies the parameters, their gradients
    /// and the running statistics of a network of the makemore stack into <paramref name="p"/> under the makemore names
    /// (the linear weights transposed back to <c>W1 [B·E,H]</c> and <c>W2 [H,V]</c>).
    /// </summary>
    /// <exception cref="ArgumentException">The network's stack is not <see cref="Sequential.Makemore"/> of <paramref name="p"/>'s configuration.</exception>
    public static void ToParameterSet(Network network, ParameterSet p)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(p);
        var c = p.Config;
        string want = Sequential.Makemore(c.VocabSize, c.BlockSize, c.EmbeddingSize, c.HiddenSize).ToString();
        if (network.Stack.ToString() != want)
            throw new ArgumentException($"the network '{Layer.Clip(network.Stack.ToString())}' is not the makemore stack of {c} ({want}).", nameof(network));
        var s = network.Parameters;
        foreach (var (spec, name) in new[] { ("C", "0.weight"), ("b1", "2.bias"), ("bngain", "3.weight"), ("bnbias", "3.bias"), ("b2", "5.bias") })
        {
            s.Value(name).CopyTo(p.Value(spec));
            s.Gradient(name).CopyTo(p.Gradient(spec));
        }
        Transpose(s.Value("2.weight"), p.W1, c.HiddenSize, c.ContextWidth);
        Transpose(s.Gradient("2.weight"), p.dW1, c.HiddenSize, c.ContextWidth);
        Transpose(s.Value("5.weight"), p.W2, c.VocabSize, c.HiddenSize);
        Transpose(s.Gradient("5.weight"), p.dW2, c.VocabSize, c.HiddenSize);
        s.Value("3.running_mean").CopyTo(p.RunningMean);
        s.Value("3.running_var").CopyTo(p.RunningVar);
    }

    private static void Transpose(ReadOnlySpan<float> a, Span<float> t, int rows, int cols)
    {
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
    }

    private static void Copy(SafeTensorsFile f, string path, string name, int[] shape, Span<float> dst)
    {
        if (!f.Contains(name)) throw new SafeTensorsFormatException(path, $"tensor '{name}' is missing.");
        var t = f[name];
        if (t.DType != DType.F32) throw new SafeTensorsFormatException(path, $"tensor '{name}' is {t.DType}; F32 expected.");
        if (!t.Shape.AsSpan().SequenceEqual(shape))
            throw new SafeTensorsFormatException(path, $"tensor '{name}' has shape {ShapeException.Format(t.Shape)}, the stack needs {ShapeException.Format(shape)}.");
        t.ToSingle().CopyTo(dst);
    }

    private static string I(int v) => v.ToString(CultureInfo.InvariantCulture);
}
