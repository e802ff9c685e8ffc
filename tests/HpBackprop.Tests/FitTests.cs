using HpBackprop.Model;
using HpBackprop.Networks;
using HpBackprop.Training;

namespace HpBackprop.Tests;

/// <summary>
/// The training loop of issue 22: a validation set, early stopping that puts back the best parameters, epochs without
/// replacement beside the uniform draws, a history of the steps done only, every label checked before the first step,
/// and a new network initialised from its options' seed.
/// </summary>
[TestClass]
public sealed class FitTests
{
    /// <summary>Features N(0,1) <c>[count, width]</c> and class ids drawn independently of them (noise: a big network overfits it).</summary>
    internal static ExampleSet Noise(int count, int width, int classes, int seed)
    {
        var rng = new NormalRng(seed);
        var x = new float[count * width];
        var y = new int[count];
        for (int i = 0; i < x.Length; i++) x[i] = (float)rng.Next();
        for (int i = 0; i < count; i++) y[i] = rng.NextInt(classes);
        return ExampleSet.FromFeatures(x, width, y);
    }

    private static Network Overfitter(int seed = 3) => Network.Create(Sequential.Parse("linear:12x96,relu,linear:96x96,relu,linear:96x3"),
        new NetworkOptions { BatchSize = 16, Optimizer = new AdamW { LearningRate = 0.01f, WeightDecay = 0 }, Seed = seed });

    private static int[] Bits(float[] a) => a.Select(BitConverter.SingleToInt32Bits).ToArray();

    [TestMethod]
    public void EarlyStoppingEndsTheRunAndPutsBackTheParametersOfTheBestValidationBitwise()
    {
        // 48 noisy training rows: the training loss falls, the validation loss (other noise) rises after its first evaluations
        var train = Noise(48, 12, 3, 1);
        var dev = Noise(300, 12, 3, 2);
        using var net = Overfitter();
        var h = net.Fit(train, new FitOptions { Steps = 3000, Seed = 5, Validation = dev, ValidateEvery = 10, Patience = 5 });

        Assert.AreEqual(FitStop.EarlyStopping, h.Stop);
        Assert.IsLessThan(3000, h.Steps, "stopped early");
        Assert.HasCount(h.Steps, h.Losses, "the history holds the steps done only");
        Assert.AreEqual(h.Steps, net.StepCount);
        Assert.IsNotNull(h.Best);
        var best = h.Best.Value;
        Assert.IsLessThan(h.Steps, best.Step, "the best evaluation is before the last");
        Assert.AreEqual(h.Validation.Min(p => p.Loss), best.Loss);
        Assert.AreEqual(5, h.Validation.Count(p => p.Step > best.Step), "patience 5: five evaluations without improvement, then the stop");
        Assert.IsTrue(h.RestoredBest);
        Assert.IsNotNull(best.Accuracy, "a classifier's validation has an accuracy");

        // the parameters are those of a run that stopped at the best step: the same draws, fewer steps
        using var shorter = Overfitter();
        var hs = shorter.Fit(train, new FitOptions { Steps = best.Step, Seed = 5 });
        CollectionAssert.AreEqual(Bits(shorter.Parameters.Data), Bits(net.Parameters.Data), "the best parameters are put back, not the last");
        CollectionAssert.AreEqual(hs.Losses, h.Losses[..best.Step]);
        Assert.AreEqual(best.Loss, net.Evaluate(dev), "the validation loss of the restored network is the best one");
    }

    [TestMethod]
    public void PatienceRunningOutAtTheLastStepIsACompletedRun()
    {
        var train = Noise(48, 12, 3, 1);
        var dev = Noise(300, 12, 3, 2);
        using var net = Overfitter();
        var stopped = net.Fit(train, new FitOptions { Steps = 3000, Seed = 5, Validation = dev, ValidateEvery = 10, Patience = 5 });
        Assert.AreEqual(FitStop.EarlyStopping, stopped.Stop);
        // the same run planned to end where the first stopped: its patience runs out at its last step
        using var planned = Overfitter();
        var h = planned.Fit(train, new FitOptions { Steps = stopped.Steps, Seed = 5, Validation = dev, ValidateEvery = 10, Patience = 5 });
        Assert.AreEqual(FitStop.Completed, h.Stop, "every planned step was taken");
        Assert.AreEqual(stopped.Best, h.Best);
        Assert.IsTrue(h.RestoredBest);
    }

    [TestMethod]
    public void WithoutRestoreBestTheLastParametersStay()
    {
        var train = Noise(48, 12, 3, 1);
        var dev = Noise(300, 12, 3, 2);
        using var net = Overfitter();
        var h = net.Fit(train, new FitOptions { Steps = 3000, Seed = 5, Validation = dev, ValidateEvery = 10, Patience = 5, RestoreBest = false });
        Assert.IsFalse(h.RestoredBest);
        using var same = Overfitter();
        same.Fit(train, new FitOptions { Steps = h.Steps, Seed = 5 });
        CollectionAssert.AreEqual(Bits(same.Parameters.Data), Bits(net.Parameters.Data));
        Assert.AreEqual(h.Validation[^1].Loss, net.Evaluate(dev));
    }

    [TestMethod]
    public void ACancelledRunReturnsTheStepsDoneEvaluatesWhereItStoppedAndPutsBackTheBest()
    {
        var train = Noise(48, 12, 3, 1);
        var dev = Noise(300, 12, 3, 2);
        using var net = Overfitter();
        using var cts = new CancellationTokenSource();
        var h = net.Fit(train, new FitOptions
        {
            Steps = 20_000, Seed = 5, Validation = dev, ValidateEvery = 100, ReportEvery = 1,
            Progress = p => { if (p.Step == 1750) cts.Cancel(); }, CancellationToken = cts.Token,
        });
        Assert.AreEqual(FitStop.Cancelled, h.Stop);
        Assert.AreEqual(1750, h.Steps);
        Assert.HasCount(1750, h.Losses, "no NaN tail: the losses of the steps done only");
        Assert.IsTrue(h.Losses.All(float.IsFinite));
        Assert.AreEqual(1750, h.Validation[^1].Step, "the parameters it stopped with are evaluated too");
        Assert.IsLessThan(1750, h.Best!.Value.Step);
        Assert.IsTrue(h.RestoredBest);
        Assert.AreEqual(h.Best.Value.Loss, net.Evaluate(dev));
    }

    [TestMethod]
    public void TheShortFitReturnsTheStepsDoneOnlyWhenCancelled()
    {
        var train = Noise(64, 12, 3, 1);
        using var whole = Overfitter();
        float[] all = whole.Fit(train, 60, seed: 4);
        using var cut = Overfitter();
        using var cts = new CancellationTokenSource();
        float[] part = cut.Fit(train, 60, seed: 4, progress: p => { if (p.Step == 25) cts.Cancel(); }, reportEvery: 1, cancellationToken: cts.Token);
        Assert.HasCount(60, all);
        CollectionAssert.AreEqual(all[..25], part);
    }

    [TestMethod]
    public void UniformDrawsAreTheDrawsOfATrainingRunSoEarlierRunsAreUnchanged()
    {
        // the short Fit goes through FitOptions; its minibatches must stay those of TrainingRun (the CLI's word runs, resumes)
        var train = Noise(200, 12, 3, 1);
        using var a = Overfitter();
        var run = new TrainingRun(11, 80);
        a.Fit(train, run);
        using var b = Overfitter();
        var h = b.Fit(train, new FitOptions { Steps = 80, Seed = 11 });
        CollectionAssert.AreEqual(Bits(run.Losses), Bits(h.Losses));
        CollectionAssert.AreEqual(Bits(a.Parameters.Data), Bits(b.Parameters.Data));
    }

    [TestMethod]
    public void EpochsTakeEveryExampleOncePerEpochInAShuffledOrder()
    {
        const int count = 70, n = 16;
        var order = new EpochOrder(count, n, new NormalRng(9));
        Assert.AreEqual(4, order.StepsPerEpoch);
        var epochs = new List<int[]>();
        for (int e = 0; e < 3; e++)
        {
            var seen = new List<int>();
            for (int s = 0; s < order.StepsPerEpoch; s++) seen.AddRange(order.Next().ToArray());
            Assert.HasCount(64, seen);
            Assert.AreEqual(64, seen.Distinct().Count(), $"epoch {e}: no example twice");
            Assert.IsTrue(seen.All(r => r is >= 0 and < count));
            epochs.Add([.. seen]);
        }
        CollectionAssert.AreNotEqual(epochs[0], epochs[1], "each epoch is shuffled anew");
        // over many epochs every example is used (the 6 left out of an epoch change)
        var used = new HashSet<int>();
        for (int s = 0; s < 40; s++) used.UnionWith(order.Next().ToArray());
        Assert.HasCount(count, used);
        Assert.ThrowsExactly<ArgumentException>(() => new EpochOrder(10, 16, new NormalRng(1)));
    }

    [TestMethod]
    public void FitInEpochsStepsOnTheEpochOrdersMinibatches()
    {
        var train = Noise(70, 12, 3, 1);
        using var net = Overfitter();
        var h = net.Fit(train, new FitOptions { Steps = 13, Seed = 6, Order = BatchOrder.Epochs });
        using var manual = Overfitter();
        var order = new EpochOrder(70, 16, new NormalRng(6));
        var x = new float[16 * 12];
        var y = new int[16];
        var losses = new float[13];
        for (int s = 0; s < 13; s++)
        {
            train.CopyRows(order.Next(), default, x, y, default);
            losses[s] = manual.Step(x, y);
        }
        CollectionAssert.AreEqual(Bits(losses), Bits(h.Losses));
        // and not the uniform draws
        using var uniform = Overfitter();
        CollectionAssert.AreNotEqual(Bits(uniform.Fit(train, new FitOptions { Steps = 13, Seed = 6 }).Losses), Bits(h.Losses));
    }

    [TestMethod]
    public void ValidationEveryEpochByDefault()
    {
        var train = Noise(70, 12, 3, 1);
        var dev = Noise(30, 12, 3, 2);
        using var net = Overfitter();
        var h = net.Fit(train, new FitOptions { Steps = 14, Order = BatchOrder.Epochs, Validation = dev });
        CollectionAssert.AreEqual(new[] { 4, 8, 12, 14 }, h.Validation.Select(p => p.Step).ToArray(), "every ⌊70/16⌋ = 4 steps, and after the last");
        // the accuracy is the fraction of PredictClasses that match
        using var last = Overfitter();
        last.Fit(train, new FitOptions { Steps = 14, Order = BatchOrder.Epochs });
        var predicted = new int[30];
        last.PredictClasses(dev.Features, 30, predicted);
        float acc = (float)((double)predicted.Zip(dev.Classes!).Count(p => p.First == p.Second) / 30);
        Assert.AreEqual(acc, h.Validation[^1].Accuracy);
    }

    [TestMethod]
    public void CalibrationBeforeValidationGivesTheLossOfTheCalibratedModel()
    {
        var train = Noise(200, 12, 3, 1);
        var dev = Noise(50, 12, 3, 2);
        static Network Bn() => Network.Create(Sequential.Parse("linear:12x32,batchnorm:32,tanh,linear:32x3"), new NetworkOptions { BatchSize = 16, Seed = 2 });
        using var net = Bn();
        var h = net.Fit(train, new FitOptions { Steps = 40, Validation = dev, ValidateEvery = 40, CalibrateBeforeValidation = true });
        using var plain = Bn();
        var hp = plain.Fit(train, new FitOptions { Steps = 40 });
        CollectionAssert.AreEqual(Bits(hp.Losses), Bits(h.Losses), "calibrating does not change training");
        float running = plain.Evaluate(dev);
        plain.Calibrate(train);
        Assert.AreEqual(plain.Evaluate(dev), h.Validation[0].Loss);
        Assert.AreNotEqual(running, h.Validation[0].Loss, "the lecture's momentum leaves the running statistics far from the calibrated ones");
    }

    [TestMethod]
    public void EveryLabelIsCheckedOnceBeforeTheFirstStepNamingItsRowInTheSet()
    {
        // one bad class id at row 997 of 1,000: a check of the drawn minibatches would not see it in two steps, and would name a minibatch row
        var data = Noise(1000, 12, 3, 1);
        data.Classes![997] = 3;
        using var net = Overfitter();
        float[] before = [.. net.Parameters.Data];
        var e = Assert.ThrowsExactly<ShapeException>(() => net.Fit(data, new FitOptions { Steps = 2 }));
        StringAssert.Contains(e.Message, "class id 3 at row 997");
        Assert.AreEqual(0, net.StepCount, "refused before the first step");
        CollectionAssert.AreEqual(before, net.Parameters.Data);
        Assert.ThrowsExactly<ShapeException>(() => net.Fit(data, 2));

        // the validation set too, before any step
        var dev = Noise(100, 12, 3, 2);
        dev.Classes![42] = -1;
        e = Assert.ThrowsExactly<ShapeException>(() => net.Fit(Noise(100, 12, 3, 3), new FitOptions { Steps = 2, Validation = dev }));
        StringAssert.Contains(e.Message, "class id -1 at row 42");
        Assert.AreEqual(0, net.StepCount);

        // a NaN feature is bad input named by its row and column, not a divergence
        var nan = Noise(100, 12, 3, 4);
        nan.Features![57 * 12 + 5] = float.NaN;
        e = Assert.ThrowsExactly<ShapeException>(() => net.Fit(nan, new FitOptions { Steps = 2 }));
        StringAssert.Contains(e.Message, "row 57, column 5");
        Assert.AreEqual(0, net.StepCount);
    }

    [TestMethod]
    public void OptionsOutOfRangeAreRefusedNamingThem()
    {
        using var net = Overfitter();
        var data = Noise(50, 12, 3, 1);
        foreach (var (o, name) in new (FitOptions, string)[]
        {
            (new FitOptions { Steps = -1 }, "FitOptions.Steps"), (new FitOptions { Patience = 2 }, "needs a validation set"),
            (new FitOptions { ValidateEvery = -3 }, "FitOptions.ValidateEvery"), (new FitOptions { MinDelta = float.NaN }, "FitOptions.MinDelta"),
            (new FitOptions { Order = (BatchOrder)7 }, "FitOptions.Order"), (new FitOptions { ReportEvery = -1 }, "FitOptions.ReportEvery"),
        })
            StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => net.Fit(data, o)).Message, name);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => net.Fit(Noise(10, 12, 3, 1), new FitOptions { Order = BatchOrder.Epochs })).Message, "no whole minibatch");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => net.Fit(data, new FitOptions { Steps = int.MaxValue })).Message, "FitOptions.Steps = 2,147,483,647 needs");
        Assert.AreEqual(0, net.StepCount, "refused before the first step");
        var wrong = ExampleSet.FromFeatures(new float[10 * 5], 5, new int[10]);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => net.Fit(data, new FitOptions { Validation = wrong })).Message, "FitOptions.Validation");
    }

    [TestMethod]
    public void ANewNetworkHoldsTheParametersOfItsSeedAndInitializeDrawsThemAgain()
    {
        var stack = Sequential.Parse("embedding:9x4,flatten,linear:12x16,batchnorm:16,tanh,linear:16x16,layernorm:16,relu,linear:16x9");
        using var fresh = Network.Create(stack, new NetworkOptions { Seed = 7 });
        using var other = Network.Create(stack, new NetworkOptions { Seed = 1 });
        CollectionAssert.AreNotEqual(Bits(fresh.Parameters.Data), Bits(other.Parameters.Data), "the seed chooses the values");
        other.Initialize(7);
        CollectionAssert.AreEqual(Bits(other.Parameters.Data), Bits(fresh.Parameters.Data), "Create initialises as Initialize(options.Seed) does");
        foreach (var slot in fresh.Parameters.Parameters.Where(s => !s.Name.EndsWith(".bias", StringComparison.Ordinal) || stack.Layers[s.Layer].Kind != LayerKind.LayerNorm))
            Assert.IsTrue(fresh.Parameters.Value(slot.Name).ToArray().Any(v => v != 0), $"{slot.Name} is not all zeros");
        using var defaults = Network.Create(stack, new NetworkOptions());
        other.Initialize(42);
        CollectionAssert.AreEqual(Bits(other.Parameters.Data), Bits(defaults.Parameters.Data), "the default seed is 42");
    }

    [TestMethod]
    public void ANewNetworkOnTheEmulatorHoldsTheCpusInitialValues()
    {
        Devices.RequireEmulator();
        var stack = Sequential.Parse("linear:6x8,batchnorm:8,relu,linear:8x3");
        var options = new NetworkOptions { Seed = 13, BatchSize = 4 };
        using var cpu = Network.Create(stack, options);
        using var gpu = HpBackprop.Cuda.CudaNetwork.OnEmulator(stack, options);
        gpu.Parameters.Data.AsSpan().Clear();
        gpu.PullParameters();
        CollectionAssert.AreEqual(Bits(cpu.Parameters.Data), Bits(gpu.Parameters.Data), "the device holds the initial values from the start");
    }
}
