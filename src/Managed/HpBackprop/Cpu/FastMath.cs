using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

[module: SkipLocalsInit]

namespace HpBackprop.Cpu;

/// <summary>
/// Single-precision vector <c>exp</c> and <c>tanh</c> in float arithmetic (the BCL's
/// <c>Vector512.Exp</c> widens to double, which costs several times more). Errors are a few
/// units in the last place, far inside the float tolerance of the parity tests.
/// </summary>
internal static class FastMath
{
    // the coefficients, shared by the 512-bit and the Vector<float> forms
    private const float ExpMin = -87.33654f, ExpMax = 88.72283f, Log2E = 1.44269504088896341f, Ln2Hi = -0.693359375f, Ln2Lo = 2.12194440e-4f;
    private const float Exp6 = 1.9875691500E-4f, Exp5 = 1.3981999507E-3f, Exp4 = 8.3334519073E-3f, Exp3 = 4.1665795894E-2f, Exp2 = 1.6666665459E-1f, Exp1 = 5.0000001201E-1f;
    private const float TanhClamp = 7.90531110763549805f;
    private const float TanhP6 = -2.76076847742355e-16f, TanhP5 = 2.00018790482477e-13f, TanhP4 = -8.60467152213735e-11f, TanhP3 = 5.12229709037114e-08f,
        TanhP2 = 1.48572235717979e-05f, TanhP1 = 6.37261928875436e-04f, TanhP0 = 4.89352455891786e-03f;
    private const float TanhQ3 = 1.19825839466702e-06f, TanhQ2 = 1.18534705686654e-04f, TanhQ1 = 2.26843463243900e-03f, TanhQ0 = 4.89352518554385e-03f;

    /// <summary>
    /// <c>exp(x)</c>: <c>x = k·ln2 + r</c> with |r| ≤ ln2/2 (ln2 split in two parts), a degree-6
    /// polynomial for <c>exp(r)</c>, and <c>2^k</c> built in the exponent bits. Inputs are clamped to
    /// [−87.3, 88.7]: below it the result is flushed to 0, above it saturates near float's maximum.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> x)
    {
        var under = Vector512.LessThan(x, Vector512.Create(ExpMin));
        x = Vector512.Min(Vector512.Max(x, Vector512.Create(ExpMin)), Vector512.Create(ExpMax));
        var k = Vector512.Round(x * Vector512.Create(Log2E));
        var r = Vector512.FusedMultiplyAdd(k, Vector512.Create(Ln2Hi), x);
        r = Vector512.FusedMultiplyAdd(k, Vector512.Create(Ln2Lo), r);
        var p = Vector512.Create(Exp6);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(Exp5));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(Exp4));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(Exp3));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(Exp2));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(Exp1));
        var r2 = r * r;
        p = Vector512.FusedMultiplyAdd(p, r2, r) + Vector512<float>.One;
        // 2^k: k in [-126, 128]; split so each factor is a normal number
        var ki = Vector512.ConvertToInt32(k);
        var half = ki >> 1;
        var s1 = ((half + Vector512.Create(127)) << 23).AsSingle();
        var s2 = ((ki - half + Vector512.Create(127)) << 23).AsSingle();
        var result = p * s1 * s2;
        return Vector512.AndNot(result, under);
    }

    /// <summary>
    /// <see cref="Exp(Vector512{float})"/> at the machine's vector width (<see cref="System.Numerics.Vector{T}"/>): the same arithmetic
    /// lane by lane where the CPU has FMA (and on ARM64); without it each multiply-add is a multiply then an add (a software fused
    /// multiply-add would cost more than the exp), a rounding more per step.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static System.Numerics.Vector<float> Exp(System.Numerics.Vector<float> x)
    {
        var under = System.Numerics.Vector.LessThan(x, new System.Numerics.Vector<float>(ExpMin));
        x = System.Numerics.Vector.Min(System.Numerics.Vector.Max(x, new System.Numerics.Vector<float>(ExpMin)), new System.Numerics.Vector<float>(ExpMax));
        var k = System.Numerics.Vector.Round(x * new System.Numerics.Vector<float>(Log2E));
        var r = System.Numerics.Vector.MultiplyAddEstimate(k, new System.Numerics.Vector<float>(Ln2Hi), x);
        r = System.Numerics.Vector.MultiplyAddEstimate(k, new System.Numerics.Vector<float>(Ln2Lo), r);
        var p = new System.Numerics.Vector<float>(Exp6);
        p = System.Numerics.Vector.MultiplyAddEstimate(p, r, new System.Numerics.Vector<float>(Exp5));
        p = System.Numerics.Vector.MultiplyAddEstimate(p, r, new System.Numerics.Vector<float>(Exp4));
        p = System.Numerics.Vector.MultiplyAddEstimate(p, r, new System.Numerics.Vector<float>(Exp3));
        p = System.Numerics.Vector.MultiplyAddEstimate(p, r, new System.Numerics.Vector<float>(Exp2));
        p = System.Numerics.Vector.MultiplyAddEstimate(p, r, new System.Numerics.Vector<float>(Exp1));
        var r2 = r * r;
        p = System.Numerics.Vector.MultiplyAddEstimate(p, r2, r) + System.Numerics.Vector<float>.One;
        var ki = System.Numerics.Vector.ConvertToInt32(k);
        var half = ki >> 1;
        var s1 = System.Numerics.Vector.AsVectorSingle((half + new System.Numerics.Vector<int>(127)) << 23);
        var s2 = System.Numerics.Vector.AsVectorSingle((ki - half + new System.Numerics.Vector<int>(127)) << 23);
        var result = p * s1 * s2;
        return System.Numerics.Vector.AndNot(result, System.Numerics.Vector.AsVectorSingle(under));
    }

    /// <summary>
    /// <c>tanh(x)</c> as the odd rational approximation x·P(x²)/Q(x²) (degree 13/6, the minimax
    /// fit used by Eigen's fast tanh), argument clamped to ±7.9053 where tanh rounds to ±1.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Tanh(Vector512<float> x)
    {
        x = Vector512.Min(Vector512.Max(x, Vector512.Create(-TanhClamp)), Vector512.Create(TanhClamp));
        var x2 = x * x;
        var p = Vector512.FusedMultiplyAdd(x2, Vector512.Create(TanhP6), Vector512.Create(TanhP5));
        p = Vector512.FusedMultiplyAdd(p, x2, Vector512.Create(TanhP4));
        p = Vector512.FusedMultiplyAdd(p, x2, Vector512.Create(TanhP3));
        p = Vector512.FusedMultiplyAdd(p, x2, Vector512.Create(TanhP2));
        p = Vector512.FusedMultiplyAdd(p, x2, Vector512.Create(TanhP1));
        p = Vector512.FusedMultiplyAdd(p, x2, Vector512.Create(TanhP0));
        p *= x;
        var q = Vector512.FusedMultiplyAdd(x2, Vector512.Create(TanhQ3), Vector512.Create(TanhQ2));
        q = Vector512.FusedMultiplyAdd(q, x2, Vector512.Create(TanhQ1));
        q = Vector512.FusedMultiplyAdd(q, x2, Vector512.Create(TanhQ0));
        // p/q without the division (a 512-bit divide costs ~10 cycles of throughput): the 14-bit
        // reciprocal estimate refined by one Newton step, r·(2 − q·r), good to about 1 ulp
        var r = Avx512F.Reciprocal14(q);
        r *= Avx512F.FusedMultiplyAddNegated(q, r, Vector512.Create(2f));
        return p * r;
    }

    /// <summary>
    /// <see cref="Tanh(Vector512{float})"/> at the machine's vector width: the same rational function with a division for
    /// <c>p/q</c> (no portable reciprocal estimate), multiply-adds as estimates (fused where the CPU has FMA).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static System.Numerics.Vector<float> Tanh(System.Numerics.Vector<float> x)
    {
        x = System.Numerics.Vector.Min(System.Numerics.Vector.Max(x, new System.Numerics.Vector<float>(-TanhClamp)), new System.Numerics.Vector<float>(TanhClamp));
        var x2 = x * x;
        var p = System.Numerics.Vector.MultiplyAddEstimate(x2, new System.Numerics.Vector<float>(TanhP6), new System.Numerics.Vector<float>(TanhP5));
        p = System.Numerics.Vector.MultiplyAddEstimate(p, x2, new System.Numerics.Vector<float>(TanhP4));
        p = System.Numerics.Vector.MultiplyAddEstimate(p, x2, new System.Numerics.Vector<float>(TanhP3));
        p = System.Numerics.Vector.MultiplyAddEstimate(p, x2, new System.Numerics.Vector<float>(TanhP2));
        p = System.Numerics.Vector.MultiplyAddEstimate(p, x2, new System.Numerics.Vector<float>(TanhP1));
        p = System.Numerics.Vector.MultiplyAddEstimate(p, x2, new System.Numerics.Vector<float>(TanhP0));
        p *= x;
        var q = System.Numerics.Vector.MultiplyAddEstimate(x2, new System.Numerics.Vector<float>(TanhQ3), new System.Numerics.Vector<float>(TanhQ2));
        q = System.Numerics.Vector.MultiplyAddEstimate(q, x2, new System.Numerics.Vector<float>(TanhQ1));
        q = System.Numerics.Vector.MultiplyAddEstimate(q, x2, new System.Numerics.Vector<float>(TanhQ0));
        return p / q;
    }

    /// <summary>Lanes below <paramref name="cols"/> set: the mask of a vector of <paramref name="cols"/> valid floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Mask(int cols) =>
        Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(cols)).AsSingle();

    /// <summary>A whole vector when <paramref name="full"/>, else the masked lanes (the rest zero).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe Vector512<float> Ld(float* p, Vector512<float> mask, bool full) =>
        full ? Vector512.Load(p) : Avx512F.MaskLoad(p, mask, Vector512<float>.Zero);

    /// <summary>A whole vector when <paramref name="full"/>, else only the masked lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe void St(float* p, Vector512<float> v, Vector512<float> mask, bool full)
    {
        if (full) v.Store(p); else Avx512F.MaskStore(p, mask, v);
    }
}
