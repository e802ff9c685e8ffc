using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Networks;

namespace HpBackprop.Tests;

/// <summary>Issue #13: a run stopped, saved and continued ends bitwise where the same run never stopped ends.</summary>
[TestClass]
public sealed class ResumeTests
{
    [TestMethod]
    [DataRow("adamw")]
    [DataRow("sgd-momentum")]
    public void AStoppedSavedAndResumedRunEndsBitwiseLikeTheUninterruptedOne(string optimizer)
    {
        var corpus = Corpus.FromLines(TempDir.SyntheticWords(300, 4), "synthetic");
        var split = DataSplit.Create(corpus, 3, 7);
        var train = ExampleSet.FromWords(split.Train);
        var stack = Sequential.Makemore(split.Vocabulary.Size, 3, 6, 20);
        Optimizer opt = optimizer == "adamw" ? new AdamW { LearningRate = 0.01f } : new Sgd { LearningRate = 0.05f, Momentum = 0.9f };
        var options = new NetworkOptions { BatchSize = 8, Optimizer = opt, Schedule = new StepSchedule(30, 0.1f), BatchNormMomentum = 0.01f };

        using var whole = Network.Create(stack, options);
        whole.Initialize(5);
        var wholeRun = new TrainingRun(11, 60);
        whole.Fit(train, wholeRun);

        using var dir = new TempDir();
        using (var first = Network.Create(stack, options))
        {
            first.Initialize(5);
            var run = new TrainingRun(11, 60);
            using var cts = new CancellationTokenSource();
            first.Fit(train, run, p => { if (p.Step == 23) cts.Cancel(); }, reportEvery: 1, cancellationToken: cts.Token);
            Assert.AreEqual(23, run.Completed);
            StackCheckpoint.Save(dir.File("cut.safetensors"), first, split.Vocabulary, run: run);
        }
        var loaded = StackCheckpoint.Load(dir.File("cut.safetensors"));
        using var resumedNet = loaded.Network;
        Assert.IsNotNull(loaded.Training);
        using var second = Network.Create(stack, options);
        var resumed = loaded.Training.RestoreInto(second, loaded);
        Assert.AreEqual(23, resumed.Completed);
        Assert.AreEqual(37, second.Fit(train, resumed));

        Assert.AreEqual(whole.StepCount, second.StepCount);
        CollectionAssert.AreEqual(Bits(whole.Parameters.Data), Bits(second.Parameters.Data));
        CollectionAssert.AreEqual(Bits(whole.Parameters.OptimizerState), Bits(second.Parameters.OptimizerState));
        CollectionAssert.AreEqual(Bits(whole.Parameters.Buffers), Bits(second.Parameters.Buffers));
        CollectionAssert.AreEqual(whole.Parameters.BatchesTracked, second.Parameters.BatchesTracked);
        CollectionAssert.AreEqual(Bits(wholeRun.Losses), Bits(resumed.Losses));
    }

    [TestMethod]
    public void AFinishedModelHasNoTrainingStateAndADivergenceNamesTheOneBasedStep()
    {
        var corpus = Corpus.FromLines(TempDir.SyntheticWords(100, 4), "synthetic");
        var split = DataSplit.Create(corpus, 3, 7);
        using var net = Network.Create(Sequential.Makemore(split.Vocabulary.Size, 3, 4, 8), new NetworkOptions { BatchSize = 4, Optimizer = new Sgd { LearningRate = 1e30f } });
        net.Initialize(1);
        using var dir = new TempDir();
        StackCheckpoint.Save(dir.File("m.safetensors"), net, split.Vocabulary);
        var loaded = StackCheckpoint.Load(dir.File("m.safetensors"));
        loaded.Network.Dispose();
        Assert.IsNull(loaded.Training);
        var e = Assert.ThrowsExactly<Training.TrainingDivergedException>(() => net.Fit(ExampleSet.FromWords(split.Train), 100));
        Assert.IsTrue(e.Step >= 1, e.Message);
        StringAssert.Contains(e.Message, $"step {e.Step}:");
    }

    private static int[] Bits(float[] a) => a.Select(BitConverter.SingleToInt32Bits).ToArray();
}
