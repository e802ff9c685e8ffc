using HpBackprop.Model;
using HpBackprop.Reference;

namespace HpBackprop.Tests;

/// <summary>Every gradient of the reference chain and of the makemore stack as the fused CPU network against PyTorch autograd (the committed oracle bundles).</summary>
[TestClass]
public sealed class ParityTests
{
    public static IEnumerable<object[]> Cases => Oracle.Cases.Select(c => new object[] { c });

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void ReferenceChainInDoubleMatchesFloat64Oracle(string name)
    {
        var bundle = Oracle.Load(name, "f64");
        var chain = new ReferenceChain<double>(bundle.Config, bundle.ParametersAs<double>(), bundle.Xb, bundle.Yb);
        var failures = new List<string>();
        foreach (string g in ReferenceChain<double>.ForwardNames.Concat(ReferenceChain<double>.GradientNames).Append("loss"))
        {
            var expected = bundle.File[g];
            CollectionAssert.AreEqual(expected.Shape, chain.Tensors[g].Shape, $"{name}: shape of {g}");
            double scale = Oracle.MaxAbs(bundle.File[Oracle.ScaleOf(g)].ToDouble());
            double rel = Oracle.MaxAbsDiff(chain[g], expected.ToDouble()) / Math.Max(scale, 1e-300);
            // float64 rounding only: each value comes from at most a few thousand roundings of 1.1e-16.
            if (!(rel <= 1e-10)) failures.Add($"{g}: relative max error {rel:E2}");
        }
        Assert.AreEqual(0, failures.Count, $"{name}: " + string.Join("; ", failures));
    }

    /// <summary>
    /// Float32 tolerance, relative to the tensor's largest magnitude. Both sides round every
    /// operation to float (unit roundoff u = 6e-8); they sum in different orders, so a value
    /// built from reductions of length L carries errors of order L·u in the worst case and
    /// √L·u typically. The longest chain here is dW1/dhprebn at n = 1000: the batch-norm
    /// backward subtracts sums of n terms and then feeds an n-term matrix product, and the
    /// bnvar_inv factor amplifies the relative error of the variance. 2e-4 is about 3,300 u: it
    /// admits L·u for L ≤ 1000 with margin for the amplification. Wrong formulas produce errors of
    /// 1e-3 to 1e+1 relative on the small bundles; the subtlest one, a missing Bessel factor
    /// n/(n-1) in the fused batch-norm backward, is only 4e-5 relative at n = 1000 (the factor is
    /// 1.001 and multiplies a small term), so SensitivityTests checks dhprebn of the large bundle at
    /// 1e-5 as well.
    /// </summary>
    internal const double Float32Tolerance = 2e-4;

    internal static readonly string[] FusedChecked = ["dC", "dW1", "db1", "dW2", "db2", "dbngain", "dbnbias", "dlogits", "dhprebn"];

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void ReferenceChainInFloatMatchesFloat32Oracle(string name)
    {
        var bundle = Oracle.Load(name, "f32");
        var chain = new ReferenceChain<float>(bundle.Config, bundle.ParametersAs<float>(), bundle.Xb, bundle.Yb);
        var failures = new List<string>();
        foreach (string g in ReferenceChain<float>.GradientNames)
        {
            double rel = Relative(bundle, g, chain[g].Select(x => (double)x).ToArray());
            if (!(rel <= Float32Tolerance)) failures.Add($"{g}: {rel:E2}");
        }
        Assert.AreEqual(0, failures.Count, $"{name}: " + string.Join("; ", failures));
    }

    /// <summary>The values of the network's checked tensors on a bundle (the "large" one, n = 1000, takes the row-block pipeline).</summary>
    internal static Dictionary<string, double[]> FusedNetwork(IO.BatchBundle bundle, out float loss)
    {
        var p = new ParameterSet(bundle.Config);
        bundle.CopyTo(p);
        using var cpu = new MakemoreNet(p);
        loss = cpu.ForwardBackward(bundle.Xb, bundle.Yb);
        var grads = cpu.ToParameterSet();
        return FusedChecked.ToDictionary(g => g, g => TestModels.ToDouble(g is "dlogits" or "dhprebn" ? cpu.Intermediate(g) : grads.Gradient(g[1..]).ToArray()));
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void FusedNetworkMatchesFloat32Oracle(string name)
    {
        var bundle = Oracle.Load(name, "f32");
        var actual = FusedNetwork(bundle, out float loss);
        double expectedLoss = bundle.File["loss"].ToDouble()[0];
        Assert.AreEqual(expectedLoss, loss, 1e-5 * Math.Max(1, Math.Abs(expectedLoss)), $"{name}: loss");
        var failures = new List<string>();
        foreach (string g in FusedChecked)
        {
            double rel = Relative(bundle, g, actual[g]);
            if (!(rel <= Float32Tolerance)) failures.Add($"{g}: {rel:E2}");
        }
        Assert.AreEqual(0, failures.Count, $"{name}: " + string.Join("; ", failures));
    }

    internal static double Relative(IO.BatchBundle bundle, string g, double[] actual)
    {
        double scale = Oracle.MaxAbs(bundle.File[Oracle.ScaleOf(g)].ToDouble());
        return Oracle.MaxAbsDiff(actual, bundle.File[g].ToDouble()) / Math.Max(scale, 1e-30);
    }
}
