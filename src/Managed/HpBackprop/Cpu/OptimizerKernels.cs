using System.Runtime.CompilerServices;

namespace HpBackprop.Cpu;

/// <summary>
/// The optimisers as one pass over the flat parameter, gradient and state buffers, in PyTorch's
/// operation order (torch.optim.SGD and AdamW) so that results can be compared step by step.
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
        for (long i = 0; i < count; i++)
        {
            float g = weightDecay != 0 ? grad[i] + weightDecay * p[i] : grad[i];
            if (v != null) { g = momentum * v[i] + g; v[i] = g; }
            p[i] = MathF.FusedMultiplyAdd(g, -lr, p[i]);
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
        for (long i = 0; i < count; i++)
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
}
