namespace HpBackprop.Cpu;

/// <summary>The embedding layer: <c>emb = C[Xb]</c> viewed as <c>embcat [n, B·E]</c>, and its scatter-add backward.</summary>
public static class Embedding
{
    /// <summary>Forward: <c>embcat[i, j·E + e] = C[Xb[i,j], e]</c>.  Xb [n,B], C [V,E], embcat [n,B·E].</summary>
    public static void Forward(ReadOnlySpan<float> C, ReadOnlySpan<int> Xb, Span<float> embcat, int n, int B, int E)
    {
        for (int r = 0; r < n * B; r++)
            C.Slice(Xb[r] * E, E).CopyTo(embcat.Slice(r * E, E));
    }

    /// <summary>
    /// Backward: <c>dC = 0; dC[Xb[i,j]] += demb[i,j]</c> — a scatter-add, so repeated ids
    /// accumulate (in a fixed order: deterministic). dembcat [n,B·E] is demb [n,B,E] viewed flat.
    /// </summary>
    public static void Backward(ReadOnlySpan<float> dembcat, ReadOnlySpan<int> Xb, Span<float> dC, int n, int B, int E)
    {
        dC.Clear();
        for (int r = 0; r < n * B; r++)
            Gemm.Axpy(1f, dembcat.Slice(r * E, E), dC.Slice(Xb[r] * E, E));
    }
}
