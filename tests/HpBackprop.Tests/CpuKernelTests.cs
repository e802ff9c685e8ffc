using System.Runtime.Intrinsics.X86;
using HpBackprop.Cpu;
using HpBackprop.Model;
using HpBackprop.Networks;

namespace HpBackprop.Tests;

/// <summary>The CPU kernels against naive loops: every GEMM form and edge; and the makemore training step of the compiled network: the fallback path, thread-count independence, no allocation, fused SGD.</summary>
[TestClass]
[DoNotParallelize]
public sealed class CpuKernelTests
{
    private static float[] Random(int count, int seed)
    {
        var r = new Random(seed);
        var a = new float[count];
        for (int i = 0; i < a.Length; i++) a[i] = (float)(r.NextDouble() * 2 - 1);
        return a;
    }

    private static double[] Naive(float[] a, float[] b, int m, int k, int n, string form)
    {
        var c = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++)
                {
                    double x = form == "TN" ? a[p * m + i] : a[i * k + p];
                    double y = form == "NT" ? b[j * k + p] : b[p * n + j];
                    s += x * y;
                }
                c[i * n + j] = s;
            }
        return c;
    }

    public static IEnumerable<object[]> Shapes()
    {
        int[][] shapes = [[1, 1, 1], [3, 5, 7], [8, 30, 32], [32, 30, 200], [32, 200, 27], [200, 32, 27], [30, 32, 200], [33, 27, 65],
                          [17, 300, 31], [70, 513, 96], [300, 20, 40], [9, 1, 33]];
        foreach (var s in shapes)
            foreach (var form in new[] { "NN", "NT", "TN" })
                foreach (bool v256 in new[] { false, true })
                    yield return [s[0], s[1], s[2], form, v256];
    }

    [TestMethod]
    [DynamicData(nameof(Shapes))]
    public void GemmMatchesNaive(int m, int k, int n, string form, bool vector256)
    {
        var a = Random(m * k, 1);
        var b = Random(k * n, 2);
        var c = Random(m * n, 3);
        var c0 = (float[])c.Clone();
        var want = Naive(a, b, m, k, n, form);
        Gemm.ForceVector256 = vector256;
        try
        {
            for (int acc = 0; acc < 2; acc++)
            {
                var got = acc == 1 ? (float[])c0.Clone() : c;
                switch (form)
                {
                    case "NN": Gemm.NN(a, b, got, m, k, n, acc == 1); break;
                    case "NT": Gemm.NT(a, b, got, m, k, n, acc == 1); break;
                    default: Gemm.TN(a, b, got, k, m, n, acc == 1); break;
                }
                for (int i = 0; i < m * n; i++)
                {
                    double w = want[i] + (acc == 1 ? c0[i] : 0);
                    Assert.AreEqual(w, got[i], 1e-5 * (k + 1), $"{form} {m}x{k}x{n} acc={acc} at {i}");
                }
            }
        }
        finally { Gemm.ForceVector256 = false; }
    }

    /// <summary>B packed once (<see cref="Gemm.PackB"/>) and read through <c>Args.Packed</c>, as the row-block pipeline does:
    /// several k-blocks (k &gt; 256), a right edge of ≤ 16 and of 17–31 columns, B and Bᵀ, with and without bias, bitwise
    /// equal to the same product with B read in place.</summary>
    [TestMethod]
    [DataRow(64, 96, 1024, false, true)]
    [DataRow(64, 1024, 27, false, true)]
    [DataRow(64, 27, 1024, true, false)]
    [DataRow(40, 1024, 96, true, false)]
    [DataRow(13, 600, 200, false, false)]
    [DataRow(9, 513, 33, true, true)]
    public void GemmWithPrepackedBMatchesInPlaceB(int m, int k, int n, bool transB, bool bias)
    {
        var a = Random(m * k, 21);
        var b = Random(k * n, 22);
        var bv = Random(n, 23);
        var want = new float[m * n];
        var got = new float[m * n];
        var packed = new float[Gemm.PackedSize(k, n)];
        unsafe
        {
            fixed (float* pa = a, pb = b, pbias = bv, pw = want, pg = got, pp = packed)
            {
                nint brs = transB ? 1 : n, bcs = transB ? k : 1;
                float* bp = bias ? pbias : null;
                Gemm.Run(new Gemm.Args(m, n, k, pa, k, 1, pb, brs, bcs, pw, n, bp, false), null);
                Gemm.PackB(new Gemm.Args(0, n, k, null, 0, 0, pb, brs, bcs, null, 0, null, false), pp);
                Gemm.Run(new Gemm.Args(m, n, k, pa, k, 1, null, 0, 0, pg, n, bp, false, packed: pp), null);
            }
        }
        CollectionAssert.AreEqual(want, got);
        var naive = Naive(a, b, m, k, n, transB ? "NT" : "NN");
        for (int i = 0; i < m * n; i += 7) Assert.AreEqual(naive[i] + (bias ? bv[i % n] : 0), got[i], 1e-5 * k, $"element {i}");
    }

    [TestMethod]
    public void GemmWithBiasAndThreadsIsBitwiseIndependentOfThreadCount()
    {
        foreach (var (m, k, n) in new[] { (700, 300, 1000), (1000, 700, 27), (96, 1500, 1000) })
        {
            var a = Random(m * k, 4);
            var b = Random(k * n, 5);
            var bias = Random(n, 6);
            var c1 = new float[m * n];
            var c2 = new float[m * n];
            using var pool = new WorkerPool(2);
            unsafe
            {
                fixed (float* pa = a, pb = b, pbias = bias, p1 = c1, p2 = c2)
                {
                    Gemm.Run(new Gemm.Args(m, n, k, pa, k, 1, pb, n, 1, p1, n, pbias, false), null);
                    Gemm.Run(new Gemm.Args(m, n, k, pa, k, 1, pb, n, 1, p2, n, pbias, false), pool);
                }
            }
            CollectionAssert.AreEqual(c1, c2, $"{m}x{k}x{n}");
            var want = Naive(a, b, m, k, n, "NN");
            for (int i = 0; i < m * n; i += 97) Assert.AreEqual(want[i] + bias[i % n], c1[i], 1e-5 * k);
        }
    }

    private static (ParameterSet P, int[] X, int[] Y) Problem(ModelConfig cfg, int seed)
    {
        var p = new ParameterSet(cfg);
        p.Initialize(seed);
        var r = new Random(seed);
        var x = new int[cfg.BatchSize * cfg.BlockSize];
        var y = new int[cfg.BatchSize];
        for (int i = 0; i < x.Length; i++) x[i] = r.Next(cfg.VocabSize);
        for (int i = 0; i < y.Length; i++) y[i] = r.Next(cfg.VocabSize);
        return (p, x, y);
    }

    /// <summary>The makemore network over <paramref name="p"/> on <paramref name="threads"/> threads, with the row-block pipeline on or off.</summary>
    private static MakemoreNet Net(ParameterSet p, int threads = 1, bool pipeline = true)
    {
        var m = new MakemoreNet(p, new NetworkOptions { Threads = threads });
        m.Net.PipelineEnabled = pipeline;
        return m;
    }

    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void TrainingStepIsBitwiseTheSameOnOneAndTwoThreads(bool pipeline)
    {
        // n = 512, H = 1024: the row-block pipeline (8 blocks per thread), or op by op with every product split
        var cfg = new ModelConfig(27, 3, 32, 1024, 512);
        var (p, x, y) = Problem(cfg, 7);
        using var one = Net(p, threads: 1, pipeline);
        using var two = Net(p, threads: 2, pipeline);
        Assert.AreEqual(pipeline && System.Numerics.Vector.IsHardwareAccelerated, one.Net.Pipelined, string.Join("\n", one.Net.Plan));
        for (int s = 0; s < 3; s++)
        {
            float l1 = one.Step(x, y), l2 = two.Step(x, y);
            Assert.AreEqual(l1, l2, $"loss at step {s}");
        }
        CollectionAssert.AreEqual(one.Net.Parameters.Data, two.Net.Parameters.Data);
        CollectionAssert.AreEqual(one.Net.Parameters.Grad, two.Net.Parameters.Grad);
        CollectionAssert.AreEqual(one.Net.Parameters.Buffers, two.Net.Parameters.Buffers);
    }

    [TestMethod]
    [DataRow(32)]
    [DataRow(512)]
    public void FallbackStepMatchesTheVectorStep(int n)
    {
        // n = 32: op by op, every kernel on its 256-bit path; n = 512: the row-block pipeline with 512-bit sweeps against
        // the same pipeline with the sweeps at Vector<float> width (a network compiled under ForceVector256)
        var cfg = new ModelConfig(27, 3, 10, 200, n);
        var (p, x, y) = Problem(cfg, 9);
        using var fast = Net(p);
        float l1 = fast.ForwardBackward(x, y);
        Gemm.ForceVector256 = true;
        float l2;
        try
        {
            using var slow = Net(p);
            Assert.AreEqual(n >= 256, slow.Net.Pipelined, string.Join("\n", slow.Net.Plan));
            l2 = slow.ForwardBackward(x, y);
            var g1 = fast.Net.Parameters.Grad;
            var g2 = slow.Net.Parameters.Grad;
            Assert.AreEqual(l2, l1, 1e-5);
            double scale = g2.Max(Math.Abs);
            for (int i = 0; i < g1.Length; i++) Assert.AreEqual(g2[i], g1[i], 1e-4 * scale, $"grad {i}");
        }
        finally { Gemm.ForceVector256 = false; }
    }

    [TestMethod]
    public void TrainingStepAllocatesNothing()
    {
        foreach (int threads in new[] { 1, 2 })
        {
            // one thread op by op; two threads through the row-block pipeline (n = 256)
            var cfg = threads == 1 ? new ModelConfig(27, 3, 10, 200, 32) : new ModelConfig(27, 3, 32, 512, 256);
            var (p, x, y) = Problem(cfg, 11);
            using var cpu = Net(p, threads);
            // warm-up past the JIT's tiering: for half a second, not a count of steps, since the runtime promotes a
            // method only after it has been called for a while (100 ms without new tier-0 code), later under load; a
            // promotion once allocated a few kB on this thread after 60 fast steps. A per-step allocation would
            // still show in the 20 measured steps.
            var warm = System.Diagnostics.Stopwatch.StartNew();
            for (int i = 0; i < 60 || warm.ElapsedMilliseconds < 500; i++) cpu.Step(x, y);
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 20; i++) cpu.Step(x, y);
            long after = GC.GetAllocatedBytesForCurrentThread();
            Assert.AreEqual(0, after - before, $"bytes allocated by 20 steps on {threads} thread(s)");
        }
    }

    private sealed class SlowWorker : ParallelWork
    {
        public override void Run(int thread, int threads) { if (thread == 1) Thread.Sleep(30); }
    }

    [TestMethod]
    public void APoolRunWhoseCallerMustBlockAllocatesNothing()
    {
        // the caller finishes its share at once and has to block until the worker is done: the
        // first such wait must not allocate (ManualResetEventSlim creates its lock lazily)
        using var pool = new WorkerPool(2);
        var work = new SlowWorker();
        long before = GC.GetAllocatedBytesForCurrentThread();
        pool.Run(work);
        pool.Run(work);
        Assert.AreEqual(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [TestMethod]
    public void StepWithFusedSgdIsBitwiseForwardBackwardThenSgd()
    {
        // plain SGD updates W1 and W2 inside their gradient products (op by op at n = 32; inside the row-block
        // pipeline at n = 512, which also spans two k-blocks of dW); the other network only fills the gradients
        // and the update is one pass over the flat buffer
        foreach (var cfg in new[] { new ModelConfig(27, 3, 10, 200, 32), new ModelConfig(27, 3, 32, 256, 512) })
        {
            var (p, x, y) = Problem(cfg, 13);
            using var fused = Net(p);
            using var plain = Net(p);
            StringAssert.Contains(string.Join("\n", fused.Net.Plan), fused.Net.Pipelined ? "row-block pipeline" : "SGD in the weight-gradient epilogue");
            for (int s = 0; s < 3; s++)
            {
                float l1 = fused.Step(x, y);
                float l2 = plain.ForwardBackward(x, y);
                HpBackprop.Cpu.Sgd.Update(plain.Net.Parameters.Data, plain.Net.Parameters.Grad, 0.1f);
                Assert.AreEqual(l2, l1, $"loss at step {s}");
            }
            CollectionAssert.AreEqual(plain.Net.Parameters.Data, fused.Net.Parameters.Data, $"parameters, n = {cfg.BatchSize}");
            CollectionAssert.AreEqual(plain.Net.Parameters.Grad, fused.Net.Parameters.Grad, $"gradients, n = {cfg.BatchSize}");
        }
    }

    /// <summary>
    /// Softmax cross-entropy rows of every width class (narrower than one vector, exactly one, the 16..64 register path of
    /// AVX-512, wider rows at the machine's vector width, with and without a partial last vector) against the double
    /// formula, logits spread over ±8 around an offset of 40 (so the max must be subtracted). The allowance is measured:
    /// the same formula in float with <c>MathF.Exp</c>, summed in order, sets the error a float32 kernel makes on the row;
    /// the kernel may make 4× that plus 2 units in the last place of the element.
    /// </summary>
    [TestMethod]
    [DataRow(1)] [DataRow(3)] [DataRow(4)] [DataRow(7)] [DataRow(8)] [DataRow(9)] [DataRow(15)] [DataRow(16)] [DataRow(17)]
    [DataRow(27)] [DataRow(33)] [DataRow(64)] [DataRow(65)] [DataRow(100)] [DataRow(257)] [DataRow(2148)]
    public void CrossEntropyRowsMatchTheDoubleFormulaAtEveryWidth(int V)
    {
        const int n = 24;
        var r = new Random(V);
        var logits = new float[n * V];
        for (int i = 0; i < logits.Length; i++) logits[i] = 40f + (float)(r.NextDouble() * 16 - 8);
        var y = new int[n];
        for (int i = 0; i < n; i++) y[i] = r.Next(V);
        var d = new float[n * V];
        float loss = CrossEntropy.ForwardBackward(logits, y, d, n, V);
        double refLoss = 0, floatErrD = 0, floatErrL = 0, errD = 0;
        for (int i = 0; i < n; i++)
        {
            var row = logits.AsSpan(i * V, V);
            double m = double.NegativeInfinity;
            foreach (float v in row) m = Math.Max(m, v);
            double sum = 0;
            foreach (float v in row) sum += Math.Exp(v - m);
            refLoss += Math.Log(sum) + m - row[y[i]];
            // the naive float32 row
            float mf = float.NegativeInfinity, sf = 0;
            foreach (float v in row) mf = MathF.Max(mf, v);
            foreach (float v in row) sf += MathF.Exp(v - mf);
            floatErrL = Math.Max(floatErrL, Math.Abs(MathF.Log(sf) + mf - row[y[i]] - (Math.Log(sum) + m - row[y[i]])));
            for (int j = 0; j < V; j++)
            {
                double e = (Math.Exp(row[j] - m) / sum - (j == y[i] ? 1 : 0)) / n;
                float ef = (MathF.Exp(row[j] - mf) / sf - (j == y[i] ? 1f : 0f)) / n;
                floatErrD = Math.Max(floatErrD, Math.Abs(ef - e));
                errD = Math.Max(errD, Math.Abs(d[i * V + j] - e));
            }
        }
        refLoss /= n;
        Assert.IsTrue(errD <= 4 * floatErrD + 2 * (MathF.BitIncrement(1f / n) - 1f / n),
            $"V = {V}: dlogits off the double formula by {errD:E2}, the float32 formula by {floatErrD:E2}");
        Assert.IsTrue(Math.Abs(loss - refLoss) <= 4 * floatErrL + 2 * (MathF.BitIncrement((float)refLoss) - (float)refLoss),
            $"V = {V}: loss {loss} against {refLoss} (the float32 formula is off by {floatErrL:E2})");
    }
}
