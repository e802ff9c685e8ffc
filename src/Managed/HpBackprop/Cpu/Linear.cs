namespace HpBackprop.Cpu;

/// <summary>A linear layer <c>y = x·W + b</c> and its backward (SPEC §3: a broadcast bias becomes a column sum).</summary>
public static class Linear
{
    /// <summary>Forward: <c>y[n,out] = x[n,in] · W[in,out] + b[out]</c>.</summary>
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> W, ReadOnlySpan<float> b, Span<float> y, int n, int inDim, int outDim)
    {
        for (int i = 0; i < n; i++) b.Slice(0, outDim).CopyTo(y.Slice(i * outDim, outDim));
        Gemm.NN(x, W, y, n, inDim, outDim, accumulate: true);
    }

    /// <summary>
    /// Backward: <c>dx = dy · Wᵀ</c> (skipped when <paramref name="dx"/> is empty), <c>dW = xᵀ · dy</c>,
    /// <c>db = sum0(dy)</c>.
    /// </summary>
    public static void Backward(ReadOnlySpan<float> x, ReadOnlySpan<float> W, ReadOnlySpan<float> dy,
        Span<float> dx, Span<float> dW, Span<float> db, int n, int inDim, int outDim)
    {
        if (!dx.IsEmpty) Gemm.NT(dy, W, dx, n, outDim, inDim);
        Gemm.TN(x, dy, dW, n, inDim, outDim);
        ColumnSum(dy, db, n, outDim);
    }

    /// <summary><c>o[cols] = sum over rows of a[rows,cols]</c>.</summary>
    public static void ColumnSum(ReadOnlySpan<float> a, Span<float> o, int rows, int cols)
    {
        a.Slice(0, cols).CopyTo(o);
        for (int i = 1; i < rows; i++) Gemm.Axpy(1f, a.Slice(i * cols, cols), o.Slice(0, cols));
    }
}
