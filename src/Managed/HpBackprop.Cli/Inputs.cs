using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace HpBackprop.Cli;

/// <summary>Checks of the command line made before any work starts: numbers, output paths, paths that would overwrite inputs.</summary>
internal static class Inputs
{
    /// <summary>
    /// A float option read as an invariant-culture number without thousands separators ("0,1" is not 1), finite,
    /// and in [<paramref name="min"/>, <paramref name="max"/>].
    /// </summary>
    public static Option<float> Float(string name, string description, float defaultValue, float min = float.MinValue, float max = float.MaxValue) =>
        new(name)
        {
            Description = description,
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r => ParseFloat(r, name, min, max) ?? defaultValue,
        };

    /// <summary>A nullable float option with the same rules as <see cref="Float"/>.</summary>
    public static Option<float?> NullableFloat(string name, string description, float min = float.MinValue, float max = float.MaxValue) =>
        new(name) { Description = description, CustomParser = r => ParseFloat(r, name, min, max) };

    /// <summary>A double option with the same rules as <see cref="Float"/>.</summary>
    public static Option<double> Double(string name, string description, double defaultValue, double min = double.MinValue, double max = double.MaxValue) =>
        new(name)
        {
            Description = description,
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r =>
            {
                string t = Token(r);
                if (!double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
                {
                    r.AddError($"{name} '{Clip(t)}': not a finite number (write it like 0.1 or 1e-3: a point for the decimals, no thousands separators).");
                    return defaultValue;
                }
                if (v < min || v > max) { r.AddError($"{name} {t}: must be in [{min.ToString(CultureInfo.InvariantCulture)}, {max.ToString(CultureInfo.InvariantCulture)}]."); return defaultValue; }
                return v;
            },
        };

    private static float? ParseFloat(ArgumentResult r, string name, float min, float max)
    {
        string t = Token(r);
        if (!float.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out float v) || !float.IsFinite(v))
        {
            r.AddError($"{name} '{Clip(t)}': not a finite number (write it like 0.1 or 1e-3: a point for the decimals, no thousands separators).");
            return null;
        }
        if (v < min || v > max)
        {
            r.AddError($"{name} {t}: must be in [{min.ToString(CultureInfo.InvariantCulture)}, {max.ToString(CultureInfo.InvariantCulture)}].");
            return null;
        }
        return v;
    }

    private static string Token(ArgumentResult r) => r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";

    /// <summary>A value cut to 60 characters with control characters escaped, for error messages.</summary>
    public static string Clip(string s)
    {
        var sb = new System.Text.StringBuilder();
        foreach (char c in s.Length > 60 ? s[..57] : s) sb.Append(char.IsControl(c) ? $"\\u{(int)c:X4}" : c);
        if (s.Length > 60) sb.Append("...");
        return sb.ToString();
    }

    /// <summary>
    /// Fails unless <paramref name="path"/> can be written: not empty, not a directory, its folder reachable (no file on
    /// the way) and writable — checked by creating and deleting a probe file beside it, before any work.
    /// </summary>
    public static void CheckWritable(string option, string? path)
    {
        if (path == null) return;
        if (path.Trim().Length == 0) throw new UserErrorException($"{option}: the path is empty; give a file to write.");
        string full;
        try { full = Path.GetFullPath(path); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException) { throw new UserErrorException($"{option} {Clip(path)}: not a usable path ({e.Message})."); }
        if (Directory.Exists(full)) throw new UserErrorException($"{option} {Clip(path)}: is a directory; give a file name to write.");
        if (IO.FileIdentity.SpecialKind(full) is { } kind)
            throw new UserErrorException($"{option} {Clip(path)}: is {kind}, not a regular file; an output is written to a temporary file and renamed over the path, which would replace it. Give a regular file.");
        string dir = Path.GetDirectoryName(full) ?? throw new UserErrorException($"{option} {Clip(path)}: names no file.");
        for (string? d = dir; d != null; d = Path.GetDirectoryName(d))
        {
            if (Directory.Exists(d)) break;
            if (File.Exists(d)) throw new UserErrorException($"{option} {Clip(path)}: '{Clip(d)}' is a file, not a directory, so nothing can be written under it.");
        }
        string probe = Path.Combine(dir, "." + Path.GetFileName(full) + "." + Environment.ProcessId + ".probe.tmp");
        try
        {
            Directory.CreateDirectory(dir);
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None)) { }
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try { if (File.Exists(probe)) File.Delete(probe); } catch (IOException) { }
            throw new UserErrorException($"{option} {Clip(path)}: cannot write a file there ({e.Message.Replace(probe, dir)}); check the folder exists and is writable.");
        }
    }

    /// <summary>Fails when two of the named paths are the same file: writing one would destroy the other.</summary>
    public static void CheckDistinct(params (string Option, string? Path)[] paths)
    {
        for (int i = 0; i < paths.Length; i++)
            for (int j = i + 1; j < paths.Length; j++)
            {
                if (paths[i].Path is not { } a || paths[j].Path is not { } b) continue;
                if (SameFile(a, b))
                    throw new UserErrorException($"{paths[i].Option} and {paths[j].Option} are the same file ({Clip(a)}): writing one would destroy the other; give them different paths.");
            }
    }

    /// <summary>
    /// Whether two paths name the same file: the same device and inode after every link is resolved (a symbolic link, a
    /// linked directory, a hard link, <c>..</c>), or, for paths that do not exist yet, the same fully resolved path.
    /// </summary>
    private static bool SameFile(string a, string b) =>
        IO.FileIdentity.Same(a, b)
        || (!OperatingSystem.IsLinux() && string.Equals(IO.FileIdentity.Resolve(a), IO.FileIdentity.Resolve(b), StringComparison.OrdinalIgnoreCase));

    /// <summary>Fails when <paramref name="path"/> names a directory (reported as such, not as a missing file).</summary>
    public static void CheckInputFile(string option, string? path)
    {
        if (path == null) return;
        if (path.Length == 0) throw new UserErrorException($"{option}: the path is empty; give a file to read.");
        if (Directory.Exists(path)) throw new UserErrorException($"{option} {Clip(path)}: is a directory; give a file.");
    }

    /// <summary>
    /// Fails unless <paramref name="path"/> names an existing file: a directory is reported as such (<see cref="CheckInputFile"/>),
    /// a missing file as <c>OPTION PATH: no such file</c>, naming the option and the whole path (its last 200 characters at most).
    /// </summary>
    public static void CheckExistingFile(string option, string? path)
    {
        CheckInputFile(option, path);
        if (path != null && !File.Exists(path))
            throw new UserErrorException($"{option} {ClipPath(path)}: no such file; give an existing file.");
    }

    /// <summary>A path for an error message: control characters escaped, and when longer than 200 characters its last 197 after "...", so that the file's name is kept.</summary>
    public static string ClipPath(string path)
    {
        var sb = new System.Text.StringBuilder();
        foreach (char c in path.Length > 200 ? path[^197..] : path) sb.Append(char.IsControl(c) ? $"\\u{(int)c:X4}" : c);
        return path.Length > 200 ? "..." + sb : sb.ToString();
    }

    /// <summary>
    /// Refuses, before any of it is allocated, work whose parts (each named, in bytes counted in 64 bits) need more memory
    /// than this process can use; the message gives every part and the total.
    /// </summary>
    public static void Budget(string what, string remedy, params (string Part, long Bytes)[] parts)
    {
        long total = 0;
        foreach (var p in parts) total += p.Bytes;
        long available = Networks.MemoryBudget.Available;
        if (total > available)
            throw new UserErrorException($"{what} needs {total:N0} bytes ({string.Join("; ", parts.Select(p => $"{p.Part}: {p.Bytes:N0}"))}); this process can use {available:N0}. {remedy}");
    }

    /// <summary>Fails when <paramref name="a"/> is given (not its default) together with any of <paramref name="others"/>, naming both.</summary>
    public static void Exclusive(ParseResult pr, Option a, string why, params Option[] others)
    {
        if (!Given(pr, a)) return;
        foreach (var o in others)
            if (Given(pr, o)) throw new UserErrorException($"{o.Name} and {a.Name} cannot be given together: {why}");
    }

    /// <summary>Whether the option was given on the command line (not its default).</summary>
    public static bool Given(ParseResult pr, Option option) => pr.GetResult(option) is { Implicit: false };
}
