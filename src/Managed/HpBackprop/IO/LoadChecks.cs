using System.Globalization;
using HpBackprop.Networks;

namespace HpBackprop.IO;

/// <summary>
/// Checks of the values a checkpoint holds, made when it is loaded: every parameter and running statistic finite, every
/// running variance ≥ 0 (batch norm takes its square root), the optimiser state of a saved run finite (AdamW's second
/// moment ≥ 0). A file that breaks one is refused naming the tensor and the element, instead of loading a network that
/// computes NaN.
/// </summary>
internal static class LoadChecks
{
    /// <summary>The parameters and running statistics of <paramref name="ps"/>, as read from <paramref name="path"/>.</summary>
    /// <exception cref="SafeTensorsFormatException">A value is not finite or a running variance is negative.</exception>
    public static void Values(ParameterStore ps, string path)
    {
        foreach (var s in ps.Parameters) Finite(ps.Value(s.Name), s.Name, path);
        foreach (var s in ps.RunningStatistics)
        {
            var v = ps.Value(s.Name);
            Finite(v, s.Name, path);
            if (s.Name.EndsWith(".running_var", StringComparison.Ordinal)) NonNegative(v, s.Name, path);
        }
        for (int j = 0; j < ps.BatchesTracked.Length; j++)
            if (ps.BatchesTracked[j] < 0)
                throw new SafeTensorsFormatException(path, $"tensor '{ps.RunningStatistics[2 * j].Layer}.num_batches_tracked' is {ps.BatchesTracked[j]}; a count of batches is not negative.");
    }

    /// <summary>The values of <paramref name="values"/> finite, or a format error naming <paramref name="tensor"/> and the element.</summary>
    public static void Finite(ReadOnlySpan<float> values, string tensor, string path)
    {
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i]))
                throw new SafeTensorsFormatException(path, $"tensor '{Layer.Clip(tensor)}' holds {values[i].ToString(CultureInfo.InvariantCulture)} at element {i}; a checkpoint's values must be finite.");
    }

    /// <summary>The values of <paramref name="values"/> ≥ 0, or a format error naming <paramref name="tensor"/> and the element.</summary>
    public static void NonNegative(ReadOnlySpan<float> values, string tensor, string path)
    {
        for (int i = 0; i < values.Length; i++)
            if (values[i] < 0)
                throw new SafeTensorsFormatException(path, $"tensor '{Layer.Clip(tensor)}' holds {values[i].ToString(CultureInfo.InvariantCulture)} at element {i}; a variance is not negative.");
    }
}
