namespace HpBackprop.Cpu;

/// <summary>
/// The argument checks of the public span kernels: every size non-negative and every span at least as long as its size
/// computed in 64 bits (an <c>int</c> product such as <c>m·k</c> can wrap to a small or negative number, which a span's
/// length would then pass, and the kernel behind it runs on raw pointers).
/// </summary>
internal static class KernelArgs
{
    /// <summary>Refuses a negative size.</summary>
    public static void Size(int value, string name)
    {
        if (value < 0) throw new ArgumentOutOfRangeException(name, value, $"{name} must not be negative.");
    }

    /// <summary>Refuses a size below 1.</summary>
    public static void Positive(int value, string name)
    {
        if (value < 1) throw new ArgumentOutOfRangeException(name, value, $"{name} must be at least 1.");
    }

    /// <summary>Refuses a span shorter than <paramref name="length"/> elements.</summary>
    public static void Need(int spanLength, long length, string name)
    {
        if (spanLength < length) throw new ArgumentException($"{name} has {spanLength:N0} elements, needs {length:N0}.", name);
    }
}
