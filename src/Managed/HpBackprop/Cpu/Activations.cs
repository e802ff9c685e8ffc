using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace HpBackprop.Cpu;

/// <summary>
/// An elementwise activation as a type the JIT specialises on: its forward <c>y = f(x)</c> and its
/// backward <c>dx = f′·dy</c> written from the output <c>y</c> (all three of tanh, ReLU and sigmoid have a
/// derivative in terms of y, so the input need not be kept). Used by the standalone activation layers and
/// inside the batch-norm sweep that ends with one.
/// </summary>
internal interface IActivation
{
    /// <summary><c>y = f(x)</c>, 16 lanes.</summary>
    static abstract Vector512<float> Forward(Vector512<float> x);

    /// <summary><c>dx = f′(x)·dy</c> from <c>y = f(x)</c>, 16 lanes.</summary>
    static abstract Vector512<float> Backward(Vector512<float> y, Vector512<float> dy);

    /// <summary><c>y = f(x)</c> for a span (the portable path).</summary>
    static abstract void Forward(ReadOnlySpan<float> x, Span<float> y);

    /// <summary><c>dx = f′(x)·dy</c> from <c>y</c>, one element (the portable path).</summary>
    static abstract float Backward(float y, float dy);

    /// <summary><c>dx = f′(x)·dy</c> from <c>y = f(x)</c> at the machine's vector width (the portable path; the same arithmetic as the scalar one).</summary>
    static abstract System.Numerics.Vector<float> Backward(System.Numerics.Vector<float> y, System.Numerics.Vector<float> dy);

    /// <summary><c>y = f(x)</c> at the machine's vector width (the row-block pipeline without AVX-512).</summary>
    static abstract System.Numerics.Vector<float> Forward(System.Numerics.Vector<float> x);
}

/// <summary><c>tanh</c>: <c>dx = (1 − y²)·dy</c>.</summary>
internal struct TanhAct : IActivation
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static System.Numerics.Vector<float> Backward(System.Numerics.Vector<float> y, System.Numerics.Vector<float> dy) => (System.Numerics.Vector<float>.One - y * y) * dy;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Forward(Vector512<float> x) => FastMath.Tanh(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static System.Numerics.Vector<float> Forward(System.Numerics.Vector<float> x) => FastMath.Tanh(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Backward(Vector512<float> y, Vector512<float> dy) => (Vector512<float>.One - y * y) * dy;
    public static void Forward(ReadOnlySpan<float> x, Span<float> y) => TensorPrimitives.Tanh(x, y);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Backward(float y, float dy) => (1f - y * y) * dy;
}

/// <summary><c>relu</c>: <c>y = max(x, 0)</c>, <c>dx = (y &gt; 0)·dy</c>.</summary>
internal struct ReluAct : IActivation
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static System.Numerics.Vector<float> Backward(System.Numerics.Vector<float> y, System.Numerics.Vector<float> dy) => System.Numerics.Vector.ConditionalSelect(System.Numerics.Vector.GreaterThan(y, System.Numerics.Vector<float>.Zero), dy, System.Numerics.Vector<float>.Zero);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Forward(Vector512<float> x) => Vector512.Max(x, Vector512<float>.Zero);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static System.Numerics.Vector<float> Forward(System.Numerics.Vector<float> x) => System.Numerics.Vector.Max(x, System.Numerics.Vector<float>.Zero);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Backward(Vector512<float> y, Vector512<float> dy) => Vector512.GreaterThan(y, Vector512<float>.Zero) & dy;
    public static void Forward(ReadOnlySpan<float> x, Span<float> y) => TensorPrimitives.Max(x, 0f, y);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Backward(float y, float dy) => y > 0f ? dy : 0f;
}

/// <summary><c>sigmoid</c>: <c>y = 1/(1 + exp(−x))</c>, <c>dx = y·(1 − y)·dy</c>.</summary>
internal struct SigmoidAct : IActivation
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static System.Numerics.Vector<float> Backward(System.Numerics.Vector<float> y, System.Numerics.Vector<float> dy) => y * (System.Numerics.Vector<float>.One - y) * dy;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Forward(Vector512<float> x) => Vector512<float>.One / (Vector512<float>.One + FastMath.Exp(-x));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static System.Numerics.Vector<float> Forward(System.Numerics.Vector<float> x) => System.Numerics.Vector<float>.One / (System.Numerics.Vector<float>.One + FastMath.Exp(-x));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Backward(Vector512<float> y, Vector512<float> dy) => y * (Vector512<float>.One - y) * dy;
    public static void Forward(ReadOnlySpan<float> x, Span<float> y) => TensorPrimitives.Sigmoid(x, y);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Backward(float y, float dy) => y * (1f - y) * dy;
}

/// <summary>No activation (a batch norm that is not followed by one): <c>y = x</c>, <c>dx = dy</c>.</summary>
internal struct IdentityAct : IActivation
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static System.Numerics.Vector<float> Backward(System.Numerics.Vector<float> y, System.Numerics.Vector<float> dy) => dy;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Forward(Vector512<float> x) => x;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static System.Numerics.Vector<float> Forward(System.Numerics.Vector<float> x) => x;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Backward(Vector512<float> y, Vector512<float> dy) => dy;
    public static void Forward(ReadOnlySpan<float> x, Span<float> y) => x.CopyTo(y);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Backward(float y, float dy) => dy;
}

/// <summary>The standalone activation layers (those not fused into a batch-norm sweep): forward and backward side by side.</summary>
internal static unsafe class Activation
{
    /// <summary>Forward: <c>y[i] = f(x[i])</c> over <paramref name="count"/> elements.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Forward<TA>(float* x, float* y, long count) where TA : struct, IActivation
    {
        long i = 0;
        if (Avx512F.IsSupported && !Gemm.ForceVector256)
        {
            for (; i + 16 <= count; i += 16) TA.Forward(Vector512.Load(x + i)).Store(y + i);
        }
        int w = System.Numerics.Vector<float>.Count;
        for (; i + w <= count; i += w)
            Unsafe.WriteUnaligned(y + i, TA.Forward(Unsafe.ReadUnaligned<System.Numerics.Vector<float>>(x + i)));
        if (i < count) TA.Forward(new ReadOnlySpan<float>(x + i, (int)(count - i)), new Span<float>(y + i, (int)(count - i)));
    }

    /// <summary>Backward: <c>dx[i] = f′·dy[i]</c> from the forward's output <paramref name="y"/>; <paramref name="dx"/> may be <paramref name="dy"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Backward<TA>(float* y, float* dy, float* dx, long count) where TA : struct, IActivation
    {
        long i = 0;
        if (Avx512F.IsSupported && !Gemm.ForceVector256)
        {
            for (; i + 16 <= count; i += 16) TA.Backward(Vector512.Load(y + i), Vector512.Load(dy + i)).Store(dx + i);
        }
        int w = System.Numerics.Vector<float>.Count;
        for (; i + w <= count; i += w)
            Unsafe.WriteUnaligned(dx + i, TA.Backward(Unsafe.ReadUnaligned<System.Numerics.Vector<float>>(y + i), Unsafe.ReadUnaligned<System.Numerics.Vector<float>>(dy + i)));
        for (; i < count; i++) dx[i] = TA.Backward(y[i], dy[i]);
    }
}
