using HpBackprop.Cuda.Runtime;

namespace HpBackprop.Cuda.Gpu;

/// <summary>
/// What every GPU op shares: the device runtime, the memory the backend owns, kernels resolved once by name, the launch
/// count, the rows of one reduction chunk, and the row-major products over PyTorch's <c>[OUT,IN]</c> weights through
/// cuBLAS's column-major convention.
/// </summary>
internal sealed unsafe class Gpu : IDisposable
{
    private readonly List<DeviceMemory> _owned = [];
    private readonly List<PinnedMemory> _pinned = [];
    private readonly Dictionary<string, Kernel> _kernels = new(StringComparer.Ordinal);
    private readonly bool _ownsRuntime;
    private bool _disposed;

    public Gpu(IDeviceRuntime runtime, bool ownsRuntime, int rowsPerChunk)
    {
        Rt = runtime;
        _ownsRuntime = ownsRuntime;
        RowsPerChunk = rowsPerChunk;
    }

    /// <summary>The runtime (driver or emulator).</summary>
    public IDeviceRuntime Rt { get; }

    /// <summary>
    /// Rows per chunk of every column reduction: a batch of more rows is reduced as per-chunk partial sums added in chunk
    /// order, so the order depends on the shape only (never on the number of SMs) and large batches fill the GPU.
    /// </summary>
    public int RowsPerChunk { get; }

    /// <summary>Elements per block of the whole-tensor sums (losses, the L2 penalty).</summary>
    public const int SumChunk = 4096;

    /// <summary>Kernel launches and cuBLAS calls since the counter was last cleared.</summary>
    public int Launches;

    /// <summary>Host-device copies since the counter was last cleared.</summary>
    public int Copies;

    /// <summary>Bytes copied between host and device since the counter was last cleared.</summary>
    public long CopiedBytes;

    /// <summary>Device memory for <paramref name="floats"/> 4-byte elements (at least one), owned until <see cref="Dispose"/>.</summary>
    public ulong Alloc(long floats)
    {
        var m = Rt.Allocate(Math.Max(1, floats) * 4);
        _owned.Add(m);
        return m.Pointer;
    }

    /// <summary>Pinned host memory of <paramref name="bytes"/> bytes, owned until <see cref="Dispose"/>.</summary>
    public PinnedMemory Pinned(long bytes)
    {
        var m = Rt.AllocatePinned(bytes);
        _pinned.Add(m);
        return m;
    }

    /// <summary>Device memory for <paramref name="count"/> doubles.</summary>
    public ulong AllocDoubles(long count) => Alloc(2 * Math.Max(1, count));

    public Kernel K(string name)
    {
        if (!_kernels.TryGetValue(name, out var k)) _kernels[name] = k = Rt.GetKernel(name);
        return k;
    }

    public void Launch(Kernel k, Dim3 grid, Dim3 block, uint shared, void** args)
    {
        Rt.Launch(k, grid, block, shared, args);
        Launches++;
    }

    public void ToDevice(ulong dst, void* src, long bytes)
    {
        if (bytes == 0) return;
        Rt.CopyToDevice(dst, src, bytes);
        Copies++;
        CopiedBytes += bytes;
    }

    /// <summary>Queues a copy from pinned memory (may be captured in a graph).</summary>
    public void ToDeviceAsync(ulong dst, void* pinnedSource, long bytes)
    {
        if (bytes == 0) return;
        Rt.CopyToDeviceAsync(dst, pinnedSource, bytes);
        Copies++;
        CopiedBytes += bytes;
    }

    public void ToHost(void* dst, ulong src, long bytes)
    {
        if (bytes == 0) return;
        Rt.CopyToHost(dst, src, bytes);
        Copies++;
        CopiedBytes += bytes;
    }

    /// <summary>Blocks of <paramref name="perBlock"/> for <paramref name="work"/> items, at least 1 and at most 65,535 (the kernels stride over the rest).</summary>
    public static uint Blocks(long work, int perBlock) => (uint)Math.Clamp((work + perBlock - 1) / perBlock, 1, 65535);

    /// <summary>Row chunks of a reduction over <paramref name="rows"/> rows.</summary>
    public int Chunks(int rows) => (rows + RowsPerChunk - 1) / RowsPerChunk;

    // ---- products (row-major, weight [OUT,IN])

    /// <summary><c>y[rows,OUT] = x[rows,IN]·Wᵀ</c>.</summary>
    public void Forward(ulong x, ulong w, ulong y, int rows, int inF, int outF)
    {
        Rt.Sgemm(true, false, outF, rows, inF, 1f, w, inF, x, inF, 0f, y, outF);
        Launches++;
    }

    /// <summary><c>dx[rows,IN] = dy[rows,OUT]·W</c>.</summary>
    public void BackwardInput(ulong dy, ulong w, ulong dx, int rows, int inF, int outF)
    {
        Rt.Sgemm(false, false, inF, rows, outF, 1f, w, inF, dy, outF, 0f, dx, inF);
        Launches++;
    }

    /// <summary><c>dW[OUT,IN] = dyᵀ·x</c>.</summary>
    public void BackwardWeight(ulong x, ulong dy, ulong dw, int rows, int inF, int outF)
    {
        Rt.Sgemm(false, true, inF, outF, rows, 1f, x, inF, dy, outF, 0f, dw, inF);
        Launches++;
    }

    // ---- deterministic reductions

    /// <summary>
    /// <c>out[cols] = sum0(x[rows,cols])</c> in a fixed order: per-chunk partial sums (a block per column tile and row chunk),
    /// then the chunks added in order; with one chunk the partial is the result. <paramref name="partial"/> holds chunks × cols floats.
    /// </summary>
    public void ColumnSum(ulong x, int rows, int cols, ulong output, ulong partial)
    {
        int chunks = Chunks(rows);
        ColumnPartials(x, 0, 0, rows, cols, chunks == 1 ? output : partial);
        if (chunks > 1) FinishColumns(partial, chunks, cols, output);
    }

    /// <summary>Per-chunk column sums of <c>x</c>, of <c>x − center</c> or of <c>(x − center)²</c> (<paramref name="square"/>).</summary>
    public void ColumnPartials(ulong x, ulong center, int square, int rows, int cols, ulong partial)
    {
        ulong a0 = x, a1 = center; int a2 = square, a3 = rows, a4 = cols, a5 = RowsPerChunk; ulong a6 = partial;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6 };
        Launch(K("column_partial_sum"), new(Blocks(cols, 32), (uint)Chunks(rows)), new(32, 8), 32 * 8 * 4, args);
    }

    /// <summary><c>out[c] = Σ over chunks, in order, of partial[chunk, c]</c>.</summary>
    public void FinishColumns(ulong partial, int chunks, int cols, ulong output)
    {
        ulong a0 = partial; int a1 = chunks, a2 = cols; ulong a3 = output;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3 };
        Launch(K("column_finish_sum"), new(Blocks(cols, 256)), new(256), 0, args);
    }

    /// <summary>Blocks of <see cref="SumChunk"/> elements for a whole-tensor sum of <paramref name="count"/> elements.</summary>
    public static int SumBlocks(long count) => (int)((count + SumChunk - 1) / SumChunk);

    /// <summary>Per-block double sums of <c>x</c> (or its squares) into <paramref name="partial"/> [<see cref="SumBlocks"/>].</summary>
    public void SumPartials(ulong x, int count, int square, ulong partial)
    {
        ulong a0 = x; int a1 = count, a2 = SumChunk, a3 = square; ulong a4 = partial;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4 };
        Launch(K("sum_partials"), new((uint)SumBlocks(count)), new(256), 0, args);
    }

    /// <summary>
    /// <c>v = (float)(scale · Σ partial[0..count))</c>, added in a fixed order, into <c>output[0]</c> (<paramref name="state"/>
    /// 0) or into the training step's loss slot of the ring at <paramref name="output"/>; <paramref name="accumulate"/> adds
    /// it (in float) to what is there.
    /// </summary>
    public void SumFinish(ulong partial, int count, double scale, ulong output, ulong state = 0, bool accumulate = false)
    {
        ulong a0 = partial; int a1 = count; double a2 = scale; ulong a3 = output, a4 = state; int a5 = accumulate ? 1 : 0;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5 };
        Launch(K("sum_finish"), new(1), new(256), 0, args);
    }

    /// <summary><c>y += a·x</c>.</summary>
    public void Axpy(ulong y, ulong x, float a, int count)
    {
        ulong a0 = y, a1 = x; float a2 = a; int a3 = count;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3 };
        Launch(K("axpy"), new(Blocks(count, 256)), new(256), 0, args);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var m in _owned) m.Dispose();
        _owned.Clear();
        foreach (var m in _pinned) m.Dispose();
        _pinned.Clear();
        if (_ownsRuntime) Rt.Dispose();
    }
}
