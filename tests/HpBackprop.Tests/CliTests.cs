using System.Text.Json;
using System.Xml.Linq;
using HpBackprop.Cli;
using HpBackprop.IO;

namespace HpBackprop.Tests;

[TestClass]
public sealed class CliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => CliRunner.Run(args);

    private static string Corpus(TempDir dir, int words = 300)
    {
        string path = dir.File("words.txt");
        File.WriteAllLines(path, TempDir.SyntheticWords(words, 5));
        return path;
    }

    [TestMethod]
    public void TrainPrintsLossesSamplesAndJsonAndWritesModelAndPlot()
    {
        using var dir = new TempDir();
        string data = Corpus(dir);
        var (code, stdout, stderr) = Run("train", "--data", data, "--steps", "400", "--hidden", "24", "--batch", "16",
            "--out", dir.File("m.safetensors"), "--plot", dir.File("loss.svg"), "--json", "--samples", "5");
        Assert.AreEqual(0, code, stderr);
        var json = JsonDocument.Parse(stdout.Trim()).RootElement;   // --json: stdout is the summary line alone
        Assert.AreEqual(400, json.GetProperty("steps").GetInt32());
        Assert.AreEqual(16, json.GetProperty("batch").GetInt32());
        Assert.IsTrue(json.GetProperty("steps_per_second").GetDouble() > 0);
        double train = json.GetProperty("train_loss").GetDouble(), dev = json.GetProperty("dev_loss").GetDouble();
        Assert.IsTrue(train > 0 && train < 3.3 && dev > 0 && dev < 3.5, $"{train} {dev}");
        StringAssert.Contains(stderr, "train loss");
        StringAssert.Contains(stderr, "samples: ");
        // the plot is well-formed SVG with the smoothed curve and both final losses
        var svg = XDocument.Load(dir.File("loss.svg"));
        XNamespace ns = "http://www.w3.org/2000/svg";
        var line = svg.Descendants(ns + "polyline").Single();
        Assert.IsTrue(line.Attribute("points")!.Value.Trim().Split(' ').Length >= 100);
        Assert.IsNotNull(svg.Descendants(ns + "line").SingleOrDefault(l => (string?)l.Attribute("id") == "train"));
        Assert.IsNotNull(svg.Descendants(ns + "line").SingleOrDefault(l => (string?)l.Attribute("id") == "dev"));
        // the saved model samples the same words the command can print
        var (c2, words, e2) = Run("sample", "--model", dir.File("m.safetensors"), "-n", "7", "--seed", "3");
        Assert.AreEqual(0, c2, e2);
        Assert.AreEqual(7, words.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.AreEqual(words, Run("sample", "--model", dir.File("m.safetensors"), "-n", "7", "--seed", "3").Out);
    }

    [TestMethod]
    public void TrainWithoutDataUsesTheBuiltInCorpus()
    {
        var (code, stdout, stderr) = Run("train", "--steps", "50", "--hidden", "16", "--samples", "3");
        Assert.AreEqual(0, code, stderr);
        StringAssert.Contains(stdout, "built-in corpus");
        StringAssert.Contains(stdout, "train loss");
    }

    [TestMethod]
    [DataRow(new[] { "train", "--steps", "many" }, "many")]
    [DataRow(new[] { "train", "--device", "tpu" }, "tpu")]
    [DataRow(new[] { "train", "--no-such-option" }, "--no-such-option")]
    [DataRow(new[] { "train", "--batch", "1", "--steps", "5" }, "variance")]
    [DataRow(new[] { "train", "--steps", "0" }, "--steps")]
    [DataRow(new[] { "train", "--block", "0", "--steps", "5" }, "context length")]
    [DataRow(new[] { "train", "--data", "/no/such/file.txt" }, "/no/such/file.txt")]
    [DataRow(new[] { "sample" }, "--model")]
    [DataRow(new[] { "sample", "--model", "/no/such/model.safetensors" }, "/no/such/model.safetensors")]
    [DataRow(new[] { "grads", "--in", "/no/such.safetensors", "--out", "/tmp/hpb-grads-out-never-written.safetensors" }, "/no/such.safetensors")]
    [DataRow(new[] { "frobnicate" }, "frobnicate")]
    public void BadArgumentsExitWithTwoAndSayWhy(string[] args, string mention)
    {
        var (code, _, stderr) = Run(args);
        Assert.AreEqual(2, code, stderr);
        StringAssert.Contains(stderr, mention);
        Assert.IsFalse(stderr.Contains("   at "), "no stack trace for a user error: " + stderr);
    }

    [TestMethod]
    public void AnEmptyOrBlankDataFileExitsWithTwo()
    {
        using var dir = new TempDir();
        foreach (string content in new[] { "", "\n  \n\n" })
        {
            File.WriteAllText(dir.File("empty.txt"), content);
            var (code, _, stderr) = Run("train", "--data", dir.File("empty.txt"), "--steps", "5");
            Assert.AreEqual(2, code, stderr);
            StringAssert.Contains(stderr, "empty");
            StringAssert.Contains(stderr, dir.File("empty.txt"));
        }
    }

    [TestMethod]
    public void CudaWithoutADriverExitsWithTwoAndSaysWhatToDo()
    {
        if (HpBackprop.Cuda.CudaProbe.WhyUnavailable() == null)
            Assert.Inconclusive("not run: a CUDA GPU is present, so there is no missing driver to report (TrainOnTheGpuWithDeviceCudaAndAuto runs instead)");
        var (code, _, stderr) = Run("train", "--device", "cuda", "--steps", "5");
        Assert.AreEqual(2, code, stderr);
        StringAssert.Contains(stderr, "libcuda.so.1");
        StringAssert.Contains(stderr, "--device cpu");
    }

    [TestMethod]
    [TestCategory(Devices.DriverCategory)]
    public void TrainOnTheGpuWithDeviceCudaAndAuto()
    {
        Devices.RequireGpu();
        using var dir = new TempDir();
        string data = Corpus(dir);
        var (code, stdout, stderr) = Run("train", "--data", data, "--device", "cuda", "--steps", "300", "--hidden", "24", "--samples", "3");
        Assert.AreEqual(0, code, stderr);
        StringAssert.Contains(stdout, "device cuda (");
        StringAssert.Contains(stdout, "train loss");
        (code, _, stderr) = Run("grads", "--in", Oracle.BundlePath("seed", "f32"), "--out", dir.File("g.safetensors"), "--device", "auto");
        Assert.AreEqual(0, code, stderr);
        StringAssert.Contains(stderr, "device auto: using cuda (");
    }

    [TestMethod]
    public void ADivergingRunExitsWithOneAndNamesTheStep()
    {
        using var dir = new TempDir();
        var (code, _, stderr) = Run("train", "--data", Corpus(dir), "--steps", "500", "--lr", "1e30", "--hidden", "16");
        Assert.AreEqual(1, code, stderr);
        StringAssert.Contains(stderr, "diverged at step");
        StringAssert.Contains(stderr, "1E+30");
    }

    [TestMethod]
    [DataRow("seed")]
    [DataRow("repeated")]
    public void GradsFusedMatchesTheOracle(string name)
    {
        using var dir = new TempDir();
        string outPath = dir.File("g.safetensors");
        var (code, _, stderr) = Run("grads", "--in", Oracle.BundlePath(name, "f32"), "--out", outPath);
        Assert.AreEqual(0, code, stderr);
        var result = SafeTensorsFile.Read(outPath);
        var bundle = Oracle.Load(name, "f32");
        foreach (string g in ParityTests.FusedChecked)
        {
            Assert.AreEqual(DType.F32, result[g].DType, g);
            CollectionAssert.AreEqual(bundle.File[g].Shape, result[g].Shape, g);
            double rel = ParityTests.Relative(bundle, g, result[g].ToDouble());
            Assert.IsTrue(rel <= ParityTests.Float32Tolerance, $"{g}: {rel:E2}");
        }
        Assert.AreEqual(bundle.File["loss"].ToDouble()[0], result["loss"].ToDouble()[0], 1e-5);
    }

    [TestMethod]
    public void GradsWithDeviceAutoSaysWhichDeviceOnTheCommandsErrorStream()
    {
        using var dir = new TempDir();
        var (code, _, stderr) = Run("grads", "--in", Oracle.BundlePath("seed", "f32"), "--out", dir.File("g.safetensors"), "--device", "auto");
        Assert.AreEqual(0, code, stderr);
        StringAssert.Contains(stderr, "device auto: using");
    }

    [TestMethod]
    public void GradsAtomicKeepsTheInputPrecisionAndWritesAll26()
    {
        using var dir = new TempDir();
        foreach (var (precision, dtype, tol) in new[] { ("f64", DType.F64, 1e-10), ("f32", DType.F32, ParityTests.Float32Tolerance) })
        {
            string outPath = dir.File($"g.{precision}.safetensors");
            var (code, _, stderr) = Run("grads", "--in", Oracle.BundlePath("seed", precision), "--out", outPath, "--mode", "atomic");
            Assert.AreEqual(0, code, stderr);
            var result = SafeTensorsFile.Read(outPath);
            var bundle = Oracle.Load("seed", precision);
            Assert.AreEqual(27, result.Tensors.Count, "loss + 26 gradients");
            foreach (string g in HpBackprop.Reference.ReferenceChain<double>.GradientNames)
            {
                Assert.AreEqual(dtype, result[g].DType, g);
                double rel = ParityTests.Relative(bundle, g, result[g].ToDouble());
                Assert.IsTrue(rel <= tol, $"{precision} {g}: {rel:E2}");
            }
        }
    }

    [TestMethod]
    public void GradsRejectsInputsThatDoNotFitWithTwo()
    {
        using var dir = new TempDir();
        var src = SafeTensorsFile.Read(Oracle.BundlePath("seed", "f32"));
        void Expect(string what, Action<SafeTensorsFile> change, string mention)
        {
            var f = SafeTensorsFile.Parse(src.ToBytes(), "copy");
            change(f);
            string path = dir.File(what + ".safetensors");
            f.Save(path);
            var (code, _, stderr) = Run("grads", "--in", path, "--out", dir.File("o.safetensors"));
            Assert.AreEqual(2, code, what + ": " + stderr);
            StringAssert.Contains(stderr, mention, what);
        }
        Expect("w1shape", f => f.Add("W1", new float[29 * 64], 29, 64), "'W1'");
        Expect("b2shape", f => f.Add("b2", new float[26], 26), "'b2'");
        Expect("idrange", f => { var x = f["Xb"].ToInt32(); x[5] = 27; f.Add("Xb", x, 32, 3); }, "'Xb'");
        Expect("yrange", f => { var y = f["Yb"].ToInt32(); y[0] = -1; f.Add("Yb", y, 32); }, "'Yb'");
        Expect("n1", f => { f.Add("Xb", new int[3], 1, 3); f.Add("Yb", new int[1], 1); }, "at least 2");
        Expect("ymismatch", f => f.Add("Yb", new int[31], 31), "'Yb'");
        Expect("floatids", f => f.Add("Xb", new float[96], 32, 3), "'Xb'");
    }

    [TestMethod]
    public void CheckPrintsTheTableAgainstABundleAndAgainstTheChain()
    {
        var (code, stdout, stderr) = Run("check", "--bundle", Oracle.BundlePath("seed", "f64"));
        Assert.AreEqual(0, code, stderr);
        foreach (string g in HpBackprop.Reference.ReferenceChain<double>.GradientNames) StringAssert.Contains(stdout, g + " ");
        Assert.IsFalse(stdout.Contains("| False | False"), stdout); // in double every gradient is at least approximately equal
        using var dir = new TempDir();
        (code, stdout, stderr) = Run("check", "--data", Corpus(dir), "--batch", "8", "--hidden", "12");
        Assert.AreEqual(0, code, stderr);
        StringAssert.Contains(stdout, "finite differences");
        StringAssert.Contains(stdout, "dbngain");
    }
}
