using System.Globalization;
using System.Text.Json;
using Google.Protobuf;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Networks;
using HpBackprop.Onnx;
using HpBackprop.Onnx.Proto;

namespace HpBackprop.Tests;

/// <summary>
/// The ONNX export of a model trained on a table (issue 22): the graph standardises the raw features with the saved scaler
/// (a <c>Sub</c> of <c>scaler.mean</c> then a <c>Div</c> by <c>scaler.scale</c>, bit for bit <see cref="Standardizer.Transform"/>),
/// so ONNX Runtime on the raw rows gives what <see cref="Network.Predict(ReadOnlySpan{float}, int, Span{float}, bool)"/> gives on
/// the standardised ones, within <see cref="OnnxParity"/>'s tolerance (8 times Predict's own measured float32 error); the same
/// network exported without the scaler misses by thousands of times that tolerance, and a broken standardisation fails.
/// </summary>
[TestClass]
public sealed class OnnxTableTests
{
    public TestContext TestContext { get; set; } = null!;

    private static readonly string[] Columns = ["depth_m", "ph", "conductivity", "pressure_pa"];

    /// <summary>Per-column means and standard deviations of the raw features: far from 0 and 1, and of very different sizes.</summary>
    private static readonly double[] Means = [1000, -250, 0.003, 5e4], Stds = [250, 0.01, 7e-4, 3000];

    /// <summary><paramref name="rows"/> raw rows of the four columns, N(mean, std²) each.</summary>
    internal static float[] RawRows(int rows, Random rng)
    {
        var x = new float[rows * Columns.Length];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < Columns.Length; c++) x[r * Columns.Length + c] = (float)(Means[c] + Stds[c] * StackTestData.Normal(rng));
        return x;
    }

    private static float[] Standardised(Standardizer scaler, float[] raw)
    {
        var x = (float[])raw.Clone();
        scaler.Transform(x);
        return x;
    }

    /// <summary>
    /// A network on the four columns for the loss (batch norm with random running statistics in the middle, so the
    /// standardised input is not the last thing that matters) and its table schema, with a scaler fitted on 500 raw rows.
    /// </summary>
    private static (Network Net, TableSchema Schema) TableModel(string loss, int seed)
    {
        var rng = new Random(seed);
        var kind = Losses.Parse(loss);
        var (target, classes, k) = kind switch
        {
            LossKind.CrossEntropy => (TableTarget.Classes, new[] { "low", "mid", "high" }, 3),
            LossKind.BceWithLogits => (TableTarget.Binary, new[] { "dry", "wet" }, 1),
            _ => (TableTarget.Values, (string[]?)null, 1),
        };
        var net = Network.Create(Sequential.Parse($"linear:4x16,batchnorm:16,tanh,linear:16x8,relu,linear:8x{k}"), new NetworkOptions { BatchSize = 2, Loss = kind });
        net.Initialize(seed);
        OnnxParity.RandomStatistics(net, rng);
        var scaler = Standardizer.Fit(RawRows(500, rng), Columns.Length);
        for (int c = 0; c < Columns.Length; c++)
            Assert.IsTrue(Math.Abs(scaler.Mean[c]) > 1e-3 && Math.Abs(Math.Log10(scaler.Scale[c])) > 1, $"column {c}: a scaler far from the identity (mean {scaler.Mean[c]}, scale {scaler.Scale[c]})");
        return (net, new TableSchema(Columns, "site", target, classes, scaler));
    }

    [TestMethod]
    [DataRow("cross_entropy")]
    [DataRow("bce_with_logits")]
    [DataRow("mse")]
    public void TheExportStandardisesRawFeaturesSoOnnxRuntimeGivesPredictsOutputsAndWithoutTheScalerItWouldNot(string loss)
    {
        var (net, schema) = TableModel(loss, 17 + loss.Length);
        using var _ = net;
        var scaler = schema.Scaler!;
        var rng = new Random(3);
        var log = new StringWriter();
        var failures = new List<string>();
        // Predict's own float32 error, on N(0,1) rows and on standardised table rows (OnnxParity.Noise)
        var calibration = RawRows(1000, rng);
        var noise = OnnxParity.Noise(net, rng, OnnxParity.Prepare(net, null, Standardised(scaler, calibration), 1000));
        foreach (int opset in new[] { OnnxExport.LowestOpset(net.Stack), 17, OnnxExport.MaximumOpset })
        {
            byte[] model = OnnxExport.ToBytes(net, new OnnxExportOptions { Opset = opset, Table = schema });
            byte[] plain = OnnxExport.ToBytes(net, new OnnxExportOptions { Opset = opset });
            OnnxParity.Keep(model, $"table_{loss}.opset{opset}");
            foreach (int rows in new[] { 1, 7, 1000 })
            {
                float[] raw = RawRows(rows, rng);
                // Predict gets the rows standardised by the library, ONNX Runtime the raw rows
                var batch = OnnxParity.Prepare(net, null, Standardised(scaler, raw), rows);
                if (OnnxParity.Compare(batch, noise, model, $"{loss} opset {opset} rows {rows}", log, onnxFeatures: raw) is { } f) failures.Add(f);

                // the check is sensitive: the same network exported without the scaler, on the same raw rows, misses Predict
                // by at least a thousand times the tolerance on every output
                var (miss, outputs) = OnnxParity.Measure(batch, noise, plain, $"{loss} opset {opset} rows {rows} WITHOUT the scaler", log, onnxFeatures: raw);
                Assert.IsNotNull(miss, "the export without the scaler passed the comparison on raw rows: the comparison cannot tell");
                Assert.IsNotEmpty(outputs);
                foreach (var m in outputs)
                    Assert.IsGreaterThan(1000 * m.Tolerance, m.Difference, $"without the scaler, {m}: not far enough outside the tolerance");
            }
        }
        TestContext.WriteLine(log.ToString());
        Assert.IsEmpty(failures, string.Join("\n", failures));
    }

    [TestMethod]
    public void TheStandardisationIsASubThenADivOfNamedInitialisersBitForBitTheLibrarysAndTheMetadataCarriesTheSchema()
    {
        var (net, schema) = TableModel("cross_entropy", 5);
        using var _ = net;
        var scaler = schema.Scaler!;
        var model = OnnxExport.Build(net, new OnnxExportOptions { Table = schema });
        var g = model.Graph;
        Assert.AreEqual(OnnxExport.InputName, g.Input.Single().Name);
        Assert.AreEqual((int)TensorProto.Types.DataType.Float, g.Input[0].Type.TensorType.ElemType);
        CollectionAssert.AreEqual(new[] { "Sub", "Div", "Gemm", "BatchNormalization", "Tanh", "Gemm", "Relu", "Gemm", "Softmax" }, g.Node.Select(n => n.OpType).ToArray());
        CollectionAssert.AreEqual(new[] { "input", "scaler.mean" }, g.Node[0].Input.ToArray());
        CollectionAssert.AreEqual(new[] { "input.centred", "scaler.scale" }, g.Node[1].Input.ToArray());
        CollectionAssert.AreEqual(new[] { "input.standardised" }, g.Node[1].Output.ToArray());
        Assert.AreEqual("input.standardised", g.Node[2].Input[0], "the first Gemm takes the standardised input");
        foreach (var (name, values) in new[] { ("scaler.mean", scaler.Mean), ("scaler.scale", scaler.Scale) })
        {
            var t = g.Initializer.Single(i => i.Name == name);
            CollectionAssert.AreEqual(new long[] { 4 }, t.Dims.ToArray(), name);
            var stored = new float[4];
            Buffer.BlockCopy(t.RawData.ToByteArray(), 0, stored, 0, 16);
            CollectionAssert.AreEqual(values, stored, name);
        }
        var meta = model.MetadataProps.ToDictionary(p => p.Key, p => p.Value);
        CollectionAssert.AreEqual(Columns, JsonSerializer.Deserialize<string[]>(meta["table_features"]));
        CollectionAssert.AreEqual(new[] { "low", "mid", "high" }, JsonSerializer.Deserialize<string[]>(meta["table_classes"]), "id i is label i");
        Assert.AreEqual("site", meta["table_target"]);
        Assert.AreEqual("classes", meta["table_target_kind"]);
        CollectionAssert.AreEqual(scaler.Mean, JsonSerializer.Deserialize<float[]>(meta["input_mean"]));
        CollectionAssert.AreEqual(scaler.Scale, JsonSerializer.Deserialize<float[]>(meta["input_scale"]));
        StringAssert.Contains(model.DocString, "raw feature columns");

        // ONNX Runtime's standardised input, made an output of the graph, is the library's bit for bit: a Sub then a Div,
        // each rounded once in float32, as Standardizer.Transform computes (x − mean) / scale
        g.Output.Add(g.ValueInfo.Single(v => v.Name == "input.standardised"));
        var rng = new Random(8);
        float[] raw = RawRows(1000, rng);
        // and some values far outside the training range, where a reordered formula would round differently
        for (int i = 0; i < 40; i++) raw[rng.Next(raw.Length)] *= (float)Math.Pow(10, rng.Next(-6, 7));
        using (var session = OnnxParity.Session(model.ToByteArray()))
        {
            var outputs = OnnxParity.RunOnnx(session, null, raw, 1000, 4);
            float[] theirs = outputs["input.standardised"], ours = Standardised(scaler, raw);
            for (int i = 0; i < ours.Length; i++)
                Assert.AreEqual(BitConverter.SingleToInt32Bits(ours[i]), BitConverter.SingleToInt32Bits(theirs[i]), $"value {i} (raw {raw[i]:R}): ONNX Runtime {theirs[i]:R}, Standardizer.Transform {ours[i]:R}");
            Assert.AreEqual("[\"depth_m\",\"ph\",\"conductivity\",\"pressure_pa\"]", session.ModelMetadata.CustomMetadataMap["table_features"]);
        }

        // a schema without a scaler: no standardisation, the columns and labels in the metadata
        var unscaled = OnnxExport.Build(net, new OnnxExportOptions { Table = schema with { Scaler = null } });
        Assert.AreEqual("Gemm", unscaled.Graph.Node[0].OpType);
        Assert.AreEqual("input", unscaled.Graph.Node[0].Input[0]);
        Assert.IsFalse(unscaled.MetadataProps.Any(p => p.Key is "input_mean" or "input_scale"));
        Assert.IsTrue(unscaled.MetadataProps.Any(p => p.Key == "table_classes"));
        // no table: the model of before, byte for byte
        CollectionAssert.AreEqual(OnnxExport.ToBytes(net), OnnxExport.ToBytes(net, new OnnxExportOptions { Table = null }));
        Assert.IsFalse(OnnxExport.Build(net, new OnnxExportOptions()).MetadataProps.Any(p => p.Key.StartsWith("table_", StringComparison.Ordinal) || p.Key is "input_mean" or "input_scale"));
    }

    [TestMethod]
    public void ATableThatDoesNotFitTheNetworkIsRefused()
    {
        var (net, schema) = TableModel("cross_entropy", 6);
        using var _ = net;
        var wide = schema with { Scaler = new Standardizer([1, 2, 3, 4, 5], [1, 1, 1, 1, 1]) };
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => OnnxExport.ToBytes(net, new OnnxExportOptions { Table = wide })).Message, "the scaler has 5 columns but the network takes 4 inputs");
        var fewer = schema with { Features = ["a", "b", "c"] };
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => OnnxExport.ToBytes(net, new OnnxExportOptions { Table = fewer })).Message, "3 feature columns");
        var labels = schema with { Classes = ["a", "b"] };
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => OnnxExport.ToBytes(net, new OnnxExportOptions { Table = labels })).Message, "2 classes");
    }

    /// <summary>A fault put into the exported standardisation, as a bug in it would.</summary>
    public enum Fault
    {
        /// <summary>The Sub left out: the Div takes the raw input (x / scale).</summary>
        SubLeftOut,
        /// <summary>The Div left out: the first layer takes the centred input (x − mean).</summary>
        DivLeftOut,
        /// <summary>A Mul by the scale instead of a Div by it.</summary>
        MulInsteadOfDiv,
        /// <summary>An Add of the mean instead of a Sub.</summary>
        AddInsteadOfSub,
    }

    /// <summary>Each fault in the standardisation fails the comparison with Predict on raw rows (at 7 and at 1,000 rows).</summary>
    [TestMethod]
    [DataRow(Fault.SubLeftOut)]
    [DataRow(Fault.DivLeftOut)]
    [DataRow(Fault.MulInsteadOfDiv)]
    [DataRow(Fault.AddInsteadOfSub)]
    public void ABrokenStandardisationFailsTheComparison(Fault fault)
    {
        var (net, schema) = TableModel("cross_entropy", 9);
        using var _ = net;
        var model = OnnxExport.Build(net, new OnnxExportOptions { Table = schema });
        var rng = new Random(2);
        var noise = OnnxParity.Noise(net, rng);
        var g = model.Graph;
        var sub = g.Node.Single(n => n.OpType == "Sub");
        var div = g.Node.Single(n => n.OpType == "Div");
        switch (fault)
        {
            case Fault.SubLeftOut: div.Input[0] = OnnxExport.InputName; g.Node.Remove(sub); g.ValueInfo.Remove(g.ValueInfo.Single(v => v.Name == "input.centred")); break;
            case Fault.DivLeftOut: g.Node[g.Node.IndexOf(div) + 1].Input[0] = "input.centred"; g.Node.Remove(div); g.ValueInfo.Remove(g.ValueInfo.Single(v => v.Name == "input.standardised")); break;
            case Fault.MulInsteadOfDiv: div.OpType = "Mul"; break;
            case Fault.AddInsteadOfSub: sub.OpType = "Add"; break;
        }
        byte[] broken = model.ToByteArray();
        foreach (int rows in new[] { 7, 1000 })
        {
            float[] raw = RawRows(rows, rng);
            var batch = OnnxParity.Prepare(net, null, Standardised(schema.Scaler!, raw), rows);
            string? failure = OnnxParity.Compare(batch, noise, broken, $"{fault}, rows {rows}", onnxFeatures: raw);
            Assert.IsNotNull(failure, $"{fault} passed the comparison at {rows} rows");
            TestContext.WriteLine(failure);
        }
    }

    /// <summary>
    /// <c>train --csv</c> on a small table the test writes, <c>export</c>, then the ONNX model in ONNX Runtime on the table's raw
    /// rows against <c>predict --csv</c>'s output on the same file: the probabilities (classes) or the values (a regression)
    /// within <see cref="OnnxParity"/>'s tolerance of the loaded model, the labels the same wherever the top two probabilities
    /// are further apart than that; the model exported without its scaler misses by a thousand times the tolerance.
    /// </summary>
    [TestMethod]
    [DataRow("species", "width,height,weight", "cross_entropy", "linear:3x16,relu,linear:16x3")]
    [DataRow("weight", "width,height", "mse", "linear:2x8,tanh,linear:8x1")]
    public void ExportOfATrainCsvModelInOnnxRuntimeOnRawRowsGivesPredictCsvsOutputs(string target, string features, string loss, string layers)
    {
        using var dir = new TempDir();
        string csv = dir.File("flowers.csv"), model = dir.File("m.safetensors"), onnx = dir.File("m.onnx"), preds = dir.File("p.csv");
        File.WriteAllText(csv, TableTests.Flowers(150, 11));
        var (code, stdout, stderr) = CliRunner.Run("train", "--csv", csv, "--target", target, "--features", features, "--loss", loss, "--layers", layers,
            "--optimizer", "adamw", "--lr", "0.01", "--batch", "16", "--epochs", "15", "--seed", "3", "--out", model);
        Assert.AreEqual(0, code, stderr + stdout);
        (code, stdout, stderr) = CliRunner.Run("export", "--model", model, "--out", onnx);
        Assert.AreEqual(0, code, stderr);
        StringAssert.Contains(stdout, $"give it the raw values of the columns {features} in that order");
        (code, _, stderr) = CliRunner.Run("predict", "--model", model, "--csv", csv, "--out", preds);
        Assert.AreEqual(0, code, stderr);

        byte[] bytes = File.ReadAllBytes(onnx);
        OnnxParity.Keep(bytes, $"cli_table_{loss}");
        var loaded = StackCheckpoint.Load(model);
        using var net = loaded.Network;
        var schema = loaded.Table!;
        var scaler = schema.Scaler!;
        Assert.IsTrue(scaler.Scale.Max() > 10 && scaler.Mean.Select(Math.Abs).Max() > 10, "the table's columns are far from standard: the scaler matters");
        var meta = ModelProto.Parser.ParseFrom(bytes).MetadataProps.ToDictionary(p => p.Key, p => p.Value);
        Assert.AreEqual(target, meta["table_target"]);
        if (schema.Classes is { } labels) CollectionAssert.AreEqual(labels.ToArray(), JsonSerializer.Deserialize<string[]>(meta["table_classes"]));

        // the raw rows, as predict reads them (the model's columns, in its order)
        var table = Table.ReadCsv(csv, schema.ReadOptions(targetOptional: true));
        int n = table.Count, k = net.OutputWidth;
        float[] raw = table.Features;
        // predict --csv's output: the probabilities of the classes, or the value
        var lines = File.ReadAllLines(preds);
        Assert.HasCount(n + 1, lines);
        bool classes = schema.TargetKind == TableTarget.Classes;
        var cli = new float[n * k];
        var cliLabels = new string[n];
        for (int i = 0; i < n; i++)
        {
            var cells = lines[i + 1].Split(',');
            if (classes)
            {
                cliLabels[i] = cells[1];
                for (int j = 0; j < k; j++) cli[i * k + j] = float.Parse(cells[2 + j], CultureInfo.InvariantCulture);
            }
            else cli[i] = float.Parse(cells[1], CultureInfo.InvariantCulture);
        }

        // the tolerance: 8 times Predict's own float32 error on this network, measured on N(0,1) rows and on these rows standardised
        var noise = OnnxParity.Noise(net, new Random(1), OnnxParity.Prepare(net, null, Standardised(scaler, raw), n));
        string output = classes ? OnnxExport.ProbabilitiesName : OnnxExport.LogitsName;
        var level = classes ? noise.Probabilities : noise.Logits;
        OnnxParity.Measured Against(byte[] onnxModel, string label)
        {
            using var session = OnnxParity.Session(onnxModel);
            float[] ort = OnnxParity.RunOnnx(session, null, raw, n, net.InputWidth)[output];
            double d = 0;
            for (int i = 0; i < cli.Length; i++) d = Math.Max(d, double.IsNaN(ort[i]) ? double.PositiveInfinity : Math.Abs((double)ort[i] - cli[i]));
            var m = new OnnxParity.Measured($"{label} {output}", level.Error, level.Ulp, noise.Kappa, d);
            TestContext.WriteLine(m.ToString());
            if (classes && label == "export")
                for (int i = 0; i < n; i++)
                {
                    var p = ort.AsSpan(i * k, k).ToArray();
                    var sorted = p.OrderDescending().ToArray();
                    if (sorted[0] - sorted[1] > 2 * m.Tolerance)
                        Assert.AreEqual(cliLabels[i], schema.Classes![Array.IndexOf(p, sorted[0])], $"row {i + 1}: the label of ONNX Runtime's largest probability");
                }
            return m;
        }
        var exported = Against(bytes, "export");
        Assert.IsTrue(exported.Within, $"ONNX Runtime on the raw rows against predict --csv: {exported}");
        var plain = Against(OnnxExport.ToBytes(net), "the same network without the scaler");
        Assert.IsGreaterThan(1000 * plain.Tolerance, plain.Difference, $"without the scaler the comparison must fail by far: {plain}");
    }
}
