using System.Runtime.InteropServices;

namespace HpBackprop.Cuda.Runtime;

/// <summary>
/// A graph captured by the <see cref="EmulatorRuntime"/>: the launches, products, memsets and copies queued during the
/// capture, in order, with the kernels' argument values copied at capture time (as the driver copies them). A replay
/// runs them in that order and reads device memory and the pinned sources as they are then; it allocates nothing.
/// </summary>
internal sealed unsafe class EmulatedGraph(EmulatorRuntime runtime, List<EmulatedGraph.Node> nodes) : DeviceGraph
{
    private readonly Node[] _nodes = [.. nodes];
    private bool _disposed;

    public EmulatorRuntime Runtime { get; } = runtime;

    /// <inheritdoc />
    public override int NodeCount => _nodes.Length;

    /// <summary>The kinds of the nodes in order ("kernel:name", "gemm", "memset", "copy"), for tests.</summary>
    public IEnumerable<string> Describe() => _nodes.Select(n => n.Describe());

    public void Replay()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        foreach (var n in _nodes) n.Run();
    }

    /// <inheritdoc />
    public override void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var n in _nodes) n.Dispose();
    }

    /// <summary>One captured operation.</summary>
    internal abstract class Node : IDisposable
    {
        public abstract void Run();

        public abstract string Describe();

        public virtual void Dispose() { }
    }

    /// <summary>A kernel launch: its argument values live in one native block (values, then the pointer array).</summary>
    internal sealed class KernelNode : Node
    {
        private readonly EmulatorRuntime _rt;
        private readonly Kernel _kernel;
        private readonly Dim3 _grid, _block;
        private readonly uint _shared;
        private void* _block0;
        private readonly void** _args;

        public KernelNode(EmulatorRuntime rt, Kernel kernel, Dim3 grid, Dim3 block, uint shared, void** args, int[] sizes)
        {
            _rt = rt; _kernel = kernel; _grid = grid; _block = block; _shared = shared;
            int n = sizes.Length;
            long valueBytes = 8L * n; // every value in its own 8-byte slot (aligned for pointers and doubles)
            _block0 = NativeMemory.AllocZeroed((nuint)(valueBytes + 8L * Math.Max(1, n)));
            byte* values = (byte*)_block0;
            _args = (void**)(values + valueBytes);
            for (int i = 0; i < n; i++)
            {
                if (args[i] == null) throw new ArgumentException($"{kernel.Name}: args[{i}] is NULL (each entry must point to an argument value).");
                if (sizes[i] is < 1 or > 8) throw new ArgumentException($"{kernel.Name}: parameter {i} has {sizes[i]} bytes; a captured argument takes at most 8.");
                Buffer.MemoryCopy(args[i], values + 8L * i, 8, sizes[i]);
                _args[i] = values + 8L * i;
            }
        }

        public override void Run() => _rt.RunKernel(_kernel, _grid, _block, _shared, _args);

        public override string Describe() => "kernel:" + _kernel.Name;

        public override void Dispose()
        {
            if (_block0 == null) return;
            NativeMemory.Free(_block0);
            _block0 = null;
        }
    }

    /// <summary>A cuBLAS-style SGEMM.</summary>
    internal sealed class Gemm(bool transA, bool transB, int m, int n, int k, float alpha, ulong a, int lda, ulong b, int ldb, float beta, ulong c, int ldc) : Node
    {
        public override void Run() => ReferenceSgemm.Run(transA, transB, m, n, k, alpha, (float*)a, lda, (float*)b, ldb, beta, (float*)c, ldc);

        public override string Describe() => "gemm";
    }

    /// <summary>A memset to zero.</summary>
    internal sealed class Memset(ulong dst, long bytes) : Node
    {
        public override void Run() => NativeMemory.Clear((void*)dst, (nuint)bytes);

        public override string Describe() => "memset";
    }

    /// <summary>A copy (device to device, or from pinned host memory).</summary>
    internal sealed class Copy(ulong dst, ulong src, long bytes) : Node
    {
        public override void Run() => Buffer.MemoryCopy((void*)src, (void*)dst, bytes, bytes);

        public override string Describe() => "copy";
    }
}
