namespace HpBackprop.Model;

/// <summary>
/// A small, fully specified random generator (SplitMix64 → uniform doubles → Box–Muller normals),
/// so initialisation and minibatch draws are the same on every .NET version and platform.
/// </summary>
public sealed class NormalRng
{
    private ulong _state;
    private double _spare;
    private bool _hasSpare;

    /// <summary>Creates a generator from a seed.</summary>
    public NormalRng(long seed) => _state = (ulong)seed ^ 0x9E3779B97F4A7C15UL;

    /// <summary>
    /// The generator's whole state (the SplitMix64 counter and the spare normal deviate of Box–Muller), to save a
    /// training run and continue it later with exactly the same draws.
    /// </summary>
    internal (ulong Counter, double Spare, bool HasSpare) State
    {
        get => (_state, _spare, _hasSpare);
        set => (_state, _spare, _hasSpare) = value;
    }

    /// <summary>The next 64 random bits.</summary>
    public ulong NextUInt64()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>A uniform double in [0, 1).</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>A uniform integer in [0, <paramref name="bound"/>) without modulo bias (Lemire's method).</summary>
    public int NextInt(int bound)
    {
        if (bound <= 0) throw new ArgumentOutOfRangeException(nameof(bound), bound, "bound must be positive.");
        ulong b = (ulong)bound;
        while (true)
        {
            ulong r = NextUInt64() >> 32;              // 32 random bits
            ulong m = r * b;
            uint low = (uint)m;
            if (low >= (uint)((0x1_0000_0000UL - b) % b)) return (int)(m >> 32);
        }
    }

    /// <summary>A standard normal deviate.</summary>
    public double Next()
    {
        if (_hasSpare) { _hasSpare = false; return _spare; }
        double u1, u2;
        do { u1 = NextDouble(); } while (u1 <= double.Epsilon);
        u2 = NextDouble();
        double r = Math.Sqrt(-2.0 * Math.Log(u1));
        _spare = r * Math.Sin(2 * Math.PI * u2);
        _hasSpare = true;
        return r * Math.Cos(2 * Math.PI * u2);
    }
}
