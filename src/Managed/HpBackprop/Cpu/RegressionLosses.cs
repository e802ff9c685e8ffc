using System.Numerics;
using System.Runtime.CompilerServices;

namespace HpBackprop.Cpu;

/// <summary>
/// The losses on float targets and the bare mean, each forward and backward in one pass straight from
/// the output <c>z [n,k]</c> (the loss is summed in double; <c>dz</c> is skipped when empty):
/// <list type="bullet">
/// <item><c>mse</c>: <c>loss = mean (z − t)²</c>, <c>dz = 2(z − t)/(n·k)</c>, <c>dt = −dz</c>;</item>
/// <item><c>bce_with_logits</c>: <c>loss = mean max(z,0) − z·t + log(1 + exp(−|z|))</c>, <c>dz = (σ(z) − t)/(n·k)</c>, <c>dt = −z/(n·k)</c>;</item>
/// <item><c>mean</c>: <c>loss = mean z</c>, <c>dz = 1/(n·k)</c>.</item>
/// </list>
/// Vectorised at the machine's width (<see cref="Vector{T}"/>): the loss terms widened to double lanes and summed per lane,
/// a scalar loop for the tail.
/// </summary>
internal static unsafe class RegressionLosses
{
    /// <summary>Mean squared error; <paramref name="dt"/> (the targets' gradient) is written when not null.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Mse(float* z, float* t, float* dz, float* dt, long count)
    {
        double sum = 0;
        float scale = 2f / count;
        long i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            int w = Vector<float>.Count;
            var acc = Vector<double>.Zero;
            var vs = new Vector<float>(scale);
            for (; i + w <= count; i += w)
            {
                var d = Ld(z + i) - Ld(t + i);
                Vector.Widen(d, out var lo, out var hi);
                acc += lo * lo + hi * hi;
                if (dz != null) St(dz + i, vs * d);
                if (dt != null) St(dt + i, -(vs * d));
            }
            sum = Vector.Sum(acc);
        }
        for (; i < count; i++)
        {
            float d = z[i] - t[i];
            sum += (double)d * d;
            if (dz != null) dz[i] = scale * d;
            if (dt != null) dt[i] = -(scale * d);
        }
        return (float)(sum / count);
    }

    /// <summary>Binary cross-entropy on logits, in the stable form; <paramref name="dt"/> is written when not null.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float BceWithLogits(float* z, float* t, float* dz, float* dt, long count)
    {
        double sum = 0;
        float inv = 1f / count;
        long i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            int w = Vector<float>.Count;
            var acc = Vector<double>.Zero;
            var vinv = new Vector<float>(inv);
            for (; i + w <= count; i += w)
            {
                Vector<float> x = Ld(z + i), y = Ld(t + i);
                Vector.Widen(x, out var xl, out var xh);
                Vector.Widen(y, out var yl, out var yh);
                acc += Vector.Max(xl, Vector<double>.Zero) - xl * yl + Vector.Log(Vector<double>.One + Vector.Exp(-Vector.Abs(xl)));
                acc += Vector.Max(xh, Vector<double>.Zero) - xh * yh + Vector.Log(Vector<double>.One + Vector.Exp(-Vector.Abs(xh)));
                if (dz != null)
                {
                    var e = FastMath.Exp(-Vector.Abs(x));
                    var s = Vector.ConditionalSelect(Vector.GreaterThanOrEqual(x, Vector<float>.Zero), Vector<float>.One, e) / (Vector<float>.One + e);
                    St(dz + i, (s - y) * vinv);
                }
                if (dt != null) St(dt + i, -x * vinv);
            }
            sum = Vector.Sum(acc);
        }
        for (; i < count; i++)
        {
            float x = z[i], y = t[i];
            sum += Math.Max(x, 0f) - (double)x * y + Math.Log(1 + Math.Exp(-Math.Abs((double)x)));
            if (dz != null)
            {
                // σ(x) without overflow: 1/(1+e^−x) for x ≥ 0, e^x/(1+e^x) otherwise
                float e = MathF.Exp(-MathF.Abs(x));
                float s = x >= 0 ? 1f / (1f + e) : e / (1f + e);
                dz[i] = (s - y) * inv;
            }
            if (dt != null) dt[i] = -x * inv;
        }
        return (float)(sum / count);
    }

    /// <summary>The mean of all outputs.</summary>
    public static float Mean(float* z, float* dz, long count)
    {
        double sum = 0;
        float inv = 1f / count;
        for (long i = 0; i < count; i++)
        {
            sum += z[i];
            if (dz != null) dz[i] = inv;
        }
        return (float)(sum / count);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<float> Ld(float* p) => Unsafe.ReadUnaligned<Vector<float>>(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void St(float* p, Vector<float> v) => Unsafe.WriteUnaligned(p, v);
}
