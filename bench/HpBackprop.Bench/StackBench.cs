using System.Globalization;
using HpBackprop.Model;
using HpBackprop.Networks;

namespace HpBackprop.Bench;

/// <summary>
/// <c>stack [--shapes S,M,L,deep,mlp] [--threads 1,2] [--seconds 2] [--rounds 3]</c>: µs per training step of
/// compiled stacks (Networks.Network), the median and best over the rounds. S, M, L are the makemore shapes,
/// <c>deep</c> the lecture's deeper batch-norm network at n = 32, <c>mlp</c> a float-feature ReLU MLP at n = 256 with
/// cross-entropy, <c>mlp-mse</c> and <c>mlp-bce</c> the same MLP with 10 float targets per row and the mse or
/// bce_with_logits loss.
/// One JSON line per row for bench/baselines/side_by_side.py.
/// </summary>
public static class StackBench
{
    /// <summary>The lecture's deeper network: five linear+batchnorm+tanh blocks of width 100, then linear+batchnorm to 27.</summary>
    public const string Deep = "embedding:27x10,flatten,linear:30x100:nobias,batchnorm:100,tanh,linear:100x100:nobias,batchnorm:100,tanh,"
        + "linear:100x100:nobias,batchnorm:100,tanh,linear:100x100:nobias,batchnorm:100,tanh,linear:100x100:nobias,batchnorm:100,tanh,"
        + "linear:100x27:nobias,batchnorm:27";

    /// <summary>A float-feature MLP.</summary>
    public const string Mlp = "linear:64x256,relu,linear:256x256,relu,linear:256x10";

    public static (string Layers, int N) Get(string shape) => shape switch
    {
        "deep" => (Deep, 32),
        "mlp" or "mlp-mse" or "mlp-bce" => (Mlp, 256),
        _ => (Sequential.Makemore(27, 3, Shapes.Get(shape).EmbeddingSize, Shapes.Get(shape).HiddenSize).ToString(), Shapes.Get(shape).BatchSize),
    };

    /// <summary>The loss a shape trains with.</summary>
    public static LossKind LossOf(string shape) => shape switch { "mlp-mse" => LossKind.Mse, "mlp-bce" => LossKind.BceWithLogits, _ => LossKind.CrossEntropy };

    public static int Run(string[] args)
    {
        var threads = Program.Opt(args, "--threads", "1,2").Split(',').Select(int.Parse).ToArray();
        var shapes = Program.Opt(args, "--shapes", "S,M,L,deep,mlp").Split(',');
        double seconds = double.Parse(Program.Opt(args, "--seconds", "2"), CultureInfo.InvariantCulture);
        int rounds = int.Parse(Program.Opt(args, "--rounds", "3"), CultureInfo.InvariantCulture);
        Console.WriteLine("| shape | stack | n | threads | µs/step (median, best) |");
        Console.WriteLine("|---|---|---|---|---|");
        var json = new List<string>();
        foreach (var s in shapes)
        {
            var (layers, n) = Get(s);
            foreach (int t in threads)
            {
                using var net = Make(layers, n, t, out var stepNet, loss: LossOf(s));
                var a = new List<double>();
                double aMin = double.MaxValue;
                double secs = n >= 4096 ? seconds * 3 : seconds;
                for (int r = 0; r < rounds; r++)
                {
                    var (m1, b1) = Program.Time(stepNet, secs / rounds);
                    a.Add(m1); aMin = Math.Min(aMin, b1);
                }
                double am = Median(a);
                Console.WriteLine($"| {s} | `{(layers.Length > 60 ? layers[..57] + "..." : layers)}` | {n} | {t} | {am:F1} ({aMin:F1}) |");
                var inv = CultureInfo.InvariantCulture;
                json.Add($"{{\"side\":\"hpbackprop\",\"shape\":\"{s}\",\"threads\":{t},\"us_median\":{am.ToString("F2", inv)},\"us_min\":{aMin.ToString("F2", inv)}}}");
            }
        }
        foreach (var j in json) Console.WriteLine("JSON " + j);
        return 0;
    }

    /// <summary><c>stack-stages [--shapes deep] [--threads 1]</c>: µs of each fused op's forward and backward, and of the whole step.</summary>
    public static unsafe int Stages(string[] args)
    {
        int threads = int.Parse(Program.Opt(args, "--threads", "1"), CultureInfo.InvariantCulture);
        foreach (var s in Program.Opt(args, "--shapes", "deep").Split(','))
        {
            var (layers, n) = Get(s);
            using var net = Make(layers, n, threads, out var step, loss: LossOf(s));
            var (whole, best) = Program.Time(step, 2);
            var r = new Random(1);
            var ids = new int[n * net.InputWidth];
            var feats = new float[n * net.InputWidth];
            for (int i = 0; i < ids.Length; i++) { ids[i] = r.Next(net.Stack.TakesIds ? net.Stack.Layers[0].In : 1); feats[i] = (float)r.NextDouble(); }
            step();
            (string Pattern, double ForwardUs, double BackwardUs)[] ops = [];
            double bestSum = double.MaxValue;
            for (int w = 0; w < 30; w++)
            {
                fixed (int* pi = ids) fixed (float* pf = feats)
                {
                    var o = net.ProfileOps(net.Stack.TakesIds ? pi : null, net.Stack.TakesIds ? null : pf, 200);
                    double sum = o.Sum(x => x.ForwardUs + x.BackwardUs);
                    if (sum < bestSum) { bestSum = sum; ops = o; }
                }
            }
            Console.WriteLine($"{s} (n = {n}, {threads} thread(s)): whole step {whole:F1} µs median, {best:F1} best; ops (best of 30 windows of 200 calls):");
            Console.WriteLine("| op | forward µs | backward µs |");
            Console.WriteLine("|---|---|---|");
            foreach (var (p, f, b) in ops) Console.WriteLine($"| {p} | {f:F2} | {b:F2} |");
            Console.WriteLine($"| sum of ops | {ops.Sum(x => x.ForwardUs):F1} | {ops.Sum(x => x.BackwardUs):F1} |");
        }
        return 0;
    }

    private static double Median(List<double> v) { var s = v.OrderBy(x => x).ToArray(); return s[s.Length / 2]; }

    /// <summary>A compiled stack with one fixed random minibatch, and the action that runs one step on it.</summary>
    public static Network Make(string layers, int n, int threads, out Action step, int seed = 42, LossKind loss = LossKind.CrossEntropy)
    {
        var stack = Sequential.Parse(layers);
        var net = Network.Create(stack, new NetworkOptions { BatchSize = n, Threads = threads, Loss = loss, Optimizer = new Sgd { LearningRate = 0.01f } });
        net.Initialize(seed);
        var r = new Random(seed);
        int w = net.InputWidth, k = net.OutputWidth;
        var y = new int[n];
        for (int i = 0; i < n; i++) y[i] = r.Next(k);
        if (loss != LossKind.CrossEntropy)
        {
            // float features and n·k float targets (0 or 1 for bce_with_logits)
            var xf = new float[n * w];
            var t = new float[n * k];
            var g = new NormalRng(seed);
            for (int i = 0; i < xf.Length; i++) xf[i] = (float)g.Next();
            for (int i = 0; i < t.Length; i++) t[i] = loss == LossKind.Mse ? (float)g.Next() : r.Next(2);
            step = () => net.Step(xf, t);
            return net;
        }
        if (stack.TakesIds)
        {
            var x = new int[n * w];
            for (int i = 0; i < x.Length; i++) x[i] = r.Next(stack.Layers[0].In);
            step = () => net.Step(x, y);
        }
        else
        {
            var x = new float[n * w];
            var rng = new NormalRng(seed);
            for (int i = 0; i < x.Length; i++) x[i] = (float)rng.Next();
            step = () => net.Step(x, y);
        }
        return net;
    }
}
