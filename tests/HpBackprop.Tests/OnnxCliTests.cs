using HpBackprop.IO;
using HpBackprop.Networks;
using HpBackprop.Onnx;
using HpBackprop.Onnx.Proto;

namespace HpBackprop.Tests;

/// <summary><c>hpbackprop export</c>: a model trained by <c>train</c> runs in ONNX Runtime like Predict; bad input exits 2 naming the option and writes nothing.</summary>
[TestClass]
public sealed class OnnxCliTests
{
    private static string Train(TempDir dir, string name, params string[] extra)
    {
        string path = dir.File(name);
        var (code, _, err) = CliRunner.Run([.. new[] { "train", "--steps", "300", "--samples", "0", "--out", path }, .. extra]);
        Assert.AreEqual(0, code, err);
        return path;
    }

    [TestMethod]
    [DataRow(null, 7)]
    [DataRow("embedding:28x8,flatten,dropout:0.1,linear:24x32:nobias,layernorm:32,relu,linear:32x32,batchnorm:32:biased,tanh,linear:32x28", 11)]
    public void ExportWritesAModelThatOnnxRuntimeRunsLikePredict(string? layers, int lowest)
    {
        using var dir = new TempDir();
        string model = layers is null ? Train(dir, "m.safetensors", "--hidden", "16") : Train(dir, "m.safetensors", "--layers", layers, "--optimizer", "adamw", "--lr", "0.003");
        using var loaded = StackCheckpoint.Load(model).Network;
        foreach (int? opset in new int?[] { null, 17 })
        {
            string onnx = dir.File($"m{opset}.onnx");
            var (code, stdout, err) = CliRunner.Run([.. new[] { "export", "--model", model, "--out", onnx }, .. opset is int o ? new[] { "--opset", o.ToString(System.Globalization.CultureInfo.InvariantCulture) } : []]);
            Assert.AreEqual(0, code, err);
            StringAssert.Contains(stdout, $"wrote {onnx}: opset {opset ?? lowest} ");
            StringAssert.Contains(stdout, "input int64 [N,3], outputs logits float [N,28], probabilities float [N,28]");
            byte[] bytes = File.ReadAllBytes(onnx);
            OnnxParity.Keep(bytes, $"cli_{(layers is null ? "makemore" : "layers")}.opset{opset ?? lowest}");
            var meta = ModelProto.Parser.ParseFrom(bytes).MetadataProps.ToDictionary(p => p.Key, p => p.Value);
            Assert.AreEqual(loaded.Stack.ToString(), meta["layers"]);
            Assert.AreEqual(".'abcdefghijklmnopqrstuvwxyz", meta["vocab"], "the built-in corpus's vocabulary");
            var rng = new Random(4);
            var noise = OnnxParity.Noise(loaded, rng);
            foreach (int rows in new[] { 1, 7, 1000 })
                Assert.IsNull(OnnxParity.Compare(OnnxParity.Prepare(loaded, rows, rng), noise, bytes, $"export of {loaded.Stack}, opset {opset}, rows {rows}"));
        }
    }

    [TestMethod]
    public void BadInputExitsTwoNamingTheOptionAndWritesNothing()
    {
        using var dir = new TempDir();
        string model = Train(dir, "m.safetensors", "--hidden", "8");
        string nobias = Train(dir, "nobias.safetensors", "--layers", "embedding:28x4,flatten,linear:12x16:nobias,batchnorm:16,tanh,linear:16x28");
        byte[] modelBytes = File.ReadAllBytes(model);
        string onnx = dir.File("out.onnx");

        // a checkpoint saved in the middle of a run
        string mid = dir.File("mid.safetensors");
        {
            var loaded = StackCheckpoint.Load(model);
            using var net = loaded.Network;
            var run = new TrainingRun(seed: 1, totalSteps: 500);
            run.Losses[0] = 3.3f;
            run.Completed = 1;
            StackCheckpoint.Save(mid, loaded.Network, loaded.Vocabulary, run: run);
        }
        // a checkpoint whose stack names a layer there is not
        string unknown = dir.File("unknown.safetensors");
        var f = SafeTensorsFile.Read(model);
        f.Metadata["layers"] = f.Metadata["layers"].Replace("tanh", "conv:3", StringComparison.Ordinal);
        f.Save(unknown);
        string garbage = dir.File("garbage.safetensors");
        File.WriteAllBytes(garbage, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        File.WriteAllText(dir.File("file"), "a file, not a folder");

        var cases = new (string[] Args, string[] Expected)[]
        {
            (["--model", dir.File("missing.safetensors"), "--out", onnx], ["--model", "missing.safetensors"]),
            (["--model", dir.Path, "--out", onnx], ["--model", "is a directory"]),
            (["--model", garbage, "--out", onnx], ["--model", "garbage.safetensors"]),
            (["--model", unknown, "--out", onnx], ["--model", "conv:3"]),
            (["--model", mid, "--out", onnx], ["--model", "in the middle of a run (step 1 of 500)", "train --resume"]),
            (["--model", model, "--out", model], ["--model and --out are the same file"]),
            (["--model", model, "--out", dir.File("file/m.onnx")], ["--out", "is a file, not a directory"]),
            (["--model", model, "--out", dir.Path], ["--out", "is a directory"]),
            (["--model", model, "--out", onnx, "--opset", "6"], ["--opset 6", "opsets 7 to 21"]),
            (["--model", model, "--out", onnx, "--opset", "22"], ["--opset 22", "opsets 7 to 21"]),
            (["--model", model, "--out", onnx, "--opset", "seven"], ["--opset", "seven"]),
            (["--model", nobias, "--out", onnx, "--opset", "9"], ["--opset 9", "too low for layer 2 (linear:12x16:nobias)", "needs opset 11"]),
            (["--model", model], ["--out"]),
        };
        foreach (var (args, expected) in cases)
        {
            var (code, _, err) = CliRunner.Run(["export", .. args]);
            Assert.AreEqual(2, code, $"export {string.Join(" ", args)}: {err}");
            foreach (string e in expected) StringAssert.Contains(err, e, $"export {string.Join(" ", args)}");
            Assert.IsFalse(File.Exists(onnx), $"export {string.Join(" ", args)} wrote {onnx}");
        }
        CollectionAssert.AreEqual(modelBytes, File.ReadAllBytes(model), "the model is untouched");
        Assert.AreEqual(0, CliRunner.Run("export", "--model", nobias, "--out", onnx, "--opset", "11").Code);
        Assert.AreEqual(11, (int)ModelProto.Parser.ParseFrom(File.ReadAllBytes(onnx)).OpsetImport[0].Version);
        Assert.AreEqual(OnnxExport.MaximumOpset, 21, "the messages above name 21");
    }
}
