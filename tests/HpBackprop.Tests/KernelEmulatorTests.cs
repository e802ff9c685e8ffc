using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using HpBackprop.Cpu;
using HpBackprop.Cuda.Runtime;
using HpBackprop.Model;
using HpBackprop.Reference;

namespace HpBackprop.Tests;

/// <summary>
/// Every kernel of <c>native/kernels/kernel_list.h</c>, launched from C# through the kernel
/// emulator (<see cref="EmulatorRuntime"/>, cuLaunchKernel-style argument arrays) and compared
/// with the CPU implementations (<c>Cpu/</c>) and the exercise-1 <see cref="ReferenceChain{T}"/>
/// at awkward sizes: n ∈ {2, 3, 31, 33, 1000}, V ∈ {27, 1000, 50000}, H ∈ {1, 200, 513},
/// ids with heavy repetition, odd block shapes and capped grids (grid-stride loops).
/// </summary>
/// <remarks>
/// Tolerances are relative to the largest magnitude of the expected tensor (u = 2⁻²⁴ ≈ 6e-8 is
/// float32's unit roundoff):
/// <list type="bullet">
/// <item><see cref="ElementwiseTol"/> = 1e-6 ≈ 16u: a few float roundings per element plus the
/// few-ulp differences between glibc's expf/logf/tanhf/sqrtf (the emulator) and .NET's
/// vectorised exp/tanh/rsqrt (the CPU code). Also used for cross-entropy: the row sum s enters
/// dlogits only through p/n = e/(s·n) ≤ 1/n while max |dlogits| ≈ (1 − p_target)/n, and a loss
/// only through log(s) (absolute error ≈ relative error of s).</item>
/// <item><see cref="SumTol"/> = 1e-5: sums over up to ~3,000 terms added in a different order
/// (warp trees, column slices, atomics vs sequential loops); the rounding of a sum of k terms
/// grows like √k·u (≤ k·u in the worst case) of its largest partial sum, ≈ 3e-6 at k = 3,000.</item>
/// <item><see cref="ChainTol"/> = 1e-4: fused kernels vs the atomic chain, where formulas are
/// algebraically equal but rearranged; dhprebn in particular is a difference of terms up to
/// ~10× larger than itself (catastrophic cancellation amplifies the rounding).</item>
/// </list>
/// A genuine bug (a dropped or duplicated term, a wrong index, an unwritten element, a missing
/// Bessel factor) moves results by far more (1e-3 … 1): outputs are pre-filled with NaN and
/// followed by guard words, so unwritten elements and overruns fail too.
/// </remarks>
/// <remarks>
/// <see cref="KernelDriverTests"/> runs every test of this class again on the real CUDA driver
/// (copies in and out instead of host writes), reported as not run where there is no GPU.
/// </remarks>
[TestClass]
public unsafe class KernelEmulatorTests
{
    /// <summary>Run on the real CUDA driver instead of the emulator (<see cref="KernelDriverTests"/>).</summary>
    protected virtual bool OnDriver => false;

    private Emu NewEmu() => new(OnDriver);

    private const double ElementwiseTol = 1e-6;
    private const double SumTol = 1e-5;
    private const double ChainTol = 1e-4;
    private const float Eps = 1e-5f;

    /// <summary>The kernels this file launches; <see cref="EveryKernelOfTheContractIsTestedHere"/> keeps it equal to kernel_list.h.</summary>
    private static readonly string[] Tested =
    [
        "embedding_forward", "embedding_backward_atomic", "embedding_backward_dense", "embedding_sort_histogram", "exclusive_scan_int",
        "embedding_sort_scatter", "embedding_backward_segments",
        "batchnorm_forward", "batchnorm_backward", "batchnorm_inference", "batchnorm_running_update", "batchnorm_calib_accumulate",
        "cross_entropy_warp", "cross_entropy_block", "sum_reduce", "bias_add", "column_sum", "sgd_update",
        "chain_logit_maxes", "chain_norm_logits", "chain_counts", "chain_counts_sum", "chain_counts_sum_inv", "chain_probs", "chain_logprobs",
        "chain_losses", "chain_dlogprobs", "chain_dprobs", "chain_dcounts_sum_inv", "chain_dcounts_sum", "chain_dcounts", "chain_dnorm_logits",
        "chain_dlogit_maxes", "chain_dlogits",
        "chain_bnmeani", "chain_bndiff", "chain_bndiff2", "chain_bnvar", "chain_bnvar_inv", "chain_bnraw", "chain_hpreact", "chain_h",
        "chain_dhpreact", "chain_dbngain", "chain_dbnraw", "chain_dbnbias", "chain_dbnvar_inv", "chain_dbnvar", "chain_dbndiff2", "chain_dbndiff",
        "chain_dbnmeani", "chain_dhprebn",
    ];

    // =====================================================================================
    // Coverage of the contract
    // =====================================================================================

    [TestMethod]
    public void EveryKernelOfTheContractIsTestedHere()
    {
        string list = File.ReadAllText(Path.Combine(Oracle.RepoRoot, "native", "kernels", "kernel_list.h"));
        var contract = Regex.Matches(list, @"^HPB_KERNEL\((\w+),", RegexOptions.Multiline).Select(m => m.Groups[1].Value).Order(StringComparer.Ordinal).ToArray();
        Assert.IsGreaterThan(40, contract.Length, "kernel_list.h parsed to too few kernels");
        Devices.RequireEmulator();
        using var emu = new EmulatorRuntime();
        CollectionAssert.AreEqual(contract, emu.KernelNames.Order(StringComparer.Ordinal).ToArray(), "the emulator library's kernel table differs from kernel_list.h");
        CollectionAssert.AreEqual(contract, Tested.Order(StringComparer.Ordinal).ToArray(), "kernels of kernel_list.h without a test here (or tested names that are not in it)");
    }

    // =====================================================================================
    // embedding.cu
    // =====================================================================================

    [TestMethod]
    [DataRow(2, 3, 27, 10, "mixed")]
    [DataRow(3, 1, 27, 1, "one")]
    [DataRow(31, 3, 1000, 33, "mixed")]
    [DataRow(33, 8, 1000, 10, "one")]
    [DataRow(1000, 3, 27, 10, "mixed")]
    [DataRow(1000, 3, 1000, 33, "mixed")]
    [DataRow(2, 3, 50000, 10, "mixed")]
    [DataRow(3, 3, 50000, 33, "one")]
    [DataRow(33, 3, 50000, 10, "mixed")]
    public void EmbeddingForwardIsAnExactGather(int n, int B, int V, int E, string ids)
    {
        var rng = new Random(n * 7919 + V);
        float[] C = Normals(rng, V * E, 1f);
        int[] xb = Ids(rng, n * B, V, ids);
        var expected = new float[n * B * E];
        Embedding.Forward(C, xb, expected, n, B, E);
        using var emu = NewEmu();
        var dC = emu.In(C);
        var dX = emu.In(xb);
        int total = n * B * E;
        foreach (var (grid, block) in new[] { (Blocks(total, 256, 16), 256), (3, 100), (1, 32) })
        {
            var outp = emu.Out(total);
            emu.Launch("embedding_forward", grid, block, 0, outp, dC, dX, n, B, E);
            AssertBitwise($"embcat (grid {grid}, block {block})", expected, emu.Read(outp));
        }
    }

    [TestMethod]
    [DataRow(2, 3, 27, 10, "mixed", 64)]
    [DataRow(3, 1, 27, 1, "one", 32)]
    [DataRow(31, 3, 1000, 33, "mixed", 96)]
    [DataRow(33, 8, 1000, 10, "one", 64)]
    [DataRow(1000, 3, 27, 10, "mixed", 256)]
    [DataRow(1000, 3, 1000, 10, "mixed", 1024)]
    [DataRow(2, 3, 50000, 10, "mixed", 64)]
    [DataRow(3, 3, 50000, 33, "mixed", 128)]
    [DataRow(33, 3, 50000, 10, "one", 64)]
    [DataRow(33, 3, 50000, 1, "mixed", 32)]
    public void DeterministicEmbeddingBackwardsMatchTheCpuScatterAndAreBitwiseReproducible(int n, int B, int V, int E, string ids, int scanBlock)
    {
        const int runs = 20;
        var rng = new Random(n * 31 + V * 7 + E);
        int m = n * B;
        int[] xb = Ids(rng, m, V, ids);
        float[] demb = Normals(rng, m * E, 1f);
        var expected = new float[V * E];
        Embedding.Backward(demb, xb, expected, n, B, E);

        using var emu = NewEmu();
        var dDemb = emu.In(demb);
        var dX = emu.In(xb);

        // dense: one thread per dC cell, writes every cell (so dC starts as NaN garbage); grid
        // capped at 8 blocks (grid-stride; the backend's ceil(V·E/256) is the same code path)
        float[]? dense = null;
        for (int run = 0; run < runs; run++)
        {
            var dC = emu.Out(V * E);
            emu.Launch("embedding_backward_dense", Blocks((long)V * E, 256, 8), 256, 0, dC, dDemb, dX, n, B, E, V);
            float[] got = emu.Read(dC);
            if (dense == null)
            {
                AssertClose("dC (dense) vs CPU scatter", expected, got, SumTol);
                dense = got;
            }
            else AssertBitwise($"dC (dense), run {run + 1} vs run 1", dense, got);
        }

        // sort-and-segment: CudaBackend.EmbeddingBackward's sequence (T = 256, 8 bits per pass,
        // double-buffered keys/vals); the scan runs one block of `scanBlock` threads (the backend:
        // 1024; any multiple of 32 is correct and cheaper on the emulator)
        int tiles = (m + 255) / 256;
        var keys = emu.Out(m); var vals = emu.Out(m); var keys2 = emu.Out(m); var vals2 = emu.Out(m); var hist = emu.Out(256L * tiles);
        int passes = V <= 256 ? 1 : V <= 65536 ? 2 : 4;
        (int[] sortedIds, int[] sortedRows) = StableSortByKey(xb);
        float[]? sorted = null;
        for (int run = 0; run <= runs; run++)
        {
            foreach (var b in new[] { keys, vals, keys2, vals2, hist }) emu.Fill(b, (byte)(0x5A + run)); // leftovers of earlier runs must not matter
            Buf keysIn = dX, keysOut = keys, valsOut = vals;
            Buf? valsIn = null;
            for (int pass = 0; pass < passes; pass++)
            {
                int shift = 8 * pass;
                emu.Launch("embedding_sort_histogram", tiles, 256, 0, hist, keysIn, m, shift);
                emu.Launch("exclusive_scan_int", 1, scanBlock, 0, hist, 256 * tiles);
                emu.Launch("embedding_sort_scatter", tiles, 256, 0, keysOut, valsOut, keysIn, valsIn, hist, m, shift);
                keysIn = keysOut; valsIn = valsOut;
                (keysOut, valsOut) = ReferenceEquals(keysOut, keys) ? (keys2, vals2) : (keys, vals);
            }
            CollectionAssert.AreEqual(sortedIds, emu.ReadInts(keysIn), $"radix sort, run {run + 1}: keys are not the ids in increasing order");
            CollectionAssert.AreEqual(sortedRows, emu.ReadInts(valsIn!), $"radix sort, run {run + 1}: the occurrence indices are not a STABLE sort by id");
            var dC = emu.Out(V * E);
            emu.Runtime.Zero(dC.Pointer, (long)V * E * 4); // the caller zeroes dC
            // runs 1..20: a capped grid (grid-stride); one more run with the backend's grid ceil(M/8)
            int segGrid = run < runs ? Blocks(m, 8, 4) : Blocks(m, 8, 65535);
            emu.Launch("embedding_backward_segments", segGrid, 256, 0, dC, dDemb, keysIn, valsIn, m, E);
            float[] got = emu.Read(dC);
            if (sorted == null)
            {
                AssertClose("dC (sort-and-segment) vs CPU scatter", expected, got, SumTol);
                sorted = got;
            }
            else AssertBitwise($"dC (sort-and-segment), run {run + 1} (segments grid {segGrid}) vs run 1", sorted, got);
        }
        // both deterministic paths add each id's rows in increasing k: bitwise the same dC
        AssertBitwise("dC: dense vs sort-and-segment", dense!, sorted!);
    }

    [TestMethod]
    [DataRow(2, 27, 10, "mixed")]
    [DataRow(33, 27, 33, "one")]
    [DataRow(1000, 27, 10, "mixed")]
    [DataRow(1000, 1000, 10, "one")]
    [DataRow(3, 50000, 10, "mixed")]
    [DataRow(33, 50000, 33, "mixed")]
    public void AtomicEmbeddingBackwardMatchesTheCpuScatterWithinTolerance(int n, int V, int E, string ids)
    {
        const int B = 3;
        var rng = new Random(n + V + E);
        int[] xb = Ids(rng, n * B, V, ids);
        float[] demb = Normals(rng, n * B * E, 1f);
        var expected = new float[V * E];
        Embedding.Backward(demb, xb, expected, n, B, E);
        using var emu = NewEmu();
        var dDemb = emu.In(demb);
        var dX = emu.In(xb);
        foreach (var (grid, block) in new[] { (Blocks((long)n * B * E, 256, 16), 256), (2, 96) })
        {
            var dC = emu.Out(V * E);
            emu.Runtime.Zero(dC.Pointer, (long)V * E * 4); // the caller zeroes dC
            emu.Launch("embedding_backward_atomic", grid, block, 0, dC, dDemb, dX, n, B, E);
            AssertClose($"dC (atomic, grid {grid}, block {block})", expected, emu.Read(dC), SumTol);
        }
    }

    [TestMethod]
    [DataRow(1, 32)]
    [DataRow(31, 32)]
    [DataRow(33, 64)]
    [DataRow(1000, 1024)]
    [DataRow(3072, 1024)]
    [DataRow(100_003, 1024)]
    [DataRow(100_003, 96)]
    public void ExclusiveScanIsExact(int count, int block)
    {
        var rng = new Random(count);
        int[] data = new int[count];
        for (int i = 0; i < count; i++) data[i] = rng.Next(4) == 0 ? rng.Next(1000) : 0; // mostly zeros, like digit histograms
        var expected = new int[count];
        for (int i = 1; i < count; i++) expected[i] = expected[i - 1] + data[i - 1];
        using var emu = NewEmu();
        var d = emu.In(data);
        emu.Launch("exclusive_scan_int", 1, block, 0, d, count);
        CollectionAssert.AreEqual(expected, emu.ReadInts(d), $"exclusive scan of {count} ints, block {block}");
    }

    // =====================================================================================
    // batchnorm.cu
    // =====================================================================================

    [TestMethod]
    [DataRow(2, 1, 32, 8)]
    [DataRow(3, 200, 32, 8)]
    [DataRow(31, 513, 32, 8)]
    [DataRow(33, 1, 13, 3)]
    [DataRow(33, 200, 13, 3)]
    [DataRow(2, 513, 1, 1)]
    [DataRow(1000, 200, 32, 8)]
    [DataRow(1000, 513, 32, 32)]
    public void BatchNormForwardAndBackwardMatchTheCpu(int n, int H, int bx, int by)
    {
        var rng = new Random(n * 1009 + H);
        float[] hprebn = new float[n * H];
        for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) hprebn[i * H + c] = 0.5f + c % 3 + 2f * Normal(rng);
        float[] gain = Normals(rng, H, 0.1f, 1f), bias = Normals(rng, H, 0.1f);
        float[] dh = Normals(rng, n * H, 0.05f);
        var mean = new float[H]; var vr = new float[H]; var vinv = new float[H]; var raw = new float[n * H]; var h = new float[n * H];
        BatchNorm.ForwardTanh(hprebn, gain, bias, mean, vr, vinv, raw, h, n, H, Eps);
        var dpre = new float[n * H]; var dgain = new float[H]; var dbias = new float[H];
        BatchNorm.Backward(dh, h, raw, gain, vinv, dpre, dgain, dbias, new float[Math.Max(H, n * H)], n, H);

        using var emu = NewEmu();
        var gHpre = emu.In(hprebn); var gGain = emu.In(gain); var gBias = emu.In(bias);
        var gMean = emu.Out(H); var gVar = emu.Out(H); var gVinv = emu.Out(H); var gRaw = emu.Out(n * H); var gH = emu.Out(n * H);
        uint grid = (uint)((H + bx - 1) / bx);
        uint shared = (uint)(bx * by * 4);
        emu.Launch("batchnorm_forward", new Dim3(grid), new Dim3((uint)bx, (uint)by), shared, gHpre, gGain, gBias, gMean, gVar, gVinv, gRaw, gH, n, H, Eps);
        AssertClose("bnmeani", mean, emu.Read(gMean), SumTol);
        AssertClose("bnvar", vr, emu.Read(gVar), SumTol);
        AssertClose("bnvar_inv", vinv, emu.Read(gVinv), SumTol);
        AssertClose("bnraw", raw, emu.Read(gRaw), SumTol);
        AssertClose("h", h, emu.Read(gH), SumTol);

        // backward from the CPU's forward tensors, so it is compared on identical inputs
        var gDh = emu.In(dh); var cH = emu.In(h); var cRaw = emu.In(raw); var cVinv = emu.In(vinv);
        var gDpre = emu.Out(n * H); var gDgain = emu.Out(H); var gDbias = emu.Out(H);
        emu.Launch("batchnorm_backward", new Dim3(grid), new Dim3((uint)bx, (uint)by), shared, gDh, cH, cRaw, gGain, cVinv, gDpre, gDgain, gDbias, n, H);
        AssertClose("dbngain", dgain, emu.Read(gDgain), SumTol);
        AssertClose("dbnbias", dbias, emu.Read(gDbias), SumTol);
        // dhprebn is a difference of terms of size |bngain·bnvar_inv·dhpreact| that cancel (almost
        // completely at n = 2, where two normalised rows are ±1 whatever the input), so its error
        // is measured against the size of those terms, not against its own (possibly tiny) magnitude.
        double terms = 0;
        for (int i = 0; i < n; i++)
            for (int c = 0; c < H; c++)
                terms = Math.Max(terms, Math.Abs(gain[c] * vinv[c] * (1 - h[i * H + c] * h[i * H + c]) * dh[i * H + c]));
        var got = emu.Read(gDpre);
        double worst = 0;
        for (int k = 0; k < dpre.Length; k++) worst = Math.Max(worst, Math.Abs((double)got[k] - dpre[k]));
        double own = dpre.Max(x => Math.Abs((double)x));
        Assert.IsTrue(worst <= SumTol * Math.Max(terms, own), $"dhprebn: max |diff| {worst:E2} > {SumTol} × {Math.Max(terms, own):E2}");
    }

    [TestMethod]
    [DataRow(2, 1)]
    [DataRow(3, 513)]
    [DataRow(33, 200)]
    [DataRow(1000, 200)]
    public void BatchNormInferenceMatchesTheCpu(int n, int H)
    {
        var rng = new Random(n + 3 * H);
        float[] hprebn = Normals(rng, n * H, 2f, 0.3f);
        float[] mean = Normals(rng, H, 0.5f), vr = new float[H];
        for (int c = 0; c < H; c++) vr[c] = 0.01f + 4f * (float)rng.NextDouble();
        float[] gain = Normals(rng, H, 0.1f, 1f), bias = Normals(rng, H, 0.1f);
        var expected = new float[n * H];
        BatchNorm.InferenceTanh(hprebn, mean, vr, gain, bias, expected, new float[H], n, H, Eps);
        using var emu = NewEmu();
        var a = emu.In(hprebn); var b = emu.In(mean); var c2 = emu.In(vr); var d = emu.In(gain); var e = emu.In(bias);
        foreach (var (grid, block) in new[] { (Blocks((long)n * H, 256, 16), 256), (3, 77) })
        {
            var h = emu.Out(n * H);
            emu.Launch("batchnorm_inference", grid, block, 0, a, b, c2, d, e, h, n, H, Eps);
            AssertClose($"h (inference, grid {grid}, block {block})", expected, emu.Read(h), ElementwiseTol);
        }
    }

    [TestMethod]
    [DataRow(1, 0.001f)]
    [DataRow(200, 0.001f)]
    [DataRow(513, 0.1f)]
    public void BatchNormRunningUpdateMatchesTheCpuFormula(int H, float momentum)
    {
        var rng = new Random(H);
        float[] rm = Normals(rng, H, 1f), rv = Normals(rng, H, 0.3f, 1f), bm = Normals(rng, H, 1f), bv = Normals(rng, H, 0.3f, 1f);
        // the CPU network's batch norm (Cpu/LayerOps.cs, BatchNormOp): running = (1 - m)·running + m·batch
        float keep = 1 - momentum;
        float[] em = new float[H], ev = new float[H];
        for (int c = 0; c < H; c++) { em[c] = keep * rm[c] + momentum * bm[c]; ev[c] = keep * rv[c] + momentum * bv[c]; }
        using var emu = NewEmu();
        var gm = emu.In(rm); var gv = emu.In(rv);
        emu.Launch("batchnorm_running_update", Blocks(H, 256, 65535), 256, 0, gm, gv, emu.In(bm), emu.In(bv), momentum, H);
        AssertClose("running_mean", em, emu.Read(gm), ElementwiseTol);
        AssertClose("running_var", ev, emu.Read(gv), ElementwiseTol);
    }

    [TestMethod]
    [DataRow(1, 32, 32)]
    [DataRow(33, 32, 32)]
    [DataRow(200, 32, 8)]
    [DataRow(513, 7, 5)]
    public void BatchNormCalibrationMatchesATwoPassDoubleReference(int H, int bx, int by)
    {
        // N = 2,031 training rows in awkward chunks (1 row, 1,000, a remainder), centred far from 0
        int[] chunks = [1, 1000, 31, 999];
        int N = chunks.Sum();
        var rng = new Random(H * 13);
        float[] all = new float[N * H];
        for (int i = 0; i < N; i++) for (int c = 0; c < H; c++) all[i * H + c] = 50f + c % 7 + 3f * Normal(rng);
        // reference (Network.Calibrate): mean, then Bessel variance about it, in double
        double[] mean = new double[H], var = new double[H];
        for (int i = 0; i < N; i++) for (int c = 0; c < H; c++) mean[c] += all[i * H + c];
        for (int c = 0; c < H; c++) mean[c] /= N;
        for (int i = 0; i < N; i++) for (int c = 0; c < H; c++) { double d = all[i * H + c] - mean[c]; var[c] += d * d; }
        for (int c = 0; c < H; c++) var[c] /= N - 1;

        using var emu = NewEmu();
        var sum = emu.Out(2L * H); var sq = emu.Out(2L * H); // doubles
        var gChunks = new List<Buf>();
        for (int k = 0, start = 0; k < chunks.Length; start += chunks[k], k++) gChunks.Add(emu.In(all.AsSpan(start * H, chunks[k] * H).ToArray()));
        Buf? center = null;
        double[] s = [], q = [];
        for (int pass = 0; pass < 2; pass++)
        {
            emu.Runtime.Zero(sum.Pointer, H * 8L);
            emu.Runtime.Zero(sq.Pointer, H * 8L);
            for (int k = 0; k < chunks.Length; k++)
                emu.Launch("batchnorm_calib_accumulate", new Dim3((uint)((H + bx - 1) / bx)), new Dim3((uint)bx, (uint)by), (uint)(bx * by * 8),
                    gChunks[k], chunks[k], H, center, sum, sq);
            s = emu.ReadDoubles(sum, H); q = emu.ReadDoubles(sq, H);
            if (pass == 0) center = emu.In(s.Select(x => (float)(x / N)).ToArray());
        }
        float[] c0 = emu.Read(center!);
        double[] gotMean = new double[H], gotVar = new double[H];
        for (int c = 0; c < H; c++)
        {
            gotMean[c] = c0[c] + s[c] / N;
            gotVar[c] = (q[c] - s[c] * s[c] / N) / (N - 1);
        }
        // double accumulation of ~2,000 terms in another order: ~1e-13 relative; 1e-9 leaves room and still sees one lost row (5e-4)
        AssertClose("calibrated mean", mean, gotMean, 1e-9);
        AssertClose("calibrated variance", var, gotVar, 1e-9);
    }

    // =====================================================================================
    // cross_entropy.cu
    // =====================================================================================

    [TestMethod]
    [DataRow("cross_entropy_warp", 2, 27, 256, 1)]
    [DataRow("cross_entropy_warp", 3, 27, 32, 8)]
    [DataRow("cross_entropy_warp", 31, 27, 256, 65535)]
    [DataRow("cross_entropy_warp", 33, 1000, 96, 2)]
    [DataRow("cross_entropy_warp", 1000, 27, 256, 8)]
        [DataRow("cross_entropy_warp", 3, 50000, 64, 65535)]
    [DataRow("cross_entropy_block", 2, 27, 256, 65535)]
    [DataRow("cross_entropy_block", 3, 1000, 256, 65535)]
    [DataRow("cross_entropy_block", 33, 1000, 96, 5)]
    [DataRow("cross_entropy_block", 33, 27, 32, 7)]
    [DataRow("cross_entropy_block", 2, 50000, 1024, 65535)]
    [DataRow("cross_entropy_block", 3, 50000, 1024, 65535)]
    [DataRow("cross_entropy_block", 33, 50000, 256, 4)]
    public void CrossEntropyMatchesTheCpuSeparateInPlaceAndForwardOnly(string kernel, int n, int V, int block, int gridCap)
    {
        var rng = new Random(n * 101 + V + block);
        float[] logits = Logits(rng, n, V);
        int[] yb = new int[n];
        for (int i = 0; i < n; i++) yb[i] = i % 3 == 0 ? 0 : i % 3 == 1 ? V - 1 : rng.Next(V);
        var dExpected = new float[n * V];
        float lossExpected = CrossEntropy.ForwardBackward(logits, yb, dExpected, n, V);
        var lExpected = new float[n];
        for (int i = 0; i < n; i++) lExpected[i] = CrossEntropy.ForwardBackward(logits.AsSpan(i * V, V), yb.AsSpan(i, 1), default, 1, V);

        using var emu = NewEmu();
        var gLogits = emu.In(logits); var gY = emu.In(yb);
        int rowsPerBlock = kernel == "cross_entropy_warp" ? block / 32 : 1;
        int grid = Math.Min((n + rowsPerBlock - 1) / rowsPerBlock, gridCap);
        string cfg = $"{kernel} n={n} V={V} grid {grid} block {block}";

        // 1. separate dlogits and losses
        var d1 = emu.Out(n * V); var l1 = emu.Out(n);
        emu.Launch(kernel, grid, block, 0, gLogits, gY, d1, l1, n, V);
        float[] dlogits = emu.Read(d1), losses = emu.Read(l1);
        AssertClose($"dlogits ({cfg})", dExpected, dlogits, ElementwiseTol);
        AssertClose($"losses ({cfg})", lExpected, losses, ElementwiseTol);
        CollectionAssert.AreEqual(logits, emu.Read(gLogits), $"{cfg}: the logits input was modified");

        // the mean loss: sum_reduce(losses, loss, n, 1/n) as the backend launches it
        var loss = emu.Out(1);
        emu.Launch("sum_reduce", 1, n >= 4096 ? 1024 : 256, 0, l1, loss, n, 1f / n);
        AssertClose($"loss ({cfg})", [lossExpected], emu.Read(loss), SumTol);

        // 2. in place: dlogits == logits
        var inPlace = emu.In(logits); var l2 = emu.Out(n);
        emu.Launch(kernel, grid, block, 0, inPlace, gY, inPlace, l2, n, V);
        AssertBitwise($"in-place dlogits vs separate ({cfg})", dlogits, emu.Read(inPlace));
        AssertBitwise($"losses, in place vs separate ({cfg})", losses, emu.Read(l2));

        // 3. forward only: dlogits == NULL
        var l3 = emu.Out(n);
        emu.Launch(kernel, grid, block, 0, gLogits, gY, null, l3, n, V);
        AssertBitwise($"losses, dlogits NULL vs separate ({cfg})", losses, emu.Read(l3));

        // 4. backward only: losses == NULL
        var d4 = emu.Out(n * V);
        emu.Launch(kernel, grid, block, 0, gLogits, gY, d4, null, n, V);
        AssertBitwise($"dlogits, losses NULL vs separate ({cfg})", dlogits, emu.Read(d4));
    }

    [TestMethod]
    [DataRow(1, 32)]
    [DataRow(2, 256)]
    [DataRow(33, 32)]
    [DataRow(1000, 256)]
    [DataRow(5000, 1024)]
    [DataRow(5000, 96)]
    public void SumReduceMatchesADoubleSum(int count, int block)
    {
        var rng = new Random(count + block);
        float[] x = new float[count];
        for (int i = 0; i < count; i++) x[i] = 0.5f + 4.5f * (float)rng.NextDouble();
        float scale = 1f / count;
        double expected = x.Sum(v => (double)v) * scale;
        using var emu = NewEmu();
        var o = emu.Out(1);
        emu.Launch("sum_reduce", 1, block, 0, emu.In(x), o, count, scale);
        AssertClose($"sum_reduce of {count} (block {block})", [expected], [emu.Read(o)[0]], SumTol);
    }

    // =====================================================================================
    // linear.cu, optimizer.cu
    // =====================================================================================

    /// <summary>
    /// The column kernels (column_sum, batch norm forward/backward/calibration) with a grid capped
    /// below ceil(cols/bx), as the backend's 65,535-block clamp does for very wide layers: every
    /// column must still be written, bitwise as with the full grid (each column is summed by the
    /// same threads in the same order, whatever block handles its tile).
    /// </summary>
    [TestMethod]
    [DataRow(33, 513, 32, 8, 2)]
    [DataRow(5, 200, 13, 3, 1)]
    [DataRow(64, 1000, 32, 8, 7)]
    public void ColumnKernelsCoverEveryColumnWhenTheGridIsCapped(int n, int H, int bx, int by, int cappedGrid)
    {
        var rng = new Random(n * 17 + H);
        float[] x = Normals(rng, n * H, 1f, 0.5f), gain = Normals(rng, H, 0.1f, 1f), bias = Normals(rng, H, 0.1f), dh = Normals(rng, n * H, 0.05f);
        uint full = (uint)((H + bx - 1) / bx);
        Assert.IsLessThan(full, (uint)cappedGrid, "the capped grid must be smaller than ceil(H/bx)");
        using var emu = NewEmu();
        var gx = emu.In(x); var gGain = emu.In(gain); var gBias = emu.In(bias); var gDh = emu.In(dh);
        var results = new Dictionary<string, float[]>[2];
        var block = new Dim3((uint)bx, (uint)by);
        for (int run = 0; run < 2; run++)
        {
            var grid = new Dim3(run == 0 ? full : (uint)cappedGrid);
            var r = results[run] = new Dictionary<string, float[]>();
            var sum = emu.Out(H);
            emu.Launch("column_sum", grid, block, (uint)(bx * by * 4), gx, sum, n, H);
            r["column_sum"] = emu.Read(sum);
            var mean = emu.Out(H); var vr = emu.Out(H); var vinv = emu.Out(H); var raw = emu.Out(n * H); var h = emu.Out(n * H);
            emu.Launch("batchnorm_forward", grid, block, (uint)(bx * by * 4), gx, gGain, gBias, mean, vr, vinv, raw, h, n, H, Eps);
            r["bnmeani"] = emu.Read(mean); r["bnvar_inv"] = emu.Read(vinv); r["bnraw"] = emu.Read(raw); r["h"] = emu.Read(h);
            var dpre = emu.Out(n * H); var dgain = emu.Out(H); var dbias = emu.Out(H);
            emu.Launch("batchnorm_backward", grid, block, (uint)(bx * by * 4), gDh, h, raw, gGain, vinv, dpre, dgain, dbias, n, H);
            r["dhprebn"] = emu.Read(dpre); r["dbngain"] = emu.Read(dgain); r["dbnbias"] = emu.Read(dbias);
            var cs = emu.Out(2L * H); var cq = emu.Out(2L * H);
            emu.Runtime.Zero(cs.Pointer, H * 8L);
            emu.Runtime.Zero(cq.Pointer, H * 8L);
            emu.Launch("batchnorm_calib_accumulate", grid, block, (uint)(bx * by * 8), gx, n, H, null, cs, cq);
            r["calib_sum"] = Array.ConvertAll(emu.ReadDoubles(cs, H), d => (float)d);
        }
        foreach (var (name, expected) in results[0])
        {
            Assert.IsFalse(expected.Any(float.IsNaN), $"{name}: the full grid left elements unwritten");
            AssertBitwise($"{name} with grid {cappedGrid} instead of {full}", expected, results[1][name]);
        }
    }

    [TestMethod]
    [DataRow(2, 1)]
    [DataRow(3, 513)]
    [DataRow(33, 27)]
    [DataRow(1000, 200)]
    [DataRow(31, 50000)]
    public void BiasAddAndColumnSumMatchTheCpu(int rows, int cols)
    {
        var rng = new Random(rows * 3 + cols);
        float[] y = Normals(rng, rows * cols, 1f), b = Normals(rng, cols, 0.1f);
        // bias_add is one IEEE float addition per element: exactly y + b
        float[] yb = new float[rows * cols];
        for (int i = 0; i < rows; i++) for (int c = 0; c < cols; c++) yb[i * cols + c] = y[i * cols + c] + b[c];
        float[] colSum = new float[cols];
        Linear.ColumnSum(y, colSum, rows, cols);

        using var emu = NewEmu();
        foreach (var (grid, block) in new[] { (Blocks((long)rows * cols, 256, 16), 256), (2, 33) })
        {
            var g = emu.In(y);
            emu.Launch("bias_add", grid, block, 0, g, emu.In(b), rows, cols);
            AssertBitwise($"bias_add (grid {grid}, block {block})", yb, emu.Read(g));
        }
        var x = emu.In(y);
        // the backend's (32, 8), odd shapes, one slice per column, and (32, 32); for V = 50,000 columns only
        // (32, 1): ceil(cols/bx) blocks must cover every column, and the emulator pays per thread
        foreach (var (bx, by) in cols > 1000 ? new[] { (32, 1) } : new[] { (32, 8), (5, 3), (32, 1), (32, 32) })
        {
            var o = emu.Out(cols);
            emu.Launch("column_sum", new Dim3((uint)((cols + bx - 1) / bx)), new Dim3((uint)bx, (uint)by), (uint)(bx * by * 4), x, o, rows, cols);
            AssertClose($"column_sum (block ({bx}, {by}))", colSum, emu.Read(o), SumTol);
        }
    }

    [TestMethod]
    [DataRow(1, 0.1f)]
    [DataRow(513, 0.01f)]
    [DataRow(12_897, 0.1f)]
    public void SgdUpdateMatchesTheCpu(int count, float lr)
    {
        var rng = new Random(count);
        float[] p = Normals(rng, count, 1f), g = Normals(rng, count, 3f);
        float[] expected = (float[])p.Clone();
        Sgd.Update(expected, g, lr);
        using var emu = NewEmu();
        foreach (var (grid, block) in new[] { (Blocks(count, 256, 65535), 256), (2, 50) })
        {
            var gp = emu.In(p);
            emu.Launch("sgd_update", grid, block, 0, gp, emu.In(g), lr, count);
            AssertClose($"params after sgd_update (grid {grid}, block {block})", expected, emu.Read(gp), ElementwiseTol);
        }
    }

    // =====================================================================================
    // atomic_chain.cu vs ReferenceChain<float>, and the fused kernels vs the chain
    // =====================================================================================

    [TestMethod]
    [DataRow(2, 27, 1)]
    [DataRow(3, 1000, 513)]
    [DataRow(33, 27, 200)]
    [DataRow(1000, 27, 200)]
    [DataRow(31, 1000, 1)]
    [DataRow(3, 50000, 1)]
    public void AtomicChainMatchesTheReferenceChainAndTheFusedKernels(int n, int V, int H)
    {
        var config = new ModelConfig(V, 3, 10, H, n);
        var p = TestModels.Initialized(config, n + V + H);
        var (xb, yb) = TestModels.RandomBatch(new NormalRng(n * 17 + H), n, 3, V);
        var r = new ReferenceChain<float>(config, TestModels.ParametersAs<float>(p), xb, yb);
        int nv = n * V, nh = n * H;

        using var emu = NewEmu();
        var gY = emu.In(yb);
        var got = new Dictionary<string, float[]>(StringComparer.Ordinal);
        // ---- cross-entropy chain, README order; row kernels one warp per row (block 256 = 8 rows)
        var logits = emu.In(r["logits"]);
        Buf T(int count) => emu.Out(count);
        var logit_maxes = T(n); var norm_logits = T(nv); var counts = T(nv); var counts_sum = T(n);
        var counts_sum_inv = T(n); var probs = T(nv); var logprobs = T(nv); var losses = T(n); var loss = T(1);
        var dlogprobs = T(nv); var dprobs = T(nv); var dcounts_sum_inv = T(n); var dcounts_sum = T(n);
        var dcounts = T(nv); var dnorm_logits = T(nv); var dlogit_maxes = T(n); var dlogits = T(nv);
        int row = Blocks(n, 8, 16); // one warp per row, grid-stride beyond 16 blocks
        emu.Launch("chain_logit_maxes", row, 256, 0, logits, logit_maxes, n, V);
        emu.Launch("chain_norm_logits", Elem(nv), 256, 0, logits, logit_maxes, norm_logits, n, V);
        emu.Launch("chain_counts", Elem(nv), 256, 0, norm_logits, counts, nv);
        emu.Launch("chain_counts_sum", row, 256, 0, counts, counts_sum, n, V);
        emu.Launch("chain_counts_sum_inv", Elem(n), 256, 0, counts_sum, counts_sum_inv, n);
        emu.Launch("chain_probs", Elem(nv), 256, 0, counts, counts_sum_inv, probs, n, V);
        emu.Launch("chain_logprobs", Elem(nv), 256, 0, probs, logprobs, nv);
        emu.Launch("chain_losses", Elem(n), 256, 0, logprobs, gY, losses, n, V);
        emu.Launch("sum_reduce", 1, 256, 0, losses, loss, n, 1f / n);
        emu.Launch("chain_dlogprobs", Elem(nv), 256, 0, dlogprobs, gY, n, V);
        emu.Launch("chain_dprobs", Elem(nv), 256, 0, dlogprobs, probs, dprobs, nv);
        emu.Launch("chain_dcounts_sum_inv", row, 256, 0, counts, dprobs, dcounts_sum_inv, n, V);
        emu.Launch("chain_dcounts_sum", Elem(n), 256, 0, counts_sum, dcounts_sum_inv, dcounts_sum, n);
        emu.Launch("chain_dcounts", Elem(nv), 256, 0, counts_sum_inv, dprobs, dcounts_sum, dcounts, n, V);
        emu.Launch("chain_dnorm_logits", Elem(nv), 256, 0, counts, dcounts, dnorm_logits, nv);
        emu.Launch("chain_dlogit_maxes", row, 256, 0, dnorm_logits, dlogit_maxes, n, V);
        emu.Launch("chain_dlogits", row, 256, 0, logits, dnorm_logits, dlogit_maxes, dlogits, n, V);
        foreach (var (name, buf) in new[] { ("logit_maxes", logit_maxes), ("norm_logits", norm_logits), ("counts", counts), ("counts_sum", counts_sum),
                     ("counts_sum_inv", counts_sum_inv), ("probs", probs), ("logprobs", logprobs), ("loss", loss), ("dlogprobs", dlogprobs), ("dprobs", dprobs),
                     ("dcounts_sum_inv", dcounts_sum_inv), ("dcounts_sum", dcounts_sum), ("dcounts", dcounts), ("dnorm_logits", dnorm_logits),
                     ("dlogit_maxes", dlogit_maxes), ("dlogits", dlogits) })
            got[name] = emu.Read(buf);
        float[] lossesGot = emu.Read(losses);

        // ---- batch-norm chain, README order; column kernels one thread per column
        var hprebn = emu.In(r["hprebn"]); var bngain = emu.In(r["bngain"]); var bnbias = emu.In(r["bnbias"]); var dh = emu.In(r["dh"]);
        var bnmeani = T(H); var bndiff = T(nh); var bndiff2 = T(nh); var bnvar = T(H); var bnvar_inv = T(H);
        var bnraw = T(nh); var hpreact = T(nh); var h = T(nh); var dhpreact = T(nh); var dbngain = T(H);
        var dbnraw = T(nh); var dbnbias = T(H); var dbnvar_inv = T(H); var dbnvar = T(H); var dbndiff2 = T(nh);
        var dbndiff = T(nh); var dbnmeani = T(H); var dhprebn = T(nh);
        int col = Blocks(H, 256, 65535);
        emu.Launch("chain_bnmeani", col, 256, 0, hprebn, bnmeani, n, H);
        emu.Launch("chain_bndiff", Elem(nh), 256, 0, hprebn, bnmeani, bndiff, n, H);
        emu.Launch("chain_bndiff2", Elem(nh), 256, 0, bndiff, bndiff2, nh);
        emu.Launch("chain_bnvar", col, 256, 0, bndiff2, bnvar, n, H);
        emu.Launch("chain_bnvar_inv", Elem(H), 256, 0, bnvar, bnvar_inv, H, Eps);
        emu.Launch("chain_bnraw", Elem(nh), 256, 0, bndiff, bnvar_inv, bnraw, n, H);
        emu.Launch("chain_hpreact", Elem(nh), 256, 0, bngain, bnraw, bnbias, hpreact, n, H);
        emu.Launch("chain_h", Elem(nh), 256, 0, hpreact, h, nh);
        emu.Launch("chain_dhpreact", Elem(nh), 256, 0, h, dh, dhpreact, nh);
        emu.Launch("chain_dbngain", col, 256, 0, bnraw, dhpreact, dbngain, n, H);
        emu.Launch("chain_dbnraw", Elem(nh), 256, 0, bngain, dhpreact, dbnraw, n, H);
        emu.Launch("chain_dbnbias", col, 256, 0, dhpreact, dbnbias, n, H);
        emu.Launch("chain_dbnvar_inv", col, 256, 0, bndiff, dbnraw, dbnvar_inv, n, H);
        emu.Launch("chain_dbnvar", Elem(H), 256, 0, bnvar, dbnvar_inv, dbnvar, H, Eps);
        emu.Launch("chain_dbndiff2", Elem(nh), 256, 0, dbnvar, dbndiff2, n, H);
        emu.Launch("chain_dbndiff", Elem(nh), 256, 0, bnvar_inv, dbnraw, bndiff, dbndiff2, dbndiff, n, H);
        emu.Launch("chain_dbnmeani", col, 256, 0, dbndiff, dbnmeani, n, H);
        emu.Launch("chain_dhprebn", Elem(nh), 256, 0, dbndiff, dbnmeani, dhprebn, n, H);
        foreach (var (name, buf) in new[] { ("bnmeani", bnmeani), ("bndiff", bndiff), ("bndiff2", bndiff2), ("bnvar", bnvar), ("bnvar_inv", bnvar_inv),
                     ("bnraw", bnraw), ("hpreact", hpreact), ("h", h), ("dhpreact", dhpreact), ("dbngain", dbngain), ("dbnraw", dbnraw), ("dbnbias", dbnbias),
                     ("dbnvar_inv", dbnvar_inv), ("dbnvar", dbnvar), ("dbndiff2", dbndiff2), ("dbndiff", dbndiff), ("dbnmeani", dbnmeani), ("dhprebn", dhprebn) })
            got[name] = emu.Read(buf);

        // ---- every chain tensor vs ReferenceChain<float> (same names). Both are float32 with the
        // same formulas; they differ in the order of row sums (warp tree vs sequential loop).
        var failures = new List<string>();
        foreach (var (name, value) in got)
        {
            double scale = ChainScale(name, n => r[n]);
            double err = MaxDiff(r[name], value);
            if (!(err <= SumTol * scale)) failures.Add($"{name}: max |diff| {err:E2} > {SumTol:E0} × {scale:E2}");
        }
        var lossRef = new float[n];
        for (int i = 0; i < n; i++) lossRef[i] = -r["logprobs"][i * V + yb[i]];
        double lerr = MaxDiff(lossRef, lossesGot);
        if (!(lerr <= SumTol * MaxAbs(lossRef))) failures.Add($"losses: max |diff| {lerr:E2}");
        Assert.IsEmpty(failures, $"atomic chain vs ReferenceChain<float> (n={n}, V={V}, H={H}): " + string.Join("; ", failures));

        // ---- the fused kernels vs the chain: cross-entropy (as CudaBackend picks it) + sum_reduce,
        // batchnorm_forward, then batchnorm_backward from the fused forward's tensors and the chain's dh
        var fd = emu.Out(nv); var fl = emu.Out(n); var floss = emu.Out(1);
        if (V <= 2048) emu.Launch("cross_entropy_warp", Blocks(n, 8, 65535), 256, 0, logits, gY, fd, fl, n, V);
        else emu.Launch("cross_entropy_block", Math.Min(n, 65535), V >= 16384 ? 1024 : 256, 0, logits, gY, fd, fl, n, V);
        emu.Launch("sum_reduce", 1, 256, 0, fl, floss, n, 1f / n);
        var fMean = emu.Out(H); var fVar = emu.Out(H); var fVinv = emu.Out(H); var fRaw = emu.Out(nh); var fH = emu.Out(nh);
        var bnGrid = (uint)Blocks(H, 32, 65535);
        emu.Launch("batchnorm_forward", new Dim3(bnGrid), new Dim3(32, 8), 32 * 8 * 4, hprebn, bngain, bnbias, fMean, fVar, fVinv, fRaw, fH, n, H, Eps);
        var fDpre = emu.Out(nh); var fDgain = emu.Out(H); var fDbias = emu.Out(H);
        emu.Launch("batchnorm_backward", new Dim3(bnGrid), new Dim3(32, 8), 32 * 8 * 4, dh, fH, fRaw, bngain, fVinv, fDpre, fDgain, fDbias, n, H);
        var fused = new Dictionary<string, float[]>(StringComparer.Ordinal)
        {
            ["dlogits"] = emu.Read(fd), ["loss"] = emu.Read(floss), ["bnmeani"] = emu.Read(fMean), ["bnvar"] = emu.Read(fVar), ["bnvar_inv"] = emu.Read(fVinv),
            ["bnraw"] = emu.Read(fRaw), ["h"] = emu.Read(fH), ["dhprebn"] = emu.Read(fDpre), ["dbngain"] = emu.Read(fDgain), ["dbnbias"] = emu.Read(fDbias),
        };
        foreach (var (name, value) in fused)
        {
            double scale = ChainScale(name, n => got[n]);
            double err = MaxDiff(got[name], value);
            if (!(err <= ChainTol * scale)) failures.Add($"{name}: max |diff| {err:E2} > {ChainTol:E0} × {scale:E2}");
        }
        Assert.IsEmpty(failures, $"fused kernels vs atomic chain (n={n}, V={V}, H={H}): " + string.Join("; ", failures));
    }

    // =====================================================================================
    // helpers
    // =====================================================================================

    /// <summary>
    /// The magnitude a chain tensor's error is measured against: its own largest magnitude, except
    /// for the two that cancel to ≈ 0 — dlogit_maxes (= −Σ dnorm_logits, rounding noise by
    /// construction) against its terms dnorm_logits, and dhprebn (= dbndiff + dbnmeani/n, which is
    /// ≈ 0 for n = 2: two normalised rows are ±1 whatever the inputs) against its term dbndiff.
    /// </summary>
    private static double ChainScale(string name, Func<string, float[]> tensor) => name switch
    {
        "dlogit_maxes" => MaxAbs(tensor("dnorm_logits")),
        "dhprebn" => Math.Max(MaxAbs(tensor("dhprebn")), MaxAbs(tensor("dbndiff"))),
        _ => MaxAbs(tensor(name)),
    };

    /// <summary>ceil(work/perBlock) blocks, at least 1, at most <paramref name="cap"/>.</summary>
    private static int Blocks(long work, int perBlock, int cap) => (int)Math.Clamp((work + perBlock - 1) / perBlock, 1, cap);

    /// <summary>Elementwise chain kernels: grid-stride, grid capped at 16 blocks of 256.</summary>
    private static int Elem(long count) => Blocks(count, 256, 16);

    private static float Normal(Random rng)
    {
        double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
        return (float)(Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
    }

    private static float[] Normals(Random rng, int count, float std, float mean = 0f)
    {
        var a = new float[count];
        for (int i = 0; i < count; i++) a[i] = mean + std * Normal(rng);
        return a;
    }

    /// <summary>
    /// Ids in [0, V): "mixed" = heavy repetition (40% the boundary token 0, 20% V−1 — every radix
    /// byte non-zero for V = 50,000 —, 10% V/2, 30% uniform); "one" = every id V−1 (a single run of M).
    /// </summary>
    private static int[] Ids(Random rng, int count, int V, string mode)
    {
        var ids = new int[count];
        for (int i = 0; i < count; i++)
        {
            double u = rng.NextDouble();
            ids[i] = mode == "one" ? V - 1 : u < 0.4 ? 0 : u < 0.6 ? V - 1 : u < 0.7 ? V / 2 : rng.Next(V);
        }
        return ids;
    }

    /// <summary>Logits N(0, 2²), every fourth row ×30 (large spreads), with a duplicated row maximum in row 1.</summary>
    private static float[] Logits(Random rng, int n, int V)
    {
        var x = Normals(rng, n * V, 2f);
        for (int i = 0; i < n; i += 4) for (int j = 0; j < V; j++) x[i * V + j] *= 30f;
        if (n > 1) { x[V + 0] = 9f; x[V + V - 1] = 9f; }
        return x;
    }

    private static (int[] Keys, int[] Rows) StableSortByKey(int[] keys)
    {
        int[] rows = Enumerable.Range(0, keys.Length).OrderBy(k => keys[k]).ToArray(); // LINQ OrderBy is stable
        return (rows.Select(k => keys[k]).ToArray(), rows);
    }

    private static double MaxAbs(ReadOnlySpan<float> a) { double m = 0; foreach (float x in a) m = Math.Max(m, Math.Abs((double)x)); return m; }

    /// <summary>max |a − b|; NaN anywhere (an unwritten output) counts as +∞.</summary>
    private static double MaxDiff(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (a.Length != b.Length) return double.PositiveInfinity;
        double m = 0;
        for (int i = 0; i < a.Length; i++)
        {
            double d = Math.Abs((double)a[i] - b[i]);
            if (double.IsNaN(d)) return double.PositiveInfinity;
            m = Math.Max(m, d);
        }
        return m;
    }

    private static void AssertClose(string what, ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double tol)
    {
        var e = new double[expected.Length]; var a = new double[actual.Length];
        for (int i = 0; i < e.Length; i++) e[i] = expected[i];
        for (int i = 0; i < a.Length; i++) a[i] = actual[i];
        AssertClose(what, e, a, tol);
    }

    /// <summary>max |actual − expected| ≤ tol × max |expected| (NaN fails), naming the worst element.</summary>
    private static void AssertClose(string what, ReadOnlySpan<double> expected, ReadOnlySpan<double> actual, double tol)
    {
        Assert.AreEqual(expected.Length, actual.Length, $"{what}: length");
        double scale = 0, worst = 0;
        int at = -1;
        foreach (double x in expected) scale = Math.Max(scale, Math.Abs(x));
        for (int i = 0; i < expected.Length; i++)
        {
            double d = Math.Abs(actual[i] - expected[i]);
            if (double.IsNaN(d)) d = double.PositiveInfinity;
            if (d > worst || at < 0) { worst = d; at = i; }
        }
        if (!(worst <= tol * scale) && !(scale == 0 && worst == 0))
            Assert.Fail($"{what}: max |diff| {worst:E3} at [{at}] (expected {expected[at]:R}, got {actual[at]:R}) exceeds {tol:E0} × max |expected| {scale:E3}");
    }

    private static void AssertBitwise(string what, ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        Assert.AreEqual(expected.Length, actual.Length, $"{what}: length");
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{what}: not bitwise equal at [{i}]: expected {expected[i]:R}, got {actual[i]:R}");
    }

    /// <summary>A "device" buffer of the emulator: <paramref name="Bytes"/> usable bytes followed by guard bytes.</summary>
    private sealed record Buf(DeviceMemory Memory, long Bytes)
    {
        public ulong Pointer => Memory.Pointer;
    }

    /// <summary>
    /// A device runtime (the emulator, or the real driver) plus bookkeeping: buffers with guard
    /// bytes (checked on every read), outputs pre-filled with NaN, and launches by name whose
    /// arguments are checked against the kernel's parameter list in the emulator library
    /// (kernel_list.h) before being packed as cuLaunchKernel's kernelParams (args[i] points to
    /// the i-th value). Every byte goes through the runtime's copies, so the same test runs on a GPU.
    /// </summary>
    private sealed class Emu : IDisposable
    {
        private const int GuardBytes = 256;
        private const byte GuardByte = 0xA7;
        private static readonly Dictionary<string, string[]> Signatures = LoadSignatures();
        private readonly List<Buf> _buffers = [];
        private readonly Dictionary<string, Kernel> _kernels = new(StringComparer.Ordinal);
        private readonly bool _ownsRuntime;

        /// <summary>The emulator, or (on the driver) one runtime shared by the tests of the process: creating a context per test would cost more than the test.</summary>
        public Emu(bool onDriver)
        {
            Devices.RequireEmulator();   // on the driver too: the argument checks read the emulator's kernel signatures
            if (onDriver)
            {
                Devices.RequireGpu();
                Runtime = Devices.SharedDriver;
            }
            else
            {
                Runtime = new EmulatorRuntime();
                _ownsRuntime = true;
            }
        }

        public IDeviceRuntime Runtime { get; }

        private static Dictionary<string, string[]> LoadSignatures()
        {
            nint lib = NativeLibrary.Load(Path.Combine(AppContext.BaseDirectory, EmulatorRuntime.LibraryName));
            var count = (delegate* unmanaged<int>)NativeLibrary.GetExport(lib, "hpb_emu_kernel_count");
            var signature = (delegate* unmanaged<int, byte*>)NativeLibrary.GetExport(lib, "hpb_emu_kernel_signature");
            var kname = (delegate* unmanaged<int, byte*>)NativeLibrary.GetExport(lib, "hpb_emu_kernel_name");
            var o = new Dictionary<string, string[]>(StringComparer.Ordinal);
            for (int i = 0; i < count(); i++)
                o[Marshal.PtrToStringUTF8((nint)kname(i))!] = Marshal.PtrToStringUTF8((nint)signature(i))!.Split(',', StringSplitOptions.TrimEntries);
            return o;
        }

        private void Upload(ulong dst, ReadOnlySpan<byte> bytes)
        {
            fixed (byte* p = bytes) Runtime.CopyToDevice(dst, p, bytes.Length);
        }

        private Buf Alloc(long bytes, byte fill)
        {
            var mem = Runtime.Allocate(bytes + GuardBytes);
            var b = new Buf(mem, bytes);
            _buffers.Add(b);
            var init = new byte[bytes + GuardBytes];
            init.AsSpan(0, (int)bytes).Fill(fill);
            init.AsSpan((int)bytes).Fill(GuardByte);
            Upload(mem.Pointer, init);
            return b;
        }

        public Buf In(float[] data)
        {
            var b = Alloc(data.Length * 4L, 0);
            fixed (float* p = data) Runtime.CopyToDevice(b.Pointer, p, data.Length * 4L);
            return b;
        }

        public Buf In(int[] data)
        {
            var b = Alloc(data.Length * 4L, 0);
            fixed (int* p = data) Runtime.CopyToDevice(b.Pointer, p, data.Length * 4L);
            return b;
        }

        /// <summary>An output of <paramref name="elements"/> 4-byte elements, filled with NaN (0xFF bytes).</summary>
        public Buf Out(long elements) => Alloc(elements * 4, 0xFF);

        public void Fill(Buf b, byte value)
        {
            var bytes = new byte[b.Bytes];
            bytes.AsSpan().Fill(value);
            Upload(b.Pointer, bytes);
        }

        private void CheckGuard(Buf b)
        {
            var g = new byte[GuardBytes];
            fixed (byte* p = g) Runtime.CopyToHost(p, b.Pointer + (ulong)b.Bytes, GuardBytes);
            int bad = g.AsSpan().IndexOfAnyExcept(GuardByte);
            if (bad >= 0) Assert.Fail($"a kernel wrote {bad} bytes past the end of a {b.Bytes}-byte buffer");
        }

        public float[] Read(Buf b)
        {
            CheckGuard(b);
            var o = new float[b.Bytes / 4];
            fixed (float* p = o) Runtime.CopyToHost(p, b.Pointer, b.Bytes);
            return o;
        }

        public int[] ReadInts(Buf b)
        {
            CheckGuard(b);
            var o = new int[b.Bytes / 4];
            fixed (int* p = o) Runtime.CopyToHost(p, b.Pointer, b.Bytes);
            return o;
        }

        public double[] ReadDoubles(Buf b, int count)
        {
            CheckGuard(b);
            var o = new double[count];
            fixed (double* p = o) Runtime.CopyToHost(p, b.Pointer, count * 8L);
            return o;
        }

        public void Launch(string kernel, int grid, int block, uint shared, params object?[] args) =>
            Launch(kernel, new Dim3((uint)grid), new Dim3((uint)block), shared, args);

        /// <summary>Launches <paramref name="kernel"/>: arguments are <see cref="Buf"/> or null (pointers), int, float.</summary>
        public void Launch(string kernel, Dim3 grid, Dim3 block, uint shared, params object?[] args)
        {
            Assert.Contains(kernel, Tested, $"{kernel} is launched but missing from the Tested list");
            string[] parameters = Signatures[kernel];
            Assert.HasCount(parameters.Length, args, $"{kernel}({string.Join(", ", parameters)}): argument count");
            ulong* slots = stackalloc ulong[args.Length];
            void** kernelParams = stackalloc void*[args.Length];
            for (int i = 0; i < args.Length; i++)
            {
                string p = parameters[i];
                bool isPointer = p.Contains('*', StringComparison.Ordinal);
                slots[i] = 0;
                switch (args[i])
                {
                    case null when isPointer: break;
                    case Buf b when isPointer: slots[i] = b.Pointer; break;
                    case int v when p.StartsWith("int ", StringComparison.Ordinal): *(int*)&slots[i] = v; break;
                    case float f when p.StartsWith("float ", StringComparison.Ordinal): *(float*)&slots[i] = f; break;
                    default: Assert.Fail($"{kernel}: argument {i} ({args[i]?.GetType().Name ?? "null"}) does not match parameter '{p}'"); break;
                }
                kernelParams[i] = &slots[i];
            }
            if (!_kernels.TryGetValue(kernel, out var k)) _kernels[kernel] = k = Runtime.GetKernel(kernel);
            Runtime.Launch(k, grid, block, shared, kernelParams);
        }

        public void Dispose()
        {
            if (!_ownsRuntime) Runtime.Synchronize(); // a fault of the last launch belongs to this test
            foreach (var b in _buffers) b.Memory.Dispose();
            _buffers.Clear();
            if (_ownsRuntime) Runtime.Dispose();
        }
    }
}

/// <summary>
/// Every test of <see cref="KernelEmulatorTests"/> on the real CUDA driver: the same kernels from
/// the embedded PTX, the same sizes and launch shapes, inputs copied in and results copied out.
/// Reported as not run (inconclusive) without a GPU; select them alone with
/// <c>--filter TestCategory=GpuDriver</c>.
/// </summary>
[TestClass]
[TestCategory(Devices.DriverCategory)]
public sealed class KernelDriverTests : KernelEmulatorTests
{
    /// <inheritdoc />
    protected override bool OnDriver => true;
}
