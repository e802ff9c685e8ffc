using HpBackprop.Cpu;
using HpBackprop.Model;

namespace HpBackprop.Bench;

/// <summary>
/// The six matrix products of a training step at one shape, with operands in pinned buffers,
/// runnable through our <see cref="Gemm"/> or OpenBLAS's cblas_sgemm (row-major, same shapes and transposes).
/// </summary>
internal sealed unsafe class Products : IDisposable
{
    public sealed record Product(string Name, int M, int N, int K, bool TransA, bool TransB, float[] A, float[] B, float[] C)
    {
        public double Flops => 2.0 * M * N * K;
    }

    public Product[] All { get; }
    private readonly WorkerPool? _pool;
    public int Threads { get; }

    public Products(ModelConfig cfg, int threads)
    {
        Threads = threads;
        int n = cfg.BatchSize, K = cfg.ContextWidth, H = cfg.HiddenSize, V = cfg.VocabSize;
        var r = new Random(1);
        float[] R(int len) { var a = GC.AllocateArray<float>(len, pinned: true); for (int i = 0; i < len; i++) a[i] = (float)(r.NextDouble() - 0.5); return a; }
        float[] embcat = R(n * K), W1 = R(K * H), h = R(n * H), W2 = R(H * V), dlogits = R(n * V), dhprebn = R(n * H);
        All =
        [
            new("hprebn = embcat·W1", n, H, K, false, false, embcat, W1, R(n * H)),
            new("logits = h·W2", n, V, H, false, false, h, W2, R(n * V)),
            new("dh = dlogits·W2ᵀ", n, H, V, false, true, dlogits, W2, R(n * H)),
            new("dW2 = hᵀ·dlogits", H, V, n, true, false, h, dlogits, R(H * V)),
            new("dembcat = dhprebn·W1ᵀ", n, K, H, false, true, dhprebn, W1, R(n * K)),
            new("dW1 = embcatᵀ·dhprebn", K, H, n, true, false, embcat, dhprebn, R(K * H)),
        ];
        if (threads > 1) _pool = new WorkerPool(threads);
    }

    public void Ours(Product p)
    {
        fixed (float* a = p.A, b = p.B, c = p.C)
        {
            // A(i,p): row-major [M,K], or [K,M] when transposed; B(p,j): [K,N], or [N,K] when transposed
            nint ars = p.TransA ? 1 : p.K, acs = p.TransA ? p.M : 1;
            nint brs = p.TransB ? 1 : p.N, bcs = p.TransB ? p.K : 1;
            Gemm.Run(new Gemm.Args(p.M, p.N, p.K, a, ars, acs, b, brs, bcs, c, p.N, null, false), _pool);
        }
    }

    public void Blas(Product p)
    {
        fixed (float* a = p.A, b = p.B, c = p.C)
            OpenBlas.Sgemm(OpenBlas.RowMajor, p.TransA ? OpenBlas.Trans : OpenBlas.NoTrans, p.TransB ? OpenBlas.Trans : OpenBlas.NoTrans,
                p.M, p.N, p.K, 1f, a, p.TransA ? p.M : p.K, b, p.TransB ? p.K : p.N, 0f, c, p.N);
    }

    public void Dispose() => _pool?.Dispose();
}
