using System.Globalization;
using HpBackprop.Data;
using HpBackprop.Model;
using HpBackprop.Networks;

namespace HpBackprop.IO;

/// <summary>A network read from a checkpoint, with what the file says about it.</summary>
/// <param name="Network">The compiled network (CPU) holding the saved parameters and running statistics.</param>
/// <param name="Vocabulary">The vocabulary of a model trained on words (null for one trained on features).</param>
/// <param name="Metadata">The header's metadata.</param>
public sealed record LoadedModel(Network Network, Vocabulary? Vocabulary, IReadOnlyDictionary<string, string> Metadata)
{
    /// <summary>The training state of a checkpoint saved in the middle of a run (null for a finished model): see <see cref="SavedTraining"/>.</summary>
    public SavedTraining? Training { get; init; }

    /// <summary>The columns, labels and standardisation of a model trained on a table (null for other models).</summary>
    public TableSchema? Table { get; init; }
}

/// <summary>
/// What a checkpoint saved in the middle of a run holds besides the parameters: the run (steps done, the minibatch
/// generator's state, the losses so far), the network's step count (the schedule's position) and the optimiser's state.
/// </summary>
/// <param name="Run">The run, to continue with <see cref="Network.Fit(ExampleSet, TrainingRun, Action{Training.TrainingProgress}?, int, CancellationToken, int?)"/>.</param>
/// <param name="StepCount">The network's <see cref="Network.StepCount"/> when it was saved.</param>
/// <param name="OptimizerState">The network's <see cref="ParameterStore.OptimizerState"/> when it was saved.</param>
public sealed record SavedTraining(TrainingRun Run, long StepCount, float[] OptimizerState)
{
    /// <summary>
    /// Puts the saved parameters, statistics, optimiser state and step count into <paramref name="network"/> (compiled
    /// for the same stack with the same optimiser), sends them to its device, and returns the run to continue.
    /// </summary>
    /// <exception cref="ArgumentException">The network's stack or optimiser state does not match the checkpoint's.</exception>
    public TrainingRun RestoreInto(Network network, LoadedModel model)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(model);
        network.Parameters.CopyFrom(model.Network.Parameters);
        if (network.Parameters.OptimizerState.Length != OptimizerState.Length)
            throw new ArgumentException($"the checkpoint holds {OptimizerState.Length:N0} floats of optimiser state but the network's optimiser ({network.Options.Optimizer}) has {network.Parameters.OptimizerState.Length:N0}.", nameof(network));
        OptimizerState.CopyTo(network.Parameters.OptimizerState, 0);
        network.StepCount = StepCount;
        network.PushParameters();
        return Run;
    }
}

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

    /// <summary>Prefix of the tensors and metadata keys of a checkpoint saved in the middle of a run (drop them to load the rest as a state dict).</summary>
    public const string TrainingPrefix = "train_state.";

    /// <summary>
    /// Writes <paramref name="network"/>'s parameters and running statistics atomically; with <paramref name="run"/>, also
    /// the run, the network's step count and the optimiser state (tensors and metadata named <see cref="TrainingPrefix"/>…),
    /// so that <see cref="Load"/> gives a <see cref="LoadedModel.Training"/> to continue it.
    /// </summary>
    public static void Save(string path, Network network, Vocabulary? vocabulary, IReadOnlyDictionary<string, string>? extra = null, TrainingRun? run = null) =>
        Save(path, network, vocabulary, null, extra, run);

    /// <summary>
    /// Writes a model trained on a table: <paramref name="network"/>'s parameters and running statistics (the state dict,
    /// as ever) and, in the metadata, <paramref name="table"/>: the feature columns (<c>table_features</c>, a JSON array of
    /// names in the network's input order), the target column (<c>table_target</c>) and what it holds
    /// (<c>table_target_kind</c>: <c>classes</c>, <c>binary</c> or <c>values</c>), the class labels (<c>table_classes</c>, a
    /// JSON array: id i is label i) and the standardisation (<c>input_mean</c> and <c>input_scale</c>, JSON arrays of the D
    /// float32 values as round-trip text; the network's input is <c>(x − input_mean) / input_scale</c>, computed in float32).
    /// </summary>
    /// <exception cref="ArgumentException">The schema does not fit the network (its widths, or its labels against the outputs).</exception>
    public static void SaveTable(string path, Network network, TableSchema table, IReadOnlyDictionary<string, string>? extra = null)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(table);
        string? why = TableMismatch(table, network.Stack.TakesIds, network.InputWidth, network.OutputWidth, network.Options.Loss);
        if (why != null) throw new ArgumentException(why, nameof(table));
        Save(path, network, null, table, extra, null);
    }

    private static void Save(string path, Network network, Vocabulary? vocabulary, TableSchema? table, IReadOnlyDictionary<string, string>? extra, TrainingRun? run)
    {
        ArgumentNullException.ThrowIfNull(network);
        network.PullParameters(); // on a GPU, the device's values
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
        if (run != null)
        {
            f.Add(TrainingPrefix + "optimizer", (ReadOnlySpan<float>)ps.OptimizerState, ps.OptimizerState.Length);
            f.Add(TrainingPrefix + "losses", (ReadOnlySpan<float>)run.Losses, run.Losses.Length);
            f.Metadata[TrainingPrefix + "seed"] = run.Seed.ToString(CultureInfo.InvariantCulture);
            f.Metadata[TrainingPrefix + "completed"] = I(run.Completed);
            f.Metadata[TrainingPrefix + "total"] = I(run.TotalSteps);
            f.Metadata[TrainingPrefix + "step_count"] = network.StepCount.ToString(CultureInfo.InvariantCulture);
        }
        f.Metadata["format"] = Format;
        f.Metadata["layers"] = network.Stack.ToString();
        f.Metadata["loss"] = network.Options.Loss.ToText();
        f.Metadata["input_width"] = I(network.InputWidth);
        f.Metadata["batch_size"] = I(network.BatchSize);
        f.Metadata["eps"] = network.Options.Eps.ToString("R", CultureInfo.InvariantCulture);
        f.Metadata["bn_momentum"] = network.Options.BatchNormMomentum.ToString("R", CultureInfo.InvariantCulture);
        f.Metadata["dropout_seed"] = network.Options.Seed.ToString(CultureInfo.InvariantCulture);
        if (vocabulary != null)
        {
            f.Metadata["vocab"] = vocabulary.Characters;
            f.Metadata["block_size"] = I(network.InputWidth);
        }
        if (table != null) TableMetadata.Write(table, f.Metadata);
        f.Save(path);
    }

    /// <summary>Reads a checkpoint into a CPU network compiled for <paramref name="batchSize"/> rows (default: the batch size it was trained with).</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="SafeTensorsFormatException">The file is truncated, malformed, its tensors do not match its stack, or a value is not finite
    /// or a running variance negative; the message names the file and the tensor.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="batchSize"/> is below 1, below 2 for a stack with batch norm, or too large for memory.</exception>
    public static LoadedModel Load(string path, int? batchSize = null)
    {
        if (batchSize is < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "the batch size must be at least 1.");
        var f = SafeTensorsFile.Read(path);
        if (f.Metadata.TryGetValue("format", out var format) && format == Checkpoint.Format) return FromMakemore(path, batchSize);
        string Meta(string key) => f.Metadata.TryGetValue(key, out var v) ? v
            : throw new SafeTensorsFormatException(path, $"metadata '{key}' is missing: this is not an HpBackprop checkpoint (format {Format}).");
        if (Meta("format") != Format) throw new SafeTensorsFormatException(path, $"format '{Layer.Clip(Meta("format"))}' is not {Format} or {Checkpoint.Format}.");
        Network? created = null;
        Sequential stack;
        NetworkOptions options;
        Vocabulary? vocab = null;
        try
        {
            stack = Sequential.Parse(Meta("layers"));
            var loss = Losses.Parse(Meta("loss"));
            int width = Int("input_width");
            // the file's own batch size is checked when it is the one used; a batch size given by the caller is checked below, blaming the argument
            int n = batchSize is null ? Int("batch_size") : 2;
            float eps = float.Parse(Meta("eps"), NumberStyles.Float, CultureInfo.InvariantCulture);
            float m = f.Metadata.TryGetValue("bn_momentum", out var mm) ? float.Parse(mm, NumberStyles.Float, CultureInfo.InvariantCulture) : 0.001f;
            int seed = f.Metadata.TryGetValue("dropout_seed", out var sd) ? int.Parse(sd, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture) : 42;
            if (f.Metadata.TryGetValue("vocab", out var chars)) vocab = Vocabulary.FromCharacters(chars);
            options = new NetworkOptions { BatchSize = n, Loss = loss, InputWidth = width, Eps = eps, BatchNormMomentum = m, Seed = seed };
            if (batchSize is null) created = Network.Create(stack, options);
            else Network.Check(stack, options);
        }
        catch (Exception e) when (e is ArgumentException or FormatException or CorpusException)
        {
            throw new SafeTensorsFormatException(path, "the network in the metadata is invalid: " + e.Message);
        }
        if (batchSize is int given)
        {
            try { created = Network.Create(stack, options with { BatchSize = given }); }
            catch (ArgumentException e)
            {
                throw new ArgumentOutOfRangeException(nameof(batchSize), given, $"batchSize = {given} does not fit the network of {path}: {e.Message}");
            }
        }
        Network net = created ?? throw new System.Diagnostics.UnreachableException();
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
                ps.BatchesTracked[j] = BatchCount(f[nbt], path);
                expected.Add($"{i}.running_mean"); expected.Add($"{i}.running_var"); expected.Add(nbt);
            }
            foreach (var name in f.Tensors.Keys)
                if (!expected.Contains(name) && !name.StartsWith(TrainingPrefix, StringComparison.Ordinal)) throw new SafeTensorsFormatException(path, $"tensor '{Layer.Clip(name)}' is not a parameter or buffer of '{Layer.Clip(net.Stack.ToString())}'.");
            if (vocab != null && (!net.Stack.TakesIds || net.Stack.Layers[0].In != vocab.Size))
                throw new SafeTensorsFormatException(path, $"the vocabulary has {vocab.Size} characters but layer 0 is {net.Stack.Layers[0]}.");
            LoadChecks.Values(ps, path);
        }
        catch
        {
            net.Dispose();
            throw;
        }
        SavedTraining? training = null;
        TableSchema? table = null;
        try
        {
            if (f.Metadata.ContainsKey(TrainingPrefix + "completed")) training = ReadTraining(f, path);
            if (f.Metadata.ContainsKey(TableMetadata.FeaturesKey))
            {
                table = TableMetadata.Read(f.Metadata, path);
                if (TableMismatch(table, net.Stack.TakesIds, net.InputWidth, net.OutputWidth, net.Options.Loss) is { } why)
                    throw new SafeTensorsFormatException(path, "the table metadata does not fit the network: " + why);
            }
        }
        catch { net.Dispose(); throw; }
        return new LoadedModel(net, vocab, f.Metadata) { Training = training, Table = table };

        int Int(string key) => int.TryParse(Meta(key), NumberStyles.None, CultureInfo.InvariantCulture, out int v) ? v
            : throw new FormatException($"metadata '{key}' = '{Layer.Clip(Meta(key))}' is not a whole number.");
    }

    private static SavedTraining ReadTraining(SafeTensorsFile f, string path)
    {
        long Num(string key, long max) => f.Metadata.TryGetValue(TrainingPrefix + key, out var v) && long.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out long x) && x <= max ? x
            : throw new SafeTensorsFormatException(path, $"metadata '{TrainingPrefix}{key}' is missing or not a whole number in [0, {max}].");
        SafeTensor T(string name, DType dtype)
        {
            string full = TrainingPrefix + name;
            if (!f.Contains(full)) throw new SafeTensorsFormatException(path, $"tensor '{full}' is missing.");
            var t = f[full];
            if (t.DType != dtype || t.Shape.Length != 1) throw new SafeTensorsFormatException(path, $"tensor '{full}' must be a 1-D {dtype} tensor.");
            return t;
        }
        int total = (int)Num("total", int.MaxValue);
        int completed = (int)Num("completed", total);
        long stepCount = Num("step_count", long.MaxValue);
        var losses = T("losses", DType.F32).ToSingle();
        if (losses.Length != total) throw new SafeTensorsFormatException(path, $"tensor '{TrainingPrefix}losses' has {losses.Length} values for a run of {total} steps.");
        // the minibatches are a function of (seed, step); a run saved by an earlier version kept a generator's state instead
        if (!f.Metadata.ContainsKey(TrainingPrefix + "seed") && f.Contains(TrainingPrefix + "rng"))
            throw new SafeTensorsFormatException(path, "the run was saved by an earlier version, whose minibatches came from a sequential generator: it cannot be continued bitwise; start it again, or load the model without its run.");
        int seed = f.Metadata.TryGetValue(TrainingPrefix + "seed", out var sv) && int.TryParse(sv, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int sd) ? sd
            : throw new SafeTensorsFormatException(path, $"metadata '{TrainingPrefix}seed' is missing or not a 32-bit whole number.");
        var optimizer = T("optimizer", DType.F32).ToSingle();
        LoadChecks.Finite(optimizer, TrainingPrefix + "optimizer", path);
        for (int i = 0; i < completed; i++)
            if (!float.IsFinite(losses[i])) throw new SafeTensorsFormatException(path, $"tensor '{TrainingPrefix}losses' holds {losses[i]} at step {i + 1}, which the run completed; a completed step's loss is finite.");
        return new SavedTraining(new TrainingRun(total, completed, seed, losses), stepCount, optimizer);
    }

    /// <summary>A makemore model of the earlier format as the equivalent stack (<see cref="Sequential.Makemore"/>).</summary>
    private static LoadedModel FromMakemore(string path, int? batchSize)
    {
        var (p, vocab, meta) = Checkpoint.Load(path);
        Network net;
        try { net = FromParameterSet(p, batchSize ?? p.Config.BatchSize); }
        catch (ArgumentException e) when (batchSize is int given)
        {
            throw new ArgumentOutOfRangeException(nameof(batchSize), given, $"batchSize = {given} does not fit the network of {path}: {e.Message}");
        }
        try { LoadChecks.Values(net.Parameters, path); }
        catch { net.Dispose(); throw; }
        return new LoadedModel(net, vocab, meta);
    }

    /// <summary>
    /// The makemore stack holding the values of a <see cref="ParameterSet"/> (C, W1, b1, bngain, bnbias, W2, b2 and the
    /// inference statistics), with the linear weights transposed to PyTorch's <c>[OUT,IN]</c>.
    /// </summary>
    internal static Network FromParameterSet(ParameterSet p, int batchSize) => FromParameterSet(p, new NetworkOptions { BatchSize = batchSize });

    /// <summary>
    /// The makemore stack holding the values of a <see cref="ParameterSet"/>, compiled with <paramref name="options"/>
    /// (threads, optimiser, schedule, batch-norm momentum; the batch-norm epsilon is the parameter set's).
    /// </summary>
    internal static Network FromParameterSet(ParameterSet p, NetworkOptions options)
    {
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(options);
        var c = p.Config;
        var net = Network.Create(Sequential.Makemore(c.VocabSize, c.BlockSize, c.EmbeddingSize, c.HiddenSize), options with { Eps = (float)c.Eps });
        MakemoreLayout.ToStore(p, net.Parameters, gradients: false);
        return net;
    }

    /// <summary>
    /// The inverse of <see cref="FromParameterSet(ParameterSet, NetworkOptions)"/>: copies the parameters, their gradients
    /// and the running statistics of a network of the makemore stack into <paramref name="p"/> under the makemore names
    /// (the linear weights transposed back to <c>W1 [B·E,H]</c> and <c>W2 [H,V]</c>).
    /// </summary>
    /// <exception cref="ArgumentException">The network's stack is not <see cref="Sequential.Makemore"/> of <paramref name="p"/>'s configuration.</exception>
    internal static void ToParameterSet(Network network, ParameterSet p)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(p);
        var c = p.Config;
        string want = Sequential.Makemore(c.VocabSize, c.BlockSize, c.EmbeddingSize, c.HiddenSize).ToString();
        if (network.Stack.ToString() != want)
            throw new ArgumentException($"the network '{Layer.Clip(network.Stack.ToString())}' is not the makemore stack of {c} ({want}).", nameof(network));
        MakemoreLayout.FromStore(network.Parameters, p, gradients: true);
    }

    /// <summary>Why <paramref name="table"/> cannot describe a network of these widths and loss, or null when it can.</summary>
    internal static string? TableMismatch(TableSchema table, bool takesIds, int inputWidth, int outputWidth, LossKind loss)
    {
        if (takesIds) return "the network takes ids, not the float features of a table.";
        if (table.Features.Count != inputWidth) return $"the table has {table.Features.Count} feature columns but the network takes {inputWidth} inputs.";
        if (table.Scaler != null && table.Scaler.Width != inputWidth) return $"the scaler has {table.Scaler.Width} columns but the network takes {inputWidth} inputs.";
        return table.TargetKind switch
        {
            TableTarget.Classes when loss != LossKind.CrossEntropy => $"class labels are trained with cross_entropy, not {loss.ToText()}.",
            TableTarget.Classes when table.Classes == null || table.Classes.Count != outputWidth => $"the table has {table.Classes?.Count ?? 0} classes but the network {outputWidth} outputs.",
            TableTarget.Binary when loss != LossKind.BceWithLogits || outputWidth != 1 => $"a binary target is trained with bce_with_logits and one output, not {loss.ToText()} with {outputWidth}.",
            TableTarget.Binary when table.Classes is not { Count: 1 or 2 } => "a binary target has two class labels.",
            TableTarget.Values when loss == LossKind.CrossEntropy || outputWidth != 1 => $"values are trained with one output and mse (or bce_with_logits), not {loss.ToText()} with {outputWidth}.",
            _ => null,
        };
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

    /// <summary>
    /// A <c>num_batches_tracked</c>: an I64 scalar as PyTorch and <see cref="Save(string, Network, Vocabulary?, IReadOnlyDictionary{string, string}?, TrainingRun?)"/> write it, or a float scalar holding a
    /// whole number, as TorchSharp 0.107 writes the counter of a <c>BatchNorm1d</c> built with a float dtype (PyTorch's
    /// <c>load_state_dict</c> takes either, copying into its long buffer).
    /// </summary>
    private static long BatchCount(SafeTensor t, string path)
    {
        string name = t.Name;
        if (t.Shape.Length != 0) throw new SafeTensorsFormatException(path, $"tensor '{name}' must be a scalar (shape []), an I64 count of batches.");
        if (t.DType == DType.I64) return BitConverter.ToInt64(t.Data);
        if (t.DType is DType.F32 or DType.F64)
        {
            double v = t.ToDouble()[0];
            if (v >= 0 && v <= 1L << 53 && Math.Floor(v) == v) return (long)v;
            throw new SafeTensorsFormatException(path, $"tensor '{name}' is {v.ToString("R", CultureInfo.InvariantCulture)}; a count of batches is a whole number of at least 0.");
        }
        throw new SafeTensorsFormatException(path, $"tensor '{name}' is {t.DType}; a count of batches is an I64 scalar (or a float scalar holding a whole number).");
    }

    private static string I(int v) => v.ToString(CultureInfo.InvariantCulture);
}
