using System.Globalization;
using HpBackprop.Networks;
using HpBackprop.Onnx;
using HpBackprop.Reference;
using Microsoft.ML.OnnxRuntime;

namespace HpBackprop.Tests;

/// <summary>
/// Runs an exported ONNX model in ONNX Runtime beside <see cref="Network.Predict(ReadOnlySpan{float}, int, Span{float}, bool)"/>
/// and the double-precision reference (<see cref="StackReference{T}.Forward"/>, inference mode) on the same input, and holds
/// ONNX Runtime's outputs to Predict's with a tolerance derived from Predict's own measured float32 error.
/// </summary>
/// <remarks>
/// <para>The tolerance. For each output (<c>logits</c>, and <c>probabilities</c> where the loss has a link) the test first
/// measures Predict's own float32 error on that network: <c>e = max|Predict − exact|</c> over 1,000 random rows, exact being the
/// double reference on the same float parameters (<see cref="Noise"/>). ONNX Runtime computes the same formulas in float32 with
/// other summation orders and its own exp, tanh and sigmoid, so its error against the exact result is of the same size, and
/// <c>|ORT − Predict| ≤ |ORT − exact| + e</c>. The tolerance, at every batch size, is <c>Factor · max(e, ulp) · κ</c>: ulp is one
/// float32 unit in the last place of the output's largest magnitude over those rows (<c>2⁻²³·max|exact|</c>: where Predict is
/// exact to the last bit, a bare activation, e is 0 and ONNX Runtime may still round once); κ is 1 without layer norm and
/// otherwise the accuracy ONNX Runtime's layer norm loses to its one-pass variance on these rows (<see cref="LayerNormKappa"/>).</para>
/// <para>The error is measured on 1,000 rows, not on the compared batch, because the largest error of one or seven rows is a
/// small sample: Predict may by chance be exact on them while ONNX Runtime is not. <see cref="Factor"/> = 8, from the measured
/// ratios |ORT − Predict| / (max(e, ulp)·κ): over 2,000 random stacks (<c>HPB_ONNX_RANDOM_STACKS=2000</c>; every layer kind and
/// loss, epsilons 1e-5, 1e-3 and 0.1, a random opset each) at batch sizes 1, 7 and 1,000, 9,517 outputs, the median was 0.46,
/// the 99.9th percentile 2.1 and the largest 2.9 (without κ the largest was 14.5: a layer norm of a sigmoid's outputs). A wrong
/// export moves an output by at least 27 times that level (a batch-norm epsilon ten times too large, on the probabilities; 89 on
/// the logits) and by millions for a transposed weight or softmax over the batch: see
/// <c>OnnxExportTests.ABrokenExportFailsTheComparison</c>. <see cref="Worst"/> keeps the largest ratio of a run.</para>
/// </remarks>
internal static class OnnxParity
{
    /// <summary>How many times Predict's own float32 error (or one ulp) ONNX Runtime may differ from Predict by.</summary>
    public const double Factor = 8;

    /// <summary>The largest |ORT − Predict| / max(e, ulp) seen in this process, and where.</summary>
    public static (double Ratio, string Where) Worst { get; private set; }

    private static readonly object Gate = new();

    /// <summary>One output's measurement: the difference and the noise level (Predict's own error on 1,000 rows, or one ulp) it is held to.</summary>
    public sealed record Measured(string Output, double OursError, double Ulp, double Kappa, double Difference)
    {
        /// <summary>|ORT − Predict| over the noise level, max(e, ulp)·κ.</summary>
        public double Ratio => Difference / (Math.Max(OursError, Ulp) * Kappa);

        public double Tolerance => Factor * Math.Max(OursError, Ulp) * Kappa;

        public bool Within => Difference <= Tolerance;

        public override string ToString() => string.Create(CultureInfo.InvariantCulture,
            $"{Output}: |ORT − Predict| {Difference:G3}, Predict's own error {OursError:G3} (ulp {Ulp:G3}, layer-norm κ {Kappa:G3}), tolerance {Tolerance:G3}, ratio {Ratio:F2}");
    }

    /// <summary>
    /// Predict's float32 error level on a network, per output: the largest |Predict − exact| over 1,000 random rows, and one
    /// ulp of the largest |exact|; and κ, the layer norms' cancellation factor (1 without layer norm).
    /// </summary>
    public sealed record NoiseLevel((double Error, double Ulp) Logits, (double Error, double Ulp) Probabilities, double Kappa);

    /// <summary>Measures <see cref="NoiseLevel"/> on 1,000 random rows.</summary>
    public static NoiseLevel Noise(Network net, Random rng) => Noise(Prepare(net, 1000, rng));

    /// <summary>
    /// <see cref="NoiseLevel"/> on 1,000 random rows and on <paramref name="rows"/> (rows of a table, standardised), whichever is
    /// larger per output: the rows a table test compares need not look like N(0,1) draws.
    /// </summary>
    public static NoiseLevel Noise(Network net, Random rng, Rows rows)
    {
        NoiseLevel a = Noise(net, rng), b = Noise(rows);
        static (double, double) Max((double E, double U) x, (double E, double U) y) => (Math.Max(x.E, y.E), Math.Max(x.U, y.U));
        return new NoiseLevel(Max(a.Logits, b.Logits), Max(a.Probabilities, b.Probabilities), Math.Max(a.Kappa, b.Kappa));
    }

    /// <summary>Measures <see cref="NoiseLevel"/> on the rows given.</summary>
    public static NoiseLevel Noise(Rows r)
    {
        var net = r.Net;
        return new NoiseLevel(Level(r.Raw, r.Exact), Level(r.Probabilities, r.ExactProbabilities), LayerNormKappa(net, r));

        static (double, double) Level(float[] ours, double[] exact)
        {
            double e = 0, scale = 0;
            for (int i = 0; i < ours.Length; i++) { e = Math.Max(e, Math.Abs(ours[i] - exact[i])); scale = Math.Max(scale, Math.Abs(exact[i])); }
            return (e, Math.ScaleB(scale, -23));
        }
    }

    /// <summary>
    /// Random rows for <paramref name="net"/>: ids uniform in [0, V) for a stack on ids, features N(0,1) otherwise.
    /// </summary>
    public static (int[]? Ids, float[]? Features) Input(Network net, int rows, Random rng)
    {
        int w = net.InputWidth;
        if (net.Stack.TakesIds)
            return (Enumerable.Range(0, rows * w).Select(_ => rng.Next(net.Stack.Layers[0].In)).ToArray(), null);
        return (null, Enumerable.Range(0, rows * w).Select(_ => (float)StackTestData.Normal(rng)).ToArray());
    }

    /// <summary>Runs the model in ONNX Runtime on the rows; returns each output by name.</summary>
    public static Dictionary<string, float[]> RunOnnx(InferenceSession session, int[]? ids, float[]? features, int rows, int width)
    {
        using var input = ids != null
            ? OrtValue.CreateTensorValueFromMemory(ids.Select(i => (long)i).ToArray(), [rows, width])
            : OrtValue.CreateTensorValueFromMemory(features!, [rows, width]);
        var names = session.OutputNames;
        using var results = session.Run(new RunOptions(), [OnnxExport.InputName], [input], names);
        var outputs = new Dictionary<string, float[]>(StringComparer.Ordinal);
        for (int i = 0; i < names.Count; i++)
        {
            var shape = results[i].GetTensorTypeAndShape().Shape;
            if (shape.Length != 2 || shape[0] != rows) throw new InvalidOperationException($"output {names[i]} has shape [{string.Join(",", shape)}], not [{rows},k]");
            outputs[names[i]] = results[i].GetTensorDataAsSpan<float>().ToArray();
        }
        return outputs;
    }

    /// <summary>A session on the serialised model (one thread: the comparison does not depend on it; a refused model is an exception, not a log line).</summary>
    public static InferenceSession Session(byte[] model)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
        return new InferenceSession(model, options);
    }

    /// <summary>One batch of random rows with Predict's outputs (raw and with the link) and the exact (double) ones.</summary>
    public sealed record Rows(Network Net, int Count, int[]? Ids, float[]? Features, float[] Raw, float[] Probabilities, double[] Exact, double[] ExactProbabilities);

    /// <summary>Draws <paramref name="rows"/> random rows and computes Predict's and the double reference's outputs on them.</summary>
    public static Rows Prepare(Network net, int rows, Random rng)
    {
        var (ids, features) = Input(net, rows, rng);
        return Prepare(net, ids, features, rows);
    }

    /// <summary>Predict's outputs (raw and with the link) and the exact (double) ones on the rows given.</summary>
    public static Rows Prepare(Network net, int[]? ids, float[]? features, int rows)
    {
        int k = net.OutputWidth;
        var raw = new float[rows * k];
        var probs = new float[rows * k];
        if (ids != null) { net.Predict(ids, rows, raw, raw: true); net.Predict(ids, rows, probs); }
        else { net.Predict(features!, rows, raw, raw: true); net.Predict(features!, rows, probs); }
        var exact = Exact(net, ids, features, rows);
        return new Rows(net, rows, ids, features, raw, probs, exact, Link(net.Options.Loss, exact, rows, k));
    }

    /// <summary>
    /// Runs the model in ONNX Runtime on the rows and compares its outputs with Predict's. Returns null when every output is
    /// within tolerance, otherwise what is wrong (ONNX Runtime's refusal of the model included); <paramref name="log"/> gets the measurements.
    /// <paramref name="onnxFeatures"/>, when given, is what ONNX Runtime gets instead of the rows' features: the raw rows of a
    /// table, which the model standardises itself, where Predict got them standardised.
    /// </summary>
    public static string? Compare(Rows rows, NoiseLevel noise, byte[] model, string label, TextWriter? log = null, float[]? onnxFeatures = null) =>
        Measure(rows, noise, model, label, log, onnxFeatures).Failure;

    /// <summary><see cref="Compare"/>, with each output's measurement (none where ONNX Runtime refused the model).</summary>
    public static (string? Failure, IReadOnlyList<Measured> Outputs) Measure(Rows rows, NoiseLevel noise, byte[] model, string label, TextWriter? log = null, float[]? onnxFeatures = null)
    {
        var net = rows.Net;
        Dictionary<string, float[]> onnx;
        try
        {
            using var session = Session(model);
            onnx = RunOnnx(session, rows.Ids, onnxFeatures ?? rows.Features, rows.Count, net.InputWidth);
        }
        catch (OnnxRuntimeException e)
        {
            return ($"{label}: ONNX Runtime refused the model: {e.Message}", []);
        }
        catch (InvalidOperationException e)
        {
            return ($"{label}: {e.Message}", []);
        }

        var expectOutputs = net.Options.Loss is LossKind.CrossEntropy or LossKind.BceWithLogits
            ? new[] { OnnxExport.LogitsName, OnnxExport.ProbabilitiesName } : [OnnxExport.LogitsName];
        if (!onnx.Keys.Order(StringComparer.Ordinal).SequenceEqual(expectOutputs.Order(StringComparer.Ordinal)))
            return ($"{label}: the model's outputs are {string.Join(", ", onnx.Keys)}, not {string.Join(", ", expectOutputs)}", []);

        var failures = new List<string>();
        var measured = new List<Measured>();
        foreach (var (name, ours, level) in new[] { (OnnxExport.LogitsName, rows.Raw, noise.Logits), (OnnxExport.ProbabilitiesName, rows.Probabilities, noise.Probabilities) })
        {
            if (!onnx.TryGetValue(name, out var theirs)) continue;
            if (theirs.Length != ours.Length) { failures.Add($"{name} has {theirs.Length} values, Predict {ours.Length}"); continue; }
            double d = 0;
            for (int i = 0; i < ours.Length; i++) d = Math.Max(d, double.IsNaN(theirs[i]) ? double.PositiveInfinity : Math.Abs((double)theirs[i] - ours[i]));
            var m = new Measured(name, level.Error, level.Ulp, noise.Kappa, d);
            measured.Add(m);
            log?.WriteLine($"{label} {m}");
            lock (Gate) if (m.Ratio > Worst.Ratio) Worst = (m.Ratio, $"{label} {name}");
            if (!m.Within) failures.Add(m.ToString());
        }
        return (failures.Count == 0 ? null : $"{label}: {string.Join("; ", failures)}", measured);
    }

    /// <summary>
    /// κ = max over the layer norms and the rows of <c>E[x²]/(Var[x] + eps)</c> of the layer norm's input row (exact), at least 1.
    /// ONNX Runtime's layer-norm kernel (for LayerNormalization, and for the decomposition below opset 17, which it fuses into
    /// it) takes the variance in one pass as <c>E[x²] − E[x]²</c>, which loses that factor of accuracy where a row's mean is
    /// large beside its spread (the outputs of a sigmoid: κ reaches ~50); Predict takes it in two passes, <c>E[(x − mean)²]</c>.
    /// </summary>
    private static double LayerNormKappa(Network net, Rows r)
    {
        double kappa = 1;
        var layers = net.Stack.Layers;
        for (int i = 0; i < layers.Count; i++)
        {
            if (layers[i].Kind != LayerKind.LayerNorm) continue;
            // the input of layer i: the features themselves when only flatten layers (views) come before it
            double[] x = layers.Take(i).All(l => l.Kind == LayerKind.Flatten) ? r.Features!.Select(v => (double)v).ToArray() : Exact(net, r.Ids, r.Features, r.Count, i);
            int f = layers[i].In;
            for (int row = 0; row < r.Count; row++)
            {
                double mean = 0, sq = 0;
                for (int j = 0; j < f; j++) mean += x[row * f + j];
                mean /= f;
                for (int j = 0; j < f; j++) sq += (x[row * f + j] - mean) * (x[row * f + j] - mean);
                double var = sq / f;
                kappa = Math.Max(kappa, (mean * mean + var) / (var + net.Options.Eps));
            }
        }
        return kappa;
    }

    /// <summary>
    /// The double-precision reference's inference forward on the network's own (float) parameters and statistics: the output of
    /// the whole stack, or of its first <paramref name="layers"/> layers.
    /// </summary>
    public static double[] Exact(Network net, int[]? ids, float[]? features, int rows, int? layers = null)
    {
        var stack = layers is int l ? new Sequential([.. net.Stack.Layers.Take(l)]) : net.Stack;
        var r = new StackReference<double>(stack, layers is null ? net.Options.Loss : LossKind.Mean, net.InputWidth) { Eps = net.Options.Eps };
        var p = net.Parameters;
        var parameters = p.Parameters.ToDictionary(s => s.Name, s => p.Value(s.Name).ToArray().Select(v => (double)v).ToArray(), StringComparer.Ordinal);
        var running = p.RunningStatistics.ToDictionary(s => s.Name, s => p.Value(s.Name).ToArray().Select(v => (double)v).ToArray(), StringComparer.Ordinal);
        var buffers = BatchNormBuffers<double>.From(stack, running);
        var input = new StackInput<double>(rows, ids, features?.Select(v => (double)v).ToArray());
        return r.Forward(input, parameters, buffers, training: false);
    }

    /// <summary>The loss's link in double: softmax per row, the sigmoid, or the outputs themselves.</summary>
    public static double[] Link(LossKind loss, double[] z, int rows, int k)
    {
        var p = (double[])z.Clone();
        if (loss == LossKind.BceWithLogits) for (int i = 0; i < p.Length; i++) p[i] = 1 / (1 + Math.Exp(-z[i]));
        else if (loss == LossKind.CrossEntropy)
            for (int r = 0; r < rows; r++)
            {
                double max = double.NegativeInfinity, sum = 0;
                for (int j = 0; j < k; j++) max = Math.Max(max, z[r * k + j]);
                for (int j = 0; j < k; j++) sum += p[r * k + j] = Math.Exp(z[r * k + j] - max);
                for (int j = 0; j < k; j++) p[r * k + j] /= sum;
            }
        return p;
    }

    /// <summary>
    /// Running statistics that make the batch norms matter (and their epsilon visible): means N(0, 0.5²), variances uniform in
    /// [0.02, 2] (the initial 0 and 1 would make a wrong statistic hard to see).
    /// </summary>
    public static void RandomStatistics(Network net, Random rng)
    {
        foreach (var s in net.Parameters.RunningStatistics)
        {
            var v = net.Parameters.Value(s.Name);
            bool mean = s.Name.EndsWith(".running_mean", StringComparison.Ordinal);
            for (int i = 0; i < v.Length; i++) v[i] = mean ? (float)(0.5 * StackTestData.Normal(rng)) : (float)(0.02 + 1.98 * rng.NextDouble());
        }
        net.PushParameters();
    }

    /// <summary>Writes the model to <c>HPB_ONNX_EXPORTS</c> when that is set (CI runs the ONNX checker over the folder).</summary>
    public static void Keep(byte[] model, string name)
    {
        if (Environment.GetEnvironmentVariable("HPB_ONNX_EXPORTS") is not { Length: > 0 } dir) return;
        Directory.CreateDirectory(dir);
        File.WriteAllBytes(Path.Combine(dir, name + ".onnx"), model);
    }
}
