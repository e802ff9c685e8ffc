using HpBackprop.Model;
using HpBackprop.Networks;

namespace HpBackprop.Data;

/// <summary>
/// A seeded train/dev/test split of examples (a <see cref="Table"/>'s or any <see cref="ExampleSet"/>): every example in
/// exactly one split. Stratified when there are classes: each class is shuffled and cut on its own, so each split holds
/// the classes in the proportions of the whole (to within one example per class), with the exact split sizes
/// round(dev·N) and round(test·N) reached by giving the rounding remainders to the classes with the largest fractions.
/// The rows of each split keep the order of the source.
/// </summary>
public sealed class TableSplit
{
    private TableSplit(ExampleSet train, ExampleSet dev, ExampleSet test, int[] trainRows, int[] devRows, int[] testRows, bool stratified)
    {
        Train = train; Dev = dev; Test = test; TrainRows = trainRows; DevRows = devRows; TestRows = testRows; Stratified = stratified;
    }

    /// <summary>The training examples (copies of the source's rows <see cref="TrainRows"/>).</summary>
    public ExampleSet Train { get; }

    /// <summary>The dev (validation) examples; empty when the dev fraction is 0.</summary>
    public ExampleSet Dev { get; }

    /// <summary>The test examples; empty when the test fraction is 0.</summary>
    public ExampleSet Test { get; }

    /// <summary>The source rows of <see cref="Train"/>, ascending.</summary>
    public IReadOnlyList<int> TrainRows { get; }

    /// <summary>The source rows of <see cref="Dev"/>, ascending.</summary>
    public IReadOnlyList<int> DevRows { get; }

    /// <summary>The source rows of <see cref="Test"/>, ascending.</summary>
    public IReadOnlyList<int> TestRows { get; }

    /// <summary>Whether the split was stratified by class.</summary>
    public bool Stratified { get; }

    /// <summary>Splits a table's rows, stratified by its class labels when it has them (<paramref name="stratify"/>).</summary>
    /// <exception cref="ArgumentException">A fraction is out of range, or a split it asks for would be empty.</exception>
    public static TableSplit Create(Table table, double devFraction = 0.1, double testFraction = 0.1, int seed = 42, bool stratify = true)
    {
        ArgumentNullException.ThrowIfNull(table);
        if (!table.HasTarget) throw new ArgumentException($"{table.Source} has no target column '{table.TargetName}': there is nothing to train or test on.", nameof(table));
        return Create(table.ToExampleSet(), devFraction, testFraction, seed, stratify ? table.Classes : null);
    }

    /// <summary>
    /// Splits <paramref name="data"/>: the examples of each stratum (<paramref name="strata"/>, one value per example; null:
    /// one stratum) are shuffled by a generator seeded with <paramref name="seed"/>, then the first of them go to the test
    /// split, the next to the dev split and the rest to training.
    /// </summary>
    /// <exception cref="ArgumentException">A fraction is out of range, <paramref name="strata"/> does not have one value per example, or a split would be empty.</exception>
    public static TableSplit Create(ExampleSet data, double devFraction, double testFraction, int seed, IReadOnlyList<int>? strata)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (!(devFraction >= 0 && testFraction >= 0 && devFraction + testFraction < 1))
            throw new ArgumentException($"the dev and test fractions ({devFraction}, {testFraction}) must be ≥ 0 with a sum below 1, leaving rows to train on.", nameof(devFraction));
        if (strata != null && strata.Count != data.Count) throw new ArgumentException($"strata has {strata.Count} values for {data.Count} examples.", nameof(strata));
        int n = data.Count;
        int nTest = (int)Math.Round(testFraction * n, MidpointRounding.AwayFromZero), nDev = (int)Math.Round(devFraction * n, MidpointRounding.AwayFromZero);
        if (testFraction > 0 && nTest == 0 || devFraction > 0 && nDev == 0 || nTest + nDev >= n)
            throw new ArgumentException($"{n} example(s) cannot be split into dev {devFraction:0.###}, test {testFraction:0.###} and a training rest, each holding at least one; give more rows or other fractions.", nameof(devFraction));

        // the strata in ascending order, each one's rows in source order, then shuffled by one generator in stratum order
        var groups = (strata == null ? [(0, Enumerable.Range(0, n).ToArray())]
            : Enumerable.Range(0, n).GroupBy(i => strata[i]).OrderBy(g => g.Key).Select(g => (g.Key, g.ToArray())).ToArray());
        var rng = new NormalRng(seed);
        foreach (var (_, rows) in groups)
            for (int i = rows.Length - 1; i > 0; i--)
            {
                int j = rng.NextInt(i + 1);
                (rows[i], rows[j]) = (rows[j], rows[i]);
            }
        var sizes = groups.Select(g => g.Item2.Length).ToArray();
        int[] test = Quotas(sizes, testFraction, nTest);
        int[] rest = sizes.Select((s, g) => s - test[g]).ToArray();
        int[] dev = Quotas(rest, devFraction / (1 - testFraction), nDev);
        var trainRows = new List<int>(n - nTest - nDev);
        var devRows = new List<int>(nDev);
        var testRows = new List<int>(nTest);
        for (int g = 0; g < groups.Length; g++)
        {
            var rows = groups[g].Item2;
            testRows.AddRange(rows.AsSpan(0, test[g]));
            devRows.AddRange(rows.AsSpan(test[g], dev[g]));
            trainRows.AddRange(rows.AsSpan(test[g] + dev[g]));
        }
        int[] tr = [.. trainRows.Order()], dv = [.. devRows.Order()], te = [.. testRows.Order()];
        return new TableSplit(data.Subset(tr), data.Subset(dv), data.Subset(te), tr, dv, te, strata != null);
    }

    /// <summary>
    /// Splits <paramref name="total"/> over groups of <paramref name="sizes"/> in proportion (<paramref name="fraction"/> of
    /// each, rounded down), the remainder one each to the groups with the largest fractional parts (the first of equals),
    /// never more than a group holds.
    /// </summary>
    private static int[] Quotas(int[] sizes, double fraction, int total)
    {
        var q = new int[sizes.Length];
        var frac = new double[sizes.Length];
        int given = 0;
        for (int g = 0; g < sizes.Length; g++)
        {
            double want = Math.Min(fraction * sizes[g], sizes[g]);
            q[g] = (int)Math.Floor(want);
            frac[g] = want - q[g];
            given += q[g];
        }
        foreach (int g in Enumerable.Range(0, sizes.Length).OrderByDescending(g => frac[g]).ThenBy(g => g))
        {
            if (given >= total) break;
            if (q[g] < sizes[g]) { q[g]++; given++; }
        }
        // rounding down can leave more to give than the largest fractions take (all groups full but one): fill in order
        for (int g = 0; g < sizes.Length && given < total; g++)
            while (q[g] < sizes[g] && given < total) { q[g]++; given++; }
        return q;
    }
}

/// <summary>
/// Standardisation of features: <c>x' = (x − Mean) / Scale</c> per column, computed in float32 in that order. Fitted on the
/// training rows only (their mean, and their standard deviation over N, as scikit-learn's StandardScaler; 1 for a
/// constant column), then applied to every split and to every input of the trained model: <c>eval</c>, <c>predict</c>
/// and any export read it from the checkpoint (<see cref="TableSchema"/>).
/// </summary>
public sealed class Standardizer
{
    /// <summary>A scaler of the given means and scales (one per feature).</summary>
    /// <exception cref="ArgumentException">The lengths differ or are 0, a mean is not finite, or a scale is not a finite number above 0.</exception>
    public Standardizer(float[] mean, float[] scale)
    {
        ArgumentNullException.ThrowIfNull(mean);
        ArgumentNullException.ThrowIfNull(scale);
        if (mean.Length == 0 || mean.Length != scale.Length) throw new ArgumentException($"mean has {mean.Length} values and scale {scale.Length}: one each per feature.", nameof(scale));
        for (int i = 0; i < mean.Length; i++)
        {
            if (!float.IsFinite(mean[i])) throw new ArgumentException($"mean[{i}] = {mean[i]} is not finite.", nameof(mean));
            if (!(float.IsFinite(scale[i]) && scale[i] > 0)) throw new ArgumentException($"scale[{i}] = {scale[i]} is not a finite number above 0.", nameof(scale));
        }
        Mean = mean;
        Scale = scale;
    }

    /// <summary>The mean subtracted from each feature.</summary>
    public float[] Mean { get; }

    /// <summary>What each centred feature is divided by.</summary>
    public float[] Scale { get; }

    /// <summary>The number of features.</summary>
    public int Width => Mean.Length;

    /// <summary>Fits the features of <paramref name="train"/> (in double precision, two passes).</summary>
    public static Standardizer Fit(ExampleSet train)
    {
        ArgumentNullException.ThrowIfNull(train);
        if (train.Features == null) throw new ArgumentException("the examples have ids, not float features: there is nothing to standardise.", nameof(train));
        return Fit(train.Features, train.InputWidth);
    }

    /// <summary>Fits <paramref name="features"/> <c>[rows, width]</c> (in double precision, two passes).</summary>
    /// <exception cref="ArgumentException">No rows, a length that is not a whole number of rows, or a value that is not finite.</exception>
    public static Standardizer Fit(ReadOnlySpan<float> features, int width)
    {
        if (width < 1) throw new ArgumentOutOfRangeException(nameof(width), width, "the width must be at least 1.");
        if (features.Length == 0 || features.Length % width != 0) throw new ArgumentException($"{features.Length} values are not a whole, non-zero number of rows of {width}.", nameof(features));
        long rows = features.Length / width;
        var sum = new double[width];
        var sq = new double[width];
        for (long r = 0; r < rows; r++)
            for (int c = 0; c < width; c++)
            {
                float v = features[(int)(r * width + c)];
                if (!float.IsFinite(v)) throw new ArgumentException($"{v} at row {r}, column {c} is not finite.", nameof(features));
                sum[c] += v;
            }
        for (int c = 0; c < width; c++) sum[c] /= rows;
        for (long r = 0; r < rows; r++)
            for (int c = 0; c < width; c++)
            {
                double d = features[(int)(r * width + c)] - sum[c];
                sq[c] += d * d;
            }
        var mean = new float[width];
        var scale = new float[width];
        for (int c = 0; c < width; c++)
        {
            mean[c] = (float)sum[c];
            float s = (float)Math.Sqrt(sq[c] / rows);
            scale[c] = s > 0 && float.IsFinite(s) ? s : 1f;
        }
        return new Standardizer(mean, scale);
    }

    /// <summary>Standardises <paramref name="features"/> <c>[rows, Width]</c> in place.</summary>
    public void Transform(Span<float> features)
    {
        if (features.Length % Width != 0) throw new ArgumentException($"{features.Length} values are not a whole number of rows of {Width}.", nameof(features));
        for (int i = 0; i < features.Length; i += Width)
            for (int c = 0; c < Width; c++) features[i + c] = (features[i + c] - Mean[c]) / Scale[c];
    }

    /// <summary>A new example set with standardised copies of <paramref name="data"/>'s features and its targets (shared).</summary>
    public ExampleSet Apply(ExampleSet data)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.Features == null) throw new ArgumentException("the examples have ids, not float features.", nameof(data));
        if (data.InputWidth != Width) throw new ArgumentException($"the examples have {data.InputWidth} features, the scaler {Width}.", nameof(data));
        var f = (float[])data.Features.Clone();
        Transform(f);
        return data.Classes != null ? ExampleSet.FromFeatures(f, Width, data.Classes)
            : data.Targets != null ? ExampleSet.FromFeatures(f, Width, data.Targets, data.TargetWidth)
            : ExampleSet.FromFeatures(f, Width);
    }
}

/// <summary>
/// What a model trained on a table needs to read another one: the feature columns in the network's order, the target
/// column and what it holds, the class labels (id i is label i) and the standardisation fitted on the training rows.
/// Saved in a checkpoint's metadata (<see cref="IO.StackCheckpoint.SaveTable(string, Network, TableSchema, IReadOnlyDictionary{string, string}?)"/>).
/// </summary>
/// <param name="Features">The feature columns, in the order of the network's inputs.</param>
/// <param name="Target">The target column.</param>
/// <param name="TargetKind">What the target holds.</param>
/// <param name="Classes">The class labels (null for values).</param>
/// <param name="Scaler">The standardisation of the features, or null for none.</param>
public sealed record TableSchema(IReadOnlyList<string> Features, string Target, TableTarget TargetKind, IReadOnlyList<string>? Classes, Standardizer? Scaler)
{
    /// <summary>The options that read a file with this schema's columns and class labels (the target may be absent).</summary>
    public TableOptions ReadOptions(bool targetOptional = true) => new()
    {
        Target = Target, Features = Features, TargetKind = TargetKind, Classes = Classes, TargetOptional = targetOptional,
    };
}
