// A tabular classifier from a CSV file, as a program would train one on its own data: the example
// first writes a table of made-up measurements of three kinds of seeds (no data is fetched), then
// reads it by its header, splits it (seeded, stratified by class), standardises the features with
// the training rows' mean and standard deviation, trains with a validation set and early stopping,
// and reports the test accuracy, per-class precision/recall/F1 and the confusion matrix. The model
// is saved with its columns, labels and scaler, loaded back and used on new rows.
//
//   dotnet run -- [--epochs N]
using System.Globalization;
using System.Text;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Networks;
using HpBackprop.Training;

int epochs = args.Length == 2 && args[0] == "--epochs" ? int.Parse(args[1], CultureInfo.InvariantCulture) : 200;
string dir = Path.Combine(Path.GetTempPath(), "hpbackprop-tabular");
Directory.CreateDirectory(dir);
string csv = Path.Combine(dir, "seeds.csv");

// 1. the table: 600 seeds of three kinds, four measurements each on very different scales
string[] kinds = ["kama", "rosa", "canadian"];
var rng = new Random(7);
double Normal() => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
var text = new StringBuilder("area_mm2,length_mm,groove_um,density,kind\n");
for (int i = 0; i < 600; i++)
{
    int k = i % 3;
    double area = 14 + 3 * k + 1.2 * Normal(), length = 5.4 + 0.4 * k - 0.2 * (k == 2 ? 1 : 0) + 0.3 * Normal();
    double groove = 5000 + 400 * (k == 1 ? 1 : 0) - 300 * (k == 2 ? 1 : 0) + 250 * Normal(), density = 0.87 + 0.01 * Normal();
    text.Append(CultureInfo.InvariantCulture, $"{area:F3},{length:F3},{groove:F1},{density:F4},{kinds[k]}\n");
}
File.WriteAllText(csv, text.ToString());

// 2. read it by its header: the target by name, every other column a feature; the labels are mapped to ids 0…K−1
var table = Table.ReadCsv(csv, new TableOptions { Target = "kind" });
Console.WriteLine($"{table.Count} rows, features {string.Join(", ", table.FeatureNames)}, classes {string.Join(", ", table.ClassNames!)}");

// 3. a seeded split, stratified by class; the scaler is fitted on the training rows only and applied to all three
var split = TableSplit.Create(table, devFraction: 0.15, testFraction: 0.15, seed: 1);
var scaler = Standardizer.Fit(split.Train);
ExampleSet train = scaler.Apply(split.Train), dev = scaler.Apply(split.Dev), test = scaler.Apply(split.Test);
Console.WriteLine($"split: train {train.Count}, dev {dev.Count}, test {test.Count}");

// 4. a network that starts with a linear layer taking the features; Create initialises it from the options' seed
using var net = Network.Create(Sequential.Parse($"linear:{table.Width}x32,relu,linear:32x{table.ClassNames!.Count}"), new NetworkOptions
{
    BatchSize = 32,
    Optimizer = new AdamW { LearningRate = 0.003f },
    Seed = 1,
});

// 5. epochs without replacement, the dev loss every epoch, early stopping after 10 epochs without a lower one;
//    the parameters of the best epoch are put back at the end
int perEpoch = train.Count / net.BatchSize;
var history = net.Fit(train, new FitOptions
{
    Steps = epochs * perEpoch,
    Order = BatchOrder.Epochs,
    Validation = dev,
    Patience = 10,
    ReportEvery = 20 * perEpoch,
    Progress = p => Console.WriteLine($"step {p.Step,5}: loss {p.Loss:F4}, dev loss {p.Validation?.Loss:F4}, dev accuracy {p.Validation?.Accuracy:P1}"),
});
Console.WriteLine($"{history.Steps} steps ({history.Stop}); best dev loss {history.Best!.Value.Loss:F4} at step {history.Best.Value.Step}");

// 6. the test metrics
var m = ClassificationMetrics.Of(net, test);
Console.WriteLine($"test accuracy {m.Accuracy:P1} ({m.Correct}/{m.Count}), macro F1 {m.MacroF1:F3}");
for (int k = 0; k < m.Classes; k++)
    Console.WriteLine($"  {table.ClassNames[k],-9} precision {m.Precision[k]:F3} recall {m.Recall[k]:F3} F1 {m.F1[k]:F3}  confusion row {string.Join(" ", m.Confusion[k])}");

// 7. saved with its columns, labels and scaler; loaded back, it predicts new rows given in the file's units
string model = Path.Combine(dir, "seeds.safetensors");
StackCheckpoint.SaveTable(model, net, table.Schema(scaler));
var loaded = StackCheckpoint.Load(model);
using var again = loaded.Network;
var schema = loaded.Table!;
float[] rows = [15.1f, 5.5f, 5050f, 0.87f, 19.8f, 6.0f, 5420f, 0.88f];
schema.Scaler!.Transform(rows);
var predicted = new int[2];
again.PredictClasses(rows, 2, predicted);
Console.WriteLine($"new rows: {schema.Classes![predicted[0]]}, {schema.Classes[predicted[1]]}");
