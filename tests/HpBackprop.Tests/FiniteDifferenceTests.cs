using HpBackprop.Model;
using HpBackprop.Reference;

namespace HpBackprop.Tests;

/// <summary>
/// The hand-derived backward pass against the definition of a derivative: every element of
/// every parameter gradient of <see cref="ReferenceChain{T}"/> (double) is compared with a
/// central finite difference of the double loss. Independent of PyTorch and of docs/makemore.md's
/// formulas: if a formula in docs/makemore.md §3 (or its transcription) were wrong, the two would disagree.
/// </summary>
[TestClass]
public sealed class FiniteDifferenceTests
{
    // Tiny configuration: 88 parameters, so 176 extra forward passes per case.
    private const int V = 5, B = 2, E = 3, H = 4;

    public static IEnumerable<object[]> Cases =>
    [
        [4, 11],  // n = 4 (the general case)
        [2, 12],  // n = 2: the smallest legal batch, 1/(n-1) = 1
        [7, 13],
    ];

    /// <summary>Absolute tolerance (for gradients up to 1) of the finite-difference comparison; see the test.</summary>
    private const double FdTolerance = 1e-9;

    private static ModelConfig Config(int n) => new(V, B, E, H, n);

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void ReferenceChainDoubleGradientsMatchCentralDifferences(int n, int seed)
    {
        var config = Config(n);
        var parameters = TestModels.ParametersAs<double>(TestModels.Initialized(config, seed));
        var (xb, yb) = TestModels.RandomBatch(new NormalRng(seed + 1000), n, B, V);
        var chain = new ReferenceChain<double>(config, parameters, xb, yb);
        var failures = new List<string>();
        var report = new List<string>();
        foreach (string name in ParameterSet.Names)
        {
            double[] analytic = chain["d" + name];
            double[] fd = FiniteDifference(config, parameters, name, xb, yb);
            double err = Oracle.MaxAbsDiff(fd, analytic);
            double max = Oracle.MaxAbs(analytic);
            report.Add($"d{name}: max|g| {max:E2} max|fd-g| {err:E2}");
            // Tolerance: the central difference with step h = 1e-5·max(1,|x|) has truncation error
            // h²/6·|f'''| ≈ 2e-11 (f''' is O(1) here) and rounding error ≈ (a few ulp of a loss of
            // order 1.6, ≈ 1e-15) / 2h ≈ 1e-10. Measured: max|fd-g| ≤ 3.3e-11 over all tensors and
            // cases. FdTolerance = 1e-9 leaves a margin of 30 and is far below the error of any wrong
            // formula: the gradients here are 1e-2..0.35 (at n = 2 dC and dW1 are only ~2e-7, see
            // below, still 150 times the tolerance), and a wrong formula changes them by far more
            // than 1% (the Bessel factor n/(n-1) alone is 4/3 at n = 4).
            if (!(err <= FdTolerance * Math.Max(1, max))) failures.Add($"d{name}: max|fd-analytic| = {err:E2} (max|analytic| = {max:E2})");
            // Non-trivial: every gradient but db1 is at least 100 tolerances large, so the comparison
            // resolves it to 1%. db1 ≈ 0 because batch norm removes any constant added to a column of
            // hprebn; the finite difference sees that too (and the check above holds it to 1e-9).
            // At n = 2 batch norm maps any two rows to ±1/√2 up to eps, so dhprebn, dW1 and dC are
            // eps-driven (~1e-7): that case checks the eps terms of the backward.
            if (name != "b1" && !(max > 100 * FdTolerance)) failures.Add($"d{name} is suspiciously small ({max:E2})");
        }
        Console.WriteLine($"n={n}: " + string.Join("; ", report));
        Assert.IsEmpty(failures, string.Join("\n", failures));
    }

    private static double[] FiniteDifference(ModelConfig config, Dictionary<string, double[]> parameters, string name, int[] xb, int[] yb)
    {
        double[] x = parameters[name];
        var fd = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            double x0 = x[i];
            double h = 1e-5 * Math.Max(1, Math.Abs(x0));
            double xp = x0 + h, xm = x0 - h;
            x[i] = xp;
            double lp = new ReferenceChain<double>(config, parameters, xb, yb).Loss;
            x[i] = xm;
            double lm = new ReferenceChain<double>(config, parameters, xb, yb).Loss;
            x[i] = x0;
            fd[i] = (lp - lm) / (xp - xm); // the step actually taken (xp - xm is exact here)
        }
        return fd;
    }

    /// <summary>
    /// The makemore stack as the fused float CPU network against the double reference chain on the same tiny
    /// configurations (parameters are float values, so the double chain sees them exactly).
    /// </summary>
    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void FusedFloatNetworkMatchesDoubleReferenceChain(int n, int seed)
    {
        var config = Config(n);
        var p = TestModels.Initialized(config, seed);
        var (xb, yb) = TestModels.RandomBatch(new NormalRng(seed + 1000), n, B, V);
        var chain = new ReferenceChain<double>(config, TestModels.ParametersAs<double>(p), xb, yb);
        using var cpu = new MakemoreNet(p);
        float loss = cpu.ForwardBackward(xb, yb);
        Assert.AreEqual(chain.Loss, loss, 1e-6 * Math.Max(1, Math.Abs(chain.Loss)), "loss");
        var errors = PropertyTests.CompareFused(cpu, name => chain[name], xb);
        Console.WriteLine($"n={n}: " + string.Join("; ", errors.Select(e => $"{e.Name} {e.Relative:E2}")));
        var failures = errors.Where(e => !(e.Relative <= PropertyTests.FusedVsDoubleTolerance)).ToList();
        Assert.IsEmpty(failures, string.Join("; ", failures.Select(e => $"{e.Name}: {e.Relative:E2}")));
    }
}
