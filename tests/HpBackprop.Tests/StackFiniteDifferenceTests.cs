using HpBackprop.Networks;
using HpBackprop.Reference;

namespace HpBackprop.Tests;

/// <summary>
/// Every gradient of <see cref="StackReference{T}"/> (double) against central finite differences of its
/// own loss, on small random stacks that together cover every layer (embedding with repeated ids,
/// flatten, linear with and without bias, batch norm in both modes, layer norm, dropout (its mask fixed: the same
/// step), tanh, relu, sigmoid), every loss,
/// the L2 penalty and n = 2. Independent of PyTorch and of the formulas of docs/makemore.md.
/// </summary>
[TestClass]
public sealed class StackFiniteDifferenceTests
{
    public static IEnumerable<object[]> Cases =>
    [
        ["embedding:7x3,flatten,linear:6x5,batchnorm:5,tanh,linear:5x4", "cross_entropy", 6, 2, "0", 101],
        ["linear:4x5,batchnorm:5:biased,relu,linear:5x3", "mse", 5, 4, "0", 102],
        ["linear:4x6,sigmoid,linear:6x2:nobias", "bce_with_logits", 4, 4, "0.5", 103],
        ["batchnorm:4,sigmoid", "mean", 3, 4, "0", 104],
        ["linear:3x4:nobias,tanh", "mean", 3, 3, "1", 105],
        ["linear:3x4,batchnorm:4,tanh,linear:4x2", "mse", 2, 3, "0", 106],
        ["embedding:5x2,flatten,batchnorm:6:biased,relu,linear:6x3", "cross_entropy", 4, 3, "0.01", 107],
        ["linear:5x3,relu,batchnorm:3,linear:3x2", "bce_with_logits", 7, 5, "0", 108],
        ["linear:4x6,layernorm:6,tanh,linear:6x3", "mse", 5, 4, "0", 109],
        ["embedding:6x3,flatten,dropout:0.25,linear:6x5,layernorm:5,sigmoid,dropout:0.5,linear:5x4", "cross_entropy", 6, 2, "0", 110],
        ["layernorm:5,sigmoid", "mean", 4, 5, "0", 111],
    ];

    /// <summary>
    /// Bound: <c>max|fd − analytic| ≤ Tolerance·scale + AbsoluteTolerance·max(1, |loss|)</c>. The central
    /// difference with step <c>h = 1e-5·max(1,|v|)</c> has truncation error <c>h²/6·|f‴| ≈ 2e-11</c>
    /// (third derivatives are O(1) for these O(1) losses), relative to the gradient's scale below 1e-8;
    /// and rounding error <c>≈ (a few ulp of the loss, ~1e-15·|loss|) / 2h ≈ 5e-11·|loss|</c>, absolute:
    /// it dominates gradients that are tiny by construction (at n = 2 batch norm maps the two rows to
    /// ±1 up to eps, so everything below it is eps-driven, ~1e-5). Measured: ≤ 1.3e-9 relative on
    /// gradients of 1e-2..1, ≤ 2e-11 absolute at n = 2. A wrong formula (a factor 2, n/(n−1), a sign)
    /// changes a gradient by ≥ 10% of its scale, far beyond both terms.
    /// </summary>
    private const double Tolerance = 1e-7;

    /// <summary>The absolute term of the bound, per unit of loss (20× the rounding estimate 5e-11).</summary>
    private const double AbsoluteTolerance = 1e-9;

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void DoubleReferenceGradientsMatchCentralDifferences(string layers, string lossText, int n, int width, string l2Text, int seed)
    {
        var stack = Sequential.Parse(layers);
        var loss = Losses.Parse(lossText);
        double l2 = double.Parse(l2Text, System.Globalization.CultureInfo.InvariantCulture);
        var reference = new StackReference<double>(stack, loss, width) { L2 = l2 };
        var rng = new Random(seed);
        var parameters = StackTestData.Parameters(stack, rng);
        var input = StackTestData.Input(reference, n, rng);
        var result = reference.Run(input, parameters);
        if (stack.TakesIds) Assert.IsTrue(input.Ids!.Distinct().Count() < input.Ids!.Length, "the ids should repeat (scatter-add)");
        // ReLU has a kink at 0: keep every input of a relu well away from it, or the difference quotient straddles it
        for (int i = 0; i < stack.Layers.Count; i++)
            if (stack.Layers[i].Kind == LayerKind.Relu)
                Assert.IsGreaterThan(1e-3, (i == 0 ? input.Features! : result.LayerOutputs[i - 1]).Min(Math.Abs), $"relu input too close to 0 for a finite difference; pick another seed");

        double Loss() => reference.Run(input, parameters).Loss;
        var failures = new List<string>();
        var report = new List<string>();
        var nearZero = StackOracle.NearZero(stack).ToHashSet();
        void Check(string name, double[] values, double[] analytic, double scale, bool mayBeZero)
        {
            var fd = new double[values.Length];
            for (int i = 0; i < values.Length; i++)
            {
                double v0 = values[i], h = 1e-5 * Math.Max(1, Math.Abs(v0));
                values[i] = v0 + h; double lp = Loss();
                values[i] = v0 - h; double lm = Loss();
                values[i] = v0;
                fd[i] = (lp - lm) / (2 * h);
            }
            double diff = Oracle.MaxAbsDiff(fd, analytic);
            report.Add($"{name} {diff / scale:E1} (max|g| {Oracle.MaxAbs(analytic):E1}, |diff| {diff:E1})");
            if (!(diff <= Tolerance * scale + AbsoluteTolerance * Math.Max(1, Math.Abs(result.Loss))))
                failures.Add($"{name}: max|fd − analytic| = {diff:E2}, scale {scale:E2}");
            if (!mayBeZero && !(Oracle.MaxAbs(analytic) > 1e-5)) failures.Add($"{name} is suspiciously small ({Oracle.MaxAbs(analytic):E2}): the check would not see a wrong formula");
        }
        foreach (var s in stack.Parameters())
        {
            bool nz = nearZero.Contains(s.Name);
            double scale = nz ? StackOracle.NearZeroScale(result, s.Layer) : Oracle.MaxAbs(result.Gradients[s.Name]);
            Check(s.Name, parameters[s.Name], result.Gradients[s.Name], scale, nz);
        }
        if (input.Features is { } x) Check("x", x, result.InputGradient!, Oracle.MaxAbs(result.InputGradient!), false);
        if (input.Targets is { } t) Check("y", t, result.TargetGradient!, Oracle.MaxAbs(result.TargetGradient!), false);
        Console.WriteLine(StackTestData.Describe(stack, loss, n) + ": " + string.Join(", ", report));
        Assert.IsEmpty(failures, StackTestData.Describe(stack, loss, n) + ":\n" + string.Join("\n", failures));
    }
}
