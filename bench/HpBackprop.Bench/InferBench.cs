using System.Diagnostics;
using System.Globalization;
using HpBackprop.Model;
using HpBackprop.Networks;
using HpBackprop.Onnx;
using Microsoft.ML.OnnxRuntime;

namespace HpBackprop.Bench;

/// <summary>
/// <c>infer [--shapes makemore,mlp] [--threads 1,2] [--batches 1,32,4096] [--windows 41] [--window-ms 40]</c>: µs per batch of
/// predictions through <see cref="Network.Predict(ReadOnlySpan{float}, int, Span{float}, bool)"/> and through ONNX Runtime
/// running the network's ONNX export (<see cref="OnnxExport"/>) with the same number of threads (ONNX Runtime's intra-op
/// threads; one inter-op thread, sequential execution, every graph optimisation). Both give the probabilities (the softmax of
/// the logits) into a buffer allocated once; ONNX Runtime gets the input as an <see cref="OrtValue"/> over a pinned array made
/// once (int64 ids or float features, as the model declares) and writes into a pre-allocated output, so neither side
/// allocates per call or converts the input in the timed loop. The two sides alternate, window by window (each window a
/// mean over many calls), so that the shared machine's load falls on both alike; the ratio is the median over the window
/// pairs of ONNX Runtime's time over Predict's (above 1: Predict is faster), and the ratio of the two sides' best windows (the
/// least disturbed estimate of each: on a loaded machine the medians carry the other processes' load, unequally when one side
/// waits for its second thread to be scheduled).
/// <c>makemore</c> is the lecture's MLP (<c>embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x27</c>,
/// ids [n,3]), <c>mlp</c> <see cref="StackBench.Mlp"/> (float features [n,64]); both with cross-entropy, random parameters
/// and running statistics. One JSON line per row.
/// </summary>
public static class InferBench
{
    public static int Run(string[] args)
    {
        var threads = Program.Opt(args, "--threads", "1,2").Split(',').Select(int.Parse).ToArray();
        var shapes = Program.Opt(args, "--shapes", "makemore,mlp").Split(',');
        var batches = Program.Opt(args, "--batches", "1,32,4096").Split(',').Select(int.Parse).ToArray();
        int windows = int.Parse(Program.Opt(args, "--windows", "41"), CultureInfo.InvariantCulture);
        double windowSeconds = double.Parse(Program.Opt(args, "--window-ms", "40"), CultureInfo.InvariantCulture) / 1000;
        Console.WriteLine($"{Environment.ProcessorCount} logical processors; ONNX Runtime {OrtEnv.Instance().GetVersionString()}; {windows} alternating windows of about {windowSeconds * 1000:F0} ms per side");
        Console.WriteLine("| stack | batch | threads | Predict µs (median, best) | ONNX Runtime µs (median, best) | ONNX Runtime / Predict: median of pairs, best windows |");
        Console.WriteLine("|---|---|---|---|---|---|");
        var json = new List<string>();
        var inv = CultureInfo.InvariantCulture;
        foreach (var shape in shapes)
        {
            string layers = shape switch
            {
                "makemore" => Sequential.Makemore(27, 3, 10, 200).ToString(),
                "mlp" => StackBench.Mlp,
                _ => throw new ArgumentException($"--shapes: unknown shape '{shape}' (makemore, mlp)"),
            };
            foreach (int t in threads)
            {
                using var net = Network.Create(Sequential.Parse(layers), new NetworkOptions { BatchSize = 32, Threads = t, Loss = LossKind.CrossEntropy });
                net.Initialize(seed: 1);
                RandomStatistics(net, new Random(2));
                byte[] model = OnnxExport.ToBytes(net);
                using var options = new SessionOptions
                {
                    IntraOpNumThreads = t,
                    InterOpNumThreads = 1,
                    ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
                    GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
                    LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
                };
                using var session = new InferenceSession(model, options);
                using var runOptions = new RunOptions();
                foreach (int n in batches)
                {
                    int w = net.InputWidth, k = net.OutputWidth;
                    var rng = new Random(n);
                    var predicted = new float[n * k];
                    var fromOrt = new float[n * k];
                    Action predict;
                    OrtValue input;
                    if (net.Stack.TakesIds)
                    {
                        var ids = new int[n * w];
                        for (int i = 0; i < ids.Length; i++) ids[i] = rng.Next(net.Stack.Layers[0].In);
                        input = OrtValue.CreateTensorValueFromMemory(ids.Select(i => (long)i).ToArray(), [n, w]);
                        predict = () => net.Predict(ids, n, predicted);
                    }
                    else
                    {
                        var x = new float[n * w];
                        var g = new NormalRng(n);
                        for (int i = 0; i < x.Length; i++) x[i] = (float)g.Next();
                        input = OrtValue.CreateTensorValueFromMemory(x, [n, w]);
                        predict = () => net.Predict(x, n, predicted);
                    }
                    using var inputValue = input;
                    using var output = OrtValue.CreateTensorValueFromMemory(fromOrt, [n, k]);
                    string[] inputNames = [OnnxExport.InputName], outputNames = [OnnxExport.ProbabilitiesName];
                    OrtValue[] inputValues = [inputValue], outputValues = [output];
                    Action ort = () => session.Run(runOptions, inputNames, inputValues, outputNames, outputValues);

                    // the same answer first (a benchmark of a wrong result is no benchmark)
                    predict(); ort();
                    float diff = 0;
                    for (int i = 0; i < predicted.Length; i++) diff = MathF.Max(diff, MathF.Abs(predicted[i] - fromOrt[i]));
                    if (diff > 1e-4f) throw new InvalidOperationException($"{shape} at batch {n}: ONNX Runtime and Predict differ by {diff}");

                    var (p, o) = Alternate(predict, ort, windows, windowSeconds);
                    var ratios = p.Zip(o, (a, b) => b / a).ToArray();
                    double pm = Median(p), om = Median(o), rm = Median(ratios);
                    double rb = o.Min() / p.Min();
                    Console.WriteLine($"| {shape} | {n:N0} | {t} | {pm:F1} ({p.Min():F1}) | {om:F1} ({o.Min():F1}) | {rm:F2}, {rb:F2} |");
                    json.Add(string.Create(inv, $"{{\"bench\":\"infer\",\"shape\":\"{shape}\",\"batch\":{n},\"threads\":{t},\"predict_us_median\":{pm:F2},\"predict_us_min\":{p.Min():F2},\"ort_us_median\":{om:F2},\"ort_us_min\":{o.Min():F2},\"ratio_median\":{rm:F3},\"ratio_best\":{rb:F3}}}"));
                }
            }
        }
        foreach (var j in json) Console.WriteLine("JSON " + j);
        return 0;
    }

    /// <summary>
    /// µs per call of <paramref name="a"/> and of <paramref name="b"/> in <paramref name="windows"/> window pairs, a window of
    /// each in turn (which goes first alternates too), after half a second of warm-up of each (so the JIT has tiered up).
    /// </summary>
    private static (double[] A, double[] B) Alternate(Action a, Action b, int windows, double windowSeconds)
    {
        int Reps(Action f)
        {
            var sw = Stopwatch.StartNew();
            int calls = 0;
            while (sw.Elapsed.TotalSeconds < 0.5 || calls < 5) { f(); calls++; }
            return Math.Max(1, (int)(windowSeconds / (sw.Elapsed.TotalSeconds / calls)));
        }
        int ra = Reps(a), rb = Reps(b);
        var ta = new double[windows];
        var tb = new double[windows];
        var timer = new Stopwatch();
        double Window(Action f, int reps)
        {
            timer.Restart();
            for (int r = 0; r < reps; r++) f();
            return timer.Elapsed.TotalMicroseconds / reps;
        }
        for (int w = 0; w < windows; w++)
        {
            if (w % 2 == 0) { ta[w] = Window(a, ra); tb[w] = Window(b, rb); }
            else { tb[w] = Window(b, rb); ta[w] = Window(a, ra); }
        }
        return (ta, tb);
    }

    /// <summary>Running statistics that are not the initial 0 and 1, so batch norm does real work in both.</summary>
    private static void RandomStatistics(Network net, Random rng)
    {
        for (int i = 0; i < net.Stack.Layers.Count; i++)
        {
            if (net.Stack.Layers[i].Kind != LayerKind.BatchNorm) continue;
            var mean = net.Parameters.Value($"{i}.running_mean");
            var variance = net.Parameters.Value($"{i}.running_var");
            for (int j = 0; j < mean.Length; j++) { mean[j] = (float)(rng.NextDouble() - 0.5); variance[j] = (float)(0.5 + rng.NextDouble()); }
        }
        net.PushParameters();
    }

    private static double Median(IEnumerable<double> v) { var s = v.OrderBy(x => x).ToArray(); return s[s.Length / 2]; }
}
