using HpBackprop.Networks;
using HpBackprop.Reference;

namespace HpBackprop.Tests;

/// <summary>
/// 30 random valid stacks (seeded: random layers, widths, batch sizes 2..20 (3..20 with batch norm), losses, L2): the float
/// reference against the double reference on the same float-representable data, within a bound derived
/// per stack and tensor from how sensitive that tensor is to rounding (below).
/// </summary>
[TestClass]
public sealed class StackPropertyTests
{
    private const int Stacks = 30;
    private const double U = 5.9604644775390625e-8; // 2^-24, float's unit roundoff

    public static IEnumerable<object[]> Seeds => Enumerable.Range(0, Stacks).Select(i => new object[] { 7000 + i });

    /// <summary>
    /// The bound, by backward-error analysis: a float evaluation of plain loops is the exact evaluation
    /// on data (inputs, parameters and every intermediate) perturbed by at most <c>L·u</c> relative, L the
    /// longest reduction (the widths, n, k). The test measures the first-order response <c>S</c> of each
    /// tensor to a relative perturbation of u of every input and parameter (the double reference rerun on
    /// data multiplied by <c>1 ± u</c>, random signs, two draws, max |change| / scale) and allows
    /// <c>err ≤ 4·L·max(S, u)</c>: the worst-case growth L, a factor 4 for intermediates (perturbed too, not
    /// only inputs) and for S being a sample, and u as a floor (a tensor insensitive to its inputs still
    /// rounds). A near-zero bias gradient takes its weight gradient's S (see the f32 parity test). Each batch norm or
    /// layer norm doubles the bound: its backward subtracts the mean of its gradient (and of the gradient times the
    /// normalised input) from every element, a cancellation of terms computed inside the layer, whose rounding a
    /// perturbation of the inputs does not reach (measured: a layer norm over 4 features feeding a batch norm over
    /// 19 rows needs 1.45 times the single-layer bound).
    /// </summary>
    [TestMethod]
    [DynamicData(nameof(Seeds))]
    public void FloatReferenceMatchesDoubleReferenceOnRandomStacks(int seed)
    {
        var rng = new Random(seed);
        var (stack, loss, width) = StackTestData.RandomStack(rng);
        // n ≥ 3 under batch norm: at n = 2 it maps the two rows to ±1 up to eps and everything below
        // it is eps-driven, a cancellation this bound does not model (the n2 oracle cases and the
        // finite differences cover n = 2)
        int n = rng.Next(stack.BatchNormLayers().Count > 0 ? 3 : 2, 21);
        double l2 = rng.Next(3) == 0 ? 0.01 : 0;
        var r64 = new StackReference<double>(stack, loss, width) { L2 = l2 };
        var r32 = new StackReference<float>(stack, loss, width) { L2 = (float)l2 };
        // data representable in float, so both precisions start from the same values
        var p = StackTestData.Parameters(stack, rng).ToDictionary(kv => kv.Key, kv => RoundToFloat(kv.Value), StringComparer.Ordinal);
        var x = StackTestData.Input(r64, n, rng);
        x = x with { Features = x.Features is null ? null : RoundToFloat(x.Features), Targets = x.Targets is null ? null : RoundToFloat(x.Targets) };
        var buffers = BatchNormBuffers<double>.Initial(stack);
        var d = r64.Run(x, p, buffers);
        var f = r32.Run(
            new StackInput<float>(n, x.Ids, ToFloat(x.Features), x.Classes, ToFloat(x.Targets)),
            p.ToDictionary(kv => kv.Key, kv => ToFloat(kv.Value)!, StringComparer.Ordinal),
            BatchNormBuffers<float>.Initial(stack));

        var tensors = Tensors(d).ToList();
        var floats = Tensors(f).ToDictionary(t => t.Name, t => t.Values, StringComparer.Ordinal);
        var nearZero = StackOracle.NearZero(stack).ToHashSet();
        var scale = tensors.ToDictionary(t => t.Name, t => nearZero.Contains(t.Name)
            ? StackOracle.NearZeroScale(d, int.Parse(t.Name.AsSpan(0, t.Name.IndexOf('.')), System.Globalization.CultureInfo.InvariantCulture))
            : Math.Max(Oracle.MaxAbs(t.Values), 1e-300), StringComparer.Ordinal);

        // sensitivity S: the double reference on data perturbed by a relative u
        var sens = tensors.ToDictionary(t => t.Name, _ => 0.0, StringComparer.Ordinal);
        for (int draw = 0; draw < 2; draw++)
        {
            var pr = new Random(seed * 31 + draw);
            var pp = p.ToDictionary(kv => kv.Key, kv => Perturb(kv.Value, pr)!, StringComparer.Ordinal);
            var xp = x with { Features = Perturb(x.Features, pr), Targets = Perturb(x.Targets, pr) };
            foreach (var (name, values) in Tensors(r64.Run(xp, pp, buffers)))
                sens[name] = Math.Max(sens[name], Oracle.MaxAbsDiff(values, tensors.First(t => t.Name == name).Values) / scale[name]);
        }
        int longest = new[] { n, r64.OutputWidth, width }.Concat(stack.Layers.Select(l => Math.Max(l.In, l.Out))).Max();
        double norms = Math.Pow(2, stack.Layers.Count(l => l.Kind is LayerKind.BatchNorm or LayerKind.LayerNorm));
        var failures = new List<string>();
        double worst = 0;
        foreach (var (name, values) in tensors)
        {
            double s = sens[name];
            if (nearZero.Contains(name)) s = Math.Max(s, sens[name.Replace(".bias", ".weight", StringComparison.Ordinal)]);
            double tol = 4 * longest * norms * Math.Max(s, U);
            double err = Oracle.MaxAbsDiff(floats[name], values) / scale[name];
            worst = Math.Max(worst, err / tol);
            if (!(err <= tol)) failures.Add($"{name}: float vs double {err:E2} > {tol:E2} (sensitivity {s:E2}, L = {longest})");
        }
        Console.WriteLine($"{StackTestData.Describe(stack, loss, n)}, l2 = {l2}: worst error/bound {worst:F3}");
        Assert.IsEmpty(failures, StackTestData.Describe(stack, loss, n) + ":\n" + string.Join("\n", failures));
    }

    private static IEnumerable<(string Name, double[] Values)> Tensors<T>(StackResult<T> r) where T : System.Numerics.IFloatingPointIeee754<T>
    {
        yield return ("loss", [double.CreateChecked(r.Loss)]);
        yield return ("out", StackOracle.D(r.Output));
        foreach (var (name, g) in r.Gradients.OrderBy(kv => kv.Key, StringComparer.Ordinal)) yield return (name, StackOracle.D(g));
        if (r.InputGradient is { } dx) yield return ("grad.x", StackOracle.D(dx));
        if (r.TargetGradient is { } dt) yield return ("grad.y", StackOracle.D(dt));
        foreach (var (name, v) in r.Buffers.ByName.OrderBy(kv => kv.Key, StringComparer.Ordinal)) yield return ("after." + name, StackOracle.D(v));
    }

    private static double[] RoundToFloat(double[] a) => a.Select(v => (double)(float)v).ToArray();

    private static float[]? ToFloat(double[]? a) => a?.Select(v => (float)v).ToArray();

    private static double[]? Perturb(double[]? a, Random rng) => a?.Select(v => v * (1 + (rng.Next(2) == 0 ? U : -U))).ToArray();
}
