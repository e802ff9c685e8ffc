namespace HpBackprop.Cpu;

/// <summary>The embedding layer: <c>emb = C[Xb]</c> viewed as <c>embcat [n, B·E]</c>, and its scatter-add backward.</summary>
public static unsafe class Embedding
{
    /// <summary>Forward: <c>embcat[i, j·E + e] = C[Xb[i,j], e]</c>.  Xb [n,B], C [V,E], embcat [n,B·E].</summary>
    public static void Forward(ReadOnlySpan<float> C, ReadOnlySpan<int> Xb, Span<float> embcat, int n, int B, int E)
    {
        KernelArgs.Size(n, nameof(n)); KernelArgs.Size(B, nameof(B)); KernelArgs.Positive(E, nameof(E));
        KernelArgs.Need(Xb.Length, (long)n * B, nameof(Xb));
        KernelArgs.Need(embcat.Length, (long)n * B * E, nameof(embcat));
        int rowsOfC = C.Length / E;
        for (int r = 0; r < n * B; r++)
            if ((uint)Xb[r] >= (uint)rowsOfC) throw new ArgumentOutOfRangeException(nameof(Xb), Xb[r], $"id at position {r} is outside [0, {rowsOfC}).");
        fixed (float* pc = C, pe = embcat)
        fixed (int* px = Xb)
            Forward(pc, px, pe, n * B, E);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    internal static void Forward(float* C, int* Xb, float* embcat, int count, int E)
    {
        nuint bytes = (nuint)E * sizeof(float);
        for (int r = 0; r < count; r++)
            System.Runtime.CompilerServices.Unsafe.CopyBlockUnaligned(embcat + (nint)r * E, C + (nint)Xb[r] * E, (uint)bytes);
    }

    /// <summary>
    /// Backward: <c>dC = 0; dC[Xb[i,j]] += demb[i,j]</c> — a scatter-add, so repeated ids
    /// accumulate (in a fixed order: deterministic). dembcat [n,B·E] is demb [n,B,E] viewed flat.
    /// </summary>
    public static void Backward(ReadOnlySpan<float> dembcat, ReadOnlySpan<int> Xb, Span<float> dC, int n, int B, int E)
    {
        KernelArgs.Size(n, nameof(n)); KernelArgs.Size(B, nameof(B)); KernelArgs.Positive(E, nameof(E));
        KernelArgs.Need(Xb.Length, (long)n * B, nameof(Xb));
        KernelArgs.Need(dembcat.Length, (long)n * B * E, nameof(dembcat));
        int rowsOfC = dC.Length / E;
        for (int r = 0; r < n * B; r++)
            if ((uint)Xb[r] >= (uint)rowsOfC) throw new ArgumentOutOfRangeException(nameof(Xb), Xb[r], $"id at position {r} is outside [0, {rowsOfC}).");
        fixed (float* pd = dembcat, pc = dC)
        fixed (int* px = Xb)
            Backward(pd, px, pc, dC.Length, n * B, E);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    internal static void Backward(float* dembcat, int* Xb, float* dC, int lengthOfC, int count, int E)
    {
        new Span<float>(dC, lengthOfC).Clear();
        for (int r = 0; r < count; r++)
        {
            float* src = dembcat + (nint)r * E, dst = dC + (nint)Xb[r] * E;
            Gemm.Axpy(1f, new ReadOnlySpan<float>(src, E), new Span<float>(dst, E));
        }
    }
}
