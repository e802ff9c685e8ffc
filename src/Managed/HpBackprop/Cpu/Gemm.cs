using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace HpBackprop.Cpu;

/// <summary>
/// Row-major single-precision matrix products: the three forms a training step needs
/// (<c>A·B</c>, <c>A·Bᵀ</c>, <c>Aᵀ·B</c>). Every method overwrites <c>c</c> unless
/// <c>accumulate</c> is set, in which case it adds to it.
/// </summary>
public static class Gemm
{
    /// <summary><c>c[m,n] (+)= a[m,k] · b[k,n]</c>.</summary>
    public static void NN(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int m, int k, int n, bool accumulate = false)
    {
        Check(a, m * k, b, k * n, c, m * n);
        for (int i = 0; i < m; i++)
        {
            Span<float> ci = c.Slice(i * n, n);
            if (!accumulate) ci.Clear();
            ReadOnlySpan<float> ai = a.Slice(i * k, k);
            for (int p = 0; p < k; p++) Axpy(ai[p], b.Slice(p * n, n), ci);
        }
    }

    /// <summary><c>c[m,n] (+)= a[m,k] · b[n,k]ᵀ</c>.</summary>
    public static void NT(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int m, int k, int n, bool accumulate = false)
    {
        Check(a, m * k, b, n * k, c, m * n);
        for (int i = 0; i < m; i++)
        {
            ReadOnlySpan<float> ai = a.Slice(i * k, k);
            for (int j = 0; j < n; j++)
            {
                float d = Dot(ai, b.Slice(j * k, k));
                c[i * n + j] = accumulate ? c[i * n + j] + d : d;
            }
        }
    }

    /// <summary><c>c[k,n] (+)= a[m,k]ᵀ · b[m,n]</c>.</summary>
    public static void TN(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c, int m, int k, int n, bool accumulate = false)
    {
        Check(a, m * k, b, m * n, c, k * n);
        if (!accumulate) c.Slice(0, k * n).Clear();
        for (int p = 0; p < k; p++)
        {
            Span<float> cp = c.Slice(p * n, n);
            for (int i = 0; i < m; i++) Axpy(a[i * k + p], b.Slice(i * n, n), cp);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Axpy(float alpha, ReadOnlySpan<float> x, Span<float> y)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && x.Length >= Vector<float>.Count)
        {
            var va = new Vector<float>(alpha);
            ref float rx = ref MemoryMarshal.GetReference(x);
            ref float ry = ref MemoryMarshal.GetReference(y);
            for (; i <= x.Length - Vector<float>.Count; i += Vector<float>.Count)
            {
                var vy = Vector.LoadUnsafe(ref ry, (nuint)i);
                (vy + va * Vector.LoadUnsafe(ref rx, (nuint)i)).StoreUnsafe(ref ry, (nuint)i);
            }
        }
        for (; i < x.Length; i++) y[i] += alpha * x[i];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Dot(ReadOnlySpan<float> x, ReadOnlySpan<float> y)
    {
        int i = 0;
        float s = 0;
        if (Vector.IsHardwareAccelerated && x.Length >= Vector<float>.Count)
        {
            var acc = Vector<float>.Zero;
            ref float rx = ref MemoryMarshal.GetReference(x);
            ref float ry = ref MemoryMarshal.GetReference(y);
            for (; i <= x.Length - Vector<float>.Count; i += Vector<float>.Count)
                acc += Vector.LoadUnsafe(ref rx, (nuint)i) * Vector.LoadUnsafe(ref ry, (nuint)i);
            s = Vector.Sum(acc);
        }
        for (; i < x.Length; i++) s += x[i] * y[i];
        return s;
    }

    private static void Check(ReadOnlySpan<float> a, int la, ReadOnlySpan<float> b, int lb, ReadOnlySpan<float> c, int lc)
    {
        if (a.Length < la) throw new ArgumentException($"A has {a.Length} elements, needs {la}.", nameof(a));
        if (b.Length < lb) throw new ArgumentException($"B has {b.Length} elements, needs {lb}.", nameof(b));
        if (c.Length < lc) throw new ArgumentException($"C has {c.Length} elements, needs {lc}.", nameof(c));
    }
}
