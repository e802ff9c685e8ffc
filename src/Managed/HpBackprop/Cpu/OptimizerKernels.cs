using System.Numerics;
using System.Runtime.CompilerServices;

namespace HpBackprop.Cpu;

/// <summary>
/// The optimisers as one pass over the flat parameter, gradient and state buffers, in PyTorch's
/// operation order (torch.optim.SGD and AdamW) so that results can be compared step by step; vectorised at the
/// machine's width (<see cref="Vector{T}"/>: 512-, 256- or 128-bit), with a scalar loop for the tail.
/// </summary>
internal static unsafe class OptimizerKernels
{
    /// <summary>
    /// SGD: <c>g = grad + wd·p</c>; with momentum (<paramref name="v"/> not null) <c>v = μ·v + g</c> and
    /// <c>p −= lr·v</c> (v starts at zero, so the first step's v is g), otherwise <c>p −= lr·g</c>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Sgd(float* p, float* grad, float* v, long count, float lr, float momentum, float weightDecay)
    {
        if (v == null && weightDecay == 0)
        {
            // the plain update, vectorised: p = g·(−lr) + p
            Cpu.Sgd.Update(new Span<float>(p, checked((int)count)), new ReadOnlySpan<float>(grad, (int)count), lr);
            return;
        }
        long i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            int w = Vector<float>.Count;
            Vector<float> wd = new(weightDecay), mu = new(momentum), nlr = new(-lr);
            for (; i + w <= count; i += w)
            {
                var g = Ld(grad + i);
                if (weightDecay != 0) g += wd * Ld(p + i);
                if (v != null) { g = mu * Ld(v + i) + g; St(v + i, g); }
                St(p + i, FusedFma ? Vector.FusedMultiplyAdd(g, nlr, Ld(p + i)) : g * nlr + Ld(p + i));
            }
        }
        for (; i < count; i++)
        {
            float g = weightDecay != 0 ? grad[i] + weightDecay * p[i] : grad[i];
            if (v != null) { g = momentum * v[i] + g; v[i] = g; }
            p[i] = FusedFma ? MathF.FusedMultiplyAdd(g, -lr, p[i]) : g * -lr + p[i];
        }
    }

    /// <summary>
    /// AdamW step <paramref name="t"/> (1-based): <c>p *= 1 − lr·wd</c>; <c>m = β1·m + (1−β1)·g</c>;
    /// <c>v = β2·v + (1−β2)·g²</c>; <c>p −= (lr/(1−β1ᵗ))·m/(√v/√(1−β2ᵗ) + eps)</c>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void AdamW(float* p, float* grad, float* m, float* v, long count, float lr, float beta1, float beta2, float eps, float weightDecay, long t)
    {
        double bc1 = 1 - Math.Pow(beta1, t), bc2 = 1 - Math.Pow(beta2, t);
        float stepSize = (float)(lr / bc1), bc2Sqrt = (float)Math.Sqrt(bc2);
        float decay = 1 - lr * weightDecay, a1 = 1 - beta1, a2 = 1 - beta2;
        long i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            // the scalar arithmetic lane by lane (no operation here is fused), so both loops give the same bits
            int w = Vector<float>.Count;
            Vector<float> vd = new(decay), b1 = new(beta1), b2 = new(beta2), va1 = new(a1), va2 = new(a2), vs = new(bc2Sqrt), ve = new(eps), vstep = new(stepSize);
            for (; i + w <= count; i += w)
            {
                var g = Ld(grad + i);
                var pi = Ld(p + i) * vd;
                var mi = Ld(m + i) * b1 + g * va1;
                var vi = Ld(v + i) * b2 + g * g * va2;
                St(m + i, mi); St(v + i, vi);
                var denom = Vector.SquareRoot(vi) / vs + ve;
                St(p + i, pi - vstep * (mi / denom));
            }
        }
        for (; i < count; i++)
        {
            float g = grad[i];
            float pi = p[i] * decay;
            float mi = m[i] * beta1 + g * a1;
            float vi = v[i] * beta2 + g * g * a2;
            m[i] = mi; v[i] = vi;
            float denom = MathF.Sqrt(vi) / bc2Sqrt + eps;
            p[i] = pi - stepSize * (mi / denom);
        }
    }

    /// <summary>
    /// Whether the SGD step's <c>g·(−lr) + p</c> is one fused operation: where the CPU has FMA (x86 with FMA3, every ARM64),
    /// as in the plain update; elsewhere a multiply then an add, in both the vector and the scalar loop.
    /// </summary>
    private static readonly bool FusedFma = System.Runtime.Intrinsics.X86.Fma.IsSupported || System.Runtime.Intrinsics.Arm.AdvSimd.Arm64.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<float> Ld(float* p) => Unsafe.ReadUnaligned<Vector<float>>(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void St(float* p, Vector<float> v) => Unsafe.WriteUnaligned(p, v);
}
