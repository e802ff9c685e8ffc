using System.Globalization;
using Google.Protobuf;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Networks;
using HpBackprop.Onnx.Proto;

namespace HpBackprop.Onnx;

/// <summary>How <see cref="OnnxExport"/> writes a model.</summary>
public sealed record OnnxExportOptions
{
    /// <summary>
    /// The ONNX operator-set version to write, from <see cref="OnnxExport.MinimumOpset"/> to <see cref="OnnxExport.MaximumOpset"/>
    /// and at least what every layer needs (<see cref="OnnxExport.LayerOpset"/>); null (the default) for the lowest the layers
    /// allow (<see cref="OnnxExport.LowestOpset"/>).
    /// </summary>
    public int? Opset { get; init; }

    /// <summary>
    /// The vocabulary of a network trained on words: written to the metadata (<c>vocab</c>), so a server can turn
    /// characters into ids; its size must be the embedding's V. Null for none.
    /// </summary>
    public Vocabulary? Vocabulary { get; init; }

    /// <summary>
    /// The columns, labels and standardisation of a network trained on a table (<see cref="LoadedModel.Table"/>, or
    /// <see cref="Data.Table.Schema(Standardizer?)"/> with the scaler the network was trained behind). With a
    /// <see cref="TableSchema.Scaler"/>, the graph begins with its standardisation, <c>(input − scaler.mean) / scaler.scale</c>
    /// (a <c>Sub</c> then a <c>Div</c>, as <see cref="Standardizer.Transform"/> computes it in float32, so bit for bit the same),
    /// and the model takes the raw feature values, as <c>eval --csv</c> and <c>predict --csv</c> read them; the metadata gets
    /// the checkpoint's table keys (<c>table_features</c>, <c>table_target</c>, <c>table_target_kind</c>, <c>table_classes</c>:
    /// id i is label i, <c>input_mean</c>, <c>input_scale</c>). Null for none: the input is what the first layer takes.
    /// </summary>
    public TableSchema? Table { get; init; }
}

/// <summary>What <see cref="OnnxExport"/> wrote.</summary>
/// <param name="Opset">The operator-set version of the default ONNX domain.</param>
/// <param name="IrVersion">The ONNX IR version of the file.</param>
/// <param name="Input">The input: its name, element type and shape, e.g. <c>input int64 [N,3]</c>.</param>
/// <param name="Outputs">The outputs, each as its name, element type and shape (<c>logits float [N,27]</c>, then <c>probabilities</c> where the loss has a link).</param>
/// <param name="Bytes">The size of the serialised model.</param>
public sealed record OnnxExportSummary(int Opset, int IrVersion, string Input, IReadOnlyList<string> Outputs, long Bytes)
{
    /// <summary>One line: the opset, the input and the outputs.</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"opset {Opset} (IR version {IrVersion}), input {Input}, output{(Outputs.Count > 1 ? "s" : "")} {string.Join(", ", Outputs)}, {Bytes:N0} bytes");
}

/// <summary>
/// Writes a trained network as an ONNX inference model, for ONNX Runtime, ML.NET's <c>ApplyOnnxModel</c> or any other ONNX
/// runtime. Each layer becomes the operator of the same mathematics: <c>embedding</c> a <c>Gather</c> of the table's rows,
/// <c>flatten</c> a <c>Flatten</c> (axis 1), <c>linear</c> a <c>Gemm</c> with <c>transB = 1</c> (the weight stays in its
/// <c>[OUT,IN]</c> layout), both batch-norm modes a <c>BatchNormalization</c> in inference form (the running statistics and the
/// network's <see cref="NetworkOptions.Eps"/>: the two modes differ only in training), <c>layernorm</c> a
/// <c>LayerNormalization</c> (opset 17 and later) or, below 17, its decomposition (<c>ReduceMean</c>, <c>Sub</c>, <c>Mul</c>,
/// <c>Add</c>, <c>Sqrt</c>, <c>Div</c>), <c>tanh</c>, <c>relu</c>, <c>sigmoid</c> the operators of those names, and
/// <c>dropout</c> an <c>Identity</c> (it is the identity in inference). The graph's input is <c>input</c>, int64 ids
/// <c>[N,B]</c> for a stack that starts with an embedding and float features <c>[N,D]</c> otherwise, with N a symbolic (dynamic)
/// batch dimension; its outputs are <c>logits</c> <c>[N,k]</c> (the last layer's output) and, for the losses with a link,
/// <c>probabilities</c>: a <c>Softmax</c> over axis 1 for cross-entropy, a <c>Sigmoid</c> for BCE-with-logits (MSE and the mean
/// objective have none). The initialisers carry the state-dict names (<c>{i}.weight</c>, <c>{i}.bias</c>,
/// <c>{i}.running_mean</c>, <c>{i}.running_var</c>), and the model's metadata the stack's text form (<c>layers</c>), the loss,
/// the input width, the epsilon and, for a model trained on words, the vocabulary (<c>vocab</c>), for one trained on a table its
/// columns, labels and scaler (<see cref="OnnxExportOptions.Table"/>): the same keys as a checkpoint's. A model trained on a table
/// with a scaler standardises its input first (initialisers <c>scaler.mean</c> and <c>scaler.scale</c>), so it takes the raw
/// feature values.
/// The outputs are <see cref="Network.Predict(ReadOnlySpan{float}, int, Span{float}, bool)"/>'s (<c>raw: true</c> for
/// <c>logits</c>) up to float32 rounding.
/// </summary>
/// <example>
/// <code>
/// net.Fit(train, steps: 3000);
/// var summary = OnnxExport.Save(net, "model.onnx");   // opset 7 for a stack of linear layers with biases
/// // or from a checkpoint file: OnnxExport.SaveCheckpoint("model.safetensors", "model.onnx");
/// </code>
/// </example>
public static class OnnxExport
{
    /// <summary>The lowest operator set written: 7, the oldest that ONNX Runtime reads.</summary>
    public const int MinimumOpset = 7;

    /// <summary>The highest operator set written: 21 (IR version 10). Every operator the exporter uses has the same meaning from its lowest opset to this one.</summary>
    public const int MaximumOpset = 21;

    /// <summary>The symbolic name of the batch dimension of the input and outputs.</summary>
    public const string BatchDimension = "N";

    /// <summary>The graph input's name.</summary>
    public const string InputName = "input";

    /// <summary>The name of the output that holds the last layer's output.</summary>
    public const string LogitsName = "logits";

    /// <summary>The name of the output that holds the loss's link applied to the logits (softmax for cross-entropy, sigmoid for BCE-with-logits).</summary>
    public const string ProbabilitiesName = "probabilities";

    /// <summary>
    /// The lowest operator set in which <paramref name="layer"/> can be written: 11 for a <c>linear</c> layer without bias (a
    /// <c>Gemm</c> without its C input, which opset 11 made optional), <see cref="MinimumOpset"/> for every other layer (layer
    /// norm is written as its decomposition below opset 17).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="layer"/> is not a valid layer (<see cref="Sequential(Layer[])"/>'s checks).</exception>
    public static int LayerOpset(Layer layer)
    {
        ArgumentNullException.ThrowIfNull(layer);
        _ = new Sequential(layer); // the layer's invariants (a defined kind, its sizes): a StackException names the rule
        return layer.Kind == LayerKind.Linear && !layer.HasBias ? 11 : MinimumOpset;
    }

    /// <summary>The lowest operator set in which every layer of <paramref name="stack"/> can be written: the largest <see cref="LayerOpset"/>.</summary>
    public static int LowestOpset(Sequential stack)
    {
        ArgumentNullException.ThrowIfNull(stack);
        return stack.Layers.Max(LayerOpset);
    }

    /// <summary>The ONNX model of <paramref name="network"/> (pulled from its device first), serialised.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><see cref="OnnxExportOptions.Opset"/> is outside [<see cref="MinimumOpset"/>, <see cref="MaximumOpset"/>] or below what a layer needs; the message names the layer.</exception>
    /// <exception cref="ArgumentException">The vocabulary or the table does not fit the network, or the parameters pass protobuf's 2 GiB limit.</exception>
    public static byte[] ToBytes(Network network, OnnxExportOptions? options = null) => Build(network, options ?? new()).ToByteArray();

    /// <summary>
    /// Writes the ONNX model of <paramref name="network"/> to <paramref name="path"/> (a temporary file renamed over it, so an
    /// interrupted export never leaves half a model) and says what it wrote.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><see cref="OnnxExportOptions.Opset"/> is outside [<see cref="MinimumOpset"/>, <see cref="MaximumOpset"/>] or below what a layer needs; the message names the layer.</exception>
    /// <exception cref="ArgumentException">The vocabulary or the table does not fit the network, or the parameters pass protobuf's 2 GiB limit.</exception>
    /// <exception cref="IOException">The file cannot be written.</exception>
    public static OnnxExportSummary Save(Network network, string path, OnnxExportOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var model = Build(network, options ?? new());
        byte[] bytes = model.ToByteArray();
        AtomicFile.Write(path, bytes);
        return Summary(model, bytes.Length);
    }

    /// <summary>
    /// Reads the finished model of a checkpoint (<see cref="StackCheckpoint.Load"/>) and writes it as an ONNX model to
    /// <paramref name="path"/>, its vocabulary in the metadata; for a model trained on a table (<see cref="LoadedModel.Table"/>),
    /// its columns and labels in the metadata and its scaler as the graph's first nodes, so the model takes raw feature values
    /// (<see cref="OnnxExportOptions.Table"/>).
    /// </summary>
    /// <param name="checkpointPath">A checkpoint saved at the end of a run (<see cref="StackCheckpoint.Save"/> without a run).</param>
    /// <param name="path">The ONNX file to write; it must not be <paramref name="checkpointPath"/>.</param>
    /// <param name="opset">The operator set (see <see cref="OnnxExportOptions.Opset"/>); null for the lowest the layers allow.</param>
    /// <exception cref="ArgumentException">The checkpoint was saved in the middle of a run (its <see cref="LoadedModel.Training"/> is set:
    /// finish the run first), or <paramref name="path"/> is the checkpoint itself.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="opset"/> is outside the range or below what a layer needs.</exception>
    /// <exception cref="SafeTensorsFormatException">The checkpoint is not a valid one (see <see cref="StackCheckpoint.Load"/>).</exception>
    /// <exception cref="FileNotFoundException">The checkpoint does not exist.</exception>
    public static OnnxExportSummary SaveCheckpoint(string checkpointPath, string path, int? opset = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(checkpointPath);
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (FileIdentity.Same(checkpointPath, path))
            throw new ArgumentException($"'{path}' is the checkpoint '{checkpointPath}' itself: writing the ONNX model there would destroy it; give another path.", nameof(path));
        var loaded = StackCheckpoint.Load(checkpointPath);
        using var net = loaded.Network;
        if (loaded.Training is { } t)
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"'{checkpointPath}' was saved in the middle of a run (step {t.Run.Completed:N0} of {t.Run.TotalSteps:N0}): its parameters are not a finished model (batch norm is not calibrated); finish the run (train --resume) and export the model it saves."),
                nameof(checkpointPath));
        return Save(net, path, new OnnxExportOptions { Opset = opset, Vocabulary = loaded.Vocabulary, Table = loaded.Table });
    }

    /// <summary>The ONNX IR version that goes with an operator set: the version of the ONNX release that introduced the opset (4 at least, so that initialisers need not be listed as graph inputs).</summary>
    internal static int IrVersion(int opset) => opset switch
    {
        <= 9 => 4,
        10 => 5,
        11 => 6,
        <= 14 => 7,
        <= 18 => 8,
        <= 20 => 9,
        _ => 10,
    };

    private static OnnxExportSummary Summary(ModelProto model, long bytes) => new(
        (int)model.OpsetImport[0].Version, (int)model.IrVersion, Describe(model.Graph.Input[0]), model.Graph.Output.Select(Describe).ToArray(), bytes);

    private static string Describe(ValueInfoProto v)
    {
        var t = v.Type.TensorType;
        string type = t.ElemType == (int)TensorProto.Types.DataType.Int64 ? "int64" : "float";
        string dims = string.Join(",", t.Shape.Dim.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam ? d.DimParam : d.DimValue.ToString(CultureInfo.InvariantCulture)));
        return $"{v.Name} {type} [{dims}]";
    }

    /// <summary>The model, checked and built (internal: the tests parse and alter it).</summary>
    internal static ModelProto Build(Network network, OnnxExportOptions options)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(options);
        var stack = network.Stack;
        int lowest = LowestOpset(stack);
        int opset = options.Opset ?? lowest;
        if (opset < MinimumOpset || opset > MaximumOpset)
            throw new ArgumentOutOfRangeException(nameof(options), opset,
                $"OnnxExportOptions.Opset = {opset}: the exporter writes opsets {MinimumOpset} to {MaximumOpset} ({MinimumOpset} is the oldest ONNX Runtime reads).");
        if (opset < lowest)
        {
            int i = Enumerable.Range(0, stack.Layers.Count).First(j => LayerOpset(stack.Layers[j]) > opset);
            throw new ArgumentOutOfRangeException(nameof(options), opset,
                $"OnnxExportOptions.Opset = {opset} is too low for layer {i} ({stack.Layers[i]}): a linear layer without bias is a Gemm without its C input, which needs opset {LayerOpset(stack.Layers[i])}; "
                + $"export at opset {lowest} or later (the lowest this stack allows).");
        }
        if (options.Vocabulary is { } vocab && (!stack.TakesIds || stack.Layers[0].In != vocab.Size))
            throw new ArgumentException($"the vocabulary has {vocab.Size} characters but layer 0 is {stack.Layers[0]}: a vocabulary goes with a stack on ids whose embedding has one row per character.", nameof(options));
        if (options.Table is { } table && StackCheckpoint.TableMismatch(table, stack.TakesIds, network.InputWidth, network.OutputWidth, network.Options.Loss) is { } why)
            throw new ArgumentException("the table does not fit the network: " + why, nameof(options));
        long bytes = network.Parameters.Data.LongLength * sizeof(float);
        if (bytes > MaxParameterBytes)
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"the network's parameters take {bytes:N0} bytes, more than an ONNX file (a protobuf message, at most 2 GiB) can hold with the graph; this exporter writes no external data."), nameof(network));

        network.PullParameters(); // on a GPU, the device's values
        var scaler = options.Table?.Scaler;
        var graph = new GraphBuilder(network, opset, scaler).Build();
        var model = new ModelProto
        {
            IrVersion = IrVersion(opset),
            ProducerName = "HpBackprop",
            ProducerVersion = typeof(OnnxExport).Assembly.GetName().Version?.ToString(3) ?? "",
            Domain = "hpbackprop",
            ModelVersion = 1,
            DocString = $"{stack} closed by {network.Options.Loss.ToText()}, exported by HpBackprop for inference: '{LogitsName}' is the last layer's output"
                + (network.Options.Loss is LossKind.CrossEntropy or LossKind.BceWithLogits ? $", '{ProbabilitiesName}' the loss's link ({(network.Options.Loss == LossKind.CrossEntropy ? "softmax" : "sigmoid")}) of it." : ".")
                + (scaler != null ? $" '{InputName}' is the raw feature columns (metadata table_features), standardised in the graph as (x − {GraphBuilder.ScalerMean}) / {GraphBuilder.ScalerScale}, the training rows' scaler." : ""),
            Graph = graph,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        void Meta(string key, string value) => model.MetadataProps.Add(new StringStringEntryProto { Key = key, Value = value });
        Meta("layers", stack.ToString());
        Meta("loss", network.Options.Loss.ToText());
        Meta("input_width", network.InputWidth.ToString(CultureInfo.InvariantCulture));
        Meta("eps", network.Options.Eps.ToString("R", CultureInfo.InvariantCulture));
        if (options.Vocabulary is { } v) Meta("vocab", v.Characters);
        if (options.Table is { } t)
        {
            var keys = new Dictionary<string, string>(StringComparer.Ordinal);
            TableMetadata.Write(t, keys);
            foreach (var kv in keys) Meta(kv.Key, kv.Value);
        }
        return model;
    }

    /// <summary>The parameters an export takes at most: protobuf's 2 GiB message limit less room for the graph.</summary>
    internal const long MaxParameterBytes = int.MaxValue - (64L << 20);
}
