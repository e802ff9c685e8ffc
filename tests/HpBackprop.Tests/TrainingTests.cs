using HpBackprop.Cpu;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Training;

namespace HpBackprop.Tests;

[TestClass]
public sealed class TrainingTests
{
    private static (DataSplit Split, ParameterSet P) Setup(int hidden = 32, int batch = 16, int seed = 7)
    {
        var corpus = Corpus.FromLines(TempDir.SyntheticWords(400, 1), "synthetic");
        var split = DataSplit.Create(corpus, 3, seed);
        var p = new ParameterSet(new ModelConfig(split.Vocabulary.Size, 3, 8, hidden, batch));
        p.Initialize(seed);
        return (split, p);
    }

    [TestMethod]
    public void TrainingLowersTheLossAndCalibrationUsesTheFullSplit()
    {
        var (split, p) = Setup();
        using var cpu = new CpuBackend(p);
        float before = cpu.Evaluate(split.Dev);
        var trainer = new Trainer(cpu, split.Train, new TrainerOptions { Steps = 1500, Seed = 3 });
        trainer.Run();
        Assert.AreEqual(1500, trainer.StepsDone);
        cpu.Calibrate(split.Train);
        Assert.IsTrue(p.IsCalibrated);
        float after = cpu.Evaluate(split.Dev);
        Assert.IsTrue(after < before - 0.5f, $"dev loss {before} -> {after}");

        // calibration = mean and Bessel variance of hprebn over the training split, computed here independently
        var cfg = p.Config;
        var hpre = new double[split.Train.Count * cfg.HiddenSize];
        var emb = new float[cfg.ContextWidth];
        for (int i = 0; i < split.Train.Count; i++)
        {
            for (int j = 0; j < cfg.BlockSize; j++) p.C.Slice(split.Train.X[i * cfg.BlockSize + j] * cfg.EmbeddingSize, cfg.EmbeddingSize).CopyTo(emb.AsSpan(j * cfg.EmbeddingSize));
            for (int c = 0; c < cfg.HiddenSize; c++)
            {
                double s = p.b1[c];
                for (int k = 0; k < cfg.ContextWidth; k++) s += (double)emb[k] * p.W1[k * cfg.HiddenSize + c];
                hpre[i * cfg.HiddenSize + c] = s;
            }
        }
        for (int c = 0; c < cfg.HiddenSize; c++)
        {
            double m = 0; for (int i = 0; i < split.Train.Count; i++) m += hpre[i * cfg.HiddenSize + c];
            m /= split.Train.Count;
            double v = 0; for (int i = 0; i < split.Train.Count; i++) { double d = hpre[i * cfg.HiddenSize + c] - m; v += d * d; }
            v /= split.Train.Count - 1;
            Assert.AreEqual(m, p.RunningMean[c], 1e-4 * Math.Max(1, Math.Abs(m)), $"mean[{c}]");
            Assert.AreEqual(v, p.RunningVar[c], 1e-4 * Math.Max(1, v), $"var[{c}]");
        }
    }

    [TestMethod]
    public void RunningStatisticsFollowTheBatchStatistics()
    {
        var (split, p) = Setup();
        using var cpu = new CpuBackend(p) { RunningMomentum = 1f }; // running = last batch exactly
        var trainer = new Trainer(cpu, split.Train, new TrainerOptions { Steps = 3, LearningRate = 0 });
        trainer.Run();
        CollectionAssert.AreEqual(cpu.Intermediate("bnmeani").ToArray(), p.RunningMean);
        CollectionAssert.AreEqual(cpu.Intermediate("bnvar").ToArray(), p.RunningVar);
        Assert.IsFalse(p.IsCalibrated);
    }

    [TestMethod]
    public void DrawBatchTakesWholeExamplesAndIsSeeded()
    {
        var (split, _) = Setup();
        var d = split.Train;
        var x1 = new int[16 * 3]; var y1 = new int[16];
        var x2 = new int[16 * 3]; var y2 = new int[16];
        d.DrawBatch(new NormalRng(5), x1, y1);
        d.DrawBatch(new NormalRng(5), x2, y2);
        CollectionAssert.AreEqual(x1, x2);
        CollectionAssert.AreEqual(y1, y2);
        var examples = Enumerable.Range(0, d.Count).Select(i => string.Join(",", d.X.Skip(i * 3).Take(3).Append(d.Y[i]))).ToHashSet();
        for (int r = 0; r < 16; r++)
            Assert.IsTrue(examples.Contains(string.Join(",", x1.Skip(r * 3).Take(3).Append(y1[r]))), $"row {r} is not one example of the split");
        d.DrawBatch(new NormalRng(6), x2, y2);
        Assert.IsFalse(x1.SequenceEqual(x2) && y1.SequenceEqual(y2), "another seed draws another batch");
        Assert.ThrowsExactly<ArgumentException>(() => d.DrawBatch(new NormalRng(1), new int[10], new int[4]));
    }

    [TestMethod]
    public void ARunResumedAfterCancellationEqualsAnUninterruptedOne()
    {
        var (split, p1) = Setup();
        var p2 = new ParameterSet(p1.Config);
        p2.CopyFrom(p1);
        var options = new TrainerOptions { Steps = 60, ReportEvery = 1 };
        using (var cpu = new CpuBackend(p1)) new Trainer(cpu, split.Train, options).Run();
        using (var cpu = new CpuBackend(p2))
        {
            var trainer = new Trainer(cpu, split.Train, options);
            using var cts = new CancellationTokenSource();
            Assert.ThrowsExactly<OperationCanceledException>(() => trainer.Run(pr => { if (pr.Step == 25) cts.Cancel(); }, cts.Token));
            Assert.AreEqual(25, trainer.StepsDone);
            trainer.Run();
            Assert.AreEqual(60, trainer.StepsDone);
        }
        CollectionAssert.AreEqual(Bits(p1.Data), Bits(p2.Data));
    }

    [TestMethod]
    public void ScheduleSwitchesAtTheDecayStep()
    {
        var o = new TrainerOptions { Steps = 10, LearningRate = 0.1f, DecayedLearningRate = 0.01f };
        Assert.AreEqual(0.1f, o.LearningRateAt(4));
        Assert.AreEqual(0.01f, o.LearningRateAt(5));
        var o2 = o with { DecayStep = 8 };
        Assert.AreEqual(0.1f, o2.LearningRateAt(7));
        Assert.AreEqual(0.01f, o2.LearningRateAt(8));
    }

    [TestMethod]
    public void AHugeLearningRateStopsWithTheStepAndRate()
    {
        var (split, p) = Setup();
        using var cpu = new CpuBackend(p);
        var trainer = new Trainer(cpu, split.Train, new TrainerOptions { Steps = 1000, LearningRate = 1e30f, DecayedLearningRate = 1e30f });
        var e = Assert.ThrowsExactly<TrainingDivergedException>(() => trainer.Run());
        Assert.IsTrue(e.Step > 0 && e.Step < 1000, e.Message);
        Assert.AreEqual(1e30f, e.LearningRate);
        StringAssert.Contains(e.Message, $"step {e.Step}");
        StringAssert.Contains(e.Message, "learning rate");
        Assert.IsFalse(float.IsFinite(e.Loss));
    }

    [TestMethod]
    public void SamplingIsSeededAndRespectsTheGuards()
    {
        var (split, _) = Setup();
        using var net = Networks.Network.Create(Networks.Sequential.Makemore(split.Vocabulary.Size, 3, 8, 32), new Networks.NetworkOptions { BatchSize = 16 });
        net.Initialize(7);
        var train = Networks.ExampleSet.FromWords(split.Train);
        net.Fit(train, 500);
        net.Calibrate(train);
        var sampler = new Sampler(net, split.Vocabulary);
        var a = sampler.Sample(15, 11);
        var b = sampler.Sample(15, 11);
        var c = sampler.Sample(15, 12);
        CollectionAssert.AreEqual(a.ToList(), b.ToList());
        CollectionAssert.AreNotEqual(a.ToList(), c.ToList());
        foreach (string w in a) foreach (char ch in w) Assert.IsTrue(split.Vocabulary.Contains(ch) && ch != '.', w);
        Assert.IsTrue(sampler.Sample(10, 1, temperature: 100, maxLength: 4).All(w => w.Length <= 4));
        // very low temperature is close to greedy: every draw from one context is the same word
        var greedy = sampler.Sample(5, 99, temperature: 1e-3);
        Assert.AreEqual(1, greedy.Distinct().Count(), string.Join(",", greedy));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => sampler.Sample(1, 1, temperature: 0));
    }

    [TestMethod]
    public void CheckpointRoundTripIsBitwise()
    {
        var (split, p) = Setup();
        using var cpu = new CpuBackend(p);
        new Trainer(cpu, split.Train, new TrainerOptions { Steps = 50 }).Run();
        cpu.Calibrate(split.Train);
        using var dir = new TempDir();
        string path = dir.File("m.safetensors");
        Checkpoint.Save(path, p, split.Vocabulary);
        var (q, vocab, meta) = Checkpoint.Load(path);
        Assert.AreEqual(p.Config, q.Config);
        Assert.AreEqual(split.Vocabulary.Characters, vocab.Characters);
        Assert.AreEqual("true", meta["bn_calibrated"]);
        Assert.IsTrue(q.IsCalibrated);
        CollectionAssert.AreEqual(Bits(p.Data), Bits(q.Data));
        CollectionAssert.AreEqual(Bits(p.RunningMean), Bits(q.RunningMean));
        CollectionAssert.AreEqual(Bits(p.RunningVar), Bits(q.RunningVar));
        // saving the loaded model again gives the same bytes
        string again = dir.File("again.safetensors");
        Checkpoint.Save(again, q, vocab);
        CollectionAssert.AreEqual(File.ReadAllBytes(path), File.ReadAllBytes(again));
    }

    [TestMethod]
    public void ACheckpointTruncatedAtAnyByteIsAClearError()
    {
        var corpus = Corpus.FromLines(["ab", "ba", "aab", "bba", "abab", "baba", "a", "b", "aa", "bb"], "tiny");
        var split = DataSplit.Create(corpus, 2, 1);
        var p = new ParameterSet(new ModelConfig(split.Vocabulary.Size, 2, 2, 3, 4));
        p.Initialize(1);
        using var dir = new TempDir();
        string path = dir.File("m.safetensors");
        Checkpoint.Save(path, p, split.Vocabulary);
        byte[] bytes = File.ReadAllBytes(path);
        string cut = dir.File("cut.safetensors");
        for (int len = 0; len < bytes.Length; len++)
        {
            File.WriteAllBytes(cut, bytes.AsSpan(0, len).ToArray());
            try
            {
                Checkpoint.Load(cut);
                Assert.Fail($"a checkpoint cut to {len} of {bytes.Length} bytes loaded");
            }
            catch (SafeTensorsFormatException e)
            {
                StringAssert.Contains(e.Message, cut);
            }
        }
    }

    [TestMethod]
    public void AnInterruptedSaveKeepsThePreviousCheckpoint()
    {
        var (split, p) = Setup();
        using var dir = new TempDir();
        string path = dir.File("m.safetensors");
        Checkpoint.Save(path, p, split.Vocabulary);
        byte[] before = File.ReadAllBytes(path);
        p.Data[0] += 1;
        AtomicFile.BeforeRename = _ => throw new IOException("simulated crash");
        try
        {
            Assert.ThrowsExactly<IOException>(() => Checkpoint.Save(path, p, split.Vocabulary));
        }
        finally
        {
            AtomicFile.BeforeRename = null;
        }
        CollectionAssert.AreEqual(before, File.ReadAllBytes(path));
        Assert.AreEqual(1, Directory.GetFiles(dir.Path).Length, "no temporary file is left behind");
        Checkpoint.Save(path, p, split.Vocabulary);
        CollectionAssert.AreNotEqual(before, File.ReadAllBytes(path));
    }

    private static int[] Bits(float[] a) => Array.ConvertAll(a, BitConverter.SingleToInt32Bits);
}
