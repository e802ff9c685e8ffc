using System.Globalization;
using HpBackprop.Networks;
using nietras.SeparatedValues;

namespace HpBackprop.Data;

/// <summary>What the target column of a table holds, and so which loss trains on it.</summary>
public enum TableTarget
{
    /// <summary>Class labels, integers or any text, mapped to the ids 0…K−1 (softmax cross-entropy).</summary>
    Classes,

    /// <summary>Two class labels, mapped to the float targets 0 and 1 (BCE-with-logits, one output).</summary>
    Binary,

    /// <summary>Numbers, the float targets of a regression (MSE, one output).</summary>
    Values,
}

/// <summary>Which columns of a CSV file <see cref="Table.ReadCsv(string, TableOptions)"/> reads, and how.</summary>
public sealed record TableOptions
{
    /// <summary>The name of the target column, as the header writes it (compared exactly).</summary>
    public required string Target { get; init; }

    /// <summary>The feature columns by name, in the order the network takes them; null (the default): every other column, in the file's order.</summary>
    public IReadOnlyList<string>? Features { get; init; }

    /// <summary>What the target holds (default class labels).</summary>
    public TableTarget TargetKind { get; init; } = TableTarget.Classes;

    /// <summary>
    /// A fixed mapping of class labels to ids (label i is id i), a trained model's (<see cref="TableSchema.Classes"/>): a
    /// label outside it is refused. Null (the default): the labels found, sorted — numerically when every label is an
    /// integer, else by ordinal text order — so labels 0…K−1 keep their values.
    /// </summary>
    public IReadOnlyList<string>? Classes { get; init; }

    /// <summary>Whether a file without the target column is read anyway, without targets (for predictions; default false).</summary>
    public bool TargetOptional { get; init; }

    /// <summary>The separator (default ','). Cells may be quoted ("a,b"); spaces around a cell are ignored.</summary>
    public char Separator { get; init; } = ',';
}

/// <summary>
/// A bad CSV file or cell: the message names the file, the line (1-based, as an editor counts them), the data row
/// (1-based, the header not counted) and the column (1-based, and its name) where there is one.
/// </summary>
public sealed class TableException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="source">The file path or description of the table.</param>
    /// <param name="line">The 1-based line, or 0 when the problem is not on one line.</param>
    /// <param name="message">What is wrong and what to do about it.</param>
    public TableException(string source, int line, string message)
        : base(line > 0 ? $"{source}:{line}: {message}" : $"{source}: {message}")
    {
        Source = source;
        Line = line;
    }

    /// <summary>The file path or description of the table.</summary>
    public new string Source { get; }

    /// <summary>The 1-based line, or 0 when the problem concerns the whole file.</summary>
    public int Line { get; }
}

/// <summary>
/// A CSV table read into memory (with the Sep reader): a header, float features <c>[Count, D]</c> from the named columns
/// (or all but the target), and the target column as class ids with their labels kept, as 0/1 targets of two labels, or as
/// float values. Every feature and value cell must be a finite number in invariant-culture text ("0.5", "-1e-3"): an empty
/// cell, text, NaN or an infinity is refused naming the file, the line, the row and the column. Columns that are neither
/// features nor the target are not read. <see cref="ToExampleSet"/> gives the network's examples;
/// <see cref="TableSplit"/> splits them.
/// </summary>
public sealed class Table
{
    /// <summary>The largest file <see cref="ReadCsv(string, TableOptions)"/> reads (4 GiB).</summary>
    public const long MaxBytes = 4L << 30;

    private Table(string source, string[] featureNames, string target, TableTarget kind, int count, float[] features, int[]? classes, float[]? values,
        string[]? classNames, int[] lines)
    {
        Source = source; FeatureNames = featureNames; TargetName = target; TargetKind = kind; Count = count; Features = features;
        Classes = classes; Values = values; ClassNames = classNames; Lines = lines;
    }

    /// <summary>The file path or description the table was read from.</summary>
    public string Source { get; }

    /// <summary>The feature columns, in the order of <see cref="Features"/>' columns.</summary>
    public IReadOnlyList<string> FeatureNames { get; }

    /// <summary>The number of features per row, D.</summary>
    public int Width => FeatureNames.Count;

    /// <summary>The target column's name.</summary>
    public string TargetName { get; }

    /// <summary>What the target holds.</summary>
    public TableTarget TargetKind { get; }

    /// <summary>Whether the file had the target column (see <see cref="TableOptions.TargetOptional"/>).</summary>
    public bool HasTarget => Classes != null || Values != null;

    /// <summary>The rows.</summary>
    public int Count { get; }

    /// <summary>The features, row-major <c>[Count, Width]</c>, as the file has them (not standardised).</summary>
    public float[] Features { get; }

    /// <summary>The class id of each row (<see cref="TableTarget.Classes"/> and <see cref="TableTarget.Binary"/>), or null.</summary>
    public int[]? Classes { get; }

    /// <summary>The float target of each row: the value (<see cref="TableTarget.Values"/>) or 0/1 (<see cref="TableTarget.Binary"/>); null for <see cref="TableTarget.Classes"/>.</summary>
    public float[]? Values { get; }

    /// <summary>The label of each class id (id i is label i), or null for values.</summary>
    public IReadOnlyList<string>? ClassNames { get; }

    /// <summary>The 1-based line of the file where each row starts.</summary>
    public IReadOnlyList<int> Lines { get; }

    /// <summary>
    /// The rows as examples for a network: features with class ids (<see cref="TableTarget.Classes"/>), with one float
    /// target (<see cref="TableTarget.Binary"/>, <see cref="TableTarget.Values"/>), or alone when the file had no target.
    /// The arrays are shared, not copied.
    /// </summary>
    public ExampleSet ToExampleSet() => TargetKind switch
    {
        _ when !HasTarget => ExampleSet.FromFeatures(Features, Width),
        TableTarget.Classes => ExampleSet.FromFeatures(Features, Width, Classes!),
        _ => ExampleSet.FromFeatures(Features, Width, Values!, 1),
    };

    /// <summary>The columns, target and labels of this table, with a scaler (a model's <see cref="TableSchema"/>).</summary>
    public TableSchema Schema(Standardizer? scaler = null) => new(FeatureNames, TargetName, TargetKind, ClassNames, scaler);

    /// <summary>Reads a CSV file with a header.</summary>
    /// <exception cref="TableException">The file is not a table as <paramref name="options"/> asks (a missing column, a bad cell, a NaN…); the message names the line and column.</exception>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    public static Table ReadCsv(string path, TableOptions options)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(options);
        var info = new FileInfo(path);
        if (Directory.Exists(path)) throw new TableException(path, 0, "is a directory; give a CSV file.");
        if (!info.Exists) throw new FileNotFoundException($"{path}: no such file.", path);
        if (IO.FileIdentity.SpecialKind(Path.GetFullPath(path)) is { } kind) throw new TableException(path, 0, $"is {kind}, not a regular file; give a CSV file.");
        if (info.Length > MaxBytes) throw new TableException(path, 0, $"the file has {info.Length:N0} bytes, more than the {MaxBytes:N0} a table may hold.");
        using var text = new StreamReader(path, System.Text.Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        return ReadCsv(text, path, options);
    }

    /// <summary>Reads CSV text with a header from <paramref name="reader"/>; <paramref name="source"/> names it in messages.</summary>
    /// <exception cref="TableException">The text is not a table as <paramref name="options"/> asks; the message names the line and column.</exception>
    public static Table ReadCsv(TextReader reader, string source, TableOptions options)
    {
        ArgumentNullException.ThrowIfNull(reader);
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(options.Target);
        if (!Enum.IsDefined(options.TargetKind)) throw new ArgumentException($"TableOptions.TargetKind = {(int)options.TargetKind} is not a TableTarget.", nameof(options));
        if (options.Classes is { } fixedClasses && (fixedClasses.Count < 1 || fixedClasses.Distinct(StringComparer.Ordinal).Count() != fixedClasses.Count))
            throw new ArgumentException("TableOptions.Classes must hold at least one label, each once.", nameof(options));
        Sep sep;
        try { sep = Sep.New(options.Separator); }
        catch (ArgumentException e) { throw new ArgumentException($"TableOptions.Separator '{options.Separator}' cannot separate cells: {e.Message}", nameof(options), e); }
        SepReader csv;
        try
        {
            // Sep reads the header here: a column named twice is its ArgumentException
            csv = sep.Reader(o => o with { Unescape = true, Trim = SepTrim.All, DisableColCountCheck = true, CultureInfo = CultureInfo.InvariantCulture })
                .From(reader, leaveOpen: true);
        }
        catch (ArgumentException e)
        {
            throw new TableException(source, 1, "the header is not a table's: " + e.Message);
        }
        catch (Exception e) when (e is InvalidDataException or NotSupportedException or FormatException)
        {
            throw new TableException(source, 0, "not a CSV table: " + e.Message);
        }
        try
        {
            using (csv) return Read(csv, source, options);
        }
        catch (Exception e) when (e is InvalidDataException or NotSupportedException or FormatException)
        {
            throw new TableException(source, 0, "not a CSV table: " + e.Message);
        }
    }

    private static Table Read(SepReader csv, string source, TableOptions options)
    {
        var names = csv.Header.ColNames;
        if (csv.Header.IsEmpty || names.Count == 0) throw new TableException(source, 1, "the file is empty: a table starts with a header line naming its columns.");
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int c = 0; c < names.Count; c++)
        {
            if (names[c].Length == 0) throw new TableException(source, 1, $"column {c + 1} of the header has no name.");
            if (!index.TryAdd(names[c], c)) throw new TableException(source, 1, $"columns {index[names[c]] + 1} and {c + 1} are both named '{Clip(names[c])}'.");
        }
        bool hasTarget = index.TryGetValue(options.Target, out int targetCol);
        if (!hasTarget && !options.TargetOptional)
            throw new TableException(source, 1, $"the target column '{Clip(options.Target)}' is not in the header; its columns are {Columns(names)}.");
        int[] featureCols;
        if (options.Features is { } wanted)
        {
            if (wanted.Count == 0) throw new ArgumentException("TableOptions.Features is empty: name at least one column, or give null for every column but the target.", nameof(options));
            featureCols = new int[wanted.Count];
            var seen = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < wanted.Count; i++)
            {
                if (!seen.Add(wanted[i])) throw new TableException(source, 0, $"the feature '{Clip(wanted[i])}' is named twice.");
                if (wanted[i] == options.Target) throw new TableException(source, 0, $"'{Clip(wanted[i])}' is the target; it cannot be a feature too.");
                if (!index.TryGetValue(wanted[i], out featureCols[i]))
                    throw new TableException(source, 1, $"the feature column '{Clip(wanted[i])}' is not in the header; its columns are {Columns(names)}.");
            }
        }
        else
        {
            int skip = hasTarget ? targetCol : -1;
            featureCols = [.. Enumerable.Range(0, names.Count).Where(c => c != skip)];
        }
        if (featureCols.Length == 0) throw new TableException(source, 1, $"the header has no column besides the target '{Clip(options.Target)}': there are no features.");
        int d = featureCols.Length;
        var featureNames = featureCols.Select(c => names[c]).ToArray();

        // class labels: ids in order of first appearance while reading, renumbered in sorted order at the end
        Dictionary<string, int>? labels = null;
        Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> lookup = default;
        bool fixedLabels = options.Classes != null;
        bool labelled = options.TargetKind != TableTarget.Values;
        if (labelled)
        {
            labels = new Dictionary<string, int>(StringComparer.Ordinal);
            if (options.Classes is { } given) for (int i = 0; i < given.Count; i++) labels.Add(given[i], i);
            lookup = labels.GetAlternateLookup<ReadOnlySpan<char>>();
        }
        var features = new Growable<float>(source);
        var classes = labelled && hasTarget ? new Growable<int>(source) : null;
        var values = options.TargetKind == TableTarget.Values && hasTarget ? new Growable<float>(source) : null;
        var lines = new Growable<int>(source);
        int count = 0;
        foreach (var row in csv)
        {
            int line = row.LineNumberFrom;
            if (row.ColCount != names.Count)
            {
                if (row.ColCount == 1 && row[0].Span.Length == 0) continue; // a blank line
                throw new TableException(source, line, $"row {count + 1} has {row.ColCount} cells, the header {names.Count}.");
            }
            var dst = features.Append(d);
            for (int i = 0; i < d; i++) dst[i] = Number(row[featureCols[i]].Span, line, count, featureCols[i]);
            if (hasTarget)
            {
                var cell = row[targetCol].Span;
                if (labels != null)
                {
                    if (cell.Length == 0) throw Bad(line, count, targetCol, "the label is empty");
                    if (!lookup.TryGetValue(cell, out int id))
                    {
                        if (fixedLabels)
                            throw Bad(line, count, targetCol, $"the label '{Clip(cell.ToString())}' is not one of the model's classes ({string.Join(", ", options.Classes!.Take(20).Select(Clip))}{(options.Classes!.Count > 20 ? ", …" : "")})");
                        id = labels.Count;
                        lookup[cell] = id;
                    }
                    classes!.Append(1)[0] = id;
                }
                else values!.Append(1)[0] = Number(cell, line, count, targetCol);
            }
            lines.Append(1)[0] = line;
            count++;
        }
        if (count == 0) throw new TableException(source, 0, "the table has a header but no rows.");

        string[]? classNames = null;
        int[]? ids = classes?.ToArray(count);
        if (labels != null)
        {
            classNames = new string[labels.Count];
            foreach (var (label, id) in labels) classNames[id] = label;
            if (!fixedLabels)
            {
                // sorted labels: numerically when all are integers (so 0…K−1 keep their values), else by ordinal text order
                bool integers = classNames.All(l => long.TryParse(l, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _));
                var sorted = integers
                    ? [.. classNames.OrderBy(l => long.Parse(l, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture))]
                    : classNames.Order(StringComparer.Ordinal).ToArray();
                var newId = new int[classNames.Length];
                for (int i = 0; i < sorted.Length; i++) newId[Array.IndexOf(classNames, sorted[i])] = i;
                if (ids != null) for (int i = 0; i < ids.Length; i++) ids[i] = newId[ids[i]];
                classNames = sorted;
            }
            if (options.TargetKind == TableTarget.Binary && classNames.Length > 2)
                throw new TableException(source, 0, $"the target '{Clip(options.Target)}' has {classNames.Length} labels ({string.Join(", ", classNames.Take(10).Select(Clip))}{(classNames.Length > 10 ? ", …" : "")}); a binary target has two.");
        }
        float[]? floats = values?.ToArray(count);
        if (options.TargetKind == TableTarget.Binary && ids != null)
        {
            floats = new float[count];
            for (int i = 0; i < count; i++) floats[i] = ids[i];
        }
        return new Table(source, featureNames, options.Target, options.TargetKind, count, features.ToArray((long)count * d),
            options.TargetKind == TableTarget.Values ? null : ids, floats, classNames, lines.ToArray(count));

        float Number(ReadOnlySpan<char> cell, int line, int row, int col)
        {
            if (cell.Length == 0) throw Bad(line, row, col, "the cell is empty; every feature and value needs a number (fill or drop the rows with missing values)");
            if (float.TryParse(cell, NumberStyles.Float, CultureInfo.InvariantCulture, out float v))
            {
                if (float.IsFinite(v)) return v;
                throw Bad(line, row, col, $"'{Clip(cell.ToString())}' is {(float.IsNaN(v) ? "NaN" : "infinite in float32")}; features and values must be finite numbers");
            }
            throw Bad(line, row, col, $"'{Clip(cell.ToString())}' is not a number (write numbers like 0.5 or -1e-3: a point for the decimals, no thousands separators)");
        }

        TableException Bad(int line, int row, int col, string what) =>
            new(source, line, $"row {row + 1}, column {col + 1} ('{Clip(names[col])}'): {what}.");
    }

    private static string Columns(IReadOnlyList<string> names) =>
        string.Join(", ", names.Take(30).Select(n => $"'{Clip(n)}'")) + (names.Count > 30 ? $", … ({names.Count} in all)" : "");

    /// <summary>A name or cell cut to 40 characters with control characters escaped, for messages.</summary>
    internal static string Clip(string s)
    {
        var sb = new System.Text.StringBuilder();
        foreach (char c in s.Length > 40 ? s[..37] : s) sb.Append(char.IsControl(c) ? $"\\u{(int)c:X4}" : c);
        if (s.Length > 40) sb.Append("...");
        return sb.ToString();
    }

    /// <summary>An array that doubles as it fills, refusing (before it grows) more than .NET's array limit or the memory this process may use.</summary>
    private sealed class Growable<T>(string source) where T : unmanaged
    {
        private T[] _items = new T[1024];
        private long _count;

        public Span<T> Append(int n)
        {
            if (_count + n > _items.Length)
            {
                long size = Math.Max(_count + n, Math.Min((long)_items.Length * 2, Array.MaxLength));
                long bytes = size * System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
                if (_count + n > Array.MaxLength)
                    throw new TableException(source, 0, $"the table needs more than {Array.MaxLength:N0} values in one array, .NET's limit; give fewer rows or columns.");
                if (bytes > MemoryBudget.Available)
                    throw new TableException(source, 0, $"the table needs {bytes:N0} bytes for its values so far; this process can use {MemoryBudget.Available:N0}.");
                Array.Resize(ref _items, (int)size);
            }
            var span = _items.AsSpan((int)_count, n);
            _count += n;
            return span;
        }

        public T[] ToArray(long length) => length == _items.Length ? _items : _items.AsSpan(0, (int)length).ToArray();
    }
}
