using HpBackprop.Cli;
using HpBackprop.IO;

namespace HpBackprop.Tests;

/// <summary>Issue #13 ("nothing lost, nothing crashes") through the CLI, in process.</summary>
[TestClass]
public sealed class RobustCliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => CliRunner.Run(args);

    /// <summary>A writer that cancels when the text it is given contains <paramref name="trigger"/> (a progress line).</summary>
    private sealed class CancelOn(string trigger, CancellationTokenSource cts) : StringWriter
    {
        public override void Write(string? value) { base.Write(value); if (value != null && value.Contains(trigger)) cts.Cancel(); }
        public override void WriteLine(string? value) { Write(value); base.WriteLine(); }
    }

    private static string Corpus(TempDir dir, int words = 300)
    {
        string path = dir.File("words.txt");
        File.WriteAllLines(path, TempDir.SyntheticWords(words, 5));
        return path;
    }

    private static string[] TrainArgs(string data, string outPath, params string[] more) =>
        ["train", "--data", data, "--steps", "400", "--hidden", "24", "--batch", "16", "--optimizer", "adamw", "--lr", "0.01", "--seed", "5", "--samples", "3", "--out", outPath, .. more];

    private static void AssertSameTensors(string a, string b)
    {
        var fa = SafeTensorsFile.Read(a);
        var fb = SafeTensorsFile.Read(b);
        CollectionAssert.AreEquivalent(fa.Tensors.Keys.ToArray(), fb.Tensors.Keys.ToArray());
        foreach (var name in fa.Tensors.Keys) CollectionAssert.AreEqual(fa[name].Data, fb[name].Data, name);
        Assert.AreEqual(fa.Metadata["train_loss"], fb.Metadata["train_loss"]);
    }

    [TestMethod]
    public void ACancelledRunSavesItsStateExitsWith130AndResumesToBitwiseTheUninterruptedModel()
    {
        using var dir = new TempDir();
        string data = Corpus(dir);
        var (c0, _, e0) = Run(TrainArgs(data, dir.File("whole.safetensors")));
        Assert.AreEqual(0, c0, e0);

        using var cts = new CancellationTokenSource();
        var stdout = new CancelOn("120/400", cts);
        var stderr = new StringWriter();
        int c1 = Program.Run(TrainArgs(data, dir.File("cut.safetensors")), stdout, stderr, cts.Token);
        Assert.AreEqual(130, c1, stderr.ToString());
        StringAssert.Contains(stderr.ToString(), "interrupted at step 120 of 400");
        StringAssert.Contains(stderr.ToString(), dir.File("cut.safetensors"));
        Assert.IsFalse(stdout.ToString().Contains("train loss"), "an interrupted run does not go on to evaluate");

        var (c2, o2, e2) = Run("train", "--resume", dir.File("cut.safetensors"), "--out", dir.File("resumed.safetensors"), "--samples", "3");
        Assert.AreEqual(0, c2, e2);
        StringAssert.Contains(o2, "resumed at step 120");
        AssertSameTensors(dir.File("whole.safetensors"), dir.File("resumed.safetensors"));
    }

    [TestMethod]
    public void PeriodicCheckpointsThenAnInterruptThenAResumeIntoTheSameFileGiveTheUninterruptedModel()
    {
        using var dir = new TempDir();
        string data = Corpus(dir);
        Assert.AreEqual(0, Run(TrainArgs(data, dir.File("whole.safetensors"))).Code);
        using var cts = new CancellationTokenSource();
        var stderr = new StringWriter();
        int c1 = Program.Run(TrainArgs(data, dir.File("run.safetensors"), "--checkpoint-every", "100"), new CancelOn("280/400", cts), stderr, cts.Token);
        Assert.AreEqual(130, c1, stderr.ToString());
        StringAssert.Contains(stderr.ToString(), "checkpoint: step 100 of 400 saved");
        StringAssert.Contains(stderr.ToString(), "checkpoint: step 200 of 400 saved");
        var (c2, _, e2) = Run("train", "--resume", dir.File("run.safetensors"), "--out", dir.File("run.safetensors"), "--samples", "3", "--checkpoint-every", "100");
        Assert.AreEqual(0, c2, e2);
        AssertSameTensors(dir.File("whole.safetensors"), dir.File("run.safetensors"));
        Assert.AreEqual(0, Directory.GetFiles(dir.Path, ".*").Length, "no temporary file is left");
    }

    [TestMethod]
    public void ResumeRefusesRunOptionsAFinishedModelAndAnotherCorpus()
    {
        using var dir = new TempDir();
        string data = Corpus(dir);
        using var cts = new CancellationTokenSource();
        Assert.AreEqual(130, Program.Run(TrainArgs(data, dir.File("cut.safetensors")), new CancelOn("40/400", cts), new StringWriter(), cts.Token));
        var (c1, _, e1) = Run("train", "--resume", dir.File("cut.safetensors"), "--lr", "0.5");
        Assert.AreEqual(2, c1, e1);
        StringAssert.Contains(e1, "--lr cannot be given with --resume");
        string other = dir.File("other.txt");
        File.WriteAllLines(other, TempDir.SyntheticWords(300, 6));
        var (c2, _, e2) = Run("train", "--resume", dir.File("cut.safetensors"), "--data", other);
        Assert.AreEqual(2, c2, e2);
        StringAssert.Contains(e2, "not the corpus");
        Assert.AreEqual(0, Run("train", "--data", data, "--steps", "20", "--hidden", "8", "--samples", "0", "--out", dir.File("done.safetensors")).Code);
        var (c3, _, e3) = Run("train", "--resume", dir.File("done.safetensors"));
        Assert.AreEqual(2, c3, e3);
        StringAssert.Contains(e3, "no training state");
    }

    [TestMethod]
    public void ACancelledRunWithoutOutSaysNothingWasSaved()
    {
        using var dir = new TempDir();
        using var cts = new CancellationTokenSource();
        var stderr = new StringWriter();
        int code = Program.Run(["train", "--data", Corpus(dir), "--steps", "400", "--hidden", "8", "--samples", "0"], new CancelOn("40/400", cts), stderr, cts.Token);
        Assert.AreEqual(130, code);
        StringAssert.Contains(stderr.ToString(), "nothing saved");
    }

    [TestMethod]
    public void ASaveRemovesTheTemporaryFilesOfAKilledSaveToTheSamePath()
    {
        using var dir = new TempDir();
        string target = dir.File("m.safetensors");
        // a process id that does not run: beyond the kernel's pid_max
        string stale = dir.File(".m.safetensors.99999999.0123abcd.tmp");
        string otherTarget = dir.File(".n.safetensors.99999999.0123abcd.tmp");
        string live = dir.File($".m.safetensors.{Environment.ProcessId}.0123abcd.tmp");
        foreach (var f in new[] { stale, otherTarget, live }) File.WriteAllText(f, "half a file");
        AtomicFile.Write(target, "new"u8);
        Assert.IsFalse(File.Exists(stale), "stale temporary file of a dead process");
        Assert.IsTrue(File.Exists(otherTarget), "another file's temporary file is not ours to remove");
        Assert.IsTrue(File.Exists(live), "a running process's temporary file stays");
        Assert.AreEqual("new", File.ReadAllText(target));
    }

    [TestMethod]
    [DataRow(new[] { "train", "--hidden", "4300000", "--batch", "2", "--steps", "1", "--samples", "0" }, "bytes")]
    [DataRow(new[] { "train", "--hidden", "3000000", "--batch", "2", "--steps", "1", "--samples", "0" }, "bytes")]
    [DataRow(new[] { "train", "--hidden", "2100000", "--batch", "2", "--steps", "1", "--samples", "0" }, "bytes")]
    [DataRow(new[] { "train", "--batch", "100000000", "--steps", "1", "--samples", "0" }, "bytes")]
    [DataRow(new[] { "train", "--steps", "2147483647", "--samples", "0" }, "--steps 2147483647: must be between 1 and 100,000,000")]
    [DataRow(new[] { "train", "--steps", "5", "--bn-momentum", "nan" }, "--bn-momentum 'nan': not a finite number")]
    [DataRow(new[] { "train", "--steps", "5", "--bn-momentum", "-1" }, "--bn-momentum -1: must be in [0, 1]")]
    [DataRow(new[] { "train", "--steps", "5", "--bn-momentum", "2" }, "--bn-momentum 2: must be in [0, 1]")]
    [DataRow(new[] { "train", "--steps", "5", "--lr", "0,1" }, "--lr '0,1': not a finite number")]
    [DataRow(new[] { "train", "--steps", "5", "--lr", "1,000" }, "--lr '1,000'")]
    [DataRow(new[] { "train", "--steps", "5", "--lr", "infinity" }, "--lr 'infinity'")]
    [DataRow(new[] { "train", "--steps", "5", "--lr", "-0.1" }, "--lr")]
    [DataRow(new[] { "train", "--steps", "5", "--lr-decay-step", "-5" }, "--lr-decay-step -5: must not be negative")]
    [DataRow(new[] { "train", "--steps", "5", "--checkpoint-every", "2" }, "--checkpoint-every needs --out")]
    [DataRow(new[] { "train", "--steps", "5", "--out", "" }, "--out: the path is empty")]
    [DataRow(new[] { "train", "--steps", "5", "--out", "/proc/hpb-test/m.safetensors" }, "--out /proc/hpb-test/m.safetensors: cannot write")]
    [DataRow(new[] { "train", "--steps", "5", "--plot", "/proc/loss.svg" }, "--plot /proc/loss.svg: cannot write")]
    [DataRow(new[] { "sample", "--model", "m", "--temperature", "0,5" }, "--temperature '0,5'")]
    public void BadNumbersSizesAndOutputsExitTwoBeforeAnyWork(string[] args, string mention)
    {
        var (code, stdout, stderr) = Run(args);
        Assert.AreEqual(2, code, stderr);
        StringAssert.Contains(stderr, mention);
        Assert.IsFalse(stdout.Contains("corpus:"), "no work started: " + stdout);
    }

    [TestMethod]
    public void OutputsThatWouldDestroyAnInputOrEachOtherOrCannotBeWrittenExitTwoAndKeepTheFiles()
    {
        using var dir = new TempDir();
        string data = Corpus(dir);
        byte[] corpus = File.ReadAllBytes(data);
        string x = dir.File("x");
        File.WriteAllText(x, "keep");
        void Expect(string mention, params string[] args)
        {
            var (code, stdout, stderr) = Run(args);
            Assert.AreEqual(2, code, stderr);
            StringAssert.Contains(stderr, mention);
            Assert.IsFalse(stdout.Contains("corpus:"), "no work started");
        }
        Expect("--out and --plot are the same file", "train", "--data", data, "--steps", "5", "--out", x, "--plot", x);
        Expect("--data and --out are the same file", "train", "--data", data, "--steps", "5", "--out", data);
        Expect("--data and --plot are the same file", "train", "--data", data, "--steps", "5", "--plot", Path.Combine(dir.Path, ".", "words.txt"));
        Expect("--out " + dir.Path + ": is a directory", "train", "--data", data, "--steps", "5", "--out", dir.Path);
        Expect("is a file, not a directory", "train", "--data", data, "--steps", "5", "--out", Path.Combine(x, "m.safetensors"));
        Expect("is a directory", "train", "--data", dir.Path, "--steps", "5");
        Expect("is a directory", "sample", "--model", dir.Path);
        Expect("--in and --out are the same file", "grads", "--in", x, "--out", x);
        CollectionAssert.AreEqual(corpus, File.ReadAllBytes(data));
        Assert.AreEqual("keep", File.ReadAllText(x));
        Assert.AreEqual(0, Directory.GetFiles(dir.Path, ".*").Length, "no probe file is left");
    }

    [TestMethod]
    public void SamplingStreamsTheWordsInsteadOfCollectingThemFirst()
    {
        var corpus = Data.Corpus.FromLines(TempDir.SyntheticWords(100, 4), "synthetic");
        var split = Data.DataSplit.Create(corpus, 3, 7);
        using var net = Networks.Network.Create(Networks.Sequential.Makemore(split.Vocabulary.Size, 3, 4, 8), new Networks.NetworkOptions { BatchSize = 4 });
        net.Initialize(1);
        var sampler = new Training.Sampler(net, split.Vocabulary);
        var three = sampler.Generate(int.MaxValue, 3).Take(3).ToArray();   // would throw or run out of memory if collected first
        CollectionAssert.AreEqual(sampler.Sample(3, 3).ToArray(), three);
    }

    [TestMethod]
    [DataRow(new byte[] { 0x7B, 0x22, 0x5F, 0x5F, 0x6D, 0x65, 0x74, 0x61, 0x64, 0x61, 0x74, 0x61, 0x5F, 0x5F, 0x22, 0x3A, 0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xC3, 0x28, 0x22, 0x7D, 0x7D })] // {"__metadata__":{"a":"\xC3("}}
    [DataRow(new byte[] { 0x7B, 0x22, 0x5F, 0x5F, 0x6D, 0x65, 0x74, 0x61, 0x64, 0x61, 0x74, 0x61, 0x5F, 0x5F, 0x22, 0x3A, 0x7B, 0x22, 0x76, 0x6F, 0x63, 0x61, 0x62, 0x22, 0x3A, 0x22, 0x5C, 0x75, 0x64, 0x38, 0x33, 0x64, 0x22, 0x7D, 0x7D })] // {"__metadata__":{"vocab":"\ud83d"}}
    public void ACheckpointHeaderWithInvalidTextIsAFormatErrorNamingTheFile(byte[] header)
    {
        using var dir = new TempDir();
        string path = dir.File("bad.safetensors");
        var bytes = new byte[8 + header.Length];
        BitConverter.GetBytes((ulong)header.Length).CopyTo(bytes, 0);
        header.CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
        Assert.ThrowsExactly<SafeTensorsFormatException>(() => SafeTensorsFile.Read(path));
        var (code, _, stderr) = Run("sample", "--model", path);
        Assert.AreEqual(2, code, stderr);
        StringAssert.Contains(stderr, path);
    }

    [TestMethod]
    public void AFileThatIsNoBundleAndIdsBeyond32BitsExitTwoNamingTheFile()
    {
        using var dir = new TempDir();
        // a safetensors file without gradients or inputs: check --bundle and grads --in name the file and say what a bundle holds
        var f = new SafeTensorsFile();
        f.Add("x", new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3);
        string none = dir.File("nothing.safetensors");
        f.Save(none);
        foreach (var args in new[] { new[] { "check", "--bundle", none }, ["grads", "--in", none, "--out", dir.File("o.safetensors")] })
        {
            var (code, _, err) = Run(args);
            Assert.AreEqual(2, code, err);
            StringAssert.Contains(err, none);
            StringAssert.Contains(err, "not a grads bundle");
        }
        // a stack bundle whose I64 ids do not fit in 32 bits
        var b = SafeTensorsFile.Read(StackOracle.PathOf("makemore", "f32"));
        var g = new SafeTensorsFile();
        foreach (var (k, v) in b.Metadata) g.Metadata[k] = v;
        foreach (var (name, t) in b.Tensors)
        {
            if (name != "x") { AddLike(g, name, t); continue; }
            var ids = t.ToInt32().Select(v => (long)v).ToArray();
            ids[0] = 1L << 40;
            g.Add(name, ids, t.Shape);
        }
        string big = dir.File("bigids.safetensors");
        g.Save(big);
        var (c2, _, e2) = Run("grads", "--in", big, "--out", dir.File("o2.safetensors"));
        Assert.AreEqual(2, c2, e2);
        StringAssert.Contains(e2, "bigids.safetensors");
        StringAssert.Contains(e2, "32");
    }

    private static void AddLike(SafeTensorsFile g, string name, SafeTensor t)
    {
        switch (t.DType)
        {
            case DType.F32: g.Add(name, t.ToSingle(), t.Shape); break;
            case DType.F64: g.Add(name, t.ToDouble(), t.Shape); break;
            case DType.I64: g.Add(name, t.ToInt32().Select(v => (long)v).ToArray(), t.Shape); break;
            default: g.Add(name, t.ToInt32(), t.Shape); break;
        }
    }

    [TestMethod]
    public void AHugeOrBinaryLineIsCutAndEscapedInTheMessageAndADirectoryIsNamedAsOne()
    {
        using var dir = new TempDir();
        // a 1 MB word with a space in it, then a word with raw control bytes: the message shows at most a short, printable excerpt
        string huge = dir.File("huge.txt");
        File.WriteAllText(huge, "anna\n" + new string('a', 1 << 20) + " b\n");
        string binary = dir.File("binary.txt");
        File.WriteAllBytes(binary, [(byte)'b', (byte)'o', (byte)'b', (byte)'\n', 0x1b, (byte)'[', (byte)'2', (byte)'J', 0x07, (byte)'x', (byte)'\n']);
        foreach (var path in new[] { huge, binary })
        {
            var (code, _, err) = Run("train", "--data", path, "--steps", "1", "--samples", "0");
            Assert.AreEqual(2, code, err.Length > 500 ? err[..500] : err);
            Assert.IsTrue(err.Length < 600, $"the message is {err.Length} characters long");
            Assert.IsFalse(err.Any(c => char.IsControl(c) && c != '\n' && c != '\r'), $"the message holds a raw control character: {err}");
            StringAssert.Contains(err, ":2");
        }
        // a directory given where a file is read is called a directory, for each command
        string model = dir.File("m.safetensors");
        Assert.AreEqual(0, Run("train", "--steps", "2", "--samples", "0", "--out", model).Code);
        foreach (var args in new[] { new[] { "train", "--data", dir.Path, "--steps", "1" }, ["eval", "--model", dir.Path], ["eval", "--model", model, "--data", dir.Path], ["sample", "--model", dir.Path] })
        {
            var (code, _, err) = Run(args);
            Assert.AreEqual(2, code, $"{string.Join(' ', args)}: {err}");
            StringAssert.Contains(err, "directory", $"{string.Join(' ', args)}");
        }
    }
}
