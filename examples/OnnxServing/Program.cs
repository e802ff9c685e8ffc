// Train here, serve anywhere: a three-class classifier trained with HpBackprop, exported as ONNX
// and scored three ways: Network.Predict, ML.NET's ApplyOnnxModel and ONNX Runtime on its own.
// The points are drawn here: (a, b) in the square [-1, 1]², labelled by the third of the circle
// their angle falls in (0: 0°-120°, 1: 120°-240°, 2: 240°-360°).
//
//   dotnet run -- [--steps N] [--out model.onnx]
using HpBackprop.Networks;
using HpBackprop.Onnx;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;

int steps = 3000;
string path = Path.Combine(Path.GetTempPath(), "hpbackprop-onnx-serving.onnx");
for (int i = 0; i + 1 < args.Length; i += 2)
{
    if (args[i] == "--steps") steps = int.Parse(args[i + 1]);
    else if (args[i] == "--out") path = args[i + 1];
    else { Console.Error.WriteLine($"unknown option {args[i]}; usage: [--steps N] [--out model.onnx]"); return 2; }
}

const int Classes = 3;
static int Label(float a, float b) => (int)((MathF.Atan2(b, a) + 2 * MathF.PI) % (2 * MathF.PI) / (2 * MathF.PI / Classes)) % Classes;

var rng = new Random(7);
(ExampleSet set, float[] x, int[] y) Draw(int count)
{
    var x = new float[count * 2];
    var y = new int[count];
    for (int i = 0; i < count; i++)
    {
        float a = 2 * rng.NextSingle() - 1, b = 2 * rng.NextSingle() - 1;
        (x[2 * i], x[2 * i + 1], y[i]) = (a, b, Label(a, b));
    }
    return (ExampleSet.FromFeatures(x, 2, y), x, y);
}
var (train, _, _) = Draw(8192);
var (_, tx, ty) = Draw(1000);
int rows = ty.Length;

// 1. train with HpBackprop, then set the batch norm's running statistics from the training set
using var net = Network.Create(Sequential.Parse("linear:2x64,batchnorm:64,tanh,linear:64x3"), new NetworkOptions
{
    BatchSize = 64,
    Loss = LossKind.CrossEntropy,
    Optimizer = new AdamW { LearningRate = 0.01f },
});
net.Initialize(seed: 1);
float[] losses = net.Fit(train, steps);
net.Calibrate(train);
Console.WriteLine($"{steps} steps: first minibatch loss {losses[0]:F4}, last {losses[^1]:F4}");

var predicted = new float[rows * Classes];
net.Predict(tx, rows, predicted);                          // probabilities: the softmax of the logits
Console.WriteLine($"Predict:      test accuracy {Accuracy(predicted):F1}% of {rows} points");

// 2. export (the README quotes these lines)
OnnxExportSummary summary = OnnxExport.Save(net, path);                          // input "input" float [N,2]; outputs "logits", "probabilities" float [N,3]
Console.WriteLine($"exported {path}: {summary}");

// 3. ML.NET: ApplyOnnxModel in a pipeline; ML.NET scores one row at a time (the batch dimension N is 1)
var ml = new MLContext(seed: 0);
IDataView points = ml.Data.LoadFromEnumerable(Enumerable.Range(0, rows).Select(i => new Point { Input = [tx[2 * i], tx[2 * i + 1]] }));
var pipeline = ml.Transforms.ApplyOnnxModel(["probabilities"], ["input"], path);  // ML.NET: a pipeline step, one row at a time
IDataView scored = pipeline.Fit(points).Transform(points);                        // points: an IDataView with a float[2] column "input"
float[] fromMlNet = ml.Data.CreateEnumerable<Scored>(scored, reuseRowObject: false).SelectMany(s => s.Probabilities).ToArray();
Console.WriteLine($"ML.NET:       test accuracy {Accuracy(fromMlNet):F1}%, largest difference from Predict {Largest(fromMlNet):G2}");

// 4. ONNX Runtime on its own: the whole test set as one batch of 1,000 rows
using var input = OrtValue.CreateTensorValueFromMemory(tx, [rows, 2]);
using var session = new InferenceSession(path);                                   // ONNX Runtime on its own
using var outputs = session.Run(new RunOptions(), ["input"], [input], ["probabilities"]);  // a whole batch: input is an OrtValue [rows,2]
float[] fromOrt = outputs[0].GetTensorDataAsSpan<float>().ToArray();
Console.WriteLine($"ONNX Runtime: test accuracy {Accuracy(fromOrt):F1}%, largest difference from Predict {Largest(fromOrt):G2}");

// float32 rounding apart (the operations are summed in other orders), the three give the same probabilities: this run
// measured differences of 3.6e-7; the bound is ten times that. A wrong export moves them by far more (the library's
// tests hold every exported stack to a tolerance derived from Predict's own float32 error).
const float Agree = 4e-6f;
bool same = Largest(fromMlNet) <= Agree && Largest(fromOrt) <= Agree;
Console.WriteLine(same ? $"all three agree within {Agree:G2}" : $"the outputs differ by more than {Agree:G2}");
return same ? 0 : 1;

double Accuracy(float[] p)
{
    int correct = 0;
    for (int i = 0; i < rows; i++)
    {
        var row = p.AsSpan(i * Classes, Classes);
        int best = 0;
        for (int c = 1; c < Classes; c++) if (row[c] > row[best]) best = c;
        if (best == ty[i]) correct++;
    }
    return 100.0 * correct / rows;
}

float Largest(float[] p)
{
    if (p.Length != predicted.Length) return float.PositiveInfinity;
    float worst = 0;
    for (int i = 0; i < p.Length; i++) worst = MathF.Max(worst, MathF.Abs(p[i] - predicted[i]));
    return worst;
}

/// <summary>A row of ML.NET's input: the model's input column, two features.</summary>
sealed class Point
{
    [ColumnName("input"), VectorType(2)]
    public float[] Input { get; set; } = [];
}

/// <summary>A row of ML.NET's output: the model's probabilities column.</summary>
sealed class Scored
{
    [ColumnName("probabilities"), VectorType(Classes)]
    public float[] Probabilities { get; set; } = [];

    private const int Classes = 3;
}
