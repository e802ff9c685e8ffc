using System.Globalization;
using System.Numerics;
using System.Runtime.InteropServices;
using HpBackprop.Networks;
using HpBackprop.Reference;

namespace HpBackprop.IO;

/// <summary>
/// A docs/stacks.md grads-interchange input for a layer stack, read from a safetensors file and checked
/// against its stack: metadata <c>layers</c> (the text form), <c>loss</c>, optional <c>l2</c>,
/// <c>bn_momentum</c> (default 0.001) and <c>eps</c> (default 1e-5); tensors <c>x</c> (I32/I64
/// <c>[n,B]</c> for a stack on ids, F32/F64 <c>[n,D]</c> otherwise), <c>y</c> (I32/I64 <c>[n]</c> for
/// cross_entropy, F32/F64 <c>[n,k]</c> for mse and bce_with_logits, absent for mean), every parameter
/// under its state-dict name, and optionally the batch-norm buffers (<c>{i}.running_mean</c>,
/// <c>{i}.running_var</c>, <c>{i}.num_batches_tracked</c>). The float inputs and parameters have one
/// precision, F32 or F64 (<see cref="Precision"/>); the buffers may be either; values are kept widened
/// to double (exact for F32). Other tensors are
/// ignored; the oracle's expected outputs in the same file are read by <see cref="ReadExpected"/>.
/// </summary>
public sealed class StackBundle
{
    private StackBundle(string source, SafeTensorsFile file, StackFileHeader h, int n, int inputWidth,
        int[]? ids, double[]? features, int[]? classes, double[]? targets, Dictionary<string, double[]> parameters,
        Dictionary<string, double[]> running, Dictionary<string, long> tracked)
    {
        Source = source; File = file; Stack = h.Stack; Loss = h.Loss; L2 = h.L2; BatchNormMomentum = h.Momentum; Eps = h.Eps; Seed = h.Seed; Step = h.Step;
        Precision = h.Precision; N = n; InputWidth = inputWidth; Ids = ids; Features = features; Classes = classes; Targets = targets;
        Parameters = parameters; RunningStatistics = running; BatchesTracked = tracked;
    }

    /// <summary>The file name (or the name given to <see cref="From"/>), used in messages.</summary>
    public string Source { get; }

    /// <summary>The whole file.</summary>
    public SafeTensorsFile File { get; }

    /// <summary>The stack (metadata <c>layers</c>).</summary>
    public Sequential Stack { get; }

    /// <summary>The loss (metadata <c>loss</c>).</summary>
    public LossKind Loss { get; }

    /// <summary>The L2 penalty (metadata <c>l2</c>, 0 when absent).</summary>
    public double L2 { get; }

    /// <summary>The batch-norm momentum (metadata <c>bn_momentum</c>, 0.001 when absent).</summary>
    public double BatchNormMomentum { get; }

    /// <summary>The batch-norm epsilon (metadata <c>eps</c>, 1e-5 when absent).</summary>
    public double Eps { get; }

    /// <summary>Metadata <c>dropout_seed</c>: the seed of the dropout masks (<see cref="NetworkOptions.Seed"/>; default 42).</summary>
    public int Seed { get; }

    /// <summary>Metadata <c>step</c>: the optimiser step the dropout masks are drawn for (<see cref="Network.StepCount"/>; default 0).</summary>
    public long Step { get; }

    /// <summary>The precision of every float tensor: <see cref="DType.F32"/> or <see cref="DType.F64"/>.</summary>
    public DType Precision { get; }

    /// <summary>Rows n.</summary>
    public int N { get; }

    /// <summary>B (ids per row) or D (features per row).</summary>
    public int InputWidth { get; }

    /// <summary><c>x</c> as ids <c>[n,B]</c>, or null for float features.</summary>
    public int[]? Ids { get; }

    /// <summary><c>x</c> as float features <c>[n,D]</c> (widened to double), or null for ids.</summary>
    public double[]? Features { get; }

    /// <summary><c>y</c> as class ids <c>[n]</c> (cross_entropy), else null.</summary>
    public int[]? Classes { get; }

    /// <summary><c>y</c> as float targets <c>[n,k]</c> (mse, bce_with_logits), else null.</summary>
    public double[]? Targets { get; }

    /// <summary>Every parameter by state-dict name, widened to double.</summary>
    public IReadOnlyDictionary<string, double[]> Parameters { get; }

    /// <summary>The running statistics present in the file (<c>{i}.running_mean</c>, <c>{i}.running_var</c>).</summary>
    public IReadOnlyDictionary<string, double[]> RunningStatistics { get; }

    /// <summary>The <c>{i}.num_batches_tracked</c> present in the file.</summary>
    public IReadOnlyDictionary<string, long> BatchesTracked { get; }

    /// <summary>Reads and validates a file.</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="SafeTensorsFormatException">The file is malformed, a tensor or metadata entry is missing or has the wrong dtype, or an I64 id does not fit in 32 bits; the message names the file and the tensor.</exception>
    /// <exception cref="StackException">The data do not fit the stack (a shape, an id, a class, the targets of the loss); the message names the file, the tensor and the layer.</exception>
    public static StackBundle Load(string path) => From(SafeTensorsFile.Read(path), Path.GetFileName(path));

    /// <summary>Validates a parsed file; <paramref name="source"/> names it in messages.</summary>
    /// <exception cref="SafeTensorsFormatException">See <see cref="Load"/>.</exception>
    /// <exception cref="StackException">See <see cref="Load"/>.</exception>
    public static StackBundle From(SafeTensorsFile file, string source)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(source);
        var h = StackFileHeader.Read(file, source);
        var x = StackFileHeader.Need(file, source, "x");
        if (x.Shape.Length != 2) throw new StackException($"{source}: tensor 'x' has shape {Fmt(x.Shape)}; {(h.Stack.TakesIds ? "[n,B] (ids)" : "[n,D] (features)")} is needed.");
        int n = x.Shape[0], width = x.Shape[1];
        var inputs = StackFileHeader.ReadInputs(file, source, h, x, file.Contains("y") ? file["y"] : null, n, width, "x", "y");
        var (parameters, running, tracked) = StackFileHeader.ReadParameters(file, source, h, "");
        return new StackBundle(source, file, h, n, width, inputs.Ids, inputs.Features, inputs.Classes, inputs.Targets, parameters, running, tracked);
    }

    /// <summary>The minibatch in <typeparamref name="T"/>.</summary>
    public StackInput<T> InputAs<T>() where T : IFloatingPointIeee754<T> =>
        new(N, Ids, Features is null ? null : Convert<T>(Features), Classes, Targets is null ? null : Convert<T>(Targets));

    /// <summary>The parameters in <typeparamref name="T"/> (fresh arrays).</summary>
    public Dictionary<string, T[]> ParametersAs<T>() where T : IFloatingPointIeee754<T> =>
        Parameters.ToDictionary(kv => kv.Key, kv => Convert<T>(kv.Value), StringComparer.Ordinal);

    /// <summary>The running statistics in <typeparamref name="T"/> (PyTorch's initial state for those absent).</summary>
    public BatchNormBuffers<T> BuffersAs<T>() where T : IFloatingPointIeee754<T> =>
        BatchNormBuffers<T>.From(Stack, RunningStatistics.ToDictionary(kv => kv.Key, kv => Convert<T>(kv.Value)), BatchesTracked);

    /// <summary>A reference for this bundle's stack, loss, <c>l2</c>, momentum and eps in <typeparamref name="T"/>.</summary>
    public StackReference<T> ReferenceAs<T>() where T : IFloatingPointIeee754<T> => new(Stack, Loss, InputWidth)
    {
        L2 = T.CreateChecked(L2),
        BatchNormMomentum = T.CreateChecked(BatchNormMomentum),
        Eps = T.CreateChecked(Eps),
        Seed = unchecked((uint)Seed),
        Step = Step,
    };

    /// <summary>
    /// Runs the plain-loop reference in the bundle's precision (double for F64, float for F32) and
    /// returns the grads-interchange output (see <see cref="Output{T}"/>).
    /// </summary>
    public SafeTensorsFile RunReference() => Precision == DType.F64 ? RunReference<double>() : RunReference<float>();

    private SafeTensorsFile RunReference<T>() where T : IFloatingPointIeee754<T> =>
        Output(ReferenceAs<T>().Run(InputAs<T>(), ParametersAs<T>(), BuffersAs<T>()));

    /// <summary>
    /// The grads-interchange output for a result of this bundle's stack: <c>loss</c> <c>[1]</c>,
    /// <c>grad.{name}</c> for every parameter (its PyTorch shape), and <c>grad.x</c> <c>[n,D]</c> /
    /// <c>grad.y</c> <c>[n,k]</c> for float x and y; F32 for a float result, F64 for a double one.
    /// </summary>
    public SafeTensorsFile Output<T>(StackResult<T> result) where T : IFloatingPointIeee754<T>
    {
        ArgumentNullException.ThrowIfNull(result);
        var o = new SafeTensorsFile();
        o.Metadata["layers"] = Stack.ToString();
        o.Metadata["loss"] = Loss.ToText();
        Put(o, "loss", [result.Loss], [1]);
        foreach (var s in Stack.Parameters())
            Put(o, "grad." + s.Name, result.Gradients[s.Name], s.Shape);
        if (result.InputGradient is { } dx) Put(o, "grad.x", dx, [N, InputWidth]);
        if (result.TargetGradient is { } dt) Put(o, "grad.y", dt, [N, result.OutputWidth]);
        return o;
    }

    private static void Put<T>(SafeTensorsFile f, string name, T[] data, int[] shape) where T : IFloatingPointIeee754<T>
    {
        if (data is double[] d) f.Add(name, d.AsSpan(), shape);
        else if (data is float[] s) f.Add(name, s.AsSpan(), shape);
        else f.Add(name, data.Select(double.CreateChecked).ToArray().AsSpan(), shape);
    }

    /// <summary>
    /// The oracle's expected outputs stored in the same file: <c>loss</c>, <c>out</c> <c>[n,k]</c>,
    /// <c>grad.{name}</c> for every parameter, <c>grad.x</c>/<c>grad.y</c> for float x/y, and
    /// <c>after.{i}.running_mean/var</c> for every batch-norm layer.
    /// </summary>
    /// <exception cref="SafeTensorsFormatException">An expected tensor is missing or has the wrong shape.</exception>
    public StackExpected ReadExpected()
    {
        var f = File;
        int k = Stack.Resolve(InputWidth)[^1].Width;
        double[] Need(string name, int[] shape)
        {
            var t = StackFileHeader.Need(f, Source, name);
            if (!t.Shape.SequenceEqual(shape)) throw new SafeTensorsFormatException(Source, $"expected tensor '{name}' has shape {Fmt(t.Shape)}, {Fmt(shape)} is needed.");
            return t.ToDouble();
        }
        var loss = StackFileHeader.Need(f, Source, "loss");
        if (loss.Length != 1) throw new SafeTensorsFormatException(Source, $"expected tensor 'loss' has shape {Fmt(loss.Shape)}; one value is needed.");
        var grads = Stack.Parameters().ToDictionary(s => s.Name, s => Need("grad." + s.Name, s.Shape), StringComparer.Ordinal);
        var after = new Dictionary<string, double[]>(StringComparer.Ordinal);
        foreach (int i in Stack.BatchNormLayers())
            foreach (string name in new[] { BatchNormBuffers<double>.MeanName(i), BatchNormBuffers<double>.VarName(i) })
                after[name] = Need("after." + name, [Stack.Layers[i].In]);
        var nearZero = f.Metadata.TryGetValue("near_zero", out var nz) ? nz.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) : [];
        return new StackExpected(
            loss.ToDouble()[0],
            Need("out", [N, k]),
            grads,
            Features is null ? null : Need("grad.x", [N, InputWidth]),
            Targets is null ? null : Need("grad.y", [N, k]),
            after,
            nearZero);
    }

    internal static T[] Convert<T>(double[] a) where T : IFloatingPointIeee754<T>
    {
        var o = new T[a.Length];
        for (int i = 0; i < a.Length; i++) o[i] = T.CreateChecked(a[i]);
        return o;
    }

    internal static string Fmt(int[] shape) => "[" + string.Join(", ", shape) + "]";
}

/// <summary>The oracle's expected outputs of a <see cref="StackBundle"/> (PyTorch autograd), widened to double.</summary>
/// <param name="Loss">The loss, including the L2 penalty.</param>
/// <param name="Out">The last layer's output <c>[n,k]</c>.</param>
/// <param name="Gradients">The gradient of every parameter by state-dict name (the file's <c>grad.{name}</c>).</param>
/// <param name="InputGradient"><c>grad.x</c> for float x, else null.</param>
/// <param name="TargetGradient"><c>grad.y</c> for float y, else null.</param>
/// <param name="After">The running statistics after the step by name (<c>{i}.running_mean</c>, from <c>after.{i}.running_mean</c>).</param>
/// <param name="NearZero">The tensors the oracle marks as zero by construction (metadata <c>near_zero</c>, e.g. <c>grad.2.bias</c> of a linear before a batch norm).</param>
public sealed record StackExpected(double Loss, double[] Out, IReadOnlyDictionary<string, double[]> Gradients, double[]? InputGradient,
    double[]? TargetGradient, IReadOnlyDictionary<string, double[]> After, IReadOnlyList<string> NearZero);

/// <summary>The metadata shared by stack bundles (layers, loss, l2, bn_momentum, eps) and the helpers that check tensors against the stack.</summary>
internal sealed record StackFileHeader(Sequential Stack, LossKind Loss, double L2, double Momentum, double Eps, DType Precision, int Seed = 42, long Step = 0)
{
    public static StackFileHeader Read(SafeTensorsFile f, string source)
    {
        string Meta(string key) => f.Metadata.TryGetValue(key, out var v) ? v
            : throw new SafeTensorsFormatException(source, $"metadata '{key}' is missing (a stack bundle needs 'layers' and 'loss').");
        Sequential stack;
        try { stack = Sequential.Parse(Meta("layers")); }
        catch (FormatException e) { throw new SafeTensorsFormatException(source, $"metadata 'layers': {e.Message}"); }
        LossKind loss;
        try { loss = Losses.Parse(Meta("loss")); }
        catch (FormatException e) { throw new SafeTensorsFormatException(source, $"metadata 'loss': {e.Message}"); }
        double Num(string key, double fallback, bool positive)
        {
            if (!f.Metadata.TryGetValue(key, out var s)) return fallback;
            if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v) || v < 0 || (positive && v == 0))
                throw new SafeTensorsFormatException(source, $"metadata '{key}' = '{Layer.Clip(s)}' is not a finite number {(positive ? "> 0" : "≥ 0")}.");
            return v;
        }
        double l2 = Num("l2", 0, false), momentum = Num("bn_momentum", 0.001, false), eps = Num("eps", 1e-5, true);
        int seed = 42;
        if (f.Metadata.TryGetValue("dropout_seed", out var seedText) && !int.TryParse(seedText, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out seed))
            throw new SafeTensorsFormatException(source, $"metadata 'dropout_seed' = '{Layer.Clip(seedText)}' is not a whole number (the dropout masks' seed).");
        long step = 0;
        if (f.Metadata.TryGetValue("step", out var stepText) && !(long.TryParse(stepText, NumberStyles.None, CultureInfo.InvariantCulture, out step)))
            throw new SafeTensorsFormatException(source, $"metadata 'step' = '{Layer.Clip(stepText)}' is not a whole number ≥ 0 (the dropout masks' step).");
        if (momentum > 1) throw new SafeTensorsFormatException(source, $"metadata 'bn_momentum' = {momentum} is not in [0, 1].");
        // one precision for the inputs and parameters (running buffers, which checkpoints (docs/stacks.md) keep in
        // F32, and any other tensor are widened whatever their precision)
        DType? precision = null;
        string? first = null;
        foreach (string name in stack.Parameters().Select(p => p.Name).Prepend("y").Prepend("x"))
        {
            if (!f.Contains(name) || f[name].DType is not (DType.F32 or DType.F64)) continue;
            var t = f[name];
            if (precision is null) { precision = t.DType; first = name; }
            else if (t.DType != precision)
                throw new SafeTensorsFormatException(source, $"tensor '{name}' is {t.DType} but '{first}' is {precision}: the inputs and parameters of a bundle have one precision.");
        }
        return new StackFileHeader(stack, loss, l2, momentum, eps, precision ?? DType.F32, seed, step);
    }

    public static SafeTensor Need(SafeTensorsFile f, string source, string name) =>
        f.Contains(name) ? f[name] : throw new SafeTensorsFormatException(source, $"tensor '{name}' is missing.");

    /// <summary>Ids or features (<paramref name="x"/>, per row <paramref name="width"/>) and the targets, checked against the stack and loss; <paramref name="n"/> rows.</summary>
    public static (int[]? Ids, double[]? Features, int[]? Classes, double[]? Targets) ReadInputs(
        SafeTensorsFile f, string source, StackFileHeader h, SafeTensor x, SafeTensor? y, int n, int width, string xName, string yName)
    {
        var stack = h.Stack;
        string first = $"layer 0 ({stack.Layers[0]})";
        if (n < 1) throw new StackException($"{source}: tensor '{xName}' has {n} rows; at least one is needed.");
        TensorShape[] shapes;
        try { shapes = stack.Resolve(width); }
        catch (StackException e) { throw new StackException($"{source}: with '{xName}' of width {width}: {e.Message}"); }
        int k = shapes[^1].Width;
        int[]? ids = null; double[]? features = null;
        if (stack.TakesIds)
        {
            if (x.DType is not (DType.I32 or DType.I64))
                throw new StackException($"{source}: tensor '{xName}' is {x.DType} but {first} takes ids (I32 or I64 [n,B]).");
            ids = Int32(x, source, xName);
            int v = stack.Layers[0].In;
            for (int r = 0; r < ids.Length; r++)
                if ((uint)ids[r] >= (uint)v)
                    throw new StackException($"{source}: tensor '{xName}': id {ids[r]} at row {r / width}, column {r % width} is outside [0, {v}) of {first}.");
        }
        else
        {
            if (x.DType is not (DType.F32 or DType.F64))
                throw new StackException($"{source}: tensor '{xName}' is {x.DType} but {first} takes float features (F32 or F64 [n,D]); ids need an embedding first.");
            features = x.ToDouble();
        }
        int[]? classes = null; double[]? targets = null;
        string loss = h.Loss.ToText();
        switch (h.Loss.Targets())
        {
            case TargetKind.Classes:
                if (y is null) throw new SafeTensorsFormatException(source, $"tensor '{yName}' (class ids [n] for {loss}) is missing.");
                if (y.DType is not (DType.I32 or DType.I64)) throw new StackException($"{source}: tensor '{yName}' is {y.DType} but {loss} takes class ids (I32 or I64 [n]).");
                if (y.Shape.Length != 1 || y.Shape[0] != n) throw new StackException($"{source}: tensor '{yName}' has shape {StackBundle.Fmt(y.Shape)} but {loss} needs one class id per row, [{n}].");
                classes = Int32(y, source, yName);
                for (int i = 0; i < n; i++)
                    if ((uint)classes[i] >= (uint)k)
                        throw new StackException($"{source}: tensor '{yName}': class id {classes[i]} at row {i} is outside [0, {k}): layer {stack.Layers.Count - 1} ({stack.Layers[^1]}) gives {k} outputs.");
                break;
            case TargetKind.Floats:
                if (y is null) throw new SafeTensorsFormatException(source, $"tensor '{yName}' (targets [n,k] for {loss}) is missing.");
                if (y.DType is not (DType.F32 or DType.F64)) throw new StackException($"{source}: tensor '{yName}' is {y.DType} but {loss} takes float targets (F32 or F64 [n,k]).");
                if (!y.Shape.SequenceEqual([n, k])) throw new StackException($"{source}: tensor '{yName}' has shape {StackBundle.Fmt(y.Shape)} but {loss} after layer {stack.Layers.Count - 1} ({stack.Layers[^1]}) needs [{n}, {k}].");
                targets = y.ToDouble();
                break;
            default:
                if (y is not null) throw new StackException($"{source}: tensor '{yName}' is given but the loss {loss} takes no targets.");
                break;
        }
        return (ids, features, classes, targets);
    }

    /// <summary>Every parameter (required) and batch-norm buffer (optional) under <paramref name="prefix"/> + its state-dict name.</summary>
    public static (Dictionary<string, double[]> Parameters, Dictionary<string, double[]> Running, Dictionary<string, long> Tracked) ReadParameters(
        SafeTensorsFile f, string source, StackFileHeader h, string prefix)
    {
        var stack = h.Stack;
        var ps = new Dictionary<string, double[]>(StringComparer.Ordinal);
        foreach (var s in stack.Parameters())
        {
            string name = prefix + s.Name;
            string layer = $"layer {s.Layer} ({stack.Layers[s.Layer]})";
            if (!f.Contains(name)) throw new SafeTensorsFormatException(source, $"tensor '{name}' ({layer}) is missing.");
            var t = f[name];
            if (t.DType is not (DType.F32 or DType.F64)) throw new SafeTensorsFormatException(source, $"tensor '{name}' has dtype {t.DType}; F32 or F64 is needed.");
            if (!t.Shape.SequenceEqual(s.Shape))
                throw new StackException($"{source}: tensor '{name}' has shape {StackBundle.Fmt(t.Shape)} but {layer} needs {StackBundle.Fmt(s.Shape)}.");
            ps[s.Name] = t.ToDouble();
        }
        var running = new Dictionary<string, double[]>(StringComparer.Ordinal);
        var tracked = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (int i in stack.BatchNormLayers())
        {
            int feat = stack.Layers[i].In;
            string layer = $"layer {i} ({stack.Layers[i]})";
            foreach (string b in new[] { BatchNormBuffers<double>.MeanName(i), BatchNormBuffers<double>.VarName(i) })
            {
                if (!f.Contains(prefix + b)) continue;
                var t = f[prefix + b];
                if (t.DType is not (DType.F32 or DType.F64)) throw new SafeTensorsFormatException(source, $"tensor '{prefix + b}' has dtype {t.DType}; F32 or F64 is needed.");
                if (!t.Shape.SequenceEqual([feat])) throw new StackException($"{source}: tensor '{prefix + b}' has shape {StackBundle.Fmt(t.Shape)} but {layer} needs [{feat}].");
                running[b] = t.ToDouble();
            }
            string nb = BatchNormBuffers<double>.TrackedName(i);
            if (f.Contains(prefix + nb))
            {
                var t = f[prefix + nb];
                if (t.DType is not (DType.I32 or DType.I64) || t.Length != 1)
                    throw new SafeTensorsFormatException(source, $"tensor '{prefix + nb}' is {t.DType} {StackBundle.Fmt(t.Shape)}; an I64 scalar is needed.");
                tracked[nb] = t.DType == DType.I64 ? MemoryMarshal.Cast<byte, long>(t.Data)[0] : MemoryMarshal.Cast<byte, int>(t.Data)[0];
            }
        }
        return (ps, running, tracked);
    }

    /// <summary>An integer tensor as int32; an I64 value beyond int32 is a format error naming the file, tensor and position.</summary>
    public static int[] Int32(SafeTensor t, string source, string name)
    {
        if (t.DType == DType.I32) return MemoryMarshal.Cast<byte, int>(t.Data).ToArray();
        var s = MemoryMarshal.Cast<byte, long>(t.Data);
        var o = new int[s.Length];
        for (int i = 0; i < o.Length; i++)
        {
            if (s[i] is < int.MinValue or > int.MaxValue)
                throw new SafeTensorsFormatException(source, $"tensor '{name}' is I64 and its value {s[i]} at flat index {i} does not fit in 32 bits (ids must be below 2^31).");
            o[i] = (int)s[i];
        }
        return o;
    }
}
