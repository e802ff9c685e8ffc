using System.Diagnostics;
using System.Globalization;
using HpBackprop.Cli;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Networks;

namespace HpBackprop.Tests;

/// <summary>Issue #20 ("memory-safe at every entry point") through the command, in process.</summary>
[TestClass]
public sealed class SafetyCliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => CliRunner.Run(args);

    private static (string Path, int Vocab) Corpus(TempDir dir, string name = "words.txt")
    {
        string path = dir.File(name);
        var words = TempDir.SyntheticWords(300, 5).ToArray();
        File.WriteAllLines(path, words);
        return (path, words.SelectMany(w => w).Distinct().Count() + 1);
    }

    /// <summary>A writer that cancels when the text it is given contains <paramref name="trigger"/>.</summary>
    private sealed class CancelOn(string trigger, CancellationTokenSource cts) : StringWriter
    {
        public override void Write(string? value) { base.Write(value); if (value != null && value.Contains(trigger)) cts.Cancel(); }
        public override void WriteLine(string? value) { Write(value); base.WriteLine(); }
    }

    private static string WordModel(TempDir dir)
    {
        string path = dir.File("model.safetensors");
        using var net = Network.Create(Sequential.Makemore(7, 3, 4, 8), new NetworkOptions { BatchSize = 4 });
        net.Initialize(1);
        StackCheckpoint.Save(path, net, Vocabulary.FromCharacters(".abcdef"));
        return path;
    }

    private static void AssertNoLibraryNames(string stderr)
    {
        Assert.IsFalse(stderr.Contains("(Parameter"), stderr);
        Assert.IsFalse(stderr.Contains("   at "), "no stack trace: " + stderr);
    }

    [TestMethod]
    [DataRow(7L)]
    [DataRow(-1L)]
    [DataRow(2_000_000_000L)]
    public void EvalOnAnExamplesFileWithAnIdOutsideTheVocabularyExitsTwoNamingTheRowAndColumn(long bad)
    {
        // it used to read outside the embedding table and print a loss (exit 0), or abort the process for 2,000,000,000
        using var dir = new TempDir();
        string model = WordModel(dir);
        var x = new long[5 * 3];
        x[3 * 3 + 2] = bad;
        var f = new SafeTensorsFile();
        f.Add("x", x, 5, 3);
        f.Add("y", new long[5], 5);
        string data = dir.File("ex.safetensors");
        f.Save(data);
        var (code, stdout, stderr) = Run("eval", "--model", model, "--data", data);
        Assert.AreEqual(2, code, stderr);
        Assert.AreEqual("", stdout);
        StringAssert.Contains(stderr, "--data " + data);
        StringAssert.Contains(stderr, $"tensor 'x': id {bad} at row 3, column 2 is outside [0, 7)");
        AssertNoLibraryNames(stderr);
    }

    [TestMethod]
    [DataRow("x", 1, 2, float.NaN, "NaN")]
    [DataRow("x", 0, 0, float.NegativeInfinity, "Infinity")]
    [DataRow("y", 3, 1, 1.5f, "[0, 1]")]
    [DataRow("y", 2, 0, -0.25f, "[0, 1]")]
    [DataRow("y", 4, 1, float.NaN, "NaN")]
    public void EvalOnAnExamplesFileWithNonFiniteFeaturesOrBceTargetsOutsideZeroOneExitsTwo(string tensor, int row, int column, float value, string expected)
    {
        // they used to print "loss NaN" or a negative loss with exit 0
        using var dir = new TempDir();
        string model = dir.File("bce.safetensors");
        using (var net = Network.Create(Sequential.Parse("linear:3x4,relu,linear:4x2"), new NetworkOptions { BatchSize = 4, Loss = LossKind.BceWithLogits }))
        {
            net.Initialize(1);
            StackCheckpoint.Save(model, net, null);
        }
        var x = new float[5 * 3];
        var y = new float[5 * 2];
        (tensor == "x" ? x : y)[row * (tensor == "x" ? 3 : 2) + column] = value;
        var f = new SafeTensorsFile();
        f.Add("x", x, 5, 3);
        f.Add("y", y, 5, 2);
        string data = dir.File("ex.safetensors");
        f.Save(data);
        var (code, stdout, stderr) = Run("eval", "--model", model, "--data", data);
        Assert.AreEqual(2, code, stdout + stderr);
        StringAssert.Contains(stderr, $"--data {data}: tensor '{tensor}'");
        StringAssert.Contains(stderr, $"row {row}, column {column}");
        StringAssert.Contains(stderr, expected);
        AssertNoLibraryNames(stderr);
    }

    [TestMethod]
    [DataRow("--out")]
    [DataRow("--plot")]
    public void AResumedRunRefusesAnOutputThatIsTheCorpusItTakesFromItsCheckpoint(string option)
    {
        // the same-file check ran before the corpus path was known from the checkpoint, so the corpus was overwritten
        using var dir = new TempDir();
        var (data, _) = Corpus(dir);
        byte[] corpus = File.ReadAllBytes(data);
        using var cts = new CancellationTokenSource();
        Assert.AreEqual(130, Program.Run(["train", "--data", data, "--steps", "300", "--hidden", "8", "--samples", "0", "--out", dir.File("cut.safetensors")],
            new CancelOn("30/300", cts), new StringWriter(), cts.Token));
        var (code, stdout, stderr) = Run("train", "--resume", dir.File("cut.safetensors"), option, data, "--samples", "0");
        Assert.AreEqual(2, code, stderr);
        StringAssert.Contains(stderr, option);
        StringAssert.Contains(stderr, "same file");
        Assert.IsFalse(stdout.Contains("step "), "no training: " + stdout);
        CollectionAssert.AreEqual(corpus, File.ReadAllBytes(data), "the corpus is intact");
    }

    [TestMethod]
    public void AnOutputReachedThroughALinkedDirectoryOrAHardLinkIsTheSameFileAsTheInput()
    {
        // GetFullPath does not resolve a linked directory: --out LINK/words.txt overwrote the corpus
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("real"));
        var (data, _) = Corpus(dir, Path.Combine("real", "words.txt"));
        byte[] corpus = File.ReadAllBytes(data);
        Directory.CreateSymbolicLink(dir.File("link"), dir.File("real"));
        foreach (var (option, path) in new[] { ("--out", Path.Combine(dir.File("link"), "words.txt")), ("--plot", Path.Combine(dir.File("link"), "..", "real", "words.txt")) })
        {
            var (code, stdout, stderr) = Run("train", "--data", data, "--steps", "5", "--hidden", "8", "--samples", "0", option, path);
            Assert.AreEqual(2, code, $"{option} {path}: {stderr}");
            StringAssert.Contains(stderr, $"--data and {option} are the same file");
            Assert.IsFalse(stdout.Contains("corpus:"), "no work started");
        }
        // a hard link to the corpus is the same file too (same device and inode)
        if (RunTool("ln", data, dir.File("hard.txt")) == 0)
        {
            var (code, _, stderr) = Run("train", "--data", data, "--steps", "5", "--hidden", "8", "--samples", "0", "--out", dir.File("hard.txt"));
            Assert.AreEqual(2, code, stderr);
            StringAssert.Contains(stderr, "--data and --out are the same file");
        }
        CollectionAssert.AreEqual(corpus, File.ReadAllBytes(data), "the corpus is intact");
    }

    private static int RunTool(string tool, params string[] args)
    {
        var psi = new ProcessStartInfo(tool) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        try
        {
            using var p = Process.Start(psi)!;
            p.WaitForExit();
            return p.ExitCode;
        }
        catch (System.ComponentModel.Win32Exception) { return -1; }
    }

    private static string FileType(string path)
    {
        var psi = new ProcessStartInfo("stat") { RedirectStandardOutput = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("%F");
        psi.ArgumentList.Add(path);
        using var p = Process.Start(psi)!;
        string o = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        return o;
    }

    [TestMethod]
    public void AnExistingOutputThatIsNotARegularFileIsRefusedAndLeftAsItIs()
    {
        // --out / --plot used to replace a FIFO or a character device with a regular file
        if (!OperatingSystem.IsLinux()) Assert.Inconclusive("FIFOs and device nodes are made with mkfifo and mknod on Linux.");
        using var dir = new TempDir();
        var (data, _) = Corpus(dir);
        var specials = new List<(string Path, string Type)>();
        Assert.AreEqual(0, RunTool("mkfifo", dir.File("fifo")), "mkfifo");
        specials.Add((dir.File("fifo"), FileType(dir.File("fifo"))));
        // a character device of our own (the null device's numbers), never /dev/null itself; needs root
        if (RunTool("mknod", dir.File("chardev"), "c", "1", "3") == 0) specials.Add((dir.File("chardev"), FileType(dir.File("chardev"))));
        foreach (var (path, type) in specials)
            foreach (var option in new[] { "--out", "--plot" })
            {
                var (code, stdout, stderr) = Run("train", "--data", data, "--steps", "5", "--hidden", "8", "--samples", "0", option, path);
                Assert.AreEqual(2, code, $"{option} {type}: {stderr}");
                StringAssert.Contains(stderr, $"{option} {path}");
                StringAssert.Contains(stderr, "not a regular file");
                Assert.IsFalse(stdout.Contains("corpus:"), "no work started");
                Assert.AreEqual(type, FileType(path), "the special file is left as it was");
            }
    }

    [TestMethod]
    public void AnExplodedButFiniteLossIsDivergenceExitOneAndTheEarlierModelIsKept()
    {
        // at --lr 1e6 the loss stays finite (millions) and the run used to exit 0 and overwrite --out
        using var dir = new TempDir();
        var (data, _) = Corpus(dir);
        string model = dir.File("m.safetensors");
        Assert.AreEqual(0, Run("train", "--data", data, "--steps", "50", "--hidden", "8", "--samples", "0", "--out", model).Code);
        byte[] earlier = File.ReadAllBytes(model);
        var (code, stdout, stderr) = Run("train", "--data", data, "--steps", "300", "--hidden", "16", "--lr", "1e6", "--samples", "3", "--out", model);
        Assert.AreEqual(1, code, stdout + stderr);
        StringAssert.Contains(stderr, "diverged");
        StringAssert.Contains(stderr, "ten times");
        Assert.IsFalse(stdout.Contains("samples:"), "no samples from a diverged model");
        CollectionAssert.AreEqual(earlier, File.ReadAllBytes(model), "the earlier model is kept");
    }

    [TestMethod]
    public void AStopAfterTrainingStillSavesTheModelAndSkipsTheSamples()
    {
        // after training the stop request was no longer honoured (a signal then ended the process) and samples came before the save
        using var dir = new TempDir();
        var (data, _) = Corpus(dir);
        string model = dir.File("m.safetensors");
        using var cts = new CancellationTokenSource();
        var stdout = new CancelOn("train loss", cts);
        var stderr = new StringWriter();
        int code = Program.Run(["train", "--data", data, "--steps", "100", "--hidden", "8", "--samples", "5", "--out", model], stdout, stderr, cts.Token);
        Assert.AreEqual(130, code, stderr.ToString());
        StringAssert.Contains(stdout.ToString(), "saved " + model);
        Assert.IsFalse(stdout.ToString().Contains("samples:"), "the stop skips the samples: " + stdout);
        using var loaded = StackCheckpoint.Load(model).Network;
        Assert.AreEqual("100", StackCheckpoint.Load(model).Metadata["steps"]);
    }

    [TestMethod]
    [DataRow(new[] { "--embd", "0" }, new[] { "--embd 0", "at least 1" })]
    [DataRow(new[] { "--hidden", "0" }, new[] { "--hidden 0", "at least 1" })]
    [DataRow(new[] { "--embd", "-1" }, new[] { "--embd -1", "at least 1" })]
    [DataRow(new[] { "--hidden", "-5" }, new[] { "--hidden -5", "at least 1" })]
    [DataRow(new[] { "--loss", "foo" }, new[] { "--loss", "foo" })]
    [DataRow(new[] { "--samples", "10001" }, new[] { "--samples 10001", "10,000" })]
    [DataRow(new[] { "--layers", "embedding:VOCABx6,flatten,linear:18x8,relu,linear:8x5" }, new[] { "--layers", "last layer (linear:8x5) gives 5", "vocabulary of VOCAB" })]
    [DataRow(new[] { "--layers", "embedding:VOCABx6,flatten,linear:18x8,relu,linear:8xVOCAB", "--block", "3" }, new[] { "--block", "--layers" })]
    [DataRow(new[] { "--layers", "embedding:VOCABx6,flatten,linear:18x8,relu,linear:8xVOCAB", "--embd", "6" }, new[] { "--embd", "--layers" })]
    [DataRow(new[] { "--layers", "embedding:VOCABx6,flatten,linear:18x8,relu,linear:8xVOCAB", "--hidden", "8" }, new[] { "--hidden", "--layers" })]
    [DataRow(new[] { "--warmup", "10" }, new[] { "--warmup", "--schedule step" })]
    [DataRow(new[] { "--min-lr", "0.001", "--schedule", "constant" }, new[] { "--min-lr", "--schedule constant" })]
    [DataRow(new[] { "--lr-decay-step", "10", "--schedule", "cosine" }, new[] { "--lr-decay-step", "--schedule cosine" })]
    [DataRow(new[] { "--momentum", "0.9", "--optimizer", "adamw" }, new[] { "--momentum", "--optimizer adamw" })]
    [DataRow(new[] { "--beta1", "0.8" }, new[] { "--beta1", "--optimizer sgd" })]
    [DataRow(new[] { "--adam-eps", "1e-6" }, new[] { "--adam-eps", "--optimizer sgd" })]
    [DataRow(new[] { "--scatter", "atomic" }, new[] { "--scatter", "--device cpu" })]
    public void WidthsThatCannotWorkAndConflictingOptionsExitTwoNamingThemBeforeAnyWork(string[] options, string[] expected)
    {
        using var dir = new TempDir();
        var (data, V) = Corpus(dir);
        string v = V.ToString(CultureInfo.InvariantCulture);
        string[] samples = options.Contains("--samples") ? [] : ["--samples", "0"];
        var (code, stdout, stderr) = Run(["train", "--data", data, "--steps", "5", .. samples, .. options.Select(o => o.Replace("VOCAB", v))]);
        Assert.AreEqual(2, code, stdout + stderr);
        foreach (var e in expected) StringAssert.Contains(stderr, e.Replace("VOCAB", v));
        Assert.IsFalse(stdout.Contains("step "), "no training: " + stdout);
        AssertNoLibraryNames(stderr);
    }

    [TestMethod]
    [DataRow(new[] { "check", "--layers", "linear:4x8,relu,linear:8x2", "--hidden", "8" }, new[] { "--hidden", "--layers" })]
    [DataRow(new[] { "check", "--layers", "linear:4x8,relu,linear:8x2", "--embd", "4" }, new[] { "--embd", "--layers" })]
    [DataRow(new[] { "check", "--loss", "mse" }, new[] { "--loss", "--layers" })]
    [DataRow(new[] { "check", "--l2", "0.1" }, new[] { "--l2", "--layers" })]
    [DataRow(new[] { "check", "--hidden", "0" }, new[] { "--hidden 0", "at least 1" })]
    [DataRow(new[] { "check", "--batch", "-3" }, new[] { "--batch -3" })]
    [DataRow(new[] { "sample", "--model", "MODEL", "--max-length", "2000000000" }, new[] { "--max-length 2000000000", "1,000,000" })]
    [DataRow(new[] { "sample", "--model", "MODEL", "-n", "-1" }, new[] { "-n" })]
    public void OtherCommandsRefuseConflictsAndSizesNamingTheOptions(string[] args, string[] expected)
    {
        using var dir = new TempDir();
        string model = WordModel(dir);
        var (code, stdout, stderr) = Run(args.Select(a => a == "MODEL" ? model : a).ToArray());
        Assert.AreEqual(2, code, stdout + stderr);
        foreach (var e in expected) StringAssert.Contains(stderr, e);
        AssertNoLibraryNames(stderr);
    }

    [TestMethod]
    [DataRow(new[] { "check", "--block", "100000" }, "bytes")]
    [DataRow(new[] { "train", "--block", "100000", "--steps", "5", "--samples", "0" }, "bytes")]
    [DataRow(new[] { "check", "--layers", "linear:100000000x1", "--batch", "2", "--loss", "mse" }, "bytes")]
    [DataRow(new[] { "train", "--block", "2147483647", "--steps", "5", "--samples", "0" }, "--block 2147483647")]
    [DataRow(new[] { "train", "--data", "/dev/zero", "--steps", "5", "--samples", "0" }, "longer than 1,048,576 bytes")]
    [DataRow(new[] { "train", "--samples", "2000000000", "--steps", "5" }, "--samples 2000000000")]
    public void SizesThatCannotFitAreRefusedWithTheBytesBeforeAnyAllocation(string[] args, string expected)
    {
        // they used to grow until the kernel killed the process (check --block 100000: 23.9 GB), or to sample for ever;
        // a budget of 4 GiB for this flow makes the refusal the same on any machine (the checks compare with what the process can use)
        if (args.Contains("/dev/zero") && !File.Exists("/dev/zero")) Assert.Inconclusive("no /dev/zero here");
        using var budget = HpBackprop.Networks.MemoryBudget.Limit(4L << 30);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var (code, stdout, stderr) = Run(args);
        Assert.AreEqual(2, code, stdout + stderr);
        StringAssert.Contains(stderr, expected);
        Assert.IsFalse(stdout.Contains("step "), "no training: " + stdout);
        Assert.IsTrue(GC.GetAllocatedBytesForCurrentThread() - before < (256L << 20), $"refused before allocating: {GC.GetAllocatedBytesForCurrentThread() - before:N0} bytes");
        AssertNoLibraryNames(stderr);
    }

    [TestMethod]
    public void ARealSigtermAfterTrainingStillLeavesTheSavedModel()
    {
        // the process as a user runs it: after training, signals used to return to their default action and the samples came
        // before the save, so a SIGTERM then ended the process and lost the model with no message
        if (!OperatingSystem.IsLinux()) Assert.Inconclusive("sends SIGTERM with kill(1)");
        using var dir = new TempDir();
        var (data, _) = Corpus(dir);
        string model = dir.File("m.safetensors");
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet";
        var psi = new ProcessStartInfo(dotnet) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { typeof(Program).Assembly.Location, "train", "--data", data, "--steps", "300", "--hidden", "8", "--samples", "10000", "--out", model })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string? line;
        while ((line = p.StandardOutput.ReadLine()) != null && !line.StartsWith("train loss", StringComparison.Ordinal)) { }
        Assert.IsNotNull(line, "the run printed its losses: " + stderr.Result);
        RunTool("kill", "-TERM", p.Id.ToString(CultureInfo.InvariantCulture));   // fails only when the run has already ended
        string rest = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        // stopped after the save (143), or the signal came after the end (0): either way the model is there and loads
        Assert.IsTrue(p.ExitCode is 143 or 0, $"exit {p.ExitCode}: {rest}{stderr.Result}");
        Assert.IsTrue(File.Exists(model), $"the model was lost (exit {p.ExitCode}): {rest}{stderr.Result}");
        using var loaded = StackCheckpoint.Load(model).Network;
    }
}
