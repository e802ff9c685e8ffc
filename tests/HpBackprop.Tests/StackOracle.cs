using System.Globalization;
using HpBackprop.IO;
using HpBackprop.Networks;
using HpBackprop.Reference;

namespace HpBackprop.Tests;

/// <summary>
/// Locates the PyTorch oracle bundles for layer stacks (<c>tests/reference/stacks</c>, written by
/// <c>tests/reference/stack_oracle.py</c>; the environment variable <c>HPB_STACK_BUNDLES</c> points
/// elsewhere) and compares a reference result with a bundle's expected tensors.
/// </summary>
internal static class StackOracle
{
    public static string Directory { get; } =
        Environment.GetEnvironmentVariable("HPB_STACK_BUNDLES") is { Length: > 0 } d ? d : Path.Combine(Oracle.RepoRoot, "tests", "reference", "stacks");

    /// <summary>The one-step cases: every <c>{case}.f64.safetensors</c> that is not an optimiser trajectory.</summary>
    public static string[] Cases => Names(false);

    /// <summary>The optimiser cases: every <c>optim_{case}.f64.safetensors</c>, as <c>optim_{case}</c>.</summary>
    public static string[] OptimCases => Names(true);

    private static string[] Names(bool optim) => System.IO.Directory.Exists(Directory)
        ? System.IO.Directory.GetFiles(Directory, "*.f64.safetensors")
            .Select(p => Path.GetFileName(p)[..^".f64.safetensors".Length])
            .Where(c => c.StartsWith("optim_", StringComparison.Ordinal) == optim)
            .Order(StringComparer.Ordinal).ToArray()
        : [];

    public static string PathOf(string name, string precision) => Path.Combine(Directory, $"{name}.{precision}.safetensors");

    private static readonly Dictionary<string, StackBundle> Cache = new();

    public static StackBundle Load(string name, string precision)
    {
        lock (Cache)
        {
            string key = name + "." + precision;
            if (!Cache.TryGetValue(key, out var b)) Cache[key] = b = StackBundle.Load(PathOf(name, precision));
            return b;
        }
    }

    public static double[] D<T>(T[] a) where T : System.Numerics.IFloatingPointIeee754<T> => a.Select(double.CreateChecked).ToArray();

    /// <summary>The gradients that are zero by construction (<see cref="StackParity.NearZero"/>).</summary>
    public static IEnumerable<string> NearZero(Sequential stack) => StackParity.NearZero(stack);

    /// <summary>The scale of a near-zero bias gradient of layer <paramref name="layer"/> (<see cref="StackParity.NearZeroScale"/>).</summary>
    public static double NearZeroScale(StackResult<double> reference, int layer) => StackParity.NearZeroScale(reference, layer);

    /// <summary>Every expected tensor of a bundle with the matching reference tensor and the scale its error is measured against.</summary>
    public static List<(string Name, double[] Expected, double[] Actual, double Scale)> Pairs<T>(StackBundle b, StackExpected e, StackResult<T> r, StackResult<double> scaleFrom)
        where T : System.Numerics.IFloatingPointIeee754<T>
    {
        var nearZero = NearZero(b.Stack).ToHashSet();
        var list = new List<(string, double[], double[], double)>
        {
            ("loss", [e.Loss], [double.CreateChecked(r.Loss)], Math.Abs(e.Loss)),
            ("out", e.Out, D(r.Output), Oracle.MaxAbs(e.Out)),
        };
        foreach (var (name, g) in e.Gradients)
        {
            double scale = nearZero.Contains(name) ? NearZeroScale(scaleFrom, int.Parse(name.AsSpan(0, name.IndexOf('.')), CultureInfo.InvariantCulture)) : Oracle.MaxAbs(g);
            list.Add(("grad." + name, g, D(r.Gradients[name]), scale));
        }
        if (e.InputGradient is { } gx) list.Add(("grad.x", gx, D(r.InputGradient!), Oracle.MaxAbs(gx)));
        if (e.TargetGradient is { } gy) list.Add(("grad.y", gy, D(r.TargetGradient!), Oracle.MaxAbs(gy)));
        foreach (var (name, a) in e.After)
        {
            var actual = name.EndsWith(".running_mean", StringComparison.Ordinal)
                ? r.Buffers.RunningMean(int.Parse(name.AsSpan(0, name.IndexOf('.')), CultureInfo.InvariantCulture))
                : r.Buffers.RunningVar(int.Parse(name.AsSpan(0, name.IndexOf('.')), CultureInfo.InvariantCulture));
            list.Add(("after." + name, a, D(actual), Oracle.MaxAbs(a)));
        }
        return list;
    }

    public static double Rel(double[] expected, double[] actual, double scale) => Oracle.MaxAbsDiff(actual, expected) / Math.Max(scale, 1e-300);
}
