using System.Globalization;
using System.Text;

namespace HpBackprop.Reference;

/// <summary>One row of the exercise-1 comparison table (the seeds' <c>cmp</c>).</summary>
/// <param name="Name">Tensor name.</param>
/// <param name="Exact">Every element bitwise equal.</param>
/// <param name="Approximate">Every element within <c>1e-8 + 1e-5·|expected|</c> (the defaults of <c>torch.allclose</c>).</param>
/// <param name="MaxDiff">Largest absolute difference.</param>
/// <param name="Relative">Largest absolute difference over the scale (the largest magnitude of the expected tensor, or of the tensor named as its scale).</param>
public readonly record struct ParityRow(string Name, bool Exact, bool Approximate, double MaxDiff, double Relative);

/// <summary>Builds and prints the name | exact | approximate | maxdiff table.</summary>
public static class ParityTable
{
    /// <summary>
    /// The tensor whose largest magnitude measures a gradient's error: the gradient itself, except
    /// <c>dlogit_maxes</c> (≈ 0 by construction, rounding noise) against <c>dlogits</c> and <c>db1</c>
    /// (≈ 0 because batch norm cancels b1) against <c>dhprebn</c>.
    /// </summary>
    public static string ScaleTensorOf(string gradient) => gradient switch
    {
        "dlogit_maxes" => "dlogits",
        "db1" => "dhprebn",
        _ => gradient,
    };

    /// <summary>Compares <paramref name="actual"/> with <paramref name="expected"/>; <paramref name="scale"/> defaults to the largest |expected|.</summary>
    public static ParityRow Compare(string name, ReadOnlySpan<double> expected, ReadOnlySpan<double> actual, double? scale = null)
    {
        if (expected.Length != actual.Length) throw new ArgumentException($"{name}: {actual.Length} elements vs {expected.Length} expected.");
        bool exact = true, approx = true;
        double maxDiff = 0, maxAbs = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double d = Math.Abs(actual[i] - expected[i]);
            if (double.IsNaN(d)) { maxDiff = double.NaN; exact = approx = false; continue; }
            exact &= actual[i].Equals(expected[i]);
            approx &= d <= 1e-8 + 1e-5 * Math.Abs(expected[i]);
            maxDiff = Math.Max(maxDiff, d);
            maxAbs = Math.Max(maxAbs, Math.Abs(expected[i]));
        }
        double s = scale ?? maxAbs;
        return new ParityRow(name, exact, approx, maxDiff, s > 0 ? maxDiff / s : maxDiff);
    }

    /// <summary>Formats rows as an aligned text table with a title line.</summary>
    public static string Format(string title, IEnumerable<ParityRow> rows)
    {
        var sb = new StringBuilder();
        sb.AppendLine(title);
        sb.AppendLine($"{"name",-16} | {"exact",-5} | {"approx",-6} | {"maxdiff",-9} | relerr");
        foreach (var r in rows)
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture, $"{r.Name,-16} | {r.Exact,-5} | {r.Approximate,-6} | {r.MaxDiff,-9:0.00E+00} | {r.Relative:0.00E+00}"));
        return sb.ToString();
    }
}
