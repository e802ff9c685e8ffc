using HpBackprop.Data;
using HpBackprop.Model;

namespace HpBackprop.Networks;

/// <summary>
/// Examples for a <see cref="Network"/>, built from code: inputs as ids <c>[Count, InputWidth]</c> or
/// float features <c>[Count, InputWidth]</c>, targets as class ids <c>[Count]</c>, float targets
/// <c>[Count, TargetWidth]</c> or none (for the <c>mean</c> loss). The arrays are used as they are, not
/// copied: change them and the set changes.
/// </summary>
public sealed class ExampleSet
{
    private ExampleSet(int count, int inputWidth, int[]? ids, float[]? features, int[]? classes, float[]? targets, int targetWidth)
    {
        Count = count; InputWidth = inputWidth; Ids = ids; Features = features; Classes = classes; Targets = targets; TargetWidth = targetWidth;
    }

    /// <summary>Number of examples.</summary>
    public int Count { get; }

    /// <summary>Ids or features per example (B or D).</summary>
    public int InputWidth { get; }

    /// <summary>Float targets per example (k), 0 for class ids or no targets.</summary>
    public int TargetWidth { get; }

    /// <summary>The ids, row-major <c>[Count, InputWidth]</c>, or null for float inputs.</summary>
    public int[]? Ids { get; }

    /// <summary>The features, row-major <c>[Count, InputWidth]</c>, or null for id inputs.</summary>
    public float[]? Features { get; }

    /// <summary>The class ids <c>[Count]</c>, or null.</summary>
    public int[]? Classes { get; }

    /// <summary>The float targets, row-major <c>[Count, TargetWidth]</c>, or null.</summary>
    public float[]? Targets { get; }

    /// <summary>What the targets are.</summary>
    public TargetKind TargetKind => Classes != null ? TargetKind.Classes : Targets != null ? TargetKind.Floats : TargetKind.None;

    /// <summary>Id inputs <c>[count, width]</c> with class targets <c>[count]</c> (e.g. contexts and next characters).</summary>
    /// <exception cref="ArgumentException">The lengths do not fit <paramref name="width"/> or each other.</exception>
    public static ExampleSet FromIds(int[] ids, int width, int[] classes)
    {
        ArgumentNullException.ThrowIfNull(ids);
        ArgumentNullException.ThrowIfNull(classes);
        int count = Rows(ids.Length, width, nameof(ids));
        Same(count, classes.Length, nameof(classes), 1);
        return new ExampleSet(count, width, ids, null, classes, null, 0);
    }

    /// <summary>Float inputs <c>[count, width]</c> with class targets <c>[count]</c> (classification).</summary>
    /// <exception cref="ArgumentException">The lengths do not fit <paramref name="width"/> or each other.</exception>
    public static ExampleSet FromFeatures(float[] features, int width, int[] classes)
    {
        ArgumentNullException.ThrowIfNull(features);
        ArgumentNullException.ThrowIfNull(classes);
        int count = Rows(features.Length, width, nameof(features));
        Same(count, classes.Length, nameof(classes), 1);
        return new ExampleSet(count, width, null, features, classes, null, 0);
    }

    /// <summary>Float inputs <c>[count, width]</c> with float targets <c>[count, targetWidth]</c> (regression, binary labels).</summary>
    /// <exception cref="ArgumentException">The lengths do not fit the widths or each other.</exception>
    public static ExampleSet FromFeatures(float[] features, int width, float[] targets, int targetWidth)
    {
        ArgumentNullException.ThrowIfNull(features);
        ArgumentNullException.ThrowIfNull(targets);
        int count = Rows(features.Length, width, nameof(features));
        if (targetWidth < 1) throw new ArgumentOutOfRangeException(nameof(targetWidth), targetWidth, "the target width must be at least 1.");
        Same(count, targets.Length, nameof(targets), targetWidth);
        return new ExampleSet(count, width, null, features, null, targets, targetWidth);
    }

    /// <summary>Float inputs <c>[count, width]</c> without targets (for the <c>mean</c> loss, or for prediction).</summary>
    public static ExampleSet FromFeatures(float[] features, int width)
    {
        ArgumentNullException.ThrowIfNull(features);
        return new ExampleSet(Rows(features.Length, width, nameof(features)), width, null, features, null, null, 0);
    }

    /// <summary>The (context, next character) examples of a word list, without copying them.</summary>
    public static ExampleSet FromWords(Dataset words)
    {
        ArgumentNullException.ThrowIfNull(words);
        return new ExampleSet(words.Count, words.BlockSize, words.X, null, words.Y, null, 0);
    }

    /// <summary>
    /// Draws the minibatch of optimiser step <paramref name="step"/> under <paramref name="seed"/>: <paramref name="rows"/>
    /// examples uniformly with replacement, as <see cref="Network.Fit(ExampleSet, FitOptions)"/> draws them on every
    /// device (row r is a function of seed, step and r: Philox4x32-10, docs/stacks.md), into a batch's buffers (those that
    /// apply to this set; the others may be empty). Allocates nothing.
    /// </summary>
    public void DrawBatch(int seed, long step, int rows, Span<int> ids, Span<float> features, Span<int> classes, Span<float> targets)
    {
        if (Count == 0) throw new InvalidOperationException("cannot draw a minibatch from an empty example set.");
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        var sink = new CopySink(this, ids, features, classes, targets);
        MinibatchDraw.Rows(ref sink, rows, (uint)seed, step, Count);
    }

    private ref struct CopySink(ExampleSet set, Span<int> ids, Span<float> features, Span<int> classes, Span<float> targets) : MinibatchDraw.IRowSink
    {
        private readonly ExampleSet _set = set;
        private readonly Span<int> _ids = ids, _classes = classes;
        private readonly Span<float> _features = features, _targets = targets;

        public readonly void Take(int r, int example) => _set.CopyRow(example, r, _ids, _features, _classes, _targets);
    }

    /// <summary>
    /// Copies the examples <paramref name="rows"/> (indices in [0, <see cref="Count"/>)) into a batch's buffers, in that
    /// order (those that apply to this set; the others may be empty). Allocates nothing.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A row is outside [0, <see cref="Count"/>).</exception>
    public void CopyRows(ReadOnlySpan<int> rows, Span<int> ids, Span<float> features, Span<int> classes, Span<float> targets)
    {
        for (int r = 0; r < rows.Length; r++)
        {
            if ((uint)rows[r] >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(rows), rows[r], $"row {rows[r]} (at {r}) is outside the {Count} examples.");
            CopyRow(rows[r], r, ids, features, classes, targets);
        }
    }

    /// <summary>A new set holding copies of the examples <paramref name="rows"/>, in that order (a row may appear more than once).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A row is outside [0, <see cref="Count"/>).</exception>
    public ExampleSet Subset(ReadOnlySpan<int> rows)
    {
        int n = rows.Length;
        var ids = Ids != null ? new int[(long)n * InputWidth] : null;
        var features = Features != null ? new float[(long)n * InputWidth] : null;
        var classes = Classes != null ? new int[n] : null;
        var targets = Targets != null ? new float[(long)n * TargetWidth] : null;
        CopyRows(rows, ids, features, classes, targets);
        return new ExampleSet(n, InputWidth, ids, features, classes, targets, TargetWidth);
    }

    private void CopyRow(int row, int r, Span<int> ids, Span<float> features, Span<int> classes, Span<float> targets)
    {
        if (Ids != null) Ids.AsSpan(row * InputWidth, InputWidth).CopyTo(ids.Slice(r * InputWidth, InputWidth));
        if (Features != null) Features.AsSpan(row * InputWidth, InputWidth).CopyTo(features.Slice(r * InputWidth, InputWidth));
        if (Classes != null) classes[r] = Classes[row];
        if (Targets != null) Targets.AsSpan(row * TargetWidth, TargetWidth).CopyTo(targets.Slice(r * TargetWidth, TargetWidth));
    }

    private static int Rows(int length, int width, string name)
    {
        if (width < 1) throw new ArgumentOutOfRangeException(nameof(width), width, "the input width must be at least 1.");
        if (length % width != 0) throw new ArgumentException($"{name} has {length} elements, not a whole number of rows of width {width}.", name);
        return length / width;
    }

    private static void Same(int count, int length, string name, int width)
    {
        if (length != (long)count * width)
            throw new ArgumentException($"{name} has {length} elements but {count} examples need {(long)count * width}.", name);
    }
}
