using System.Globalization;
using System.Text;
using HpBackprop.IO;
using HpBackprop.Networks;
using HpBackprop.Reference;

namespace HpBackprop.Cli;

/// <summary>What the fast path (<see cref="Network"/>) computes for one minibatch: loss, parameter gradients by state-dict name, grad.x, grad.y.</summary>
internal sealed record FastResult(float Loss, Dictionary<string, float[]> Gradients, float[]? InputGradient, float[]? TargetGradient);

/// <summary>One row of a gradient table: compared with <c>expected</c>, relative to a scale, against a stated tolerance.</summary>
internal readonly record struct ToleranceRow(string Name, bool Exact, double MaxDiff, double Relative, double Tolerance)
{
    public bool Approximate => Relative <= Tolerance;
}

/// <summary>
/// The grads interchange and the check table for layer stacks (docs/stacks.md): the fast path on a bundle, its output file,
/// and the tolerance rule of the tests (StackReferenceParityTests): a float computation may be at most
/// <see cref="StackParity.Float32Factor"/> times less accurate than an independent float32 computation of the same tensor, with a
/// floor of <see cref="StackParity.Float32Floor"/>; double against double within <see cref="Float64Tolerance"/>.
/// </summary>
internal static class StackGrads
{
    /// <summary>Double against double (see <see cref="StackParity.Float64Tolerance"/>).</summary>
    public const double Float64Tolerance = StackParity.Float64Tolerance;

    /// <summary>The float tolerance for a tensor whose independent float32 error is <paramref name="independent"/> (<see cref="StackParity.Float32Tolerance"/>).</summary>
    public static double Float32Tolerance(double independent) => StackParity.Float32Tolerance(independent);

    /// <summary>Batch norm in training mode needs 2 rows: said before any work, naming the file, the tensor and the layer.</summary>
    public static void CheckRows(StackBundle b)
    {
        foreach (int i in b.Stack.BatchNormLayers())
            if (b.N < 2)
                throw new UserErrorException($"{b.Source}: tensor 'x' has {b.N} row but layer {i} ({b.Stack.Layers[i]}) needs a batch of at least 2 rows in training mode: a batch of 1 has no variance.");
    }

    /// <summary>
    /// The fast path on a bundle: a <see cref="Network"/> with the bundle's stack, loss, l2, bn_momentum and eps
    /// (in float), the bundle's parameters and running buffers copied in by state-dict name, one ForwardBackward.
    /// </summary>
    public static FastResult RunFast(StackBundle b, Func<Sequential, NetworkOptions, Network>? create = null)
    {
        CheckRows(b);
        Network net;
        try
        {
            var options = new NetworkOptions
            {
                BatchSize = b.N, Loss = b.Loss, L2 = (float)b.L2, BatchNormMomentum = (float)b.BatchNormMomentum, Eps = (float)b.Eps,
                InputWidth = b.InputWidth, InputGradients = true, Seed = b.Seed,
            };
            net = create != null ? create(b.Stack, options) : Network.Create(b.Stack, options);
        }
        catch (ArgumentException e)
        {
            throw new UserErrorException($"{b.Source}: {e.Message}");
        }
        using (net)
        {
            var ps = net.Parameters;
            foreach (var (name, values) in b.Parameters) CopyInto(ps.Value(name), values, b.Source, name);
            foreach (var (name, values) in b.RunningStatistics) CopyInto(ps.Value(name), values, b.Source, name);
            var bns = b.Stack.BatchNormLayers();
            for (int j = 0; j < bns.Count; j++)
                if (b.BatchesTracked.TryGetValue(BatchNormBuffers<double>.TrackedName(bns[j]), out long t)) ps.BatchesTracked[j] = t;
            net.StepCount = b.Step;
            net.PushParameters();
            return ForwardBackward(net, b.Ids, ToSingle(b.Features), b.Classes, ToSingle(b.Targets));
        }
    }

    private static void CopyInto(Span<float> target, double[] source, string file, string name)
    {
        if (target.Length != source.Length) throw new UserErrorException($"{file}: tensor '{name}' has {source.Length} elements; the network needs {target.Length}.");
        for (int i = 0; i < source.Length; i++) target[i] = (float)source[i];
    }

    /// <summary>One ForwardBackward of <paramref name="net"/> (built with InputGradients) on ids or features and classes, targets or nothing.</summary>
    public static FastResult ForwardBackward(Network net, int[]? ids, float[]? features, int[]? classes, float[]? targets)
    {
        float loss = (ids, classes) switch
        {
            ({ } i, { } c) => net.ForwardBackward(i, c),
            ({ } i, null) => net.ForwardBackward(i, (ReadOnlySpan<float>)(targets ?? [])),
            (null, { } c) => net.ForwardBackward(features!, c),
            _ => net.ForwardBackward(features!, (ReadOnlySpan<float>)(targets ?? [])),
        };
        net.PullParameters();
        var grads = net.Parameters.Parameters.ToDictionary(s => s.Name, s => net.Parameters.Gradient(s.Name).ToArray(), StringComparer.Ordinal);
        float[]? dx = features is null ? null : net.InputGradient.ToArray();
        float[]? dy = targets is null ? null : net.TargetGradient.ToArray();
        if (dx is { Length: 0 } || dy is { Length: 0 }) throw new InvalidOperationException("the network was built without InputGradients.");
        return new FastResult(loss, grads, dx, dy);
    }

    private static float[]? ToSingle(double[]? a) => a is null ? null : Array.ConvertAll(a, v => (float)v);

    /// <summary>The output (docs/stacks.md) of the fast path: <c>loss</c> [1], <c>grad.{name}</c> in PyTorch shapes, <c>grad.x</c>/<c>grad.y</c> for float x/y; F32.</summary>
    public static SafeTensorsFile Output(StackBundle b, FastResult r)
    {
        var o = new SafeTensorsFile();
        o.Metadata["layers"] = b.Stack.ToString();
        o.Metadata["loss"] = b.Loss.ToText();
        o.Add("loss", new[] { r.Loss }, 1);
        foreach (var s in b.Stack.Parameters()) o.Add("grad." + s.Name, r.Gradients[s.Name], s.Shape);
        if (r.InputGradient is { } dx) o.Add("grad.x", dx, b.N, b.InputWidth);
        if (r.TargetGradient is { } dy) o.Add("grad.y", dy, b.N, dy.Length / b.N);
        return o;
    }

    /// <summary>The bias gradients that are zero by construction (<see cref="StackParity.NearZero"/>).</summary>
    public static IReadOnlySet<string> NearZero(Sequential stack) => StackParity.NearZero(stack);

    /// <summary>The scale of a near-zero bias gradient (<see cref="StackParity.NearZeroScale"/>).</summary>
    public static double NearZeroScale(StackResult<double> reference, string biasName) => StackParity.NearZeroScale(reference, StackParity.LayerOf(biasName));

    /// <summary>The tensors of a result as rows of the table: <c>loss</c>, every parameter by state-dict name, <c>x</c> and <c>y</c> for float inputs.</summary>
    public static List<(string Name, double[] Values)> Tensors(Sequential stack, double loss, IReadOnlyDictionary<string, double[]> grads, double[]? dx, double[]? dy)
    {
        var list = new List<(string, double[])> { ("loss", [loss]) };
        foreach (var s in stack.Parameters()) list.Add((s.Name, grads[s.Name]));
        if (dx != null) list.Add(("x", dx));
        if (dy != null) list.Add(("y", dy));
        return list;
    }

    public static List<(string Name, double[] Values)> Tensors<T>(Sequential stack, StackResult<T> r) where T : System.Numerics.IFloatingPointIeee754<T> =>
        Tensors(stack, double.CreateChecked(r.Loss), r.Gradients.ToDictionary(kv => kv.Key, kv => D(kv.Value)), r.InputGradient is null ? null : D(r.InputGradient), r.TargetGradient is null ? null : D(r.TargetGradient));

    public static List<(string Name, double[] Values)> Tensors(Sequential stack, FastResult r) =>
        Tensors(stack, r.Loss, r.Gradients.ToDictionary(kv => kv.Key, kv => D(kv.Value)), r.InputGradient is null ? null : D(r.InputGradient), r.TargetGradient is null ? null : D(r.TargetGradient));

    public static double[] D<T>(T[] a) where T : System.Numerics.IFloatingPointIeee754<T> => a.Select(double.CreateChecked).ToArray();

    /// <summary>The scale each row's error is measured against: the largest |value| of the double reference's tensor, the near-zero scale for a near-zero bias.</summary>
    public static Dictionary<string, double> Scales(Sequential stack, StackResult<double> reference)
    {
        var nz = NearZero(stack);
        return Tensors(stack, reference).ToDictionary(t => t.Name, t => nz.Contains(t.Name) ? NearZeroScale(reference, t.Name) : MaxAbs(t.Values), StringComparer.Ordinal);
    }

    /// <summary>max|a − b| / scale for each row (names must match).</summary>
    public static Dictionary<string, double> Errors(List<(string Name, double[] Values)> a, List<(string Name, double[] Values)> b, IReadOnlyDictionary<string, double> scales)
    {
        var d = new Dictionary<string, double>(StringComparer.Ordinal);
        for (int i = 0; i < a.Count; i++) d[a[i].Name] = Rel(MaxDiff(a[i].Values, b[i].Values), scales[a[i].Name]);
        return d;
    }

    /// <summary>
    /// The float tolerance of each row from an independent float32 computation's error: <c>8·max(err, 32·2⁻²⁴)</c>;
    /// a near-zero bias inherits the error of dy, which its weight gradient shows, so its err is the larger of the two.
    /// With <paramref name="againstIndependent"/> the rows compare with that independent computation itself rather than
    /// with the truth, so its own error is added (triangle inequality: |ours − it| ≤ err_ours + err_it).
    /// </summary>
    public static Dictionary<string, double> Float32Tolerances(Sequential stack, IReadOnlyDictionary<string, double> independentError, bool againstIndependent)
    {
        var nz = NearZero(stack);
        return independentError.ToDictionary(kv => kv.Key, kv =>
        {
            double e = kv.Value;
            if (nz.Contains(kv.Key)) e = Math.Max(e, independentError[kv.Key.Replace(".bias", ".weight", StringComparison.Ordinal)]);
            return Float32Tolerance(e) + (againstIndependent ? kv.Value : 0);
        }, StringComparer.Ordinal);
    }

    /// <summary>Rows comparing <paramref name="actual"/> with <paramref name="expected"/> (same names, same order).</summary>
    public static IEnumerable<ToleranceRow> Rows(List<(string Name, double[] Values)> expected, List<(string Name, double[] Values)> actual,
        IReadOnlyDictionary<string, double> scales, IReadOnlyDictionary<string, double> tolerances)
    {
        for (int i = 0; i < expected.Count; i++)
        {
            var (name, e) = expected[i];
            var a = actual[i].Values;
            if (actual[i].Name != name || a.Length != e.Length) throw new InvalidOperationException($"row {name}: {actual[i].Name} [{a.Length}] vs [{e.Length}].");
            double diff = MaxDiff(e, a);
            bool exact = true;
            for (int j = 0; j < e.Length; j++) exact &= e[j].Equals(a[j]);
            yield return new ToleranceRow(name, exact, diff, Rel(diff, scales[name]), tolerances[name]);
        }
    }

    /// <summary>The table: name | exact | approx | maxdiff | relerr | tol, then a summary line.</summary>
    public static string Format(string title, IEnumerable<ToleranceRow> rows)
    {
        var sb = new StringBuilder();
        sb.AppendLine(title);
        sb.AppendLine($"{"name",-16} | {"exact",-5} | {"approx",-6} | {"maxdiff",-9} | {"relerr",-9} | tol");
        int bad = 0, count = 0;
        foreach (var r in rows)
        {
            count++;
            if (!r.Approximate) bad++;
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture, $"{r.Name,-16} | {r.Exact,-5} | {r.Approximate,-6} | {r.MaxDiff,-9:0.00E+00} | {r.Relative,-9:0.00E+00} | {r.Tolerance:0.00E+00}"));
        }
        sb.AppendLine(bad == 0 ? $"all {count} tensors within tolerance" : $"{bad} of {count} tensors OUTSIDE tolerance");
        return sb.ToString();
    }

    public static double MaxAbs(double[] a) => StackParity.MaxAbs(a);

    public static double MaxDiff(double[] a, double[] b) => StackParity.MaxAbsDiff(a, b);

    private static double Rel(double diff, double scale) => scale > 0 ? diff / scale : diff;
}
