// Regression on float features: a small ReLU network learns y = sin(3·x0) + x1² from noisy
// samples, with the mean squared error and AdamW under a cosine schedule.
//
//   dotnet run -- [--steps N]
using HpBackprop.Networks;

int steps = args.Length == 2 && args[0] == "--steps" ? int.Parse(args[1]) : 4000;

static float Target(float a, float b) => MathF.Sin(3 * a) + b * b;

var rng = new Random(7);
int count = 8192;
var x = new float[count * 2];
var y = new float[count];
for (int i = 0; i < count; i++)
{
    float a = 2 * rng.NextSingle() - 1, b = 2 * rng.NextSingle() - 1;
    x[2 * i] = a; x[2 * i + 1] = b;
    y[i] = Target(a, b) + 0.02f * (rng.NextSingle() - 0.5f);
}
// the first 7/8 train, the rest measures
int trainCount = count / 8 * 7;
var train = ExampleSet.FromFeatures(x[..(2 * trainCount)], 2, y[..trainCount], 1);
var test = ExampleSet.FromFeatures(x[(2 * trainCount)..], 2, y[trainCount..], 1);

using var net = Network.Create(Sequential.Parse("linear:2x64,relu,linear:64x64,relu,linear:64x1"), new NetworkOptions
{
    BatchSize = 128,
    Loss = LossKind.Mse,
    Optimizer = new AdamW { LearningRate = 0.003f, WeightDecay = 0.0001f },
    Schedule = new CosineSchedule(Warmup: 100, Total: steps, MinLr: 0),
});
net.Initialize(seed: 1);
float[] losses = net.Fit(train, steps);
Console.WriteLine($"{steps} steps: first minibatch mse {losses[0]:F4}, last {losses[^1]:F4}");
Console.WriteLine($"test mse {net.Evaluate(test):F5}  (the variance of y is about 0.6)");

var output = new float[3];
float[] points = [0f, 0f, 0.5f, 0.5f, -0.5f, 1f];
net.Predict(points, rows: 3, output);                        // a regression output is the output itself
for (int r = 0; r < 3; r++)
    Console.WriteLine($"f({points[2 * r]}, {points[2 * r + 1]}) = {output[r]:F3}  (true {Target(points[2 * r], points[2 * r + 1]):F3})");
