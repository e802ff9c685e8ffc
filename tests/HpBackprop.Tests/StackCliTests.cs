using System.Text.Json;
using HpBackprop.Cli;
using HpBackprop.IO;
using HpBackprop.Networks;

namespace HpBackprop.Tests;

/// <summary>The command on layer stacks: train --layers, eval on words and on examples files, sample, and the errors before any work.</summary>
[TestClass]
public sealed class StackCliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => CliRunner.Run(args);

    private static (string Path, int Vocab) Corpus(TempDir dir)
    {
        string path = dir.File("words.txt");
        var words = TempDir.SyntheticWords(300, 5);
        File.WriteAllLines(path, words);
        return (path, words.SelectMany(w => w).Distinct().Count() + 1);
    }

    [TestMethod]
    public void TrainsADeeperStackWithAdamWAndTheCheckpointEvaluatesAndSamples()
    {
        using var dir = new TempDir();
        var (data, V) = Corpus(dir);
        string layers = $"embedding:{V}x6,flatten,linear:18x24:nobias,batchnorm:24,tanh,linear:24x24:nobias,batchnorm:24:biased,relu,linear:24x{V}";
        var (code, stdout, stderr) = Run("train", "--data", data, "--layers", layers, "--steps", "600", "--batch", "16", "--optimizer", "adamw",
            "--lr", "0.01", "--schedule", "cosine", "--warmup", "50", "--l2", "0.0001", "--out", dir.File("m.safetensors"), "--json", "--samples", "3");
        Assert.AreEqual(0, code, stderr);
        var json = JsonDocument.Parse(stdout.Trim()).RootElement;
        Assert.AreEqual(layers, json.GetProperty("layers").GetString());
        double train = json.GetProperty("train_loss").GetDouble();
        Assert.IsTrue(train < Math.Log(V), $"train loss {train} after 600 steps is no better than uniform ({Math.Log(V)})");
        StringAssert.Contains(stderr, "adamw:lr=0.01");
        StringAssert.Contains(stderr, "cosine:warmup=50,total=600");
        // the checkpoint holds the stack: eval over the training words prints the loss; sample prints words
        var loaded = StackCheckpoint.Load(dir.File("m.safetensors"));
        using (loaded.Network)
        {
            Assert.AreEqual(layers, loaded.Network.Stack.ToString());
            Assert.AreEqual(1L * 600, loaded.Network.Parameters.BatchesTracked[0], "num_batches_tracked of the first batch norm");
        }
        var (c2, o2, e2) = Run("eval", "--model", dir.File("m.safetensors"), "--data", data);
        Assert.AreEqual(0, c2, e2);
        StringAssert.StartsWith(o2, "loss ");
        var (c3, o3, e3) = Run("sample", "--model", dir.File("m.safetensors"), "-n", "4");
        Assert.AreEqual(0, c3, e3);
        Assert.AreEqual(4, o3.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
    }

    [TestMethod]
    public void EvalOnAnExamplesFileEqualsEvalOnTheWords()
    {
        using var dir = new TempDir();
        var (data, _) = Corpus(dir);
        Assert.AreEqual(0, Run("train", "--data", data, "--steps", "200", "--hidden", "16", "--samples", "0", "--out", dir.File("m.safetensors")).Code);
        var loaded = StackCheckpoint.Load(dir.File("m.safetensors"));
        loaded.Network.Dispose();
        var corpus = HpBackprop.Data.Corpus.Load(data);
        var ds = HpBackprop.Data.Dataset.Build(corpus, loaded.Vocabulary!, 3);
        var f = new SafeTensorsFile();
        f.Add("x", ds.X.Select(v => (long)v).ToArray().AsSpan(), ds.Count, 3);
        f.Add("y", ds.Y.Select(v => (long)v).ToArray().AsSpan(), ds.Count);
        f.Save(dir.File("ex.safetensors"));
        var words = Run("eval", "--model", dir.File("m.safetensors"), "--data", data);
        var file = Run("eval", "--model", dir.File("m.safetensors"), "--data", dir.File("ex.safetensors"));
        Assert.AreEqual(0, file.Code, file.Err);
        Assert.AreEqual(words.Out, file.Out);
    }

    [TestMethod]
    [DataRow("--layers", "embedding:99x6,flatten,linear:18x8,relu,linear:8x99", "layer 0 (embedding:99x6) has 99 ids but the corpus has a vocabulary of")]
    [DataRow("--layers", "embedding:V,flatten", "layer 0:")]
    [DataRow("--layers", "linear:3x8,relu", "starts with an embedding")]
    [DataRow("--layers", "embedding:VOCABx6,linear:18x8", "add 'flatten'")]
    [DataRow("--loss", "mse", "cross_entropy")]
    [DataRow("--momentum", "1.5", "--momentum = 1.5 is invalid")]
    [DataRow("--lr-decay-step", "-5", "--lr-decay-step -5")]
    public void BadStacksAndOptionsExit2NamingTheProblem(string option, string value, string expected)
    {
        using var dir = new TempDir();
        var (data, V) = Corpus(dir);
        var (code, _, stderr) = Run("train", "--data", data, "--steps", "10", "--samples", "0", option, value.Replace("VOCAB", V.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Assert.AreEqual(2, code, stderr);
        StringAssert.Contains(stderr, expected);
    }

    [TestMethod]
    public void AHiddenLayerTooLargeForMemoryExits2WithTheBytes()
    {
        // the reproduction: an int buffer length used to wrap and the GEMM wrote past the array
        var (code, _, stderr) = Run("train", "--hidden", "4300000", "--batch", "2", "--steps", "1", "--samples", "0");
        Assert.AreEqual(2, code, stderr);
        StringAssert.Contains(stderr, "bytes");
    }

    /// <summary>
    /// train on --device emulator runs the makemore recipe (plain SGD, the step schedule) through the GPU backend's kernels: the
    /// same train and dev losses as --device cpu from the same seed, within 1e-4 relative (the float32 drift of this recipe's
    /// trajectory, measured by CudaNetworkTests.TheMakemoreRecipeEndsWhereTheCpusDoesWithinTheFloat32Drift, is about one ulp of the
    /// parameters, 7e-8), and the device is named.
    /// </summary>
    [TestMethod]
    public void TheMakemoreRecipeOnTheEmulatorGivesTheCpusLosses()
    {
        Devices.RequireEmulator();
        using var dir = new TempDir();
        var (data, _) = Corpus(dir);
        JsonElement emuJson = default;
        (double Train, double Dev) Losses(string device)
        {
            var (code, stdout, stderr) = Run("train", "--data", data, "--steps", "200", "--hidden", "32", "--samples", "2", "--json", "--device", device);
            Assert.AreEqual(0, code, stderr);
            var json = JsonDocument.Parse(stdout.Trim()).RootElement;
            StringAssert.StartsWith(json.GetProperty("device").GetString(), device == "cpu" ? "cpu" : "cuda-emulator");
            Assert.AreEqual(device != "cpu", json.TryGetProperty("graph_nodes", out _), "the device traffic is reported for a GPU run only");
            if (device != "cpu") emuJson = json.Clone();
            return (json.GetProperty("train_loss").GetDouble(), json.GetProperty("dev_loss").GetDouble());
        }
        var cpu = Losses("cpu");
        var emu = Losses("emulator");
        // the traffic of the run: the training set goes up once (apart from the steps); the first step launches its 12 kernels
        // (the minibatch drawn and its embedding rows gathered by step_begin), the other 199 replay the captured step (12
        // nodes, the target for this stack); a step
        // reads its loss (4 bytes; here every step, as progress is printed every step of so short a run) and the step state
        // goes up when its window of rows changes (a header and at most 100 rows of 3 floats, at most twice in 200 steps)
        Assert.AreEqual(Math.Round((12 + 199) / 200.0, 4), emuJson.GetProperty("launches_per_step").GetDouble(), 1e-9, "launches per step");
        Assert.AreEqual(12, emuJson.GetProperty("graph_nodes").GetInt32(), "graph nodes");
        double bytes = emuJson.GetProperty("host_device_bytes_per_step").GetDouble();
        Assert.IsTrue(bytes >= 4 && bytes <= 4 + 2 * (64 + 100 * 12) / 200.0, $"host-device bytes per step {bytes}");
        Assert.IsGreaterThan(0, emuJson.GetProperty("host_device_setup_bytes").GetInt64(), "the training set's upload");
        Assert.AreEqual(cpu.Train, emu.Train, 1e-4 * cpu.Train, "train loss");
        Assert.AreEqual(cpu.Dev, emu.Dev, 1e-4 * cpu.Dev, "dev loss");
    }
}
