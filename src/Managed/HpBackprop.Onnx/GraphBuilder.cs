using System.Buffers.Binary;
using System.Globalization;
using Google.Protobuf;
using HpBackprop.Data;
using HpBackprop.Networks;
using HpBackprop.Onnx.Proto;

namespace HpBackprop.Onnx;

/// <summary>
/// Builds the ONNX graph of a network, one layer at a time (<see cref="OnnxExport"/> documents the mapping). Value names
/// follow the compiled plan's buffers: layer <c>i</c> writes <c>out.{i}</c>, and the last layer writes <c>logits</c>.
/// Node names are <c>{i}.{layer}</c> (<c>2.linear</c>); initialisers carry the state-dict names. With a
/// <c>scaler</c> (a model trained on a table), the graph begins with its standardisation of the raw input
/// (<see cref="Standardise"/>), so the model takes the raw feature values as <c>predict --csv</c> reads them.
/// </summary>
internal sealed class GraphBuilder(Network network, int opset, Standardizer? scaler = null)
{
    /// <summary>The initialisers of the standardisation: the D means and the D scales (<see cref="Standardizer.Mean"/>, <see cref="Standardizer.Scale"/>).</summary>
    internal const string ScalerMean = "scaler.mean", ScalerScale = "scaler.scale";

    /// <summary>The values between the raw input and the first layer: <c>x − mean</c>, then <c>(x − mean) / scale</c>.</summary>
    internal const string Centred = "input.centred", Standardised = "input.standardised";

    private readonly GraphProto _graph = new() { Name = "hpbackprop" };
    private readonly HashSet<string> _initializers = new(StringComparer.Ordinal);

    public GraphProto Build()
    {
        var stack = network.Stack;
        var shapes = network.Shapes;
        int last = stack.Layers.Count - 1;
        _graph.Input.Add(Value(OnnxExport.InputName, stack.TakesIds ? TensorProto.Types.DataType.Int64 : TensorProto.Types.DataType.Float, network.InputWidth));
        string x = OnnxExport.InputName;
        if (scaler != null) x = Standardise(x);
        for (int i = 0; i <= last; i++)
        {
            string y = i == last ? OnnxExport.LogitsName : Out(i);
            Layer(i, stack.Layers[i], x, y);
            if (i < last) _graph.ValueInfo.Add(Value(y, TensorProto.Types.DataType.Float, Dims(shapes[i])));
            x = y;
        }
        int k = network.OutputWidth;
        _graph.Output.Add(Value(OnnxExport.LogitsName, TensorProto.Types.DataType.Float, k));
        switch (network.Options.Loss)
        {
            case LossKind.CrossEntropy:
                // axis 1, the class axis of [N,k]: the same at every opset (before 13 Softmax flattens from the axis on, which for [N,k] is the same)
                _graph.Node.Add(Node("Softmax", OnnxExport.ProbabilitiesName, [OnnxExport.LogitsName], [OnnxExport.ProbabilitiesName], Int("axis", 1)));
                _graph.Output.Add(Value(OnnxExport.ProbabilitiesName, TensorProto.Types.DataType.Float, k));
                break;
            case LossKind.BceWithLogits:
                _graph.Node.Add(Node("Sigmoid", OnnxExport.ProbabilitiesName, [OnnxExport.LogitsName], [OnnxExport.ProbabilitiesName]));
                _graph.Output.Add(Value(OnnxExport.ProbabilitiesName, TensorProto.Types.DataType.Float, k));
                break;
        }
        return _graph;
    }

    private static string Out(int i) => "out." + I(i);

    /// <summary>
    /// The scaler's standardisation of the raw features <c>[N,D]</c>: <c>x' = (x − scaler.mean) / scale</c>, a <c>Sub</c>
    /// then a <c>Div</c> of the <c>[D]</c> initialisers (broadcast over the rows, as every opset from 7 on does). This is
    /// <see cref="Standardizer.Transform"/>'s order of operations, the one <c>eval</c> and <c>predict</c> apply: two float32
    /// operations, each correctly rounded, so ONNX Runtime's standardised input is bit for bit the library's (a <c>Mul</c> by
    /// the reciprocal <c>1/scale</c> rounds twice, once in the reciprocal, and differs from it in the last bit on some values;
    /// <c>OnnxTableTests</c> holds ONNX Runtime's standardised input to the library's bit for bit).
    /// </summary>
    private string Standardise(string x)
    {
        var s = scaler!;
        int d = network.InputWidth;
        if (s.Width != d) throw new ArgumentException($"the scaler has {s.Width} columns but the network takes {d} inputs.", nameof(network));
        if (_initializers.Add(ScalerMean)) _graph.Initializer.Add(Tensor(ScalerMean, s.Mean, [d]));
        if (_initializers.Add(ScalerScale)) _graph.Initializer.Add(Tensor(ScalerScale, s.Scale, [d]));
        _graph.Node.Add(Node("Sub", "scaler.centre", [x, ScalerMean], [Centred]));
        _graph.Node.Add(Node("Div", "scaler.standardise", [Centred, ScalerScale], [Standardised]));
        _graph.ValueInfo.Add(Value(Centred, TensorProto.Types.DataType.Float, d));
        _graph.ValueInfo.Add(Value(Standardised, TensorProto.Types.DataType.Float, d));
        return Standardised;
    }

    private static int[] Dims(TensorShape s) => s.Rows == 0 ? [s.Width] : [s.Rows, s.Width];

    private void Layer(int i, Layer l, string x, string y)
    {
        string name = $"{I(i)}.{l.Kind.ToString().ToLowerInvariant()}";
        string W = l.Kind is LayerKind.Embedding or LayerKind.Linear or LayerKind.BatchNorm or LayerKind.LayerNorm ? Weight(i, "weight") : "";
        switch (l.Kind)
        {
            case LayerKind.Embedding:
                // rows of the [V,E] table: [N,B] ids → [N,B,E]
                _graph.Node.Add(Node("Gather", name, [W, x], [y], Int("axis", 0)));
                break;
            case LayerKind.Flatten:
                _graph.Node.Add(Node("Flatten", name, [x], [y], Int("axis", 1)));
                break;
            case LayerKind.Linear:
                // y = x·Wᵀ + b with W in its [OUT,IN] layout; C (the bias) is optional from opset 11 on
                _graph.Node.Add(Node("Gemm", name, l.HasBias ? [x, W, Weight(i, "bias")] : [x, W], [y], Int("transB", 1)));
                break;
            case LayerKind.BatchNorm:
                // inference form, the same for both modes: (x − running_mean)/√(running_var + eps)·weight + bias
                _graph.Node.Add(Node("BatchNormalization", name, [x, W, Weight(i, "bias"), Weight(i, "running_mean"), Weight(i, "running_var")], [y],
                    Float("epsilon", network.Options.Eps)));
                break;
            case LayerKind.LayerNorm:
                if (opset >= 17)
                    _graph.Node.Add(Node("LayerNormalization", name, [x, W, Weight(i, "bias")], [y], Int("axis", -1), Float("epsilon", network.Options.Eps)));
                else
                    LayerNormDecomposed(i, name, x, y, W, Weight(i, "bias"));
                break;
            case LayerKind.Tanh:
                _graph.Node.Add(Node("Tanh", name, [x], [y]));
                break;
            case LayerKind.Relu:
                _graph.Node.Add(Node("Relu", name, [x], [y]));
                break;
            case LayerKind.Sigmoid:
                _graph.Node.Add(Node("Sigmoid", name, [x], [y]));
                break;
            case LayerKind.Dropout:
                // the identity in inference
                _graph.Node.Add(Node("Identity", name, [x], [y]));
                break;
            default:
                throw new ArgumentException($"layer {I(i)} ({l}) has no ONNX form.", nameof(network));
        }
    }

    /// <summary>
    /// Layer norm below opset 17, over the features of <c>[N,F]</c> (axis 1, the last): <c>mu = ReduceMean(x)</c>,
    /// <c>d = x − mu</c>, <c>var = ReduceMean(d·d)</c>, <c>y = d / √(var + eps) · weight + bias</c>; the epsilon is the
    /// scalar initialiser <c>{i}.eps</c>.
    /// </summary>
    private void LayerNormDecomposed(int i, string name, string x, string y, string w, string b)
    {
        string Part(string s) => $"{Out(i)}.{s}";
        string eps = $"{I(i)}.eps";
        Scalar(eps, network.Options.Eps);
        _graph.Node.Add(Node("ReduceMean", name + ".mean", [x], [Part("mean")], Ints("axes", 1), Int("keepdims", 1)));
        _graph.Node.Add(Node("Sub", name + ".centre", [x, Part("mean")], [Part("centred")]));
        _graph.Node.Add(Node("Mul", name + ".square", [Part("centred"), Part("centred")], [Part("squared")]));
        _graph.Node.Add(Node("ReduceMean", name + ".var", [Part("squared")], [Part("var")], Ints("axes", 1), Int("keepdims", 1)));
        _graph.Node.Add(Node("Add", name + ".var_eps", [Part("var"), eps], [Part("var_eps")]));
        _graph.Node.Add(Node("Sqrt", name + ".std", [Part("var_eps")], [Part("std")]));
        _graph.Node.Add(Node("Div", name + ".normalise", [Part("centred"), Part("std")], [Part("xhat")]));
        _graph.Node.Add(Node("Mul", name + ".scale", [Part("xhat"), w], [Part("scaled")]));
        _graph.Node.Add(Node("Add", name + ".shift", [Part("scaled"), b], [y]));
    }

    /// <summary>The initialiser of a parameter or running statistic under its state-dict name (added once), and its name.</summary>
    private string Weight(int i, string suffix)
    {
        string name = $"{I(i)}.{suffix}";
        if (!_initializers.Add(name)) return name;
        var store = network.Parameters;
        _graph.Initializer.Add(Tensor(name, store.Value(name), store.Slot(name).Shape));
        return name;
    }

    private void Scalar(string name, float value)
    {
        if (_initializers.Add(name)) _graph.Initializer.Add(Tensor(name, [value], []));
    }

    /// <summary>A float tensor with its elements as raw little-endian bytes.</summary>
    private static TensorProto Tensor(string name, ReadOnlySpan<float> values, int[] shape)
    {
        var bytes = new byte[values.Length * sizeof(float)];
        for (int j = 0; j < values.Length; j++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(j * sizeof(float)), values[j]);
        var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float, RawData = UnsafeByteOperations.UnsafeWrap(bytes) };
        foreach (int d in shape) t.Dims.Add(d);
        return t;
    }

    private static ValueInfoProto Value(string name, TensorProto.Types.DataType type, params int[] dims)
    {
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = OnnxExport.BatchDimension });
        foreach (int d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } } };
    }

    private static NodeProto Node(string op, string name, string[] inputs, string[] outputs, params AttributeProto[] attributes)
    {
        var n = new NodeProto { OpType = op, Name = name };
        n.Input.AddRange(inputs);
        n.Output.AddRange(outputs);
        n.Attribute.AddRange(attributes);
        return n;
    }

    private static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    private static AttributeProto Ints(string name, params long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        return a;
    }

    private static AttributeProto Float(string name, float value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    private static string I(int v) => v.ToString(CultureInfo.InvariantCulture);
}
