using HpBackprop.IO;

namespace HpBackprop.Tests;

/// <summary>Locates the committed PyTorch oracle bundles and measures differences against them.</summary>
internal static class Oracle
{
    public static readonly string[] Cases = ["seed", "n2", "large", "vocab100", "repeated", "bigLogits"];

    public static string RepoRoot { get; } = FindRoot();

    private static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "HpBackprop.sln"))) return d.FullName;
        throw new InvalidOperationException("cannot find the repository root (HpBackprop.sln) above " + AppContext.BaseDirectory);
    }

    public static string BundlePath(string name, string precision) => Path.Combine(RepoRoot, "tests", "reference", "bundles", $"{name}.{precision}.safetensors");

    private static readonly Dictionary<string, BatchBundle> Cache = new();

    public static BatchBundle Load(string name, string precision)
    {
        lock (Cache)
        {
            string key = name + "." + precision;
            if (!Cache.TryGetValue(key, out var b)) Cache[key] = b = BatchBundle.Load(BundlePath(name, precision));
            return b;
        }
    }

    /// <summary>The tensor whose largest magnitude sets the scale of a gradient's error (see <see cref="HpBackprop.Reference.ParityTable.ScaleTensorOf"/>).</summary>
    public static string ScaleOf(string grad) => HpBackprop.Reference.ParityTable.ScaleTensorOf(grad);

    public static double MaxAbs(ReadOnlySpan<double> a) { double m = 0; foreach (double x in a) m = Math.Max(m, Math.Abs(x)); return m; }

    public static double MaxAbsDiff(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        Assert.AreEqual(a.Length, b.Length, "length");
        double m = 0;
        for (int i = 0; i < a.Length; i++)
        {
            double d = Math.Abs(a[i] - b[i]);
            if (double.IsNaN(d)) return double.NaN;
            m = Math.Max(m, d);
        }
        return m;
    }
}
