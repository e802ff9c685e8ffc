using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;
using HpBackprop.Networks;
using HpBackprop.Training;

namespace HpBackprop.Tests;

/// <summary>The C# example of docs/stacks.md runs, does what the page says, and is the code below word for word.</summary>
[TestClass]
public sealed partial class DocsExampleTests
{
    [TestMethod]
    public void TheStacksPageExampleLearnsTheLinearFunction()
    {
        // --- example (docs/stacks.md, "From C#") ---
        // y = 3·x0 − 2·x1 + 1 plus noise, learned by a small ReLU network with AdamW
        var rng = new Random(1);
        int count = 4096;
        var x = new float[count * 2];
        var y = new float[count];
        for (int i = 0; i < count; i++)
        {
            x[2 * i] = (float)rng.NextDouble(); x[2 * i + 1] = (float)rng.NextDouble();
            y[i] = 3 * x[2 * i] - 2 * x[2 * i + 1] + 1 + 0.01f * (float)(rng.NextDouble() - 0.5);
        }
        var data = ExampleSet.FromFeatures(x, 2, y, 1);

        var stack = Sequential.Parse("linear:2x32,relu,linear:32x1");
        using var net = Network.Create(stack, new NetworkOptions
        {
            BatchSize = 64,
            Loss = LossKind.Mse,
            Optimizer = new AdamW { LearningRate = 0.01f, WeightDecay = 0 },
            Schedule = new CosineSchedule(Warmup: 100, Total: 3000, MinLr: 0),
        });
        net.Initialize(seed: 1);
        float[] losses = net.Fit(data, steps: 3000);
        Console.WriteLine($"mse {net.Evaluate(data):F5}");

        var prediction = new float[1];
        net.Predict(new float[] { 0.5f, 0.5f }, rows: 1, prediction);   // ≈ 1.5
        // --- end of example ---

        Assert.IsTrue(net.Evaluate(data) < 1e-3, $"mse {net.Evaluate(data)}");
        Assert.AreEqual(1.5f, prediction[0], 0.02f);
        Assert.IsTrue(losses[^1] < losses[0] / 100, $"{losses[0]} → {losses[^1]}");
    }

    [TestMethod]
    public void TheExampleOnThePageIsTheTestedCode()
    {
        string thisFile = SourceFile();
        string page = File.ReadAllText(Path.Combine(Path.GetDirectoryName(thisFile)!, "..", "..", "docs", "stacks.md"));
        var block = CSharpBlock().Match(page);
        Assert.IsTrue(block.Success, "docs/stacks.md has a csharp block");
        string code = string.Join("\n", block.Groups[1].Value.Split('\n').Where(l => !UsingDirective().IsMatch(l)));
        string test = File.ReadAllText(thisFile);
        int a = test.IndexOf("// --- example", StringComparison.Ordinal), b = test.IndexOf("// --- end of example", StringComparison.Ordinal);
        string tested = string.Join("\n", test[a..b].Split('\n').Skip(1));
        Assert.AreEqual(Normalise(code), Normalise(tested), "the page's example and the tested code differ");
    }

    [TestMethod]
    public void TheStacksPageFitExampleStopsEarlyAndClassifies()
    {
        // --- Fit example ---
        // three classes of points around (0, 0), (1, 1) and (2, 0); a dev set evaluated every epoch, early stopping,
        // a progress report every 500 steps, and a token that stops the run at the end of a step
        var rng = new Random(2);
        ExampleSet Points(int count)
        {
            var x = new float[count * 2];
            var y = new int[count];
            for (int i = 0; i < count; i++)
            {
                y[i] = i % 3;
                x[2 * i] = y[i] + 0.4f * (float)(rng.NextDouble() - 0.5);
                x[2 * i + 1] = (y[i] == 1 ? 1 : 0) + 0.4f * (float)(rng.NextDouble() - 0.5);
            }
            return ExampleSet.FromFeatures(x, 2, y);
        }
        ExampleSet train = Points(3000), dev = Points(600);

        using var net = Network.Create(Sequential.Parse("linear:2x16,relu,linear:16x3"),
            new NetworkOptions { BatchSize = 32, Optimizer = new AdamW { LearningRate = 0.01f }, Seed = 1 });
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(10));   // or stop.Cancel() from Console.CancelKeyPress
        TrainingHistory history = net.Fit(train, new FitOptions
        {
            Steps = 5000,
            Order = BatchOrder.Epochs,   // shuffled each epoch, each example once per epoch
            Validation = dev,            // evaluated in inference mode every epoch (ValidateEvery = 0) and after the last step
            Patience = 5,                // stop after 5 evaluations without a lower dev loss; the best parameters are put back
            ReportEvery = 500,
            Progress = p => Console.WriteLine($"step {p.Step}/{p.TotalSteps} loss {p.Loss:F4} dev loss {p.Validation?.Loss:F4}"),
            CancellationToken = stop.Token,
        });
        Console.WriteLine($"{history.Steps} steps ({history.Stop}), best dev loss {history.Best?.Loss:F4} at step {history.Best?.Step}");

        var classes = new int[1];
        net.PredictClasses(new float[] { 2f, 0f }, rows: 1, classes);   // 2
        var metrics = ClassificationMetrics.Of(net, dev);                // accuracy, precision/recall/F1 per class, confusion
        // --- end of Fit example ---

        Assert.AreEqual(2, classes[0]);
        Assert.IsGreaterThan(0.97, metrics.Accuracy);
        Assert.HasCount(history.Steps, history.Losses);
        Assert.AreEqual(history.Best!.Value.Loss, net.Evaluate(dev), "the best parameters are the network's");
    }

    [TestMethod]
    public void TheStacksPageFitExampleIsTheTestedCode()
    {
        string thisFile = SourceFile();
        string page = File.ReadAllText(Path.Combine(Path.GetDirectoryName(thisFile)!, "..", "..", "docs", "stacks.md"));
        var blocks = CSharpBlock().Matches(page);
        Assert.IsGreaterThan(1, blocks.Count, "docs/stacks.md has the Fit example, its second csharp block");
        string code = string.Join("\n", blocks[1].Groups[1].Value.Split('\n').Where(l => !UsingDirective().IsMatch(l)));
        string test = File.ReadAllText(thisFile);
        int a = test.IndexOf("// --- Fit example", StringComparison.Ordinal), b = test.IndexOf("// --- end of Fit example", StringComparison.Ordinal);
        string tested = string.Join("\n", test[a..b].Split('\n').Skip(1));
        Assert.AreEqual(Normalise(code), Normalise(tested), "the page's Fit example and the tested code differ");
    }

    [TestMethod]
    public void TheReadmeExampleLearnsItsFunction()
    {
        // --- README example ---
        // y = 2·x0 − x1 at 1,024 random points, learned by a small ReLU network with AdamW
        var rng = new Random(1);
        float[] x = new float[1024 * 2], y = new float[1024];
        for (int i = 0; i < 1024; i++)
        {
            x[2 * i] = rng.NextSingle(); x[2 * i + 1] = rng.NextSingle();
            y[i] = 2 * x[2 * i] - x[2 * i + 1];
        }
        var stack = Sequential.Parse("linear:2x32,relu,linear:32x1");
        using var net = Network.Create(stack, new NetworkOptions { BatchSize = 64, Loss = LossKind.Mse, Optimizer = new AdamW { LearningRate = 0.01f } });
        net.Initialize(seed: 1);
        float[] losses = net.Fit(ExampleSet.FromFeatures(x, 2, y, 1), steps: 3000);   // or net.Step(features, targets) per minibatch
        Console.WriteLine($"mse {losses[0]:F3} at the first step, {losses[^1]:F5} at the last");
        // --- end of README example ---

        Assert.IsTrue(losses[^1] < 1e-3f, $"{losses[0]} → {losses[^1]}");
        Assert.IsTrue(losses[^1] < losses[0] / 100, $"{losses[0]} → {losses[^1]}");
    }

    /// <summary>
    /// Every C# block of the README and of the HpBackprop package's readme is the code of
    /// <see cref="TheReadmeExampleLearnsItsFunction"/>, word for word (using directives aside), or is made of lines of one of
    /// the example programs (<c>examples/*/Program.cs</c>, which CI builds against the packages and runs), each line word for
    /// word: so the examples a reader copies compile and run.
    /// </summary>
    [TestMethod]
    [DataRow("README.md")]
    [DataRow("docs/packages/HpBackprop.md")]
    public void TheReadmeExamplesAreTheTestedCode(string page)
    {
        string thisFile = SourceFile();
        string text = File.ReadAllText(Path.Combine(Path.GetDirectoryName(thisFile)!, "..", "..", page));
        var blocks = CSharpBlock().Matches(text);
        Assert.IsGreaterThan(0, blocks.Count, page + " has a csharp block");
        string test = File.ReadAllText(thisFile);
        int a = test.IndexOf("// --- README example", StringComparison.Ordinal), b = test.IndexOf("// --- end of README example", StringComparison.Ordinal);
        string tested = Normalise(string.Join("\n", test[a..b].Split('\n').Skip(1)));
        string examples = Path.Combine(Path.GetDirectoryName(thisFile)!, "..", "..", "examples");
        var exampleLines = Directory.GetDirectories(examples).Select(d => Path.Combine(d, "Program.cs")).Where(File.Exists)
            .SelectMany(File.ReadAllLines).Select(Normalise).ToHashSet(StringComparer.Ordinal);
        foreach (Match block in blocks)
        {
            var lines = block.Groups[1].Value.Split('\n').Where(l => !UsingDirective().IsMatch(l)).ToArray();
            if (lines.Where(l => l.Trim().Length > 0).All(l => exampleLines.Contains(Normalise(l)))) continue;
            Assert.AreEqual(tested, Normalise(string.Join("\n", lines)),
                $"a C# block of {page} differs from the tested code of TheReadmeExampleLearnsItsFunction and is not made of lines of an example program");
        }
    }

    private static string SourceFile([CallerFilePath] string path = "") => path;

    private static string Normalise(string s) => Regex.Replace(s, @"\s+", " ").Trim();

    [GeneratedRegex(@"^using [A-Za-z.]+;\s*$")]
    private static partial Regex UsingDirective();

    [GeneratedRegex("```csharp\\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex CSharpBlock();
}
