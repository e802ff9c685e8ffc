using System.Numerics.Tensors;

namespace HpBackprop.Cpu;

/// <summary>Plain stochastic gradient descent over the flat parameter buffer.</summary>
internal static class Sgd
{
    /// <summary><c>param −= lr · grad</c>, element by element.</summary>
    public static void Update(Span<float> parameters, ReadOnlySpan<float> gradients, float lr)
    {
        if (gradients.Length != parameters.Length) throw new ArgumentException("parameter and gradient buffers differ in length.", nameof(gradients));
        TensorPrimitives.MultiplyAdd(gradients, -lr, parameters, parameters);
    }
}
