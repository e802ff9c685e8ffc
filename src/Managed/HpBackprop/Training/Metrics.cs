using HpBackprop.Networks;

namespace HpBackprop.Training;

/// <summary>
/// How well a classifier does on labelled examples: accuracy, per class precision, recall, F1 and support, the confusion
/// matrix, their macro averages and, for two classes with scores, the area under the ROC curve. A class never predicted
/// has precision 0, a class absent from the examples recall 0 (scikit-learn's <c>zero_division=0</c>).
/// </summary>
public sealed class ClassificationMetrics
{
    private ClassificationMetrics(int count, int[][] confusion, double? auc)
    {
        Count = count;
        Confusion = confusion;
        int k = confusion.Length;
        Precision = new double[k]; Recall = new double[k]; F1 = new double[k]; Support = new int[k];
        long right = 0;
        for (int c = 0; c < k; c++)
        {
            long predicted = 0;
            for (int a = 0; a < k; a++) predicted += confusion[a][c];
            Support[c] = confusion[c].Sum();
            right += confusion[c][c];
            Precision[c] = predicted == 0 ? 0 : (double)confusion[c][c] / predicted;
            Recall[c] = Support[c] == 0 ? 0 : (double)confusion[c][c] / Support[c];
            F1[c] = Precision[c] + Recall[c] == 0 ? 0 : 2 * Precision[c] * Recall[c] / (Precision[c] + Recall[c]);
        }
        Correct = (int)right;
        Accuracy = count == 0 ? 0 : (double)right / count;
        RocAuc = auc;
    }

    /// <summary>The examples.</summary>
    public int Count { get; }

    /// <summary>The examples classified right.</summary>
    public int Correct { get; }

    /// <summary>The fraction classified right.</summary>
    public double Accuracy { get; }

    /// <summary>The number of classes, K.</summary>
    public int Classes => Confusion.Count;

    /// <summary>The confusion matrix <c>[K][K]</c>: row = the true class, column = the predicted class.</summary>
    public IReadOnlyList<int[]> Confusion { get; }

    /// <summary>Per class: of the examples predicted as it, the fraction that are it.</summary>
    public double[] Precision { get; }

    /// <summary>Per class: of its examples, the fraction predicted as it.</summary>
    public double[] Recall { get; }

    /// <summary>Per class: the harmonic mean of precision and recall.</summary>
    public double[] F1 { get; }

    /// <summary>Per class: its examples.</summary>
    public int[] Support { get; }

    /// <summary>The mean of the per-class F1 (each class counts the same).</summary>
    public double MacroF1 => F1.Average();

    /// <summary>The area under the ROC curve of the scores of class 1, for two classes with scores given and both present; else null.</summary>
    public double? RocAuc { get; }

    /// <summary>
    /// The metrics of predictions: <paramref name="actual"/> and <paramref name="predicted"/> class ids in [0, <paramref name="classes"/>),
    /// and for two classes optionally <paramref name="scores"/>, a score of class 1 per example (a probability or a logit)
    /// for the ROC AUC (ties count one half).
    /// </summary>
    /// <exception cref="ArgumentException">The lengths differ, a class id is out of range, or a score is NaN.</exception>
    public static ClassificationMetrics FromPredictions(ReadOnlySpan<int> actual, ReadOnlySpan<int> predicted, int classes, ReadOnlySpan<float> scores = default)
    {
        if (classes < 1) throw new ArgumentOutOfRangeException(nameof(classes), classes, "there must be at least one class.");
        if (actual.Length != predicted.Length) throw new ArgumentException($"{actual.Length} true classes but {predicted.Length} predictions.", nameof(predicted));
        if (!scores.IsEmpty && scores.Length != actual.Length) throw new ArgumentException($"{scores.Length} scores for {actual.Length} examples.", nameof(scores));
        var m = new int[classes][];
        for (int c = 0; c < classes; c++) m[c] = new int[classes];
        for (int i = 0; i < actual.Length; i++)
        {
            if ((uint)actual[i] >= (uint)classes) throw new ArgumentException($"true class {actual[i]} at {i} is outside [0, {classes}).", nameof(actual));
            if ((uint)predicted[i] >= (uint)classes) throw new ArgumentException($"predicted class {predicted[i]} at {i} is outside [0, {classes}).", nameof(predicted));
            m[actual[i]][predicted[i]]++;
        }
        return new ClassificationMetrics(actual.Length, m, classes == 2 && !scores.IsEmpty ? Auc(actual, scores) : null);
    }

    /// <summary>
    /// Predicts every example of <paramref name="data"/> with <paramref name="network"/> (inference mode) and measures the
    /// classes (<see cref="Network.PredictClasses(ReadOnlySpan{float}, int, Span{int})"/>) against the examples' classes —
    /// class ids for cross-entropy, BCE targets of 0 or 1 — with the probability of class 1 as the ROC score when there are two.
    /// </summary>
    /// <exception cref="InvalidOperationException">The network is not a classifier.</exception>
    /// <exception cref="ArgumentException">The examples do not fit the network, or BCE targets are not 0 or 1.</exception>
    public static ClassificationMetrics Of(Network network, ExampleSet data)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(data);
        if (!network.IsClassifier) throw new InvalidOperationException($"the network's loss is {network.Options.Loss.ToText()} with {network.OutputWidth} output(s): it is not a classifier.");
        int n = data.Count, k = network.OutputWidth;
        int[] actual;
        if (data.Classes != null && data.TargetKind == TargetKind.Classes) actual = data.Classes;
        else if (data.Targets != null && data.TargetWidth == 1)
        {
            actual = new int[n];
            for (int i = 0; i < n; i++)
                actual[i] = data.Targets[i] switch
                {
                    0f => 0,
                    1f => 1,
                    var t => throw new ArgumentException($"target {t} at row {i} is not a class (0 or 1).", nameof(data)),
                };
        }
        else throw new ArgumentException("the examples have no class targets.", nameof(data));
        var outputs = new float[(long)n * k];
        var predicted = new int[n];
        if (data.Ids != null)
        {
            network.Predict(data.Ids, n, outputs);
            network.PredictClasses(data.Ids, n, predicted);
        }
        else
        {
            network.Predict(data.Features!, n, outputs);
            network.PredictClasses(data.Features!, n, predicted);
        }
        int classes = network.Options.Loss == LossKind.BceWithLogits ? 2 : k;
        float[] scores = [];
        if (classes == 2)
        {
            scores = new float[n];
            for (int i = 0; i < n; i++) scores[i] = k == 1 ? outputs[i] : outputs[2 * i + 1];
        }
        return FromPredictions(actual, predicted, classes, scores);
    }

    /// <summary>The Mann–Whitney statistic: the chance that a random example of class 1 scores above one of class 0 (ties one half).</summary>
    private static double? Auc(ReadOnlySpan<int> actual, ReadOnlySpan<float> scores)
    {
        int n = actual.Length;
        var order = new int[n];
        for (int i = 0; i < n; i++)
        {
            if (float.IsNaN(scores[i])) throw new ArgumentException($"score {i} is NaN.", nameof(scores));
            order[i] = i;
        }
        var s = scores.ToArray();
        Array.Sort(order, (a, b) => s[a].CompareTo(s[b]));
        double rankSum = 0;
        long positives = 0;
        for (int i = 0; i < n;)
        {
            int j = i;
            while (j < n && s[order[j]] == s[order[i]]) j++;
            double rank = (i + 1 + j) / 2.0; // the mean of the 1-based ranks i+1 … j
            for (int t = i; t < j; t++)
                if (actual[order[t]] == 1) { rankSum += rank; positives++; }
            i = j;
        }
        long negatives = n - positives;
        if (positives == 0 || negatives == 0) return null;
        return (rankSum - positives * (positives + 1) / 2.0) / ((double)positives * negatives);
    }
}

/// <summary>How well a regression does: root-mean-square and mean absolute error over every output, and R² (per output, averaged).</summary>
public sealed class RegressionMetrics
{
    private RegressionMetrics(int count, double rmse, double mae, double r2) { Count = count; Rmse = rmse; Mae = mae; R2 = r2; }

    /// <summary>The examples.</summary>
    public int Count { get; }

    /// <summary>√(mean of (prediction − target)²) over all outputs.</summary>
    public double Rmse { get; }

    /// <summary>The mean of |prediction − target| over all outputs.</summary>
    public double Mae { get; }

    /// <summary>
    /// The coefficient of determination, 1 − Σ(prediction − target)² / Σ(target − mean)², per output and averaged over the
    /// outputs; an output whose targets are all equal counts 1 when predicted exactly, else 0.
    /// </summary>
    public double R2 { get; }

    /// <summary>The metrics of predictions <c>[count, width]</c> against targets of the same shape.</summary>
    /// <exception cref="ArgumentException">The lengths differ, are not whole rows, or a value is not finite.</exception>
    public static RegressionMetrics FromPredictions(ReadOnlySpan<float> actual, ReadOnlySpan<float> predicted, int width = 1)
    {
        if (width < 1) throw new ArgumentOutOfRangeException(nameof(width), width, "the width must be at least 1.");
        if (actual.Length != predicted.Length || actual.Length % width != 0)
            throw new ArgumentException($"{actual.Length} targets and {predicted.Length} predictions are not the same whole number of rows of {width}.", nameof(predicted));
        int n = actual.Length / width;
        double se = 0, ae = 0, r2 = 0;
        for (int c = 0; c < width; c++)
        {
            double mean = 0, res = 0, tot = 0;
            for (int i = 0; i < n; i++) mean += actual[i * width + c];
            mean /= Math.Max(n, 1);
            for (int i = 0; i < n; i++)
            {
                double t = actual[i * width + c], p = predicted[i * width + c];
                if (!double.IsFinite(t) || !double.IsFinite(p)) throw new ArgumentException($"row {i}, output {c}: target {t}, prediction {p}: both must be finite.", nameof(predicted));
                res += (p - t) * (p - t);
                tot += (t - mean) * (t - mean);
                ae += Math.Abs(p - t);
            }
            se += res;
            r2 += tot > 0 ? 1 - res / tot : res == 0 ? 1 : 0;
        }
        long count = (long)n * width;
        return new RegressionMetrics(n, count == 0 ? 0 : Math.Sqrt(se / count), count == 0 ? 0 : ae / count, r2 / width);
    }

    /// <summary>Predicts every example of <paramref name="data"/> with <paramref name="network"/> (inference mode, raw outputs) and measures them against its float targets.</summary>
    /// <exception cref="ArgumentException">The examples have no float targets of the network's output width.</exception>
    public static RegressionMetrics Of(Network network, ExampleSet data)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(data);
        if (data.Targets == null || data.TargetWidth != network.OutputWidth)
            throw new ArgumentException($"the examples need float targets of the network's {network.OutputWidth} output(s).", nameof(data));
        var outputs = new float[(long)data.Count * network.OutputWidth];
        if (data.Ids != null) network.Predict(data.Ids, data.Count, outputs, raw: true);
        else network.Predict(data.Features!, data.Count, outputs, raw: true);
        return FromPredictions(data.Targets, outputs, network.OutputWidth);
    }
}
