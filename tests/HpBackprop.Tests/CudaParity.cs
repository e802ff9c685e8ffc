namespace HpBackprop.Tests;

/// <summary>Relative errors between two float tensors, shared by the CPU-vs-GPU and fused-vs-unfused tests.</summary>
internal static class CudaParity
{
    /// <summary>max |actual − expected| / max |expected| (0 when both are 0; NaN counts as +∞).</summary>
    public static double Relative(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        Assert.AreEqual(expected.Length, actual.Length, "length");
        double scale = 0, diff = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            scale = Math.Max(scale, Math.Abs((double)expected[i]));
            double d = Math.Abs((double)actual[i] - expected[i]);
            diff = double.IsNaN(d) ? double.PositiveInfinity : Math.Max(diff, d);
        }
        return diff == 0 ? 0 : diff / scale;
    }
}
