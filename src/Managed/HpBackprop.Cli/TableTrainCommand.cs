using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Networks;
using HpBackprop.Training;

namespace HpBackprop.Cli;

/// <summary>
/// <c>hpbackprop train --csv FILE --target NAME --layers STACK</c>: a table read with its header, a seeded (stratified)
/// train/dev/test split, standardisation fitted on the training rows, training with the dev loss every epoch (early
/// stopping with --patience, the best parameters put back), then the model saved with its columns, labels and scaler,
/// and the dev and test metrics printed last.
/// </summary>
internal static class TableTrainCommand
{
    /// <summary>The options only a table takes.</summary>
    internal sealed class TableOptions
    {
        public Option<string?> Csv { get; } = new("--csv") { Description = "Train on this CSV table (a header naming the columns); needs --target and --layers" };
        public Option<string?> Target { get; } = new("--target") { Description = "The table's target column: class labels (cross_entropy, bce_with_logits for two) or numbers (mse)" };
        public Option<string?> Features { get; } = new("--features") { Description = "The feature columns, comma-separated (default: every column but the target)" };
        public Option<double> Dev { get; } = Inputs.Double("--dev", "Fraction of the table's rows in the dev split (0 to 0.9)", 0.1, 0, 0.9);
        public Option<double> Test { get; } = Inputs.Double("--test", "Fraction of the table's rows in the test split (0 to 0.9)", 0.1, 0, 0.9);
        public Option<int?> Epochs { get; } = new("--epochs") { Description = "Train this many epochs without replacement (each example once per epoch) instead of --steps uniform draws (default for --csv: 100)" };
        public Option<int?> EvalEvery { get; } = new("--eval-every") { Description = "Steps between two dev evaluations (default: once per epoch)" };
        public Option<int> Patience { get; } = new("--patience") { Description = "Stop after this many dev evaluations without a lower dev loss (0: never)", DefaultValueFactory = _ => 0 };
        public Option<bool> NoStandardize { get; } = new("--no-standardize") { Description = "Train on the features as they are, without standardising them" };

        /// <summary>The options that mean nothing without --csv.</summary>
        public Option[] TableOnly => [Target, Features, Dev, Test, Epochs, EvalEvery, Patience, NoStandardize];
    }

    /// <summary>The options of <c>train</c> that a table run shares with a word run.</summary>
    internal sealed record CommonOptions(Option<int> Steps, Option<int> Batch, Option<string?> Layers, Option<string> Loss, Option<string> Optimizer, Option<float> Lr,
        Option<float> Momentum, Option<float?> WeightDecay, Option<float> Beta1, Option<float> Beta2, Option<float> AdamEps, Option<string> Schedule, Option<int?> Decay,
        Option<int> Warmup, Option<float> MinLr, Option<float> L2, Option<int> Seed, Option<string> Device, Option<int> Threads, Option<float> BnMomentum,
        Option<bool> NoCalibrate, Option<string?> Out, Option<string?> Plot, Option<bool> Json);

    /// <summary>Whether a path is named like a table (.csv or .tsv): only to say, when such a file is read as a word list, that --csv reads tables.</summary>
    public static bool LooksLikeTable(string? path) =>
        path != null && (path.EndsWith(".csv", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".tsv", StringComparison.OrdinalIgnoreCase));

    public static int Run(ParseResult pr, CommonOptions o, TableOptions t, TextWriter stdout, TextWriter stderr, StopRequest stop)
    {
        bool asJson = pr.GetValue(o.Json);
        TextWriter say = asJson ? stderr : stdout;
        string csvPath = pr.GetValue(t.Csv)!;
        string? target = pr.GetValue(t.Target), layersText = pr.GetValue(o.Layers), outPath = pr.GetValue(o.Out), plotPath = pr.GetValue(o.Plot);
        if (string.IsNullOrEmpty(target)) throw new UserErrorException("--csv needs --target NAME: the column to predict.");
        if (layersText == null) throw new UserErrorException("--csv needs --layers: the network as a layer stack that starts with a linear layer taking the table's features, e.g. linear:30x32,relu,linear:32x2 (see docs/stacks.md).");
        if (Inputs.Given(pr, t.Epochs) && Inputs.Given(pr, o.Steps))
            throw new UserErrorException("--epochs and --steps cannot be given together: --epochs trains epochs without replacement, --steps that many steps of uniform draws; give one.");
        int patience = pr.GetValue(t.Patience), batchSize = pr.GetValue(o.Batch);
        if (patience < 0) throw new UserErrorException($"--patience {patience}: must not be negative (0: no early stopping).");
        if (pr.GetValue(t.EvalEvery) is < 1) throw new UserErrorException($"--eval-every {pr.GetValue(t.EvalEvery)}: must be at least 1.");
        if (pr.GetValue(t.Epochs) is < 1) throw new UserErrorException($"--epochs {pr.GetValue(t.Epochs)}: must be at least 1.");
        double devFraction = pr.GetValue(t.Dev), testFraction = pr.GetValue(t.Test);
        if (devFraction + testFraction >= 1) throw new UserErrorException($"--dev {devFraction} and --test {testFraction} leave no rows to train on: their sum must be below 1.");
        if (devFraction == 0)
            foreach (var given in new Option[] { t.Patience, t.EvalEvery })
                if (Inputs.Given(pr, given)) throw new UserErrorException($"{given.Name} and --dev 0 cannot be given together: {given.Name} watches the dev split's loss.");
        int nThreads = pr.GetValue(o.Threads);
        Inputs.CheckExistingFile("--csv", csvPath);
        Inputs.CheckDistinct(("--csv", csvPath), ("--out", outPath), ("--plot", plotPath));
        Inputs.CheckWritable("--out", outPath);
        Inputs.CheckWritable("--plot", plotPath);

        LossKind loss;
        try { loss = Losses.Parse(pr.GetValue(o.Loss)!); }
        catch (FormatException e) { throw new UserErrorException($"--loss {Inputs.Clip(pr.GetValue(o.Loss)!)}: {e.Message}"); }
        var kind = loss switch
        {
            LossKind.CrossEntropy => TableTarget.Classes,
            LossKind.BceWithLogits => TableTarget.Binary,
            LossKind.Mse => TableTarget.Values,
            _ => throw new UserErrorException($"--loss {pr.GetValue(o.Loss)}: a table's target is trained with cross_entropy (class labels), bce_with_logits (two labels) or mse (numbers)."),
        };
        Sequential stack;
        try { stack = Sequential.Parse(layersText); }
        catch (FormatException e) { throw new UserErrorException("--layers: " + e.Message); }
        if (stack.TakesIds) throw new UserErrorException($"--layers: a table's network takes float features, so it starts with a linear layer; layer 0 is {stack.Layers[0]}, which takes ids (use --data for words).");

        string[]? featureNames = pr.GetValue(t.Features) is { } f ? f.Split(',', StringSplitOptions.TrimEntries) : null;
        if (featureNames != null && featureNames.Any(n => n.Length == 0)) throw new UserErrorException($"--features '{Inputs.Clip(pr.GetValue(t.Features)!)}': a column name is empty; give names separated by commas.");
        var sw = Stopwatch.StartNew();
        var table = Table.ReadCsv(csvPath, new Data.TableOptions { Target = target, Features = featureNames, TargetKind = kind });
        double readSeconds = sw.Elapsed.TotalSeconds;
        int d = table.Width;
        int? implied = stack.ImpliedInputWidth();
        if (implied is int w && w != d)
            throw new UserErrorException($"--layers: layer 0 ({stack.Layers[0]}) takes {w} inputs, but the table has {d} feature columns ({Names(table.FeatureNames)}): the first width must be {d}.");
        int outputs = kind == TableTarget.Classes ? table.ClassNames!.Count : 1;
        if (kind == TableTarget.Classes && outputs < 2)
            throw new UserErrorException($"--target {target}: the column holds one label only ({table.ClassNames![0]}): there is nothing to classify.");
        var options = new NetworkOptions
        {
            BatchSize = batchSize, Loss = loss, InputWidth = d, Threads = nThreads, Seed = pr.GetValue(o.Seed), BatchNormMomentum = pr.GetValue(o.BnMomentum), L2 = pr.GetValue(o.L2),
        };
        TensorShape[] shapes;
        try { shapes = Network.Check(stack, options); }
        catch (ArgumentException e) { throw new UserErrorException("--layers: " + TrainCommand.OptionNames(e.Message)); }
        if (shapes[^1].Width != outputs)
            throw new UserErrorException(kind == TableTarget.Classes
                ? $"--layers: the last layer ({stack.Layers[^1]}) gives {shapes[^1].Width} outputs, but the target '{target}' has {outputs} classes ({Names(table.ClassNames!)}): the last width must be {outputs}."
                : $"--layers: the last layer ({stack.Layers[^1]}) gives {shapes[^1].Width} outputs, but {loss.ToText()} on the target '{target}' needs one: the last width must be 1.");

        TableSplit split;
        try { split = TableSplit.Create(table, devFraction, testFraction, pr.GetValue(o.Seed)); }
        catch (ArgumentException e) { throw new UserErrorException($"--csv {Inputs.Clip(csvPath)}: {e.Message.StripParameterName()}"); }
        var scaler = pr.GetValue(t.NoStandardize) ? null : Standardizer.Fit(split.Train);
        ExampleSet train = scaler?.Apply(split.Train) ?? split.Train, dev = scaler?.Apply(split.Dev) ?? split.Dev, test = scaler?.Apply(split.Test) ?? split.Test;
        int perEpoch = train.Count / batchSize;
        bool epochs = !Inputs.Given(pr, o.Steps);
        if (epochs && perEpoch == 0)
            throw new UserErrorException($"--batch {batchSize}: the {train.Count:N0} training rows hold no whole minibatch, so an epoch has no step; lower --batch, or give --steps for uniform draws.");
        int nEpochs = pr.GetValue(t.Epochs) ?? 100;
        long planned = epochs ? (long)nEpochs * perEpoch : pr.GetValue(o.Steps);
        if (planned < 1 || planned > TrainCommand.MaxSteps) throw new UserErrorException($"{(epochs ? $"--epochs {nEpochs} of {perEpoch:N0} steps" : "--steps " + planned)}: the run must take between 1 and {TrainCommand.MaxSteps:N0} steps.");
        int nSteps = (int)planned;
        var (opt, sched) = TrainCommand.OptimizerAndSchedule(pr, o, nSteps);
        options = options with { Optimizer = opt, Schedule = sched };
        bool hasBn = stack.BatchNormLayers().Count > 0, calibrate = hasBn && !pr.GetValue(o.NoCalibrate);
        string Every(int? given) => given is int k ? $"every {k:N0} steps" : epochs ? "every epoch" : $"every {Math.Max(1, perEpoch):N0} steps (an epoch's worth)";
        var fit = new FitOptions
        {
            Steps = nSteps, Seed = pr.GetValue(o.Seed), Order = epochs ? BatchOrder.Epochs : BatchOrder.Uniform,
            Validation = dev.Count > 0 ? dev : null, ValidateEvery = pr.GetValue(t.EvalEvery) ?? 0, Patience = patience, CalibrateBeforeValidation = calibrate,
            ReportEvery = Math.Max(1, nSteps / 200), CancellationToken = stop.Token,
        };

        say.WriteLine($"table: {csvPath}: {table.Count:N0} rows, {d} features, target '{target}': " + (kind == TableTarget.Values ? "numbers" : $"{table.ClassNames!.Count} classes ({Names(table.ClassNames)})") + $" (read in {readSeconds:F2} s)");
        say.WriteLine($"split: train {split.Train.Count:N0}, dev {split.Dev.Count:N0}, test {split.Test.Count:N0} ({(split.Stratified ? "stratified by class, " : "")}seed {pr.GetValue(o.Seed)}); "
            + (scaler != null ? "features standardised with the training rows' mean and standard deviation" : "features as they are (--no-standardize)"));
        using var net = Backends.Create(pr.GetValue(o.Device)!, stack, options, m => say.WriteLine(m));
        net.Initialize(pr.GetValue(o.Seed));
        say.WriteLine($"model: {stack}, n={net.BatchSize}, {net.Parameters.Count:N0} parameters, device {net.Device}");
        say.WriteLine($"training: " + (epochs ? $"{nEpochs:N0} epochs of {perEpoch:N0} steps ({nSteps:N0} steps, each example at most once per epoch)" : $"{nSteps:N0} steps (uniform draws)")
            + $", {opt}, schedule {sched}" + (options.L2 != 0 ? $", l2 {options.L2}" : "")
            + (fit.Validation != null ? $"; dev loss {Every(pr.GetValue(t.EvalEvery))}" + (patience > 0 ? $", early stopping after {patience} without a lower one" : "") + ", the best parameters kept" : "")
            + (calibrate ? "; batch norm calibrated over the training rows before each dev evaluation" : ""));
        var progress = new ProgressPrinter(say, interactive: !asJson && !Console.IsOutputRedirected && ReferenceEquals(stdout, Console.Out));
        stop.Honoured = true;
        sw.Restart();
        TrainingHistory history = net.Fit(train, fit with { Progress = progress.Report });
        double seconds = sw.Elapsed.TotalSeconds;
        progress.Finish();
        if (history.Stop == FitStop.Cancelled)
        {
            stderr.WriteLine($"interrupted at step {history.Steps:N0} of {nSteps:N0}: nothing saved (a table run is not resumed; run it again).");
            return stop.ExitCode;
        }
        if (history.Stop == FitStop.EarlyStopping)
            say.WriteLine($"stopped early at step {history.Steps:N0}: no lower dev loss in {patience} evaluations");
        if (history.Best is { } best)
            say.WriteLine(history.RestoredBest ? $"kept the parameters of step {best.Step:N0}, the lowest dev loss ({best.Loss:F4})" : $"the last step has the lowest dev loss ({best.Loss:F4})");
        say.WriteLine($"trained {history.Steps:N0} steps in {seconds:F2} s ({history.Steps / seconds:N0} steps/s, {seconds * 1e6 / Math.Max(1, history.Steps):F1} µs/step)");
        if (calibrate) net.Calibrate(train);
        net.PullParameters();

        var schema = table.Schema(scaler);
        if (outPath != null)
        {
            var meta = new Dictionary<string, string>
            {
                ["steps"] = history.Steps.ToString(CultureInfo.InvariantCulture),
                ["seed"] = pr.GetValue(o.Seed).ToString(CultureInfo.InvariantCulture),
                ["optimizer"] = opt.ToString(),
                ["schedule"] = sched.ToString(),
                ["l2"] = options.L2.ToString("R", CultureInfo.InvariantCulture),
                ["table"] = csvPath,
                ["split"] = string.Create(CultureInfo.InvariantCulture, $"train {split.Train.Count}, dev {split.Dev.Count}, test {split.Test.Count}, seed {pr.GetValue(o.Seed)}{(split.Stratified ? ", stratified" : "")}"),
                ["bn_calibrated"] = calibrate ? "true" : "false",
            };
            StackCheckpoint.SaveTable(outPath, net, schema, meta);
            say.WriteLine($"saved {outPath}");
        }
        if (plotPath != null)
        {
            float trainLoss = net.Evaluate(train), devLoss = dev.Count > 0 ? net.Evaluate(dev) : float.NaN;
            AtomicFile.Write(plotPath, System.Text.Encoding.UTF8.GetBytes(LossPlot.Render(history.Losses, trainLoss, devLoss, $"HpBackprop: {history.Steps:N0} steps on {Path.GetFileName(csvPath)}, n={net.BatchSize}")));
            say.WriteLine($"plot written to {plotPath}");
        }
        // the metrics last: dev, then test
        var devReport = dev.Count > 0 ? TableReport.Measure(net, dev, schema) : null;
        var testReport = test.Count > 0 ? TableReport.Measure(net, test, schema) : null;
        if (devReport != null) TableReport.Print(say, "dev", devReport, perClass: false);
        if (testReport != null) TableReport.Print(say, "test", testReport, perClass: true);
        if (devReport == null && testReport == null) say.WriteLine("no dev or test rows (--dev 0 --test 0): measure the model with 'hpbackprop eval --model M --csv FILE'.");
        if (asJson)
        {
            var buffer = new MemoryStream();
            using (var j = new Utf8JsonWriter(buffer))
            {
                j.WriteStartObject();
                j.WriteString("table", csvPath); j.WriteNumber("rows", table.Count); j.WriteNumber("features", d); j.WriteString("target", target);
                if (table.ClassNames != null) { j.WriteStartArray("classes"); foreach (var c in table.ClassNames) j.WriteStringValue(c); j.WriteEndArray(); }
                j.WriteNumber("train_rows", split.Train.Count); j.WriteNumber("dev_rows", split.Dev.Count); j.WriteNumber("test_rows", split.Test.Count);
                j.WriteNumber("steps", history.Steps); j.WriteNumber("steps_planned", nSteps);
                j.WriteString("stopped", history.Stop switch { FitStop.EarlyStopping => "early_stopping", _ => "completed" });
                if (history.Best is { } b) j.WriteNumber("best_step", b.Step);
                TrainCommand.WriteRun(j, net, stack, net.Device, nThreads, seconds, history.Steps);
                if (devReport != null) { j.WritePropertyName("dev"); TableReport.Json(j, devReport); }
                if (testReport != null) { j.WritePropertyName("test"); TableReport.Json(j, testReport); }
                j.WriteEndObject();
            }
            stdout.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
        }
        return Program.Ok;
    }

    /// <summary>Labels or names for a message: the first ten, then how many in all.</summary>
    internal static string Names(IReadOnlyList<string> names) =>
        string.Join(", ", names.Take(10).Select(Inputs.Clip)) + (names.Count > 10 ? $", … {names.Count} in all" : "");
}

/// <summary>The metrics of a table model on labelled rows, printed as text or written as JSON (train, eval).</summary>
internal static class TableReport
{
    internal sealed record Report(int Rows, float Loss, ClassificationMetrics? Classes, RegressionMetrics? Values, IReadOnlyList<string>? Labels);

    public static Report Measure(Network net, ExampleSet data, TableSchema schema)
    {
        float loss = net.Evaluate(data);
        if (!float.IsFinite(loss))
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                $"the loss over the {data.Count} rows is {loss}: the inputs are finite, but the model's outputs overflow float on them; nothing to report."));
        return schema.TargetKind == TableTarget.Values
            ? new Report(data.Count, loss, null, RegressionMetrics.Of(net, data), null)
            : new Report(data.Count, loss, ClassificationMetrics.Of(net, data), null, schema.Classes);
    }

    public static void Print(TextWriter w, string name, Report r, bool perClass)
    {
        var c = r.Classes;
        if (c == null)
        {
            var v = r.Values!;
            w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{name}: {r.Rows:N0} rows, loss {r.Loss:F4}, RMSE {v.Rmse:G5}, MAE {v.Mae:G5}, R² {v.R2:F4}"));
            return;
        }
        string auc = c.RocAuc is double a ? string.Create(CultureInfo.InvariantCulture, $", ROC AUC {a:F4}") : "";
        w.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{name}: {r.Rows:N0} rows, loss {r.Loss:F4}, accuracy {c.Accuracy:F4} ({c.Correct:N0}/{c.Count:N0}), macro F1 {c.MacroF1:F4}{auc}"));
        if (!perClass) return;
        var labels = r.Labels!;
        int width = Math.Max(5, labels.Max(l => Inputs.Clip(l).Length));
        w.WriteLine($"{name} per class:");
        w.WriteLine($"  {"class".PadRight(width)}  precision  recall  F1      support");
        for (int k = 0; k < c.Classes; k++)
            w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {Inputs.Clip(labels[k]).PadRight(width)}  {c.Precision[k],9:F4}  {c.Recall[k],6:F4}  {c.F1[k],6:F4}  {c.Support[k],7:N0}"));
        w.WriteLine($"{name} confusion matrix (rows: true class, columns: predicted):");
        int cell = Math.Max(width, c.Confusion.Max(row => row.Max()).ToString(CultureInfo.InvariantCulture).Length);
        w.WriteLine("  " + "".PadRight(width) + string.Concat(labels.Select(l => "  " + Inputs.Clip(l).PadLeft(cell))));
        for (int k = 0; k < c.Classes; k++)
            w.WriteLine("  " + Inputs.Clip(labels[k]).PadRight(width) + string.Concat(c.Confusion[k].Select(x => "  " + x.ToString(CultureInfo.InvariantCulture).PadLeft(cell))));
    }

    public static void Json(Utf8JsonWriter j, Report r)
    {
        j.WriteStartObject();
        j.WriteNumber("rows", r.Rows);
        j.WriteNumber("loss", r.Loss);
        if (r.Classes is { } c)
        {
            j.WriteNumber("accuracy", c.Accuracy); j.WriteNumber("correct", c.Correct); j.WriteNumber("macro_f1", c.MacroF1);
            if (c.RocAuc is double auc) j.WriteNumber("roc_auc", auc);
            Numbers("precision", c.Precision); Numbers("recall", c.Recall); Numbers("f1", c.F1);
            j.WriteStartArray("support"); foreach (int s in c.Support) j.WriteNumberValue(s); j.WriteEndArray();
            j.WriteStartArray("confusion");
            foreach (var row in c.Confusion) { j.WriteStartArray(); foreach (int x in row) j.WriteNumberValue(x); j.WriteEndArray(); }
            j.WriteEndArray();
        }
        else if (r.Values is { } v)
        {
            j.WriteNumber("rmse", v.Rmse); j.WriteNumber("mae", v.Mae); j.WriteNumber("r2", v.R2);
        }
        j.WriteEndObject();

        void Numbers(string name, double[] values)
        {
            j.WriteStartArray(name);
            foreach (double x in values) j.WriteNumberValue(x);
            j.WriteEndArray();
        }
    }
}
