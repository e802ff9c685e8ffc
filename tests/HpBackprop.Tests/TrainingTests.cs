using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Networks;
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
        // the docs/makemore.md §5 recipe: plain SGD at 0.1, a tenth of it from half the steps on
        using var cpu = new MakemoreNet(p, new NetworkOptions { Schedule = new StepSchedule(750, 0.1f) });
        var net = cpu.Net;
        var train = ExampleSet.FromWords(split.Train);
        var dev = ExampleSet.FromWords(split.Dev);
        float before = net.Evaluate(dev);
        float[] losses = net.Fit(train, 1500, seed: 3);
        Assert.AreEqual(1500, net.StepCount);
        Assert.IsTrue(losses.All(float.IsFinite));
        net.Calibrate(train);
        float after = net.Evaluate(dev);
        Assert.IsTrue(after < before - 0.5f, $"dev loss {before} -> {after}");

        // calibration = mean and Bessel variance of hprebn over the training split, computed here independently
        var q = cpu.ToParameterSet();
        var cfg = q.Config;
        var hpre = new double[split.Train.Count * cfg.HiddenSize];
        var emb = new float[cfg.ContextWidth];
        for (int i = 0; i < split.Train.Count; i++)
        {
            for (int j = 0; j < cfg.BlockSize; j++) q.C.Slice(split.Train.X[i * cfg.BlockSize + j] * cfg.EmbeddingSize, cfg.EmbeddingSize).CopyTo(emb.AsSpan(j * cfg.EmbeddingSize));
            for (int c = 0; c < cfg.HiddenSize; c++)
            {
                double s = q.b1[c];
                for (int k = 0; k < cfg.ContextWidth; k++) s += (double)emb[k] * q.W1[k * cfg.HiddenSize + c];
                hpre[i * cfg.HiddenSize + c] = s;
            }
        }
        for (int c = 0; c < cfg.HiddenSize; c++)
        {
            double m = 0; for (int i = 0; i < split.Train.Count; i++) m += hpre[i * cfg.HiddenSize + c];
            m /= split.Train.Count;
            double v = 0; for (int i = 0; i < split.Train.Count; i++) { double d = hpre[i * cfg.HiddenSize + c] - m; v += d * d; }
            v /= split.Train.Count - 1;
            Assert.AreEqual(m, q.RunningMean[c], 1e-4 * Math.Max(1, Math.Abs(m)), $"mean[{c}]");
            Assert.AreEqual(v, q.RunningVar[c], 1e-4 * Math.Max(1, v), $"var[{c}]");
        }
    }

    [TestMethod]
    public void RunningStatisticsFollowTheBatchStatistics()
    {
        var (split, p) = Setup();
        // momentum 1: running = the last batch's statistics exactly (the variance with Bessel's correction, as the batch's)
        using var cpu = new MakemoreNet(p, new NetworkOptions { BatchNormMomentum = 1f, Optimizer = new Sgd { LearningRate = 0 } });
        cpu.Net.Fit(ExampleSet.FromWords(split.Train), 3);
        CollectionAssert.AreEqual(cpu.Intermediate("bnmeani"), cpu.Net.Parameters.Value("3.running_mean").ToArray());
        CollectionAssert.AreEqual(cpu.Intermediate("bnvar"), cpu.Net.Parameters.Value("3.running_var").ToArray());
        Assert.AreEqual(3L, cpu.Net.Parameters.BatchesTracked[0], "num_batches_tracked");
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
        var (split, p) = Setup();
        var train = ExampleSet.FromWords(split.Train);
        var options = new NetworkOptions { Schedule = new StepSchedule(30, 0.1f) };
        using var whole = new MakemoreNet(p, options);
        float[] all = whole.Net.Fit(train, 60, seed: 42);
        using var cut = new MakemoreNet(p, options);
        using var cts = new CancellationTokenSource();
        float[] part = cut.Net.Fit(train, 60, seed: 42, progress: pr => { if (pr.Step == 25) cts.Cancel(); }, reportEvery: 1, cancellationToken: cts.Token);
        // a cancellation stops Fit at the end of a step: the steps so far are those of the uninterrupted run
        Assert.AreEqual(25, cut.Net.StepCount);
        Assert.HasCount(25, part, "the losses of the steps done, and of those only");
        CollectionAssert.AreEqual(all[..25], part);
        // resume: StepCount is the schedule's position and the minibatches' key (the minibatch of step t is a function of
        // the seed and t): five steps by hand on DrawBatch's rows, then Fit again continues the uninterrupted run
        int n = p.Config.BatchSize;
        var ids = new int[n * p.Config.BlockSize];
        var cls = new int[n];
        for (int s = 25; s < 30; s++)
        {
            train.DrawBatch(42, cut.Net.StepCount, n, ids, default, cls, default);
            Assert.AreEqual(0.1f, cut.Net.LearningRate, $"learning rate of step {s}");
            Assert.AreEqual(all[s], cut.Step(ids, cls), $"loss of step {s}");
        }
        float[] rest = cut.Net.Fit(train, 30, seed: 42);
        CollectionAssert.AreEqual(all[30..], rest);
        Assert.AreEqual(60, cut.Net.StepCount);
        CollectionAssert.AreEqual(Bits(whole.Net.Parameters.Data), Bits(cut.Net.Parameters.Data));
        CollectionAssert.AreEqual(Bits(whole.Net.Parameters.Buffers), Bits(cut.Net.Parameters.Buffers));
    }

    [TestMethod]
    public void ScheduleSwitchesAtTheDecayStep()
    {
        var o = new StepSchedule(5, 0.1f);
        Assert.AreEqual(0.1f, o.At(4, 0.1f));
        Assert.AreEqual(0.1f * 0.1f, o.At(5, 0.1f));
        var o2 = o with { AtStep = 8 };
        Assert.AreEqual(0.1f, o2.At(7, 0.1f));
        Assert.AreEqual(0.1f * 0.1f, o2.At(8, 0.1f));
        // a network's rate follows its step count (the schedule's position)
        var (_, p) = Setup();
        using var cpu = new MakemoreNet(p, new NetworkOptions { Optimizer = new Sgd { LearningRate = 0.1f }, Schedule = o2 });
        cpu.Net.StepCount = 7;
        Assert.AreEqual(0.1f, cpu.Net.LearningRate);
        cpu.Net.StepCount = 8;
        Assert.AreEqual(0.1f * 0.1f, cpu.Net.LearningRate);
    }

    [TestMethod]
    public void AHugeLearningRateStopsWithTheStepAndRate()
    {
        var (split, p) = Setup();
        using var cpu = new MakemoreNet(p, new NetworkOptions { Optimizer = new Sgd { LearningRate = 1e30f } });
        var e = Assert.ThrowsExactly<TrainingDivergedException>(() => cpu.Net.Fit(ExampleSet.FromWords(split.Train), 1000));
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
        using var cpu = new MakemoreNet(p);
        var train = ExampleSet.FromWords(split.Train);
        cpu.Net.Fit(train, 50);
        cpu.Net.Calibrate(train);
        using var dir = new TempDir();
        string path = dir.File("m.safetensors");
        StackCheckpoint.Save(path, cpu.Net, split.Vocabulary, new Dictionary<string, string> { ["bn_calibrated"] = "true" });
        var loaded = StackCheckpoint.Load(path);
        using var q = loaded.Network;
        Assert.AreEqual(cpu.Net.Stack.ToString(), q.Stack.ToString());
        Assert.AreEqual(p.Config.BatchSize, q.BatchSize);
        Assert.AreEqual(split.Vocabulary.Characters, loaded.Vocabulary!.Characters);
        Assert.AreEqual("true", loaded.Metadata["bn_calibrated"]);
        CollectionAssert.AreEqual(Bits(cpu.Net.Parameters.Data), Bits(q.Parameters.Data));
        CollectionAssert.AreEqual(Bits(cpu.Net.Parameters.Buffers), Bits(q.Parameters.Buffers));
        CollectionAssert.AreEqual(cpu.Net.Parameters.BatchesTracked, q.Parameters.BatchesTracked);
        // saving the loaded model again gives the same bytes
        string again = dir.File("again.safetensors");
        StackCheckpoint.Save(again, q, loaded.Vocabulary, new Dictionary<string, string> { ["bn_calibrated"] = "true" });
        CollectionAssert.AreEqual(File.ReadAllBytes(path), File.ReadAllBytes(again));
        // the earlier makemore format (makemore names and layout) round-trips as well, and loads as the same network
        var mp = cpu.ToParameterSet();
        mp.IsCalibrated = true;
        string old = dir.File("mlp.safetensors");
        Checkpoint.Save(old, mp, split.Vocabulary);
        var (r, vocab, meta) = Checkpoint.Load(old);
        Assert.AreEqual(p.Config, r.Config);
        Assert.AreEqual(split.Vocabulary.Characters, vocab.Characters);
        Assert.AreEqual("true", meta["bn_calibrated"]);
        Assert.IsTrue(r.IsCalibrated);
        CollectionAssert.AreEqual(Bits(mp.Data), Bits(r.Data));
        CollectionAssert.AreEqual(Bits(mp.RunningMean), Bits(r.RunningMean));
        CollectionAssert.AreEqual(Bits(mp.RunningVar), Bits(r.RunningVar));
        using var fromOld = StackCheckpoint.Load(old).Network;
        CollectionAssert.AreEqual(Bits(cpu.Net.Parameters.Data), Bits(fromOld.Parameters.Data));
        CollectionAssert.AreEqual(Bits(cpu.Net.Parameters.Buffers), Bits(fromOld.Parameters.Buffers));
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
