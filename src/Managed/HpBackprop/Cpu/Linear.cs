namespace HpBackprop.Cpu;

/// <summary>
/// A linear layer <c>y = x·W + b</c> with <c>W [in,out]</c> (the makemore layout; the compiled network's <see cref="LinearOp"/> keeps
/// PyTorch's <c>[out,in]</c>), and the column sum that is a broadcast bias's gradient (docs/makemore.md §3).
/// </summary>
public static unsafe class Linear
{
    /// <summary>Forward: <c>y[n,out] = x[n,in] · W[in,out] + b[out]</c> (the bias is the GEMM's starting value).</summary>
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> W, ReadOnlySpan<float> b, Span<float> y, int n, int inDim, int outDim)
    {
        KernelArgs.Size(n, nameof(n)); KernelArgs.Size(inDim, nameof(inDim)); KernelArgs.Size(outDim, nameof(outDim));
        Need(x, (long)n * inDim, nameof(x)); Need(W, (long)inDim * outDim, nameof(W)); Need(b, outDim, nameof(b)); Need(y, (long)n * outDim, nameof(y));
        fixed (float* px = x, pw = W, pb = b, py = y) Forward(px, pw, pb, py, n, inDim, outDim, null);
    }

    internal static void Forward(float* x, float* W, float* b, float* y, int n, int inDim, int outDim, WorkerPool? pool)
        => Gemm.Run(new Gemm.Args(n, outDim, inDim, x, inDim, 1, W, outDim, 1, y, outDim, b, false), pool);

    /// <summary><c>o[cols] = sum over rows of a[rows,cols]</c>.</summary>
    public static void ColumnSum(ReadOnlySpan<float> a, Span<float> o, int rows, int cols)
    {
        KernelArgs.Size(rows, nameof(rows)); KernelArgs.Positive(cols, nameof(cols));
        Need(a, (long)rows * cols, nameof(a)); Need(o, cols, nameof(o));
        fixed (float* pa = a, po = o) ColumnSum(pa, po, rows, cols);
    }

    internal static void ColumnSum(float* a, float* o, int rows, int cols)
    {
        new ReadOnlySpan<float>(a, cols).CopyTo(new Span<float>(o, cols));
        var os = new Span<float>(o, cols);
        for (int i = 1; i < rows; i++) Gemm.Axpy(1f, new ReadOnlySpan<float>(a + (nint)i * cols, cols), os);
    }

    private static void Need(ReadOnlySpan<float> s, long length, string name)
    {
        if (s.Length < length) throw new ArgumentException($"{name} has {s.Length} elements, needs {length}.", name);
    }
}
