using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace HpBackprop.IO;

/// <summary>Element types of a safetensors file that the library reads and writes.</summary>
public enum DType
{
    /// <summary>IEEE single precision.</summary>
    F32,
    /// <summary>IEEE double precision.</summary>
    F64,
    /// <summary>32-bit signed integer.</summary>
    I32,
    /// <summary>64-bit signed integer.</summary>
    I64,
    /// <summary>8-bit unsigned integer (the dropout masks <c>mask.{i}</c> of the stack bundles).</summary>
    U8,
}

/// <summary>The file is not a valid safetensors file; the message says where and why.</summary>
public sealed class SafeTensorsFormatException : IOException
{
    /// <summary>Creates the exception for <paramref name="source"/>.</summary>
    public SafeTensorsFormatException(string source, string message) : base($"{source}: not a valid safetensors file: {message}") { }
}

/// <summary>One tensor of a safetensors file.</summary>
public sealed class SafeTensor
{
    internal SafeTensor(string name, DType dtype, int[] shape, byte[] data)
    {
        Name = name; DType = dtype; Shape = shape; Data = data;
    }

    /// <summary>The tensor's name.</summary>
    public string Name { get; }

    /// <summary>The element type.</summary>
    public DType DType { get; }

    /// <summary>The shape (empty for a scalar).</summary>
    public int[] Shape { get; }

    /// <summary>The raw little-endian bytes.</summary>
    public byte[] Data { get; }

    /// <summary>Number of elements.</summary>
    public int Length => Shape.Aggregate(1, (a, b) => checked(a * b));

    /// <summary>The values as doubles (exact for F32, F64, I32, U8; I64 beyond 2^53 rounds).</summary>
    public double[] ToDouble()
    {
        var o = new double[Length];
        switch (DType)
        {
            case DType.F64: MemoryMarshal.Cast<byte, double>(Data).CopyTo(o); break;
            case DType.F32: { var s = MemoryMarshal.Cast<byte, float>(Data); for (int i = 0; i < o.Length; i++) o[i] = s[i]; break; }
            case DType.I32: { var s = MemoryMarshal.Cast<byte, int>(Data); for (int i = 0; i < o.Length; i++) o[i] = s[i]; break; }
            case DType.I64: { var s = MemoryMarshal.Cast<byte, long>(Data); for (int i = 0; i < o.Length; i++) o[i] = s[i]; break; }
            case DType.U8: for (int i = 0; i < o.Length; i++) o[i] = Data[i]; break;
        }
        return o;
    }

    /// <summary>The values as floats (F64 rounds to nearest).</summary>
    public float[] ToSingle()
    {
        if (DType == DType.F32) return MemoryMarshal.Cast<byte, float>(Data).ToArray();
        var d = ToDouble();
        var o = new float[d.Length];
        for (int i = 0; i < o.Length; i++) o[i] = (float)d[i];
        return o;
    }

    /// <summary>The values of an integer tensor as <see cref="int"/>.</summary>
    /// <exception cref="InvalidDataException">The tensor is not I32/I64 or a value does not fit.</exception>
    public int[] ToInt32()
    {
        switch (DType)
        {
            case DType.I32: return MemoryMarshal.Cast<byte, int>(Data).ToArray();
            case DType.I64:
                {
                    var s = MemoryMarshal.Cast<byte, long>(Data);
                    var o = new int[s.Length];
                    for (int i = 0; i < o.Length; i++)
                    {
                        if (s[i] < int.MinValue || s[i] > int.MaxValue) throw new InvalidDataException($"tensor '{Name}': value {s[i]} does not fit in 32 bits.");
                        o[i] = (int)s[i];
                    }
                    return o;
                }
            default: throw new InvalidDataException($"tensor '{Name}' has dtype {DType}; an integer tensor (I32 or I64) is needed.");
        }
    }
}

/// <summary>
/// Reader and writer for the safetensors format: an 8-byte little-endian header length, a JSON
/// header mapping each name to its dtype, shape and byte range (plus an optional
/// <c>__metadata__</c> map of strings), then the raw little-endian data. PyTorch and the
/// <c>safetensors</c> package read what this writes.
/// </summary>
public sealed class SafeTensorsFile
{
    private const string MetadataKey = "__metadata__";
    private const long MaxHeader = 100 * 1024 * 1024;
    private readonly Dictionary<string, SafeTensor> _tensors = new(StringComparer.Ordinal);

    /// <summary>The header's string metadata.</summary>
    public Dictionary<string, string> Metadata { get; } = new(StringComparer.Ordinal);

    /// <summary>The tensors by name.</summary>
    public IReadOnlyDictionary<string, SafeTensor> Tensors => _tensors;

    /// <summary>A tensor by name.</summary>
    /// <exception cref="KeyNotFoundException">No tensor has that name.</exception>
    public SafeTensor this[string name] => _tensors.TryGetValue(name, out var t) ? t
        : throw new KeyNotFoundException($"the file has no tensor named '{name}'.");

    /// <summary>Whether a tensor of that name exists.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>Adds (or replaces) a float tensor.</summary>
    public void Add(string name, ReadOnlySpan<float> data, params int[] shape) => Add(name, DType.F32, MemoryMarshal.AsBytes(data), shape);

    /// <summary>Adds (or replaces) a double tensor.</summary>
    public void Add(string name, ReadOnlySpan<double> data, params int[] shape) => Add(name, DType.F64, MemoryMarshal.AsBytes(data), shape);

    /// <summary>Adds (or replaces) an int32 tensor.</summary>
    public void Add(string name, ReadOnlySpan<int> data, params int[] shape) => Add(name, DType.I32, MemoryMarshal.AsBytes(data), shape);

    /// <summary>Adds (or replaces) an int64 tensor.</summary>
    public void Add(string name, ReadOnlySpan<long> data, params int[] shape) => Add(name, DType.I64, MemoryMarshal.AsBytes(data), shape);

    private void Add(string name, DType dtype, ReadOnlySpan<byte> bytes, int[] shape)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (name == MetadataKey) throw new ArgumentException($"'{MetadataKey}' is reserved.", nameof(name));
        long len = 1;
        foreach (int d in shape) { if (d < 0) throw new ArgumentException("negative dimension.", nameof(shape)); len *= d; }
        if (len * Size(dtype) != bytes.Length)
            throw new ArgumentException($"tensor '{name}': {bytes.Length} bytes do not match shape [{string.Join(", ", shape)}] of {dtype}.", nameof(shape));
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("big-endian hosts are not supported.");
        _tensors[name] = new SafeTensor(name, dtype, (int[])shape.Clone(), bytes.ToArray());
    }

    /// <summary>Size in bytes of one element.</summary>
    public static int Size(DType t) => t switch { DType.F32 or DType.I32 => 4, DType.U8 => 1, _ => 8 };

    /// <summary>Reads a file.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist or is a directory.</exception>
    /// <exception cref="SafeTensorsFormatException">The file is truncated or malformed.</exception>
    public static SafeTensorsFile Read(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Directory.Exists(path)) throw new FileNotFoundException($"'{path}' is a directory, not a safetensors file.", path);
        if (!File.Exists(path)) throw new FileNotFoundException($"'{path}' does not exist.", path);
        return Parse(File.ReadAllBytes(path), path);
    }

    /// <summary>Parses the bytes of a file; <paramref name="source"/> names it in errors.</summary>
    public static SafeTensorsFile Parse(ReadOnlySpan<byte> bytes, string source)
    {
        if (bytes.Length < 8) throw new SafeTensorsFormatException(source, $"{bytes.Length} bytes is shorter than the 8-byte header length (truncated?).");
        ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        if (headerLen > MaxHeader) throw new SafeTensorsFormatException(source, $"header length {headerLen} is implausible.");
        if (8 + (long)headerLen > bytes.Length) throw new SafeTensorsFormatException(source, $"header of {headerLen} bytes runs past the end of the {bytes.Length}-byte file (truncated?).");
        ReadOnlySpan<byte> data = bytes[(8 + (int)headerLen)..];
        var file = new SafeTensorsFile();
        JsonDocument doc;
        try { doc = JsonDocument.Parse(bytes.Slice(8, (int)headerLen).ToArray()); }
        catch (JsonException e) { throw new SafeTensorsFormatException(source, $"the header is not valid JSON ({e.Message})."); }
        using (doc)
        try
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new SafeTensorsFormatException(source, "the header is not a JSON object.");
            var ranges = new List<(long Begin, long End, string Name)>();
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == MetadataKey)
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object) throw new SafeTensorsFormatException(source, "__metadata__ is not an object.");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String) throw new SafeTensorsFormatException(source, $"metadata '{m.Name}' is not a string.");
                        file.Metadata[m.Name] = m.Value.GetString()!;
                    }
                    continue;
                }
                if (file._tensors.ContainsKey(prop.Name))
                    throw new SafeTensorsFormatException(source, $"tensor '{prop.Name}' appears twice in the header.");
                var t = ParseEntry(prop, source);
                long begin = t.Begin, end = t.End;
                if (begin < 0 || end < begin || end > data.Length)
                    throw new SafeTensorsFormatException(source, $"tensor '{prop.Name}' claims bytes [{begin}, {end}) of a {data.Length}-byte data section (truncated?).");
                long expected = 1;
                try
                {
                    // checked: a shape such as [2^30, 2^30, 2^30] must not wrap to a plausible byte count
                    foreach (int d in t.Shape) expected = checked(expected * d);
                    expected = checked(expected * Size(t.DType));
                }
                catch (OverflowException)
                {
                    throw new SafeTensorsFormatException(source, $"tensor '{prop.Name}' has shape [{string.Join(", ", t.Shape)}], too large to address.");
                }
                if (end - begin != expected)
                    throw new SafeTensorsFormatException(source, $"tensor '{prop.Name}' has {end - begin} bytes but shape [{string.Join(", ", t.Shape)}] of {t.DType} needs {expected}.");
                ranges.Add((begin, end, prop.Name));
                file._tensors[prop.Name] = new SafeTensor(prop.Name, t.DType, t.Shape, data[(int)begin..(int)end].ToArray());
            }
            ranges.Sort((a, b) => a.Begin.CompareTo(b.Begin));
            long pos = 0;
            foreach (var r in ranges)
            {
                if (r.Begin != pos) throw new SafeTensorsFormatException(source, $"tensor '{r.Name}' starts at {r.Begin}, expected {pos} (gap or overlap).");
                pos = r.End;
            }
            if (pos != data.Length) throw new SafeTensorsFormatException(source, $"the data section has {data.Length - pos} trailing bytes that no tensor uses.");
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or FormatException or JsonException)
        {
            // e.g. a name or string that is not valid UTF-8 or holds an escaped lone surrogate ("Cannot transcode invalid UTF-8 JSON text")
            throw new SafeTensorsFormatException(source, $"the header holds text that cannot be read ({e.Message}).");
        }
        return file;
    }

    private static (DType DType, int[] Shape, long Begin, long End) ParseEntry(JsonProperty prop, string source)
    {
        try
        {
            var v = prop.Value;
            string dt = v.GetProperty("dtype").GetString() ?? "";
            DType dtype = dt switch
            {
                "F32" => DType.F32, "F64" => DType.F64, "I32" => DType.I32, "I64" => DType.I64, "U8" => DType.U8,
                _ => throw new SafeTensorsFormatException(source, $"tensor '{prop.Name}' has dtype '{dt}'; supported: F32, F64, I32, I64, U8."),
            };
            int[] shape = v.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            if (shape.Any(d => d < 0)) throw new SafeTensorsFormatException(source, $"tensor '{prop.Name}' has a negative dimension.");
            var off = v.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            if (off.Length != 2) throw new SafeTensorsFormatException(source, $"tensor '{prop.Name}' needs two data_offsets.");
            return (dtype, shape, off[0], off[1]);
        }
        catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new SafeTensorsFormatException(source, $"tensor '{prop.Name}' has a malformed header entry ({e.Message}).");
        }
    }

    /// <summary>The file's bytes: tensors in name order, header padded with spaces to a multiple of 8.</summary>
    public byte[] ToBytes()
    {
        var names = _tensors.Keys.OrderBy(k => k, StringComparer.Ordinal).ToList();
        var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (Metadata.Count > 0)
            {
                w.WriteStartObject(MetadataKey);
                foreach (var kv in Metadata.OrderBy(k => k.Key, StringComparer.Ordinal)) w.WriteString(kv.Key, kv.Value);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (string name in names)
            {
                var t = _tensors[name];
                w.WriteStartObject(name);
                w.WriteString("dtype", t.DType.ToString());
                w.WriteStartArray("shape");
                foreach (int d in t.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + t.Data.Length);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += t.Data.Length;
            }
            w.WriteEndObject();
        }
        byte[] header = ms.ToArray();
        int padded = (header.Length + 7) / 8 * 8;
        long total = 8 + padded + names.Sum(n => (long)_tensors[n].Data.Length);
        var o = new byte[total];
        BinaryPrimitives.WriteUInt64LittleEndian(o, (ulong)padded);
        header.CopyTo(o, 8);
        o.AsSpan(8 + header.Length, padded - header.Length).Fill((byte)' ');
        long pos = 8 + padded;
        foreach (string name in names) { _tensors[name].Data.CopyTo(o, pos); pos += _tensors[name].Data.Length; }
        return o;
    }

    /// <summary>
    /// Writes the file atomically: to a temporary file beside <paramref name="path"/>, flushed to
    /// disk, then renamed over it. An interrupted save leaves any previous file intact.
    /// </summary>
    public void Save(string path) => AtomicFile.Write(path, ToBytes());
}

/// <summary>Writes files through a temporary file and a rename, so a crash never leaves a half-written file.</summary>
public static class AtomicFile
{
    /// <summary>Test hook: called after the temporary file is written and before it replaces the target.</summary>
    internal static Action<string>? BeforeRename { get; set; }

    /// <summary>
    /// Writes <paramref name="bytes"/> to <paramref name="path"/> via a temporary file and rename. Temporary files of
    /// an earlier save to the same path by a process that no longer runs (killed during the save) are removed first.
    /// </summary>
    /// <exception cref="IOException"><paramref name="path"/> exists and is not a regular file (a device, a FIFO, a socket): it is not replaced.</exception>
    public static void Write(string path, ReadOnlySpan<byte> bytes)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string full = Path.GetFullPath(path);
        if (FileIdentity.SpecialKind(full) is { } kind)
            throw new IOException($"'{path}' is {kind}, not a regular file: a save replaces the file it writes, so it does not write there.");
        string dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        RemoveStale(dir, Path.GetFileName(full));
        string tmp = Path.Combine(dir, "." + Path.GetFileName(full) + "." + Environment.ProcessId + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                fs.Write(bytes);
                fs.Flush(flushToDisk: true);
            }
            BeforeRename?.Invoke(tmp);
            File.Move(tmp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    /// <summary>Deletes <c>.NAME.PID.xxxxxxxx.tmp</c> files in <paramref name="dir"/> left by processes that no longer run.</summary>
    private static void RemoveStale(string dir, string name)
    {
        string prefix = "." + name + ".";
        IEnumerable<string> candidates;
        try { candidates = Directory.EnumerateFiles(dir, prefix + "*.tmp").ToArray(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return; }
        foreach (string f in candidates)
        {
            string rest = Path.GetFileName(f)[prefix.Length..^".tmp".Length];   // PID.xxxxxxxx
            int dot = rest.IndexOf('.');
            if (dot <= 0 || rest.Length - dot - 1 != 8 || !int.TryParse(rest.AsSpan(0, dot), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int pid)) continue;
            if (pid == Environment.ProcessId || IsRunning(pid)) continue;
            try { File.Delete(f); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
    }

    private static bool IsRunning(int pid)
    {
        try { using var p = System.Diagnostics.Process.GetProcessById(pid); return !p.HasExited; }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }
}
