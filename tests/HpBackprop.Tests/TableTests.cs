using System.Globalization;
using System.Text;
using System.Text.Json;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Networks;
using HpBackprop.Training;

namespace HpBackprop.Tests;

/// <summary>
/// Tables in (issue 22): the CSV reader, the seeded stratified split, standardisation fitted on the training rows and
/// kept in the checkpoint, the metrics, and the CLI's train --csv, eval --csv and predict. Every table is written here.
/// </summary>
[TestClass]
public sealed class TableTests
{
    private static Table Read(string text, TableOptions options, string source = "t.csv") => Table.ReadCsv(new StringReader(text), source, options);

    /// <summary>
    /// A table of three classes ("setosa", "versicolor", "virginica", 3:2:1) with features that separate them and whose
    /// scale and offset differ per column (so a scaler fitted on other rows differs), rows in class order.
    /// </summary>
    internal static string Flowers(int rows, int seed)
    {
        var rng = new NormalRng(seed);
        var sb = new StringBuilder("width,height,weight,species\n");
        string[] names = ["setosa", "versicolor", "virginica"];
        for (int i = 0; i < rows; i++)
        {
            int c = i < rows / 2 ? 0 : i < rows * 5 / 6 ? 1 : 2;
            double a = 10 + 3 * c + rng.Next(), b = -200 + 40 * c + 10 * rng.Next(), w = 1000 * (i + 1.0) / rows + 50 * rng.Next();
            sb.Append(CultureInfo.InvariantCulture, $"{a:R},{b:R},{w:R},{names[c]}\n");
        }
        return sb.ToString();
    }

    // ---- the reader ---------------------------------------------------------------------------------------

    [TestMethod]
    public void AHeaderATargetByNameAndTextLabelsMappedToSortedIdsWithTheMappingKept()
    {
        var t = Read("a,label,b\n1.5,dog,2\n-3,cat,4e1\n0,\"bird, small\",0.25\n7,dog, 8 \n", new TableOptions { Target = "label" });
        CollectionAssert.AreEqual(new[] { "a", "b" }, t.FeatureNames.ToArray(), "every other column, in the file's order");
        Assert.AreEqual(4, t.Count);
        CollectionAssert.AreEqual(new[] { 1.5f, 2, -3, 40, 0, 0.25f, 7, 8 }, t.Features);
        CollectionAssert.AreEqual(new[] { "bird, small", "cat", "dog" }, t.ClassNames!.ToArray(), "labels sorted by ordinal text order, quotes unescaped");
        CollectionAssert.AreEqual(new[] { 2, 1, 0, 2 }, t.Classes);
        CollectionAssert.AreEqual(new[] { 2, 3, 4, 5 }, t.Lines.ToArray());
        var set = t.ToExampleSet();
        Assert.AreEqual(TargetKind.Classes, set.TargetKind);
        Assert.AreEqual(2, set.InputWidth);
    }

    [TestMethod]
    public void IntegerLabelsAreSortedNumericallySoZeroToKMinusOneKeepTheirValues()
    {
        var t = Read("x,y\n1,10\n2,9\n3,0\n4,2\n5,10\n", new TableOptions { Target = "y" });
        CollectionAssert.AreEqual(new[] { "0", "2", "9", "10" }, t.ClassNames!.ToArray());
        CollectionAssert.AreEqual(new[] { 3, 2, 0, 1, 3 }, t.Classes);
        var d = Read("x,y\n1,1\n2,0\n3,2\n", new TableOptions { Target = "y" });
        CollectionAssert.AreEqual(new[] { 1, 0, 2 }, d.Classes, "labels 0…K−1 are their own ids");
    }

    [TestMethod]
    public void NamedFeaturesInTheirOrderValuesAndTwoLabelsAsBinaryTargets()
    {
        const string text = "id,c,b,a,price,sold\n1,3,2,1,9.5,no\n2,6,5,4,-1,yes\n";
        var t = Read(text, new TableOptions { Target = "price", Features = ["a", "c"], TargetKind = TableTarget.Values });
        CollectionAssert.AreEqual(new[] { "a", "c" }, t.FeatureNames.ToArray());
        CollectionAssert.AreEqual(new[] { 1f, 3, 4, 6 }, t.Features);
        CollectionAssert.AreEqual(new[] { 9.5f, -1 }, t.Values);
        Assert.IsNull(t.ClassNames);
        Assert.AreEqual(TargetKind.Floats, t.ToExampleSet().TargetKind);

        var b = Read(text, new TableOptions { Target = "sold", Features = ["a", "b"], TargetKind = TableTarget.Binary });
        CollectionAssert.AreEqual(new[] { "no", "yes" }, b.ClassNames!.ToArray());
        CollectionAssert.AreEqual(new[] { 0f, 1 }, b.Values);
        var e = Assert.ThrowsExactly<TableException>(() => Read("x,y\n1,a\n2,b\n3,c\n", new TableOptions { Target = "y", TargetKind = TableTarget.Binary }));
        StringAssert.Contains(e.Message, "3 labels");
    }

    [TestMethod]
    public void ABadCellIsRefusedNamingTheFileLineRowAndColumn()
    {
        var o = new TableOptions { Target = "y" };
        void Refused(string text, params string[] parts)
        {
            var e = Assert.ThrowsExactly<TableException>(() => Read(text, o, "data/flowers.csv"));
            foreach (var p in parts) StringAssert.Contains(e.Message, p);
        }
        Refused("a,b,y\n1,2,x\n3,1;5,y\n", "data/flowers.csv:3:", "row 2, column 2 ('b')", "'1;5' is not a number");
        Refused("a,b,y\n1,2,x\n3,,y\n", "data/flowers.csv:3:", "row 2, column 2 ('b')", "empty");
        Refused("a,b,y\n1,2,x\n\n3,NaN,y\n", "data/flowers.csv:4:", "row 2, column 2 ('b')", "NaN");
        Refused("a,b,y\n-Infinity,2,x\n", "data/flowers.csv:2:", "row 1, column 1 ('a')", "infinite");
        Refused("a,b,y\n1e39,2,x\n", "row 1, column 1 ('a')", "infinite in float32");
        Refused("a,b,y\n1,2,x\n3,4\n", "data/flowers.csv:3:", "row 2 has 2 cells, the header 3");
        Refused("a,b,y\n1,2,\n", "row 1, column 3 ('y')", "the label is empty");
        Refused("a,b,z\n1,2,x\n", "data/flowers.csv:1:", "target column 'y' is not in the header", "'a', 'b', 'z'");
        Refused("a,a,y\n1,2,x\n", "data/flowers.csv:1:", "'a' found 2 times");
        Refused("a,b,y\n", "a header but no rows");
        Refused("", "empty");
        var v = Assert.ThrowsExactly<TableException>(() => Read("a,y\n1,2\n2,nan\n", new TableOptions { Target = "y", TargetKind = TableTarget.Values }));
        StringAssert.Contains(v.Message, "t.csv:3: row 2, column 2 ('y')");
        var f = Assert.ThrowsExactly<TableException>(() => Read("a,y\n1,2\n", new TableOptions { Target = "y", Features = ["a", "q"] }));
        StringAssert.Contains(f.Message, "feature column 'q' is not in the header");
        // a model's labels are fixed: another label is refused, naming it
        var c = Assert.ThrowsExactly<TableException>(() => Read("a,y\n1,cat\n2,cow\n", new TableOptions { Target = "y", Classes = ["cat", "dog"] }));
        StringAssert.Contains(c.Message, "t.csv:3: row 2, column 2 ('y'): the label 'cow' is not one of the model's classes (cat, dog)");
        Assert.ThrowsExactly<FileNotFoundException>(() => Table.ReadCsv(Path.Combine(Path.GetTempPath(), "hpb-no-such-table.csv"), o));
    }

    [TestMethod]
    public void AFileWithoutTheTargetIsReadForPredictionsWhenAllowed()
    {
        var t = Read("b,a\n1,2\n3,4\n", new TableOptions { Target = "y", Features = ["a", "b"], TargetOptional = true, Classes = ["p", "q"] });
        Assert.IsFalse(t.HasTarget);
        CollectionAssert.AreEqual(new[] { 2f, 1, 4, 3 }, t.Features);
        Assert.AreEqual(TargetKind.None, t.ToExampleSet().TargetKind);
    }

    // ---- the split ----------------------------------------------------------------------------------------

    [TestMethod]
    public void TheSplitPutsEveryRowInExactlyOneSplitStratifiedAndSeeded()
    {
        var t = Read(Flowers(600, 1), new TableOptions { Target = "species" });
        var s = TableSplit.Create(t, 0.15, 0.2, seed: 3);
        Assert.IsTrue(s.Stratified);
        Assert.AreEqual(90, s.DevRows.Count);
        Assert.AreEqual(120, s.TestRows.Count);
        Assert.AreEqual(390, s.TrainRows.Count);
        var all = s.TrainRows.Concat(s.DevRows).Concat(s.TestRows).ToArray();
        Assert.AreEqual(600, all.Distinct().Count(), "no row in two splits: nothing leaks from training into dev or test");
        CollectionAssert.AreEquivalent(Enumerable.Range(0, 600).ToArray(), all);
        // the examples are those rows
        for (int i = 0; i < s.TestRows.Count; i++)
        {
            Assert.AreEqual(t.Classes![s.TestRows[i]], s.Test.Classes![i]);
            CollectionAssert.AreEqual(t.Features.AsSpan(s.TestRows[i] * 3, 3).ToArray(), s.Test.Features.AsSpan(i * 3, 3).ToArray());
        }
        // stratified: 300:200:100 gives 45:30:15 in dev and 60:40:20 in test
        int[] Count(IEnumerable<int> rows, int c) => [rows.Count(r => t.Classes![r] == c)];
        for (int c = 0; c < 3; c++)
        {
            Assert.AreEqual((3 - c) * 15, Count(s.DevRows, c)[0], $"dev class {c}");
            Assert.AreEqual((3 - c) * 20, Count(s.TestRows, c)[0], $"test class {c}");
        }
        // seeded: the same seed the same split, another seed another
        var again = TableSplit.Create(t, 0.15, 0.2, seed: 3);
        CollectionAssert.AreEqual(s.TestRows.ToArray(), again.TestRows.ToArray());
        CollectionAssert.AreEqual(s.DevRows.ToArray(), again.DevRows.ToArray());
        CollectionAssert.AreNotEqual(s.TestRows.ToArray(), TableSplit.Create(t, 0.15, 0.2, seed: 4).TestRows.ToArray());
        // the test rows are not simply the first or last of each class: shuffled within the class
        Assert.IsFalse(s.TestRows.Take(60).SequenceEqual(Enumerable.Range(0, 60)));
    }

    [TestMethod]
    public void TheSplitKeepsTheExactSizesWithUnevenClassesAndRefusesAnEmptySplit()
    {
        // classes of 7, 3 and 1 rows: 0.2 of 11 rows is 2 for test and 2 for dev, each split without a repeated row
        var sb = new StringBuilder("x,y\n");
        int[] labels = [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2];
        for (int i = 0; i < labels.Length; i++) sb.Append(CultureInfo.InvariantCulture, $"{i},{labels[i]}\n");
        var t = Read(sb.ToString(), new TableOptions { Target = "y" });
        for (int seed = 0; seed < 20; seed++)
        {
            var s = TableSplit.Create(t, 0.2, 0.2, seed);
            Assert.AreEqual(2, s.TestRows.Count);
            Assert.AreEqual(2, s.DevRows.Count);
            var rows = s.TrainRows.Concat(s.DevRows).Concat(s.TestRows).ToArray();
            Assert.HasCount(11, rows, "no row in two splits");
            Assert.AreEqual(11, rows.Distinct().Count());
        }
        Assert.ThrowsExactly<ArgumentException>(() => TableSplit.Create(t, 0.5, 0.5));
        Assert.ThrowsExactly<ArgumentException>(() => TableSplit.Create(t, 0.01, 0.1), "0.01 of 11 rows is none");
        Assert.ThrowsExactly<ArgumentException>(() => TableSplit.Create(t, -0.1, 0.1));
        var unstratified = TableSplit.Create(t, 0.2, 0.2, 1, stratify: false);
        Assert.IsFalse(unstratified.Stratified);
        Assert.AreEqual(11, unstratified.TrainRows.Concat(unstratified.DevRows).Concat(unstratified.TestRows).Distinct().Count());
    }

    // ---- standardisation ----------------------------------------------------------------------------------

    [TestMethod]
    public void TheScalerIsThePopulationMeanAndStandardDeviationAndAConstantColumnScalesByOne()
    {
        float[] x = [1, 5, 2, 5, 3, 5, 6, 5];
        var s = Standardizer.Fit(x, 2);
        Assert.AreEqual(3f, s.Mean[0]);
        Assert.AreEqual(5f, s.Mean[1]);
        Assert.AreEqual((float)Math.Sqrt((4 + 1 + 0 + 9) / 4.0), s.Scale[0], "over N, as scikit-learn's StandardScaler");
        Assert.AreEqual(1f, s.Scale[1], "a constant column is centred, not divided by 0");
        var data = ExampleSet.FromFeatures(x, 2, new[] { 0, 1, 0, 1 });
        var scaled = s.Apply(data);
        Assert.AreEqual((1 - 3f) / s.Scale[0], scaled.Features![0]);
        Assert.AreEqual(0f, scaled.Features[1]);
        Assert.AreEqual(1f, x[0], "Apply copies; the source rows stay as they are");
        Assert.AreSame(data.Classes, scaled.Classes);
        Assert.ThrowsExactly<ArgumentException>(() => new Standardizer([0f], [0f]));
        Assert.ThrowsExactly<ArgumentException>(() => new Standardizer([float.NaN], [1f]));
        Assert.ThrowsExactly<ArgumentException>(() => Standardizer.Fit([1f, float.PositiveInfinity], 1));
        Assert.ThrowsExactly<ArgumentException>(() => s.Apply(ExampleSet.FromFeatures(new float[3], 3)));
    }

    [TestMethod]
    public void ASchemaWithItsScalerAndLabelsRoundTripsThroughTheCheckpointBitwise()
    {
        using var dir = new TempDir();
        var stack = Sequential.Parse("linear:3x4,relu,linear:4x3");
        using var net = Network.Create(stack, new NetworkOptions { BatchSize = 4 });
        var scaler = new Standardizer([0.1f, -1e-7f, 123456.79f], [1f / 3, 2.5e-3f, 7f]);
        var schema = new TableSchema(["wïdth", "a,b", "\"q\""], "spe cies", TableTarget.Classes, ["cat", "dog, big", "ü"], scaler);
        string path = dir.File("m.safetensors");
        StackCheckpoint.SaveTable(path, net, schema);
        var loaded = StackCheckpoint.Load(path);
        using var back = loaded.Network;
        var t = loaded.Table!;
        CollectionAssert.AreEqual(schema.Features.ToArray(), t.Features.ToArray());
        CollectionAssert.AreEqual(schema.Classes!.ToArray(), t.Classes!.ToArray());
        Assert.AreEqual("spe cies", t.Target);
        Assert.AreEqual(TableTarget.Classes, t.TargetKind);
        CollectionAssert.AreEqual(scaler.Mean.Select(BitConverter.SingleToInt32Bits).ToArray(), t.Scaler!.Mean.Select(BitConverter.SingleToInt32Bits).ToArray());
        CollectionAssert.AreEqual(scaler.Scale.Select(BitConverter.SingleToInt32Bits).ToArray(), t.Scaler.Scale.Select(BitConverter.SingleToInt32Bits).ToArray());
        // a schema that does not fit the network is refused
        Assert.ThrowsExactly<ArgumentException>(() => StackCheckpoint.SaveTable(path, net, schema with { Classes = ["a", "b"] }));
        Assert.ThrowsExactly<ArgumentException>(() => StackCheckpoint.SaveTable(path, net, schema with { Features = ["a"] }));
        Assert.ThrowsExactly<ArgumentException>(() => StackCheckpoint.SaveTable(path, net, schema with { TargetKind = TableTarget.Values }));
        // a word model has no table
        string words = dir.File("w.safetensors");
        using (var wnet = Network.Create(Sequential.Parse("embedding:5x2,flatten,linear:6x5"), new NetworkOptions { BatchSize = 4 }))
            StackCheckpoint.Save(words, wnet, null);
        var w = StackCheckpoint.Load(words);
        w.Network.Dispose();
        Assert.IsNull(w.Table);
    }

    // ---- metrics ------------------------------------------------------------------------------------------

    [TestMethod]
    public void ClassificationMetricsAreThoseComputedByHand()
    {
        // true:      0 0 0 1 1 2 2 2
        // predicted: 0 1 0 1 2 2 2 0
        int[] y = [0, 0, 0, 1, 1, 2, 2, 2], p = [0, 1, 0, 1, 2, 2, 2, 0];
        var m = ClassificationMetrics.FromPredictions(y, p, 3);
        Assert.AreEqual(8, m.Count);
        Assert.AreEqual(5, m.Correct);
        Assert.AreEqual(5 / 8.0, m.Accuracy);
        CollectionAssert.AreEqual(new[] { 2, 1, 0 }, m.Confusion[0]);
        CollectionAssert.AreEqual(new[] { 0, 1, 1 }, m.Confusion[1]);
        CollectionAssert.AreEqual(new[] { 1, 0, 2 }, m.Confusion[2]);
        CollectionAssert.AreEqual(new[] { 2 / 3.0, 1 / 2.0, 2 / 3.0 }, m.Precision);
        CollectionAssert.AreEqual(new[] { 2 / 3.0, 1 / 2.0, 2 / 3.0 }, m.Recall);
        CollectionAssert.AreEqual(new[] { 3, 2, 3 }, m.Support);
        Assert.AreEqual((2 / 3.0 + 0.5 + 2 / 3.0) / 3, m.MacroF1, 1e-15);
        Assert.IsNull(m.RocAuc, "no AUC for three classes");
        // a class never predicted has precision 0 (scikit-learn's zero_division=0)
        var never = ClassificationMetrics.FromPredictions([0, 1, 1], [0, 0, 0], 2);
        Assert.AreEqual(0, never.Precision[1]);
        Assert.AreEqual(0, never.F1[1]);
        Assert.ThrowsExactly<ArgumentException>(() => ClassificationMetrics.FromPredictions([0, 3], [0, 0], 3));
        Assert.ThrowsExactly<ArgumentException>(() => ClassificationMetrics.FromPredictions([0], [0, 0], 3));
    }

    [TestMethod]
    public void RocAucIsTheChanceAPositiveOutscoresANegativeWithTiesOneHalf()
    {
        // positives score 0.8, 0.4, 0.4; negatives 0.4, 0.1: pairs (8 > 4, 8 > 1, 4 = 4 half, 4 > 1, 4 = 4 half, 4 > 1) = 5/6
        var m = ClassificationMetrics.FromPredictions([1, 1, 1, 0, 0], [1, 0, 0, 0, 0], 2, [0.8f, 0.4f, 0.4f, 0.4f, 0.1f]);
        Assert.AreEqual(5 / 6.0, m.RocAuc!.Value, 1e-15);
        Assert.AreEqual(1.0, ClassificationMetrics.FromPredictions([0, 1], [0, 1], 2, [-3f, 2f]).RocAuc);
        Assert.AreEqual(0.0, ClassificationMetrics.FromPredictions([0, 1], [0, 1], 2, [3f, 2f]).RocAuc);
        Assert.IsNull(ClassificationMetrics.FromPredictions([1, 1], [1, 1], 2, [3f, 2f]).RocAuc, "one class present: no curve");
        Assert.ThrowsExactly<ArgumentException>(() => ClassificationMetrics.FromPredictions([0, 1], [0, 1], 2, [float.NaN, 2f]));
    }

    [TestMethod]
    public void RegressionMetricsAreThoseComputedByHand()
    {
        float[] y = [1, 2, 3, 4], p = [1, 3, 2, 6];
        var m = RegressionMetrics.FromPredictions(y, p);
        Assert.AreEqual(Math.Sqrt((0 + 1 + 1 + 4) / 4.0), m.Rmse, 1e-15);
        Assert.AreEqual(1.0, m.Mae, 1e-15);
        Assert.AreEqual(1 - 6 / 5.0, m.R2, 1e-15);
        Assert.AreEqual(1.0, RegressionMetrics.FromPredictions(y, y).R2);
        Assert.ThrowsExactly<ArgumentException>(() => RegressionMetrics.FromPredictions(y, [1f, 2f, 3f]));
        Assert.ThrowsExactly<ArgumentException>(() => RegressionMetrics.FromPredictions([1f], [float.NaN]));
    }

    [TestMethod]
    public void PredictClassesIsTheArgmaxOfPredictAndTheMetricsOfANetworkAreThoseOfItsPredictions()
    {
        var data = FitTests.Noise(300, 12, 3, 1);
        using var net = Network.Create(Sequential.Parse("linear:12x16,relu,linear:16x3"), new NetworkOptions { BatchSize = 8, Seed = 5 });
        net.Fit(data, 200);
        var probs = new float[300 * 3];
        net.Predict(data.Features!, 300, probs);
        var classes = new int[300];
        net.PredictClasses(data.Features!, 300, classes);
        for (int i = 0; i < 300; i++)
        {
            int arg = 0;
            for (int j = 1; j < 3; j++) if (probs[i * 3 + j] > probs[i * 3 + arg]) arg = j;
            Assert.AreEqual(arg, classes[i], $"row {i}");
        }
        var m = ClassificationMetrics.Of(net, data);
        Assert.AreEqual(classes.Zip(data.Classes!).Count(z => z.First == z.Second), m.Correct);
        Assert.IsGreaterThan(1.0 / 3 + 0.05, m.Accuracy, "200 steps on 300 rows of noise fit some of it");
        using var reg = Network.Create(Sequential.Parse("linear:12x1"), new NetworkOptions { BatchSize = 8, Loss = LossKind.Mse });
        Assert.ThrowsExactly<InvalidOperationException>(() => reg.PredictClasses(data.Features!, 300, classes));
        Assert.ThrowsExactly<ShapeException>(() => net.PredictClasses(data.Features!, 300, new int[299]));
    }

    // ---- the CLI ------------------------------------------------------------------------------------------

    private static (int Code, string Out, string Err) Train(TempDir dir, string csv, params string[] more) =>
        CliRunner.Run([
            "train", "--csv", csv, "--target", "species", "--layers", "linear:3x16,relu,linear:16x3", "--optimizer", "adamw", "--lr", "0.01",
            "--batch", "16", "--epochs", "30", "--seed", "7", .. more,
        ]);

    [TestMethod]
    public void TrainOnACsvSavesTheScalerOfTheTrainingRowsAndEndsWithTheDevAndTestMetrics()
    {
        using var dir = new TempDir();
        string csv = dir.File("flowers.csv"), model = dir.File("m.safetensors");
        File.WriteAllText(csv, Flowers(300, 2));
        var (code, stdout, stderr) = Train(dir, csv, "--out", model, "--dev", "0.2", "--test", "0.2");
        Assert.AreEqual(0, code, stderr + stdout);
        StringAssert.Contains(stdout, "300 rows, 3 features, target 'species': 3 classes (setosa, versicolor, virginica)");
        StringAssert.Contains(stdout, "split: train 180, dev 60, test 60 (stratified by class, seed 7)");
        var lines = stdout.TrimEnd().Split('\n');
        int dev = Array.FindIndex(lines, l => l.StartsWith("dev: 60 rows", StringComparison.Ordinal));
        int test = Array.FindIndex(lines, l => l.StartsWith("test: 60 rows", StringComparison.Ordinal));
        Assert.IsGreaterThan(0, dev, stdout);
        Assert.IsGreaterThan(dev, test, "the test metrics after the dev ones");
        StringAssert.Contains(lines[test], "accuracy");
        StringAssert.StartsWith(lines[^5], "test confusion matrix", "the output ends with the test confusion matrix");

        // the scaler in the checkpoint is fitted on the training split alone, not on every row
        var table = Table.ReadCsv(csv, new TableOptions { Target = "species" });
        var split = TableSplit.Create(table, 0.2, 0.2, 7);
        var expected = Standardizer.Fit(split.Train);
        var all = Standardizer.Fit(table.ToExampleSet());
        var loaded = StackCheckpoint.Load(model);
        using var net = loaded.Network;
        var saved = loaded.Table!.Scaler!;
        CollectionAssert.AreEqual(expected.Mean, saved.Mean, "the training rows' mean");
        CollectionAssert.AreEqual(expected.Scale, saved.Scale, "the training rows' standard deviation");
        CollectionAssert.AreNotEqual(all.Mean, saved.Mean, "not the mean of every row: the dev and test rows do not leak into the scaler");
        CollectionAssert.AreEqual(new[] { "setosa", "versicolor", "virginica" }, loaded.Table.Classes!.ToArray());

        // the printed test accuracy is that of the saved model on the test rows, standardised with the saved scaler
        var m = ClassificationMetrics.Of(net, saved.Apply(split.Test));
        StringAssert.Contains(lines[test], string.Create(CultureInfo.InvariantCulture, $"accuracy {m.Accuracy:F4} ({m.Correct}/60)"));
        Assert.IsGreaterThan(0.9, m.Accuracy, "the classes are separable");
    }

    [TestMethod]
    public void EvalAndPredictReadATableWithTheModelsColumnsLabelsAndScaler()
    {
        using var dir = new TempDir();
        string csv = dir.File("flowers.csv"), model = dir.File("m.safetensors"), preds = dir.File("p.csv");
        File.WriteAllText(csv, Flowers(240, 3));
        Assert.AreEqual(0, Train(dir, csv, "--out", model).Code);
        var loaded = StackCheckpoint.Load(model);
        using var net = loaded.Network;
        var scaler = loaded.Table!.Scaler!;
        var table = Table.ReadCsv(csv, new TableOptions { Target = "species" });
        var expected = ClassificationMetrics.Of(net, scaler.Apply(table.ToExampleSet()));
        Assert.IsLessThan(1.0, scaler.Scale.Min() / 100, "the scaler matters: features of a different scale");

        var (code, stdout, stderr) = CliRunner.Run("eval", "--model", model, "--csv", csv, "--json");
        Assert.AreEqual(0, code, stderr);
        using var json = JsonDocument.Parse(stdout);
        var metrics = json.RootElement.GetProperty("metrics");
        Assert.AreEqual(240, metrics.GetProperty("rows").GetInt32());
        Assert.AreEqual(expected.Correct, metrics.GetProperty("correct").GetInt32(), "eval standardises with the saved scaler");
        Assert.AreEqual(3, metrics.GetProperty("confusion").GetArrayLength());

        // predict: columns in another order and no target column; the labels and probabilities of every row
        var reordered = new StringBuilder("weight,height,width\n");
        for (int i = 0; i < table.Count; i++)
            reordered.Append(CultureInfo.InvariantCulture, $"{table.Features[i * 3 + 2]:R},{table.Features[i * 3 + 1]:R},{table.Features[i * 3]:R}\n");
        string unlabelled = dir.File("unlabelled.csv");
        File.WriteAllText(unlabelled, reordered.ToString());
        (code, _, stderr) = CliRunner.Run("predict", "--model", model, "--csv", unlabelled, "--out", preds);
        Assert.AreEqual(0, code, stderr);
        var rows = File.ReadAllLines(preds);
        Assert.AreEqual("row,predicted_species,p_setosa,p_versicolor,p_virginica", rows[0]);
        Assert.HasCount(241, rows);
        var scaled = scaler.Apply(table.ToExampleSet());
        var classes = new int[240];
        net.PredictClasses(scaled.Features!, 240, classes);
        string[] names = ["setosa", "versicolor", "virginica"];
        for (int i = 0; i < 240; i++)
        {
            var cells = rows[i + 1].Split(',');
            Assert.AreEqual((i + 1).ToString(CultureInfo.InvariantCulture), cells[0]);
            Assert.AreEqual(names[classes[i]], cells[1], $"row {i + 1}: predicted from the standardised features");
            Assert.AreEqual(1.0, cells.Skip(2).Sum(c => double.Parse(c, CultureInfo.InvariantCulture)), 1e-5);
        }
    }

    [TestMethod]
    public void RegressionAndBinaryTablesReportTheirMetrics()
    {
        using var dir = new TempDir();
        string csv = dir.File("house.csv");
        var rng = new NormalRng(4);
        var sb = new StringBuilder("rooms,age,price,sold\n");
        for (int i = 0; i < 200; i++)
        {
            double rooms = 1 + 5 * rng.NextDouble(), age = 80 * rng.NextDouble(), price = (50 * rooms - age) / 20 + 0.05 * rng.Next();
            sb.Append(CultureInfo.InvariantCulture, $"{rooms:R},{age:R},{price:R},{(price > 5 ? "yes" : "no")}\n");
        }
        File.WriteAllText(csv, sb.ToString());
        var (code, stdout, stderr) = CliRunner.Run("train", "--csv", csv, "--target", "price", "--features", "rooms,age", "--loss", "mse",
            "--layers", "linear:2x1", "--optimizer", "adamw", "--lr", "0.05", "--batch", "16", "--epochs", "60", "--json");
        Assert.AreEqual(0, code, stderr);
        using (var json = JsonDocument.Parse(stdout))
        {
            var test = json.RootElement.GetProperty("test");
            Assert.IsGreaterThan(0.9, test.GetProperty("r2").GetDouble(), stdout);
            Assert.IsTrue(test.TryGetProperty("rmse", out _) && test.TryGetProperty("mae", out _));
        }
        (code, stdout, stderr) = CliRunner.Run("train", "--csv", csv, "--target", "sold", "--features", "rooms,age", "--loss", "bce_with_logits",
            "--layers", "linear:2x8,tanh,linear:8x1", "--optimizer", "adamw", "--lr", "0.02", "--batch", "16", "--epochs", "40");
        Assert.AreEqual(0, code, stderr);
        StringAssert.Contains(stdout, "2 classes (no, yes)");
        StringAssert.Contains(stdout, "ROC AUC");
    }

    /// <summary>
    /// A table run on the emulator reports in its --json line what its steps asked of the device, as a word run does: its
    /// epochs are queued through the two staging buffers, so after the first step each is one graph launch, and the bytes
    /// a step are the minibatch's features and targets plus the losses' reads, 100 at a time. (The table path wrote its own
    /// JSON and left these out before.)
    /// </summary>
    [TestMethod]
    public void ATableRunOnTheEmulatorReportsWhatItsStepsAskedOfTheDevice()
    {
        Devices.RequireEmulator();
        using var dir = new TempDir();
        string csv = dir.File("house.csv");
        var rng = new NormalRng(5);
        var sb = new StringBuilder("rooms,age,price\n");
        for (int i = 0; i < 200; i++)
        {
            double rooms = 1 + 5 * rng.NextDouble(), age = 80 * rng.NextDouble();
            sb.Append(CultureInfo.InvariantCulture, $"{rooms:R},{age:R},{(50 * rooms - age) / 20:R}\n");
        }
        File.WriteAllText(csv, sb.ToString());
        var (code, stdout, stderr) = CliRunner.Run("train", "--csv", csv, "--target", "price", "--features", "rooms,age", "--loss", "mse",
            "--layers", "linear:2x8,relu,linear:8x1", "--batch", "16", "--epochs", "15", "--json", "--device", "emulator");
        Assert.AreEqual(0, code, stderr);
        using var json = JsonDocument.Parse(stdout);
        var r = json.RootElement;
        StringAssert.StartsWith(r.GetProperty("device").GetString(), "cuda-emulator");
        int steps = r.GetProperty("steps").GetInt32();
        Assert.IsGreaterThan(100, steps, stdout);
        Assert.IsGreaterThan(3, r.GetProperty("graph_nodes").GetInt32(), stdout);
        Assert.IsLessThan(1.1, r.GetProperty("launches_per_step").GetDouble(), stdout);
        Assert.AreEqual(0, r.GetProperty("host_device_setup_bytes").GetInt64(), "epochs stay on the host: no set uploaded apart");
        // 16 rows of 2 features and 1 target (192 bytes) and the loss (4) every step; the step state's uploads spread over
        // the steps stay under the issue's 16 bytes a step
        double bytes = r.GetProperty("host_device_bytes_per_step").GetDouble();
        Assert.IsTrue(bytes >= 196 && bytes < 196 + 16, stdout);
    }

    [TestMethod]
    public void BadTableInputIsExitTwoNamingTheOptionFileLineAndColumn()
    {
        using var dir = new TempDir();
        string csv = dir.File("flowers.csv"), bad = dir.File("bad.csv");
        File.WriteAllText(csv, Flowers(60, 5));
        File.WriteAllText(bad, "width,height,weight,species\n1,2,3,setosa\n4,1e40,6,virginica\n");
        void Refused(string[] args, params string[] parts)
        {
            var (code, stdout, stderr) = CliRunner.Run(args);
            Assert.AreEqual(2, code, stdout + stderr);
            foreach (var p in parts) StringAssert.Contains(stderr, p);
        }
        string[] net = ["--layers", "linear:3x4,relu,linear:4x3"];
        Refused(["train", "--csv", bad, "--target", "species", .. net], "bad.csv:3:", "row 2, column 2 ('height')", "infinite");
        Refused(["train", "--csv", csv, "--target", "kind", .. net], "target column 'kind' is not in the header");
        Refused(["train", "--csv", csv, .. net], "--target");
        Refused(["train", "--csv", csv, "--target", "species"], "--layers");
        Refused(["train", "--csv", csv, "--target", "species", "--layers", "linear:4x3"], "layer 0", "3 feature columns");
        Refused(["train", "--csv", csv, "--target", "species", "--layers", "linear:3x2"], "3 classes");
        Refused(["train", "--csv", csv, "--target", "species", "--data", csv, .. net], "--data and --csv");
        Refused(["train", "--target", "species"], "--target needs --csv");
        Refused(["train", "--csv", csv, "--target", "species", "--epochs", "2", "--steps", "9", .. net], "--epochs and --steps");
        // a missing file: the option and the whole path (issue 22)
        string none = dir.File("none.csv");
        Refused(["train", "--csv", none, "--target", "species", .. net], $"--csv {none}: no such file");
        // (the model's file exists; its contents are read after the table's file is found)
        Refused(["eval", "--model", csv, "--csv", none], $"--csv {none}: no such file");
        Refused(["predict", "--model", csv, "--csv", none], $"--csv {none}: no such file");
        string noModel = dir.File("none.safetensors");
        Refused(["predict", "--model", noModel, "--csv", csv], $"--model {noModel}: no such file");
        Refused(["eval", "--model", noModel, "--csv", csv], $"--model {noModel}: no such file");
        Refused(["sample", "--model", noModel], $"--model {noModel}: no such file");
        Refused(["export", "--model", noModel, "--out", dir.File("m.onnx")], $"--model {noModel}: no such file");
        Refused(["predict", "--model", csv, "--csv", csv], "flowers.csv: not a valid safetensors file");
    }
}
