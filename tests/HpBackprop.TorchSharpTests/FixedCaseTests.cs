namespace HpBackprop.TorchSharpTests;

/// <summary>
/// HpBackprop against TorchSharp on the fixed cases (<see cref="FixedCases"/>): one step (loss, out, every parameter
/// gradient, grad.x and grad.y, running statistics and num_batches_tracked, the parameters after the optimiser step,
/// eval-mode outputs and loss, calibration and the eval outputs after it) and a 20-step trajectory (the loss of every
/// step, the learning rate of every step against TorchSharp's schedulers, every parameter and running statistic at the
/// end, eval and calibration after it), each tensor within the tolerance derived from TorchSharp's own float32 error
/// (<see cref="Parity"/>).
/// </summary>
[TestClass]
public sealed class FixedCaseTests
{
    public static IEnumerable<object[]> Cases => FixedCases.All.Select(c => new object[] { c.Name });

    private static ParityCase Get(string name) => FixedCases.All.Single(c => c.Name == name);

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void OneStepMatchesTorchSharp(string name)
    {
        TorchSharpRuntime.Require();
        var c = Get(name);
        var (failures, report) = Parity.Check(c);
        Console.WriteLine(c + "\n  " + string.Join("\n  ", report));
        Assert.IsEmpty(failures, c + ":\n" + string.Join("\n", failures));
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void TrajectoryMatchesTorchSharp(string name)
    {
        TorchSharpRuntime.Require();
        var c = Get(name);
        var d = CaseData.Draw(c);
        var report = new List<string>();
        var failures = Parity.Compare(c, Parity.TorchTrajectory(c, d, TorchSharp.torch.ScalarType.Float64, c.Steps),
            Parity.TorchTrajectory(c, d, TorchSharp.torch.ScalarType.Float32, c.Steps), Parity.OursTrajectory(c, d, c.Steps), report, trajectory: true);
        Console.WriteLine($"{c} ({c.Steps} steps)\n  " + string.Join("\n  ", report));
        Assert.IsEmpty(failures, c + ":\n" + string.Join("\n", failures));
    }
}
