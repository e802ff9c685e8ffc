// Binary classification: is a point inside the circle of radius 0.6? A network with one
// logit learns it with binary cross-entropy on the logits (BCE-with-logits) and SGD with
// momentum; Predict gives the probability (the sigmoid of the logit).
//
//   dotnet run -- [--steps N]
using HpBackprop.Networks;

int steps = args.Length == 2 && args[0] == "--steps" ? int.Parse(args[1]) : 3000;

static float Label(float a, float b) => a * a + b * b < 0.36f ? 1f : 0f;

var rng = new Random(3);
(ExampleSet set, float[] x, float[] y) Draw(int count)
{
    var x = new float[count * 2];
    var y = new float[count];
    for (int i = 0; i < count; i++)
    {
        float a = 2 * rng.NextSingle() - 1, b = 2 * rng.NextSingle() - 1;
        x[2 * i] = a; x[2 * i + 1] = b;
        y[i] = Label(a, b);
    }
    return (ExampleSet.FromFeatures(x, 2, y, 1), x, y);
}
var (train, _, _) = Draw(8192);
var (test, tx, ty) = Draw(2048);

using var net = Network.Create(Sequential.Parse("linear:2x32,tanh,linear:32x32,tanh,linear:32x1"), new NetworkOptions
{
    BatchSize = 64,
    Loss = LossKind.BceWithLogits,
    Optimizer = new Sgd { LearningRate = 0.1f, Momentum = 0.9f },
});
net.Initialize(seed: 1);
float[] losses = net.Fit(train, steps);
Console.WriteLine($"{steps} steps: first minibatch loss {losses[0]:F4}, last {losses[^1]:F4}; test loss {net.Evaluate(test):F4}");

var p = new float[ty.Length];
net.Predict(tx, rows: ty.Length, p);                        // probabilities, sigmoid(logit)
int correct = 0;
for (int i = 0; i < ty.Length; i++) if ((p[i] > 0.5f ? 1f : 0f) == ty[i]) correct++;
Console.WriteLine($"test accuracy {100.0 * correct / ty.Length:F1}% of {ty.Length} points");
