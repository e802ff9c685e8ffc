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
/// at awkward sizes: n ∈ {2, 3, 31, 33, 1000}, V ∈ {27, 1000, 50000}, H ∈ {1, 7, 200, 513},
/// ids with heavy repetition, odd block shapes and capped grids (grid-stride loops), and the
/// chunked column and loss reductions with small chunk sizes (several chunks at small n).
/// The native suite (native/kernels/tests) carries the bulk of the cases; these prove that the
/// argument arrays the C# backend builds (ulong pointers, int, uint, float, double) reach the kernels.
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
/// <item>Bitwise: where kernel and CPU do the same IEEE operations in the same order — bias_add,
/// axpy vs TensorPrimitives.MultiplyAdd, SGD with momentum (its fmaf where the CPU fuses) and AdamW
/// (every operation rounded on its own, __fmul_rn etc.), the dropout mask (integer Philox, one float
/// product) — and between launches that must add in the same order (capped vs full grids, one chunk
/// vs the single-chunk batch-norm kernels).</item>
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
        "batchnorm_forward", "batchnorm_finish_mean", "batchnorm_finish_var", "batchnorm_normalize", "batchnorm_backward",
        "batchnorm_backward_partials", "batchnorm_backward_dx", "batchnorm_inference", "batchnorm_calib_accumulate",
        "cross_entropy_warp", "cross_entropy_block", "cross_entropy_bias_loss", "sum_partials", "sum_finish", "regression_loss",
        "bias_add", "column_partial_sum", "column_finish_sum", "axpy", "step_begin", "sgd_update", "sgd_momentum_update", "adamw_update",
        "activation_forward", "activation_backward", "activation_backward_column_sum", "layernorm_forward", "layernorm_backward", "layernorm_param_partials",
        "dropout_forward", "dropout_backward",
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

    /// <summary>
    /// The chunked column sums (batch-norm mean and variance, bias gradients) add their per-chunk partials in chunk order,
    /// whatever the grid: the result is bitwise the float accumulation partial[0] + partial[1] + … of the partials the
    /// kernel itself wrote, for two grids of column_partial_sum (a full one and one capped at 2 × 1 blocks, as on a GPU
    /// with fewer multiprocessors) and two of the finishing kernels. With 143 chunks of random data any other order
    /// (reversed, pairwise, per-SM) gives other bits.
    /// </summary>
    [TestMethod]
    public void ChunkedColumnSumsAddTheChunksInChunkOrderOnAnyGrid()
    {
        const int n = 1000, H = 37, chunkRows = 7;
        int chunks = (n + chunkRows - 1) / chunkRows;
        var rng = new Random(17);
        float[] x = Normals(rng, n * H, 3f, 0.5f);
        using var emu = NewEmu();
        var xb = emu.In(x);
        float[]? first = null;
        foreach (var (gx, gy, fin) in new[] { (65535, 65535, 65535), (2, 1, 1) })
        {
            var partial = emu.Out((long)chunks * H);
            var grid = new Dim3((uint)Blocks(H, 32, gx), (uint)Math.Min(chunks, gy));
            emu.Launch("column_partial_sum", grid, new Dim3(32, 8), 32 * 8 * 4, xb, null, 0, n, H, chunkRows, partial);
            float[] p = emu.Read(partial);
            var expected = new float[H];
            for (int c = 0; c < H; c++)
            {
                float acc = p[c];
                for (int k = 1; k < chunks; k++) acc += p[k * H + c];
                expected[c] = acc;
            }
            var sum = emu.Out(H);
            emu.Launch("column_finish_sum", Blocks(H, 256, fin), 256, 0, partial, chunks, H, sum);
            AssertBitwise($"column_finish_sum (partial grid {grid.X}x{grid.Y}, finish grid cap {fin})", expected, emu.Read(sum));
            var mean = emu.Out(H);
            emu.Launch("batchnorm_finish_mean", Blocks(H, 256, fin), 256, 0, partial, chunks, n, H, mean);
            AssertBitwise($"batchnorm_finish_mean (partial grid {grid.X}x{grid.Y})", expected.Select(v => v / n).ToArray(), emu.Read(mean));
            if (first == null) first = p;
            else AssertBitwise("the partials of a capped grid vs a full one", first, p);
        }
    }

    /// <summary>
    /// Batch norm in both modes (biased 0: Bessel, 1: over n) with each activation (0 identity, 1 tanh,
    /// 2 relu, 3 sigmoid), through the single-chunk kernels and through the chunked path the backend
    /// takes when n &gt; chunk_rows (column_partial_sum → batchnorm_finish_mean → column_partial_sum
    /// (centred, squared) → batchnorm_finish_var → batchnorm_normalize; batchnorm_backward_partials →
    /// column_finish_sum ×2 → batchnorm_backward_dx → column_partial_sum + column_finish_sum for
    /// dprev_bias), against the CPU's BatchNormOp arithmetic: BatchNorm.ForwardPortable/BackwardPortable,
    /// the running update with the unbiased variance, and Linear.ColumnSum of dx for the bias of the
    /// linear before. With one chunk (chunk_rows ≥ n) the two paths add in the same order: bitwise equal.
    /// </summary>
    [TestMethod]
    [DataRow(2, 1, 32, 8, 1, 0, 1)]
    [DataRow(3, 200, 32, 8, 2, 1, 2)]
    [DataRow(31, 513, 32, 8, 3, 0, 7)]
    [DataRow(33, 7, 13, 3, 0, 1, 5)]
    [DataRow(33, 200, 13, 3, 1, 1, 256)]
    [DataRow(2, 513, 1, 1, 2, 0, 1)]
    [DataRow(1000, 200, 32, 8, 1, 0, 256)]
    [DataRow(1000, 513, 32, 32, 3, 1, 333)]
    public void BatchNormSingleAndChunkedPathsMatchTheCpu(int n, int H, int bx, int by, int act, int biased, int chunkRows)
    {
        const float momentum = 0.1f;
        var rng = new Random(n * 1009 + H + 7 * act + biased);
        float[] hprebn = new float[n * H];
        for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) hprebn[i * H + c] = 0.5f + c % 3 + 2f * Normal(rng);
        float[] gain = Normals(rng, H, 0.1f, 1f), bias = Normals(rng, H, 0.3f);
        float[] dh = Normals(rng, n * H, 0.05f);
        float[] runMean0 = Normals(rng, H, 1f), runVar0 = Normals(rng, H, 0.2f, 2f);
        var mean = new float[H]; var vr = new float[H]; var vinv = new float[H]; var raw = new float[n * H]; var h = new float[n * H];
        CpuBatchNormForward(act, biased, hprebn, gain, bias, mean, vr, vinv, raw, h, n, H);
        // BatchNormOp's running update: running = (1 − m)·running + m·batch, the variance unbiased
        float keep = 1 - momentum, unbias = biased != 0 ? (float)n / (n - 1) : 1f;
        float[] runMean = new float[H], runVar = new float[H];
        for (int c = 0; c < H; c++) { runMean[c] = keep * runMean0[c] + momentum * mean[c]; runVar[c] = keep * runVar0[c] + momentum * (vr[c] * unbias); }
        var dpre = new float[n * H]; var dgain = new float[H]; var dbias = new float[H]; var dprev = new float[H];
        CpuBatchNormBackward(act, biased, dh, h, raw, gain, vinv, dpre, dgain, dbias, n, H);
        Linear.ColumnSum(dpre, dprev, n, H);

        using var emu = NewEmu();
        var gHpre = emu.In(hprebn); var gGain = emu.In(gain); var gBias = emu.In(bias);
        var results = new List<Dictionary<string, float[]>>();
        foreach (bool chunked in new[] { false, true })
        {
            string path = chunked ? $"chunked (chunk_rows {chunkRows})" : "single";
            var gMean = emu.Out(H); var gVar = emu.Out(H); var gVinv = emu.Out(H); var gRaw = emu.Out(n * H); var gH = emu.Out(n * H);
            var gRm = emu.In(runMean0); var gRv = emu.In(runVar0);
            if (chunked) BatchNormForwardChunked(emu, gHpre, gGain, gBias, gMean, gVar, gVinv, gRaw, gH, gRm, gRv, n, H, momentum, act, biased, chunkRows, bx, by);
            else emu.Launch("batchnorm_forward", new Dim3((uint)((H + bx - 1) / bx)), new Dim3((uint)bx, (uint)by), (uint)(bx * by * 4),
                gHpre, gGain, gBias, gMean, gVar, gVinv, gRaw, gH, gRm, gRv, n, H, Eps, momentum, act, biased, null);
            AssertClose($"{path} mean", mean, emu.Read(gMean), SumTol);
            AssertClose($"{path} var", vr, emu.Read(gVar), SumTol);
            AssertClose($"{path} var_inv", vinv, emu.Read(gVinv), SumTol);
            AssertClose($"{path} raw", raw, emu.Read(gRaw), SumTol);
            AssertClose($"{path} y", h, emu.Read(gH), SumTol);
            AssertClose($"{path} running_mean", runMean, emu.Read(gRm), SumTol);
            AssertClose($"{path} running_var", runVar, emu.Read(gRv), SumTol);

            // backward from the CPU's forward tensors, so it is compared on identical inputs
            var gDh = emu.In(dh); var cH = emu.In(h); var cRaw = emu.In(raw); var cVinv = emu.In(vinv);
            var gDpre = emu.Out(n * H); var gDgain = emu.Out(H); var gDbias = emu.Out(H); var gDprev = emu.Out(H);
            if (chunked) BatchNormBackwardChunked(emu, gDh, cH, cRaw, gGain, cVinv, gDpre, gDgain, gDbias, gDprev, n, H, act, biased, chunkRows, bx, by);
            else emu.Launch("batchnorm_backward", new Dim3((uint)((H + bx - 1) / bx)), new Dim3((uint)bx, (uint)by), (uint)(bx * by * 4),
                gDh, cH, cRaw, gGain, cVinv, gDpre, gDgain, gDbias, gDprev, n, H, act, biased);
            AssertClose($"{path} dgain", dgain, emu.Read(gDgain), SumTol);
            AssertClose($"{path} dbias", dbias, emu.Read(gDbias), SumTol);
            // dx is a difference of terms of size |gain·var_inv·d| that cancel (almost completely at
            // n = 2, where two normalised rows are ±1 whatever the input), so its error is measured
            // against the size of those terms, not against its own (possibly tiny) magnitude; likewise
            // dprev_bias = sum0(dx), which is ≈ 0 by construction (dx cannot move the batch mean).
            double terms = 0;
            for (int i = 0; i < n; i++)
                for (int c = 0; c < H; c++)
                    terms = Math.Max(terms, Math.Abs(gain[c] * vinv[c] * ActDerivativeFromOutput(act, h[i * H + c]) * dh[i * H + c]));
            var got = emu.Read(gDpre);
            double own = dpre.Max(x => Math.Abs((double)x));
            double worst = MaxDiff(dpre, got);
            Assert.IsTrue(worst <= SumTol * Math.Max(terms, own), $"{path} dx: max |diff| {worst:E2} > {SumTol} × {Math.Max(terms, own):E2}");
            double prevWorst = MaxDiff(dprev, emu.Read(gDprev));
            Assert.IsTrue(prevWorst <= SumTol * n * Math.Max(terms, own), $"{path} dprev_bias: max |diff| {prevWorst:E2} > {SumTol} × n × {Math.Max(terms, own):E2}");
            results.Add(new Dictionary<string, float[]>
            {
                ["mean"] = emu.Read(gMean), ["var"] = emu.Read(gVar), ["var_inv"] = emu.Read(gVinv), ["raw"] = emu.Read(gRaw), ["y"] = emu.Read(gH),
                ["running_mean"] = emu.Read(gRm), ["running_var"] = emu.Read(gRv), ["dx"] = got, ["dgain"] = emu.Read(gDgain), ["dbias"] = emu.Read(gDbias),
                ["dprev_bias"] = emu.Read(gDprev),
            });
        }
        if (chunkRows >= n)
            foreach (var (name, single) in results[0]) AssertBitwise($"{name}: one chunk vs the single kernel", single, results[1][name]);
    }

    /// <summary>The backend's chunked batch-norm forward (n &gt; chunk_rows): partial column sums per (column tile, row chunk), finished in chunk order.</summary>
    private static void BatchNormForwardChunked(Emu emu, Buf x, Buf gain, Buf bias, Buf mean, Buf var, Buf vinv, Buf? raw, Buf y, Buf? runMean, Buf? runVar,
        int n, int H, float momentum, int act, int biased, int chunkRows, int bx, int by, int gridCapX = 65535, int gridCapY = 65535)
    {
        int chunks = (n + chunkRows - 1) / chunkRows;
        var partial = emu.Out((long)chunks * H);
        var grid = new Dim3((uint)Blocks(H, bx, gridCapX), (uint)Math.Min(chunks, gridCapY));
        var block = new Dim3((uint)bx, (uint)by);
        uint shared = (uint)(bx * by * 4);
        int cols = Blocks(H, 256, gridCapX);
        emu.Launch("column_partial_sum", grid, block, shared, x, null, 0, n, H, chunkRows, partial);
        emu.Launch("batchnorm_finish_mean", cols, 256, 0, partial, chunks, n, H, mean);
        emu.Launch("column_partial_sum", grid, block, shared, x, mean, 1, n, H, chunkRows, partial);
        emu.Launch("batchnorm_finish_var", cols, 256, 0, partial, chunks, n, H, Eps, momentum, biased, mean, var, vinv, runMean, runVar);
        emu.Launch("batchnorm_normalize", Blocks((long)n * H, 256, Math.Min(16, gridCapX)), 256, 0, x, mean, vinv, gain, bias, raw, y, n, H, act);
    }

    /// <summary>The backend's chunked batch-norm backward; with one chunk the partials are the results (no finishing launch).</summary>
    private static void BatchNormBackwardChunked(Emu emu, Buf dy, Buf y, Buf raw, Buf gain, Buf vinv, Buf dx, Buf dgain, Buf dbias, Buf? dprevBias,
        int n, int H, int act, int biased, int chunkRows, int bx, int by, int gridCapX = 65535, int gridCapY = 65535)
    {
        int chunks = (n + chunkRows - 1) / chunkRows;
        var grid = new Dim3((uint)Blocks(H, bx, gridCapX), (uint)Math.Min(chunks, gridCapY));
        var block = new Dim3((uint)bx, (uint)by);
        uint shared = (uint)(bx * by * 4);
        int cols = Blocks(H, 256, gridCapX);
        Buf pd = chunks == 1 ? dbias : emu.Out((long)chunks * H), pdr = chunks == 1 ? dgain : emu.Out((long)chunks * H);
        emu.Launch("batchnorm_backward_partials", grid, block, shared, dy, y, raw, n, H, chunkRows, act, pd, pdr);
        if (chunks > 1)
        {
            emu.Launch("column_finish_sum", cols, 256, 0, pd, chunks, H, dbias);
            emu.Launch("column_finish_sum", cols, 256, 0, pdr, chunks, H, dgain);
        }
        emu.Launch("batchnorm_backward_dx", Blocks((long)n * H, 256, Math.Min(16, gridCapX)), 256, 0, dy, y, raw, gain, vinv, dbias, dgain, dx, n, H, act, biased);
        if (dprevBias == null) return;
        Buf pdx = chunks == 1 ? dprevBias : emu.Out((long)chunks * H);
        emu.Launch("column_partial_sum", grid, block, shared, dx, null, 0, n, H, chunkRows, pdx);
        if (chunks > 1) emu.Launch("column_finish_sum", cols, 256, 0, pdx, chunks, H, dprevBias);
    }

    [TestMethod]
    [DataRow(2, 1, 0)]
    [DataRow(3, 513, 1)]
    [DataRow(33, 200, 2)]
    [DataRow(1000, 200, 3)]
    public void BatchNormInferenceMatchesTheCpu(int n, int H, int act)
    {
        var rng = new Random(n + 3 * H);
        float[] hprebn = Normals(rng, n * H, 2f, 0.3f);
        float[] mean = Normals(rng, H, 0.5f), vr = new float[H];
        for (int c = 0; c < H; c++) vr[c] = 0.01f + 4f * (float)rng.NextDouble();
        float[] gain = Normals(rng, H, 0.1f, 1f), bias = Normals(rng, H, 0.1f);
        var expected = new float[n * H];
        CpuBatchNormInference(act, hprebn, mean, vr, gain, bias, expected, n, H);
        using var emu = NewEmu();
        var a = emu.In(hprebn); var b = emu.In(mean); var c2 = emu.In(vr); var d = emu.In(gain); var e = emu.In(bias);
        foreach (var (grid, block) in new[] { (Blocks((long)n * H, 256, 16), 256), (3, 77) })
        {
            var h = emu.Out(n * H);
            emu.Launch("batchnorm_inference", grid, block, 0, a, b, c2, d, e, h, n, H, Eps, act);
            AssertClose($"y (inference, act {act}, grid {grid}, block {block})", expected, emu.Read(h), ElementwiseTol);
        }
    }

    private static void CpuBatchNormForward(int act, int biased, float[] x, float[] g, float[] b, float[] mean, float[] vr, float[] vinv, float[] raw, float[] y, int n, int H)
    {
        switch (act)
        {
            case 0: Forward<IdentityAct>(); break;
            case 1: Forward<TanhAct>(); break;
            case 2: Forward<ReluAct>(); break;
            default: Forward<SigmoidAct>(); break;
        }
        void Forward<TA>() where TA : struct, IActivation
        {
            if (biased != 0) BatchNorm.ForwardPortable<TA, BatchNorm.Biased>(x, g, b, mean, vr, vinv, raw, y, n, H, Eps);
            else BatchNorm.ForwardPortable<TA, BatchNorm.Bessel>(x, g, b, mean, vr, vinv, raw, y, n, H, Eps);
        }
    }

    private static void CpuBatchNormBackward(int act, int biased, float[] dy, float[] y, float[] raw, float[] g, float[] vinv, float[] dx, float[] dgain, float[] dbias, int n, int H)
    {
        var scratch = new float[H];
        switch (act)
        {
            case 0: Backward<IdentityAct>(); break;
            case 1: Backward<TanhAct>(); break;
            case 2: Backward<ReluAct>(); break;
            default: Backward<SigmoidAct>(); break;
        }
        void Backward<TA>() where TA : struct, IActivation
        {
            if (biased != 0) BatchNorm.BackwardPortable<TA, BatchNorm.Biased>(dy, y, raw, g, vinv, dx, dgain, dbias, scratch, n, H);
            else BatchNorm.BackwardPortable<TA, BatchNorm.Bessel>(dy, y, raw, g, vinv, dx, dgain, dbias, scratch, n, H);
        }
    }

    private static void CpuBatchNormInference(int act, float[] x, float[] mean, float[] vr, float[] g, float[] b, float[] y, int n, int H)
    {
        var scratch = new float[H];
        switch (act)
        {
            case 0: BatchNorm.InferencePortable<IdentityAct>(x, mean, vr, g, b, y, scratch, n, H, Eps); break;
            case 1: BatchNorm.InferencePortable<TanhAct>(x, mean, vr, g, b, y, scratch, n, H, Eps); break;
            case 2: BatchNorm.InferencePortable<ReluAct>(x, mean, vr, g, b, y, scratch, n, H, Eps); break;
            default: BatchNorm.InferencePortable<SigmoidAct>(x, mean, vr, g, b, y, scratch, n, H, Eps); break;
        }
    }

    /// <summary>The activation's derivative from its output y (issue 19's kernel spec): 1, 1 − y², y &gt; 0, y(1 − y).</summary>
    private static double ActDerivativeFromOutput(int act, double y) => act switch
    {
        1 => 1 - y * y,
        2 => y > 0 ? 1 : 0,
        3 => y * (1 - y),
        _ => 1,
    };

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
        var sum = emu.OutDoubles(H); var sq = emu.OutDoubles(H);
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

        // the mean loss: sum_partials + sum_finish(scale = 1/n) as the backend launches them
        var loss = emu.Out(1);
        MeanOf(emu, l1, n, loss);
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

    /// <summary>
    /// The chunked double sums: sum_partials (chunk b in double by block b, square = 1 for the L2
    /// penalty) and sum_finish (the partials added in one block, scaled, rounded once to float),
    /// against a double sum; capped grids (grid-stride over the chunks) give the same bits.
    /// </summary>
    [TestMethod]
    [DataRow(1, 256, 0, 32)]
    [DataRow(2, 1, 0, 256)]
    [DataRow(33, 7, 1, 32)]
    [DataRow(1000, 256, 0, 256)]
    [DataRow(5000, 256, 1, 256)]
    [DataRow(100_003, 40_000, 0, 1024)]
    public void SumPartialsAndFinishMatchADoubleSum(int count, int chunk, int square, int block)
    {
        var rng = new Random(count + block);
        float[] x = new float[count];
        for (int i = 0; i < count; i++) x[i] = 0.5f + 4.5f * (float)rng.NextDouble();
        // the mean (scale 1/count), or the L2 penalty l2·Σ(double)w² as Network.L2Penalty computes it
        double scale = square != 0 ? 0.01 : 1.0 / count;
        double total = 0;
        foreach (float v in x) total += square != 0 ? (double)v * v : v;
        float expected = (float)(scale * total);
        int chunks = (count + chunk - 1) / chunk;
        using var emu = NewEmu();
        var gx = emu.In(x);
        float[] got = new float[2];
        double[][] partials = new double[2][];
        for (int run = 0; run < 2; run++)
        {
            var partial = emu.OutDoubles(chunks);
            var o = emu.Out(1);
            emu.Launch("sum_partials", run == 0 ? chunks : Math.Min(chunks, 2), block, 0, gx, count, chunk, square, partial);
            emu.Launch("sum_finish", 1, block, 0, partial, chunks, scale, o, null, 0);
            got[run] = emu.Read(o)[0];
            partials[run] = emu.ReadDoubles(partial, chunks);
        }
        // double sums of ≤ 100,003 terms: ~1e-12 relative; the result is rounded to float once
        AssertClose($"sum_partials + sum_finish of {count} (chunk {chunk}, square {square}, block {block})", [expected], [got[0]], ElementwiseTol);
        CollectionAssert.AreEqual(partials[0], partials[1], "partials with a capped grid differ");
        Assert.AreEqual(BitConverter.SingleToInt32Bits(got[0]), BitConverter.SingleToInt32Bits(got[1]), "the sum with a capped grid differs");
    }

    /// <summary>mean cross-entropy = sum_partials(losses, n, 256, 0) + sum_finish(scale = 1/n), as the backend launches it.</summary>
    /// <summary>
    /// cross_entropy_bias_loss (a classifier's training loss in one block) gives the bits of what it replaces, launched as the
    /// backend launched them: bias_add, cross_entropy_warp, sum_partials (one chunk of 4,096) and sum_finish into the step's
    /// ring slot — logits with the bias, dlogits, row losses and the mean loss bitwise — and the bias gradient as the float sum
    /// over the rows in order (bitwise), within float rounding of the double sum.
    /// </summary>
    [TestMethod]
    [DataRow(32, 27)]
    [DataRow(1, 5)]
    [DataRow(257, 33)]
    [DataRow(1024, 300)]
    [DataRow(5, 2048)]
    public void CrossEntropyBiasLossIsTheFiveKernelsItReplaces(int n, int V)
    {
        var rng = new Random(n * 7 + V);
        float[] logits = Logits(rng, n, V), bias = Normals(rng, V, 0.5f);
        int[] yb = Enumerable.Range(0, n).Select(i => i % 3 == 0 ? 0 : i % 3 == 1 ? V - 1 : rng.Next(V)).ToArray();
        using var emu = NewEmu();
        var gY = emu.In(yb); var gB = emu.In(bias);
        const uint slot = 3;
        // the five kernels
        var z1 = emu.In(logits); var d1 = emu.Out(n * V); var l1 = emu.Out(n); var ring1 = emu.Out(8);
        var st = emu.Step(11, slot: slot, ring: 8);
        emu.Launch("bias_add", (n * V + 255) / 256, 256, 0, z1, gB, n, V);
        emu.Launch("cross_entropy_warp", (n + 7) / 8, 256, 0, z1, gY, d1, l1, n, V);
        var partial = emu.OutDoubles(1);
        emu.Launch("sum_partials", 1, 256, 0, l1, n, 4096, 0, partial);
        emu.Launch("sum_finish", 1, 256, 0, partial, 1, 1.0 / n, ring1, st, 0);
        // the one
        var z2 = emu.In(logits); var d2 = emu.Out(n * V); var l2 = emu.Out(n); var ring2 = emu.Out(8); var db = emu.Out(V);
        emu.Launch("cross_entropy_bias_loss", 1, 256, 0, z2, gB, gY, d2, l2, db, ring2, st, n, V);
        AssertBitwise("logits with the bias", emu.Read(z1), emu.Read(z2));
        float[] dl = emu.Read(d1);
        AssertBitwise("dlogits", dl, emu.Read(d2));
        AssertBitwise("row losses", emu.Read(l1), emu.Read(l2));
        Assert.AreEqual(BitConverter.SingleToInt32Bits(emu.Read(ring1)[slot]), BitConverter.SingleToInt32Bits(emu.Read(ring2)[slot]), "the mean loss in the step's slot");
        float[] want = new float[V];
        double[] exact = new double[V];
        for (int r = 0; r < n; r++)
            for (int j = 0; j < V; j++) { want[j] += dl[r * V + j]; exact[j] += dl[r * V + j]; }
        float[] got = emu.Read(db);
        AssertBitwise("bias gradient: the float sum over the rows in order", want, got);
        // n float additions whose partial sums stay within 1 (terms of size <= 1/n): within n half-ulps of 1 (2^-24) of the exact sum
        double scale = exact.Max(Math.Abs);
        AssertClose("bias gradient against the double sum", exact.Select(x => (float)x).ToArray(), got, n * 5.97e-8 / scale);
        // without a bias (a stack whose last step is a batch norm): the three kernels of the loss, bitwise, logits untouched
        var z3 = emu.In(logits); var d3 = emu.Out(n * V); var l3 = emu.Out(n); var ring3 = emu.Out(8);
        emu.Launch("cross_entropy_warp", (n + 7) / 8, 256, 0, z3, gY, d3, l3, n, V);
        var partial3 = emu.OutDoubles(1);
        emu.Launch("sum_partials", 1, 256, 0, l3, n, 4096, 0, partial3);
        emu.Launch("sum_finish", 1, 256, 0, partial3, 1, 1.0 / n, ring3, st, 0);
        var z4 = emu.In(logits); var d4 = emu.Out(n * V); var l4 = emu.Out(n); var ring4 = emu.Out(8);
        emu.Launch("cross_entropy_bias_loss", 1, 256, 0, z4, null, gY, d4, l4, null, ring4, st, n, V);
        AssertBitwise("logits without a bias", logits, emu.Read(z4));
        AssertBitwise("dlogits without a bias", emu.Read(d3), emu.Read(d4));
        Assert.AreEqual(BitConverter.SingleToInt32Bits(emu.Read(ring3)[slot]), BitConverter.SingleToInt32Bits(emu.Read(ring4)[slot]), "the mean loss without a bias");
    }

    private static void MeanOf(Emu emu, Buf losses, int n, Buf loss)
    {
        int chunks = (n + 255) / 256;
        var partial = emu.OutDoubles(chunks);
        emu.Launch("sum_partials", chunks, 256, 0, losses, n, 256, 0, partial);
        emu.Launch("sum_finish", 1, 256, 0, partial, chunks, 1.0 / n, loss, null, 0);
    }

    /// <summary>
    /// regression_loss (mse, bce_with_logits, mean) against the CPU's RegressionLosses: dz and dt
    /// elementwise (the CPU's vector BCE takes its sigmoid from FastMath.Exp: a few ulp), the loss
    /// (per-chunk double sums + sum_finish) within SumTol; dz/dt NULL (evaluation) give the same loss bits.
    /// </summary>
    [TestMethod]
    [DataRow(1, 2, 1, 1)]
    [DataRow(1, 33, 7, 7)]
    [DataRow(1, 1000, 3, 256)]
    [DataRow(2, 3, 1, 1)]
    [DataRow(2, 31, 33, 256)]
    [DataRow(2, 1000, 7, 4096)]
    [DataRow(3, 2, 7, 3)]
    [DataRow(3, 1000, 33, 256)]
    public void RegressionLossMatchesTheCpu(int kind, int n, int width, int chunk)
    {
        int count = n * width;
        var rng = new Random(kind * 1000 + count);
        float[] z = Normals(rng, count, 3f), t = Normals(rng, count, 1f);
        if (kind == 2) for (int i = 0; i < count; i++) t[i] = t[i] > 0 ? 1f : t[i] < -1 ? 0f : 0.25f;
        var dz = new float[count]; var dt = new float[count];
        float loss, scale;
        fixed (float* pz = z, pt = t, pdz = dz, pdt = dt)
        {
            (loss, scale) = kind switch
            {
                1 => (RegressionLosses.Mse(pz, pt, pdz, pdt, count), 2f / count),
                2 => (RegressionLosses.BceWithLogits(pz, pt, pdz, pdt, count), 1f / count),
                _ => (RegressionLosses.Mean(pz, pdz, count), 1f / count),
            };
        }
        int chunks = (count + chunk - 1) / chunk;
        int block = chunk < 32 ? 32 : 256;
        using var emu = NewEmu();
        var gz = emu.In(z);
        Buf? gt = kind == 3 ? null : emu.In(t);
        var gdz = emu.Out(count); var gdt = emu.Out(count); var partial = emu.OutDoubles(chunks); var gl = emu.Out(1);
        emu.Launch("regression_loss", Math.Min(chunks, 5), block, 0, gz, gt, gdz, kind == 3 ? null : gdt, count, kind, scale, chunk, partial);
        emu.Launch("sum_finish", 1, 256, 0, partial, chunks, 1.0 / count, gl, null, 0);
        string what = $"regression_loss kind {kind}, count {count}, chunk {chunk}";
        AssertClose($"{what}: dz", dz, emu.Read(gdz), ElementwiseTol);
        if (kind != 3) AssertClose($"{what}: dt", dt, emu.Read(gdt), ElementwiseTol);
        else Assert.IsTrue(emu.Read(gdt).All(float.IsNaN), $"{what}: dt written for the mean");
        float got = emu.Read(gl)[0];
        AssertClose($"{what}: loss", [loss], [got], SumTol);
        var partial2 = emu.OutDoubles(chunks); var gl2 = emu.Out(1);
        emu.Launch("regression_loss", chunks, block, 0, gz, gt, null, null, count, kind, scale, chunk, partial2);
        emu.Launch("sum_finish", 1, 256, 0, partial2, chunks, 1.0 / count, gl2, null, 0);
        Assert.AreEqual(BitConverter.SingleToInt32Bits(got), BitConverter.SingleToInt32Bits(emu.Read(gl2)[0]), $"{what}: the loss changes without dz/dt or with another grid");
    }

    // =====================================================================================
    // linear.cu, optimizer.cu
    // =====================================================================================

    /// <summary>
    /// The column kernels (column_partial_sum with its finish, batch norm forward/backward in both paths,
    /// calibration) with grids capped below ceil(cols/bx) and below the number of chunks, as the backend's
    /// 65,535-block clamp does for very wide layers or very many chunks: every column must still be
    /// written, bitwise as with the full grid (each column and chunk is summed by the same threads in
    /// the same order, whatever block handles its tile).
    /// </summary>
    [TestMethod]
    [DataRow(33, 513, 32, 8, 2, 5)]
    [DataRow(5, 200, 13, 3, 1, 2)]
    [DataRow(64, 1000, 32, 8, 7, 16)]
    public void ColumnKernelsCoverEveryColumnWhenTheGridIsCapped(int n, int H, int bx, int by, int cappedGrid, int chunkRows)
    {
        var rng = new Random(n * 17 + H);
        float[] x = Normals(rng, n * H, 1f, 0.5f), gain = Normals(rng, H, 0.1f, 1f), bias = Normals(rng, H, 0.1f), dh = Normals(rng, n * H, 0.05f);
        float[] rm0 = Normals(rng, H, 1f), rv0 = Normals(rng, H, 0.1f, 1f);
        uint full = (uint)((H + bx - 1) / bx);
        int chunks = (n + chunkRows - 1) / chunkRows;
        Assert.IsLessThan(full, (uint)cappedGrid, "the capped grid must be smaller than ceil(H/bx)");
        using var emu = NewEmu();
        var gx = emu.In(x); var gGain = emu.In(gain); var gBias = emu.In(bias); var gDh = emu.In(dh);
        var results = new Dictionary<string, float[]>[2];
        var block = new Dim3((uint)bx, (uint)by);
        uint shared = (uint)(bx * by * 4);
        for (int run = 0; run < 2; run++)
        {
            int capX = run == 0 ? 65535 : cappedGrid, capY = run == 0 ? 65535 : 1;
            var grid = new Dim3(run == 0 ? full : (uint)cappedGrid);
            var r = results[run] = new Dictionary<string, float[]>();
            var partial = emu.Out((long)chunks * H); var sum = emu.Out(H);
            emu.Launch("column_partial_sum", new Dim3((uint)Blocks(H, bx, capX), (uint)Math.Min(chunks, capY)), block, shared, gx, null, 0, n, H, chunkRows, partial);
            emu.Launch("column_finish_sum", Blocks(H, 256, capX), 256, 0, partial, chunks, H, sum);
            r["column_partial_sum"] = emu.Read(partial); r["column_finish_sum"] = emu.Read(sum);
            var mean = emu.Out(H); var vr = emu.Out(H); var vinv = emu.Out(H); var raw = emu.Out(n * H); var h = emu.Out(n * H);
            var rm = emu.In(rm0); var rv = emu.In(rv0);
            emu.Launch("batchnorm_forward", grid, block, shared, gx, gGain, gBias, mean, vr, vinv, raw, h, rm, rv, n, H, Eps, 0.01f, 1, 0, null);
            r["mean"] = emu.Read(mean); r["var_inv"] = emu.Read(vinv); r["raw"] = emu.Read(raw); r["y"] = emu.Read(h); r["running_var"] = emu.Read(rv);
            var dpre = emu.Out(n * H); var dgain = emu.Out(H); var dbias = emu.Out(H); var dprev = emu.Out(H);
            emu.Launch("batchnorm_backward", grid, block, shared, gDh, h, raw, gGain, vinv, dpre, dgain, dbias, dprev, n, H, 1, 0);
            r["dx"] = emu.Read(dpre); r["dgain"] = emu.Read(dgain); r["dbias"] = emu.Read(dbias); r["dprev_bias"] = emu.Read(dprev);
            var cmean = emu.Out(H); var cvr = emu.Out(H); var cvinv = emu.Out(H); var craw = emu.Out(n * H); var ch = emu.Out(n * H);
            BatchNormForwardChunked(emu, gx, gGain, gBias, cmean, cvr, cvinv, craw, ch, null, null, n, H, 0.01f, 2, 1, chunkRows, bx, by, capX, capY);
            r["chunked y"] = emu.Read(ch);
            var cdpre = emu.Out(n * H); var cdgain = emu.Out(H); var cdbias = emu.Out(H); var cdprev = emu.Out(H);
            BatchNormBackwardChunked(emu, gDh, ch, craw, gGain, cvinv, cdpre, cdgain, cdbias, cdprev, n, H, 2, 1, chunkRows, bx, by, capX, capY);
            r["chunked dx"] = emu.Read(cdpre); r["chunked dgain"] = emu.Read(cdgain); r["chunked dprev_bias"] = emu.Read(cdprev);
            var cs = emu.OutDoubles(H); var cq = emu.OutDoubles(H);
            emu.Runtime.Zero(cs.Pointer, H * 8L);
            emu.Runtime.Zero(cq.Pointer, H * 8L);
            emu.Launch("batchnorm_calib_accumulate", grid, block, (uint)(bx * by * 8), gx, n, H, null, cs, cq);
            r["calib_sum"] = Array.ConvertAll(emu.ReadDoubles(cs, H), d => (float)d);
        }
        foreach (var (name, expected) in results[0])
        {
            Assert.IsFalse(expected.Any(float.IsNaN), $"{name}: the full grid left elements unwritten");
            AssertBitwise($"{name} with grid {cappedGrid} (chunks 1 block) instead of {full}", expected, results[1][name]);
        }
    }

    [TestMethod]
    [DataRow(2, 1, 1)]
    [DataRow(3, 513, 2)]
    [DataRow(33, 27, 7)]
    [DataRow(1000, 200, 256)]
    [DataRow(31, 50000, 16)]
    public void BiasAddAndColumnSumsMatchTheCpu(int rows, int cols, int chunkRows)
    {
        var rng = new Random(rows * 3 + cols);
        float[] y = Normals(rng, rows * cols, 1f), b = Normals(rng, cols, 0.1f);
        // bias_add is one IEEE float addition per element: exactly y + b
        float[] yb = new float[rows * cols];
        for (int i = 0; i < rows; i++) for (int c = 0; c < cols; c++) yb[i * cols + c] = y[i * cols + c] + b[c];
        float[] colSum = new float[cols];
        Linear.ColumnSum(y, colSum, rows, cols);
        float[] center = Normals(rng, cols, 0.3f);
        double[] centred = new double[cols], squares = new double[cols];
        for (int i = 0; i < rows; i++)
            for (int c = 0; c < cols; c++)
            {
                double d = (double)y[i * cols + c] - center[c];
                centred[c] += d; squares[c] += d * d;
            }

        using var emu = NewEmu();
        foreach (var (grid, block) in new[] { (Blocks((long)rows * cols, 256, 16), 256), (2, 33) })
        {
            var g = emu.In(y);
            emu.Launch("bias_add", grid, block, 0, g, emu.In(b), rows, cols);
            AssertBitwise($"bias_add (grid {grid}, block {block})", yb, emu.Read(g));
        }
        var x = emu.In(y); var gc = emu.In(center);
        // the backend's (32, 8), odd shapes, one slice per column, and (32, 32); for V = 50,000 columns only
        // (32, 1): the blocks must cover every column and chunk, and the emulator pays per thread
        foreach (var (bx, by) in cols > 1000 ? new[] { (32, 1) } : new[] { (32, 8), (5, 3), (32, 1), (32, 32) })
            foreach (int cr in new[] { chunkRows, rows })
            {
                int chunks = (rows + cr - 1) / cr;
                var grid = new Dim3((uint)((cols + bx - 1) / bx), (uint)chunks);
                var shape = new Dim3((uint)bx, (uint)by);
                foreach (var (variant, c, square, expected) in new (string, Buf?, int, double[])[]
                    { ("sum", null, 0, Array.ConvertAll(colSum, v => (double)v)), ("centred", gc, 0, centred), ("centred squares", gc, 1, squares) })
                {
                    var partial = emu.Out((long)chunks * cols); var o = emu.Out(cols);
                    emu.Launch("column_partial_sum", grid, shape, (uint)(bx * by * 4), x, c, square, rows, cols, cr, partial);
                    emu.Launch("column_finish_sum", Blocks(cols, 256, 65535), 256, 0, partial, chunks, cols, o);
                    AssertClose($"column {variant} (block ({bx}, {by}), chunk_rows {cr})", expected, Array.ConvertAll(emu.Read(o), v => (double)v), SumTol);
                    if (chunks == 1) AssertBitwise($"column {variant}: one chunk's partial is the result", emu.Read(partial), emu.Read(o));
                }
                if (cols > 1000) break;
            }
    }

    /// <summary>axpy is the L2 gradient dW += 2·l2·W: bitwise Network.L2Gradient's TensorPrimitives.MultiplyAdd (product rounded, then the sum).</summary>
    [TestMethod]
    [DataRow(1)]
    [DataRow(513)]
    [DataRow(12_897)]
    public void AxpyIsBitwiseTheCpuL2Gradient(int count)
    {
        var rng = new Random(count);
        float[] w = Normals(rng, count, 1f), g = Normals(rng, count, 0.1f);
        float two = 2 * 0.0137f;
        float[] expected = (float[])g.Clone();
        System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(w, two, expected, expected);
        using var emu = NewEmu();
        foreach (var (grid, block) in new[] { (Blocks(count, 256, 65535), 256), (2, 50) })
        {
            var gg = emu.In(g);
            emu.Launch("axpy", grid, block, 0, gg, emu.In(w), two, count);
            AssertBitwise($"axpy (grid {grid}, block {block})", expected, emu.Read(gg));
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
            emu.Launch("sgd_update", grid, block, 0, gp, emu.In(g), emu.Step(0, lr), count);
            AssertClose($"params after sgd_update (grid {grid}, block {block})", expected, emu.Read(gp), ElementwiseTol);
        }
    }

    /// <summary>
    /// Three steps of SGD with momentum and/or weight decay against the CPU's OptimizerKernels.Sgd:
    /// bitwise, since the kernel rounds every product and sum the CPU rounds and fuses the last step
    /// (fmaf) where the CPU does (FMA3 / ARM64; elsewhere the CPU does not fuse: then within rounding).
    /// </summary>
    [TestMethod]
    [DataRow(1, true, 0f)]
    [DataRow(33, true, 0.01f)]
    [DataRow(1000, false, 0.01f)]
    [DataRow(12_897, true, 0.001f)]
    public void SgdMomentumUpdateIsBitwiseTheCpu(int count, bool momentum, float weightDecay)
    {
        const float lr = 0.05f, mu = 0.9f;
        var rng = new Random(count + (momentum ? 1 : 0));
        float[] p = Normals(rng, count, 1f), v = new float[count];
        using var emu = NewEmu();
        var gp = emu.In(p); var gv = emu.In(v);
        bool cpuFuses = System.Runtime.Intrinsics.X86.Fma.IsSupported || System.Runtime.Intrinsics.Arm.AdvSimd.Arm64.IsSupported;
        for (int step = 0; step < 3; step++)
        {
            float[] g = Normals(rng, count, 1f);
            fixed (float* pp = p, pg = g, pv = v) OptimizerKernels.Sgd(pp, pg, momentum ? pv : null, count, lr, mu, weightDecay);
            emu.Launch("sgd_momentum_update", step == 1 ? 1 : Blocks(count, 256, 65535), 256, 0, gp, emu.In(g), momentum ? gv : null, count, emu.Step((ulong)step, lr), mu, weightDecay);
        }
        if (cpuFuses)
        {
            AssertBitwise("p after 3 SGD steps", p, emu.Read(gp));
            if (momentum) AssertBitwise("momentum buffer after 3 steps", v, emu.Read(gv));
        }
        else AssertClose("p after 3 SGD steps", p, emu.Read(gp), ElementwiseTol);
        if (!momentum) Assert.IsTrue(emu.Read(gv).All(x => x == 0), "the momentum buffer was written although NULL was passed");
    }

    /// <summary>
    /// Three AdamW steps against the CPU's OptimizerKernels.AdamW with the host constants the backend
    /// computes (decay, 1 − β as floats, step size and √(1 − β2ᵗ) in double): bitwise, the kernel's
    /// operations being each rounded on its own (__fmul_rn, __fdiv_rn, ...) as the CPU's.
    /// </summary>
    [TestMethod]
    [DataRow(1)]
    [DataRow(513)]
    [DataRow(12_897)]
    public void AdamWUpdateIsBitwiseTheCpu(int count)
    {
        const float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, wd = 0.01f;
        var rng = new Random(count * 3);
        float[] p = Normals(rng, count, 1f), m = new float[count], v = new float[count];
        using var emu = NewEmu();
        var gp = emu.In(p); var gm = emu.In(m); var gv = emu.In(v);
        for (long t = 1; t <= 3; t++)
        {
            float[] g = Normals(rng, count, 0.5f);
            fixed (float* pp = p, pg = g, pm = m, pv = v) OptimizerKernels.AdamW(pp, pg, pm, pv, count, lr, beta1, beta2, eps, wd, t);
            double bc1 = 1 - Math.Pow(beta1, t), bc2 = 1 - Math.Pow(beta2, t);
            float stepSize = (float)(lr / bc1), bc2Sqrt = (float)Math.Sqrt(bc2);
            float a1 = 1 - beta1, a2 = 1 - beta2;
            // raw ulong device pointers, as the backend passes them; the kernel computes 1 − lr·wd from the step's rate
            emu.Launch("adamw_update", t == 2 ? 1 : Blocks(count, 256, 65535), 256, 0, gp.Pointer, emu.In(g).Pointer, gm.Pointer, gv.Pointer, count,
                emu.Step((ulong)t - 1, lr, stepSize, bc2Sqrt), wd, beta1, beta2, a1, a2, eps);
        }
        AssertBitwise("p after 3 AdamW steps", p, emu.Read(gp));
        AssertBitwise("m after 3 AdamW steps", m, emu.Read(gm));
        AssertBitwise("v after 3 AdamW steps", v, emu.Read(gv));
    }

    /// <summary>
    /// step_begin: step <c>next</c> becomes <c>current</c> (<c>next</c> stays: every thread reads it), the step's schedule
    /// row (t − base) is copied where the optimisers read it, the loss slot is t mod ring; past the rows the fault flag is
    /// set. And the loss finish writes into that slot, adds the L2 term there in float, and advances <c>next</c>.
    /// </summary>
    [TestMethod]
    public void StepBeginTakesTheRowOfItsStepAndTheLossGoesToItsSlot()
    {
        using var emu = NewEmu();
        float[] rows = [0.5f, 1.5f, 2.5f, 3.5f, 4.5f, 5.5f];
        ulong start = (1UL << 32) + 7;
        var st = emu.Step(0, rows: rows, next: start, baseStep: start, stride: 1, ring: 5);
        var ring = emu.Out(5);
        var partial = emu.InDoubles([1.0, 2.0]);
        for (int k = 0; k < 3; k++)
        {
            emu.Launch("step_begin", 1, 256, 0, st, null, null, 0, 0, 0, null, null, 0, null, 0, null);
            var b = emu.ReadBytes(st);
            ulong t = start + (ulong)k;
            Assert.AreEqual(t, BitConverter.ToUInt64(b, 0), "next is the loss kernel's to advance");
            Assert.AreEqual(t, BitConverter.ToUInt64(b, 8), "current");
            int row = Math.Min(k, 1);
            Assert.AreEqual(rows[3 * row], BitConverter.ToSingle(b, 44), $"lr of step {k}");
            Assert.AreEqual(rows[3 * row + 1], BitConverter.ToSingle(b, 48), $"step size of step {k}");
            Assert.AreEqual(rows[3 * row + 2], BitConverter.ToSingle(b, 52), $"bc2 of step {k}");
            Assert.AreEqual((uint)(t % 5), BitConverter.ToUInt32(b, 36), "slot");
            Assert.AreEqual(k >= 2 ? 1u : 0u, BitConverter.ToUInt32(b, 40), $"fault after step {k}");
            emu.Launch("sum_finish", 1, 32, 0, partial, 2, 0.25, ring, st, 0);
            Assert.AreEqual(t + 1, BitConverter.ToUInt64(emu.ReadBytes(st), 0), "the loss advanced next");
            emu.Launch("sum_finish", 1, 32, 0, partial, 1, 0.5, ring, st, 1);
            Assert.AreEqual(t + 1, BitConverter.ToUInt64(emu.ReadBytes(st), 0), "the L2 term's finish leaves next at current + 1");
            Assert.AreEqual(0.75f + 0.5f, emu.Read(ring)[t % 5], $"the loss of step {k} in its slot");
        }
    }

    /// <summary>
    /// step_begin's draw: the rows of step <c>next</c> (with a high word) under the header's seed are the rows the CPU
    /// draws (<see cref="Networks.ExampleSet.DrawBatch"/>), for ids with class ids and for features with float targets and
    /// with none, at n not a multiple of 4 and any grid; another step or seed draws other rows. With ids and a table, the
    /// gathered rows are bitwise embedding_forward's of the drawn ids.
    /// </summary>
    [TestMethod]
    [DataRow(37, 3, 1, 1, 32)]
    [DataRow(37, 3, 1, 5, 256)]
    [DataRow(64, 5, 2, 3, 64)]
    [DataRow(9, 4, 0, 2, 128)]
    public void StepBeginDrawsTheCpusRowsAndGathersTheirEmbeddings(int n, int xw, int yw, int grid, int block)
    {
        using var emu = NewEmu();
        var rng = new Random(n * 10 + xw);
        const int count = 1_003, V = 1000, E = 3;
        ulong step = (1UL << 32) + 5;
        const int seed = -7; // the header holds it as 32 bits
        bool ids = yw == 1;
        int[] setIds = Enumerable.Range(0, count * xw).Select(_ => rng.Next(V)).ToArray(), setCls = Enumerable.Range(0, count).Select(_ => rng.Next(27)).ToArray();
        float[] setF = Normals(rng, count * xw, 1f), setT = Normals(rng, count * Math.Max(1, yw), 1f), table = Normals(rng, V * E, 1f);
        var set = ids ? Networks.ExampleSet.FromIds(setIds, xw, setCls) : yw == 2 ? Networks.ExampleSet.FromFeatures(setF, xw, setT, yw) : Networks.ExampleSet.FromFeatures(setF, xw);
        int[] wantIds = new int[n * xw], wantCls = new int[n];
        float[] wantF = new float[n * xw], wantT = new float[n * Math.Max(1, yw)];
        set.DrawBatch(seed, (long)step, n, ids ? wantIds : default, ids ? default : wantF, ids ? wantCls : default, yw == 2 ? wantT : default);
        var st = emu.Step(0, next: step, drawSeed: unchecked((uint)seed));
        var x = emu.Out(n * xw);
        var y = emu.Out(n * Math.Max(1, yw));
        Buf sx = ids ? emu.In(setIds) : emu.In(setF), sy = ids ? emu.In(setCls) : emu.In(setT);
        var gTable = emu.In(table);
        var gathered = emu.Out(n * xw * E);
        emu.Launch("step_begin", grid, block, 0, st, sx, yw > 0 ? sy : null, count, xw, yw, x, yw > 0 ? y : null, n, ids ? gTable : null, ids ? E : 0, ids ? gathered : null);
        Assert.AreEqual(step, BitConverter.ToUInt64(emu.ReadBytes(st), 8), "current");
        if (ids)
        {
            CollectionAssert.AreEqual(wantIds, emu.ReadInts(x), "ids");
            CollectionAssert.AreEqual(wantCls, emu.ReadInts(y), "class ids");
            var embedded = emu.Out(n * xw * E);
            emu.Launch("embedding_forward", 4, 256, 0, embedded, gTable, x, n, xw, E);
            AssertBitwise("the gathered rows", emu.Read(embedded), emu.Read(gathered));
        }
        else
        {
            AssertBitwise("features", wantF, emu.Read(x));
            if (yw > 0) AssertBitwise("targets", wantT, emu.Read(y));
        }
        // the step and the seed are the key: a step later, or another seed, draws other rows
        var other = emu.Out(n * xw);
        emu.Launch("step_begin", grid, block, 0, emu.Step(0, next: step + 1, drawSeed: unchecked((uint)seed)), sx, yw > 0 ? sy : null, count, xw, yw, other, yw > 0 ? y : null, n, null, 0, null);
        CollectionAssert.AreNotEqual(emu.ReadInts(x), emu.ReadInts(other), "step + 1");
        emu.Launch("step_begin", grid, block, 0, emu.Step(0, next: step, drawSeed: 8), sx, yw > 0 ? sy : null, count, xw, yw, other, yw > 0 ? y : null, n, null, 0, null);
        CollectionAssert.AreNotEqual(emu.ReadInts(x), emu.ReadInts(other), "another seed");
    }

    /// <summary>
    /// batchnorm_forward with the linear's bias (in_bias) is bias_add then batchnorm_forward, bitwise: every output, the
    /// running statistics, and x left holding x + b, at one and several column tiles and with a capped grid.
    /// </summary>
    [TestMethod]
    [DataRow(32, 200, 32, 8, 65535)]
    [DataRow(7, 33, 16, 4, 1)]
    [DataRow(256, 64, 32, 8, 65535)]
    public void BatchNormForwardAddsTheLinearsBiasAsBiasAddDoes(int n, int H, int bx, int by, int capX)
    {
        using var emu = NewEmu();
        var rng = new Random(n + H);
        float[] x = Normals(rng, n * H, 2f), b = Normals(rng, H, 3f), gain = Normals(rng, H, 0.1f, 1f), bias = Normals(rng, H, 0.3f);
        float[] rm0 = Normals(rng, H, 1f), rv0 = Normals(rng, H, 0.2f, 2f);
        var grid = new Dim3((uint)Math.Min((H + bx - 1) / bx, capX));
        var block = new Dim3((uint)bx, (uint)by);
        uint shared = (uint)(bx * by * 4);
        var runs = new Dictionary<string, float[]>[2];
        for (int run = 0; run < 2; run++)
        {
            var gx = emu.In(x); var gb = emu.In(b);
            var mean = emu.Out(H); var vr = emu.Out(H); var vinv = emu.Out(H); var raw = emu.Out(n * H); var h = emu.Out(n * H);
            var rm = emu.In(rm0); var rv = emu.In(rv0);
            if (run == 0) emu.Launch("bias_add", 3, 256, 0, gx, gb, n, H);
            emu.Launch("batchnorm_forward", grid, block, shared, gx, emu.In(gain), emu.In(bias), mean, vr, vinv, raw, h, rm, rv, n, H, Eps, 0.1f, 1, 0, run == 0 ? null : gb);
            runs[run] = new() { ["x"] = emu.Read(gx), ["mean"] = emu.Read(mean), ["var"] = emu.Read(vr), ["var_inv"] = emu.Read(vinv), ["raw"] = emu.Read(raw), ["y"] = emu.Read(h), ["running_mean"] = emu.Read(rm), ["running_var"] = emu.Read(rv) };
        }
        foreach (var (name, want) in runs[0]) AssertBitwise(name, want, runs[1][name]);
        var sum = new float[n * H];
        for (int i = 0; i < sum.Length; i++) sum[i] = x[i] + b[i % H];
        AssertBitwise("x + b", sum, runs[1]["x"]);
    }

    // =====================================================================================
    // activation.cu, layernorm.cu, dropout.cu
    // =====================================================================================

    /// <summary>The standalone activations against Cpu/Activations.cs (its tanh and sigmoid use FastMath: a few ulp); in place allowed; any grid.</summary>
    [TestMethod]
    [DataRow(0, 1)]
    [DataRow(1, 33)]
    [DataRow(2, 1000)]
    [DataRow(3, 12_897)]
    [DataRow(1, 12_897)]
    public void ActivationsMatchTheCpu(int act, int count)
    {
        var rng = new Random(act * 100 + count);
        float[] x = Normals(rng, count, 3f), dy = Normals(rng, count, 1f);
        if (count > 2) { x[0] = 0f; x[1] = 40f; }
        float[] y = new float[count], dx = new float[count];
        fixed (float* px = x, py = y, pdy = dy, pdx = dx)
            switch (act)
            {
                case 0: Activation.Forward<IdentityAct>(px, py, count); Activation.Backward<IdentityAct>(py, pdy, pdx, count); break;
                case 1: Activation.Forward<TanhAct>(px, py, count); Activation.Backward<TanhAct>(py, pdy, pdx, count); break;
                case 2: Activation.Forward<ReluAct>(px, py, count); Activation.Backward<ReluAct>(py, pdy, pdx, count); break;
                default: Activation.Forward<SigmoidAct>(px, py, count); Activation.Backward<SigmoidAct>(py, pdy, pdx, count); break;
            }
        using var emu = NewEmu();
        var gx = emu.In(x); var gy = emu.Out(count);
        emu.Launch("activation_forward", Blocks(count, 256, 65535), 256, 0, gx, gy, count, act, null, 0);
        AssertClose($"activation {act} y", y, emu.Read(gy), ElementwiseTol);
        var inPlace = emu.In(x);
        emu.Launch("activation_forward", 2, 64, 0, inPlace, inPlace, count, act, null, 0);
        AssertBitwise($"activation {act} y in place, grid 2", emu.Read(gy), emu.Read(inPlace));
        // backward from the CPU's y, so both see the same input
        var cy = emu.In(y); var gdx = emu.Out(count); var dIn = emu.In(dy);
        emu.Launch("activation_backward", Blocks(count, 256, 65535), 256, 0, cy, emu.In(dy), gdx, count, act);
        AssertClose($"activation {act} dx", dx, emu.Read(gdx), ElementwiseTol);
        emu.Launch("activation_backward", 3, 32, 0, cy, dIn, dIn, count, act);
        AssertBitwise($"activation {act} dx in place, grid 3", emu.Read(gdx), emu.Read(dIn));
    }

    /// <summary>
    /// A linear's bias in a standalone activation and its gradient from it (the GPU's fusion rows): activation_forward with
    /// the bias is bitwise bias_add then activation_forward, x left holding x + b; activation_backward_column_sum is bitwise
    /// activation_backward then column_partial_sum (each chunk's partial sum, then column_finish_sum), with dx in place too.
    /// </summary>
    [TestMethod]
    [DataRow(2, 32, 256, 256)]
    [DataRow(1, 7, 33, 256)]
    [DataRow(3, 300, 10, 256)]
    [DataRow(1, 100, 65, 9)]
    [DataRow(0, 5, 3, 2)]
    public void ActivationAddsTheLinearsBiasAndSumsItsGradientAsTheSeparateKernelsDo(int act, int rows, int cols, int chunkRows)
    {
        using var emu = NewEmu();
        var rng = new Random(act * 1000 + rows + cols);
        int count = rows * cols, chunks = (rows + chunkRows - 1) / chunkRows;
        float[] x = Normals(rng, count, 2f), b = Normals(rng, cols, 1f), dy = Normals(rng, count, 1f);
        var block = new Dim3(32, 8);
        var grid = new Dim3((uint)((cols + 31) / 32), (uint)chunks);
        // the separate kernels
        var x0 = emu.In(x); var y0 = emu.Out(count);
        emu.Launch("bias_add", 3, 256, 0, x0, emu.In(b), rows, cols);
        emu.Launch("activation_forward", Blocks(count, 256, 65535), 256, 0, x0, y0, count, act, null, 0);
        float[] y = emu.Read(y0);
        var cy = emu.In(y); var dx0 = emu.Out(count); var p0 = emu.Out(chunks * cols); var db0 = emu.Out(cols);
        emu.Launch("activation_backward", Blocks(count, 256, 65535), 256, 0, cy, emu.In(dy), dx0, count, act);
        emu.Launch("column_partial_sum", grid, block, 32 * 8 * 4, dx0, null, 0, rows, cols, chunkRows, p0);
        emu.Launch("column_finish_sum", 1, 256, 0, p0, chunks, cols, db0);
        // the fused ones (forward out of place; backward out of place and in place, with a capped grid)
        var x1 = emu.In(x); var y1 = emu.Out(count);
        emu.Launch("activation_forward", 2, 64, 0, x1, y1, count, act, emu.In(b), cols);
        AssertBitwise($"act {act}: y", y, emu.Read(y1));
        AssertBitwise($"act {act}: x + b", emu.Read(x0), emu.Read(x1));
        var dx1 = emu.Out(count); var p1 = emu.Out(chunks * cols); var db1 = emu.Out(cols);
        emu.Launch("activation_backward_column_sum", grid, block, 32 * 8 * 4, cy, emu.In(dy), dx1, act, rows, cols, chunkRows, p1);
        emu.Launch("column_finish_sum", 1, 256, 0, p1, chunks, cols, db1);
        AssertBitwise($"act {act}: dx", emu.Read(dx0), emu.Read(dx1));
        AssertBitwise($"act {act}: partial sums", emu.Read(p0), emu.Read(p1));
        AssertBitwise($"act {act}: bias gradient", emu.Read(db0), emu.Read(db1));
        var dIn = emu.In(dy); var p2 = emu.Out(chunks * cols);
        emu.Launch("activation_backward_column_sum", new Dim3(1, (uint)Math.Min(chunks, 2)), new Dim3(16, 4), 16 * 4 * 4, cy, dIn, dIn, act, rows, cols, chunkRows, p2);
        AssertBitwise($"act {act}: dx in place", emu.Read(dx0), emu.Read(dIn));
        // another block shape adds in another order: only the sums' values are compared
        var want = new double[cols];
        float[] dxs = emu.Read(dx0);
        for (int i = 0; i < count; i++) want[i % cols] += dxs[i];
        AssertClose($"act {act}: bias gradient vs double", want.Select(v => (float)v).ToArray(), emu.Read(db1), SumTol);
        if (chunks > 1)
        {
            var db2 = emu.Out(cols);
            emu.Launch("column_finish_sum", 1, 256, 0, p2, chunks, cols, db2);
            AssertClose($"act {act}: in place, capped grid", emu.Read(db1), emu.Read(db2), SumTol);
        }
        else AssertClose($"act {act}: in place, capped grid", emu.Read(db1), emu.Read(p2), SumTol);
    }

    /// <summary>
    /// Layer norm (torch.nn.LayerNorm(F)) against a double reference in C#: forward (one warp per row;
    /// mean/rstd NULL in inference gives the same y), backward from the kernel's statistics, and the
    /// parameter gradients per row chunk finished with column_finish_sum.
    /// </summary>
    [TestMethod]
    [DataRow(2, 1, 64, 1)]
    [DataRow(3, 513, 256, 2)]
    [DataRow(33, 200, 96, 7)]
    [DataRow(1000, 33, 256, 256)]
    public void LayerNormMatchesADoubleReference(int n, int F, int block, int chunkRows)
    {
        const float eps = 1e-5f;
        var rng = new Random(n * 7 + F);
        float[] x = new float[n * F];
        for (int i = 0; i < n; i++) { float shift = 4f * Normal(rng); for (int c = 0; c < F; c++) x[i * F + c] = shift + 2f * Normal(rng); }
        float[] w = Normals(rng, F, 0.2f, 1f), b = Normals(rng, F, 0.3f), dy = Normals(rng, n * F, 0.1f);
        double[] mu = new double[n], rs = new double[n], y = new double[n * F];
        for (int i = 0; i < n; i++)
        {
            double s = 0, q = 0;
            for (int c = 0; c < F; c++) s += x[i * F + c];
            mu[i] = s / F;
            for (int c = 0; c < F; c++) q += (x[i * F + c] - mu[i]) * (x[i * F + c] - mu[i]);
            rs[i] = 1 / Math.Sqrt(q / F + eps);
            for (int c = 0; c < F; c++) y[i * F + c] = (x[i * F + c] - mu[i]) * rs[i] * w[c] + b[c];
        }
        using var emu = NewEmu();
        var gx = emu.In(x); var gw = emu.In(w); var gb = emu.In(b); var gdy = emu.In(dy);
        var gy = emu.Out(n * F); var gmean = emu.Out(n); var grstd = emu.Out(n);
        int grid = Blocks(n, block / 32, 16);
        emu.Launch("layernorm_forward", grid, block, 0, gx, gw, gb, gy, gmean, grstd, n, F, eps);
        float[] yGot = emu.Read(gy), mean = emu.Read(gmean), rstd = emu.Read(grstd);
        AssertClose("layernorm mean", mu, Array.ConvertAll(mean, v => (double)v), SumTol);
        AssertClose("layernorm rstd", rs, Array.ConvertAll(rstd, v => (double)v), SumTol);
        AssertClose("layernorm y", y, Array.ConvertAll(yGot, v => (double)v), SumTol);
        var yInf = emu.Out(n * F);
        emu.Launch("layernorm_forward", 1, 32, 0, gx, gw, gb, yInf, null, null, n, F, eps);
        AssertBitwise("layernorm y without statistics (inference), one warp", yGot, emu.Read(yInf));

        // backward and parameter gradients in double from the kernel's statistics
        double[] dx = new double[n * F], dw = new double[F], db = new double[F];
        double dxTerms = 0;
        for (int i = 0; i < n; i++)
        {
            double sg = 0, sgx = 0;
            for (int c = 0; c < F; c++)
            {
                double xhat = ((double)x[i * F + c] - mean[i]) * rstd[i], g = (double)dy[i * F + c] * w[c];
                sg += g; sgx += g * xhat; dw[c] += dy[i * F + c] * xhat; db[c] += dy[i * F + c];
                dxTerms = Math.Max(dxTerms, rstd[i] * Math.Abs(g));
            }
            for (int c = 0; c < F; c++)
            {
                double xhat = ((double)x[i * F + c] - mean[i]) * rstd[i], g = (double)dy[i * F + c] * w[c];
                dx[i * F + c] = rstd[i] * (g - sg / F - xhat * sgx / F);
            }
        }
        var gdx = emu.Out(n * F);
        emu.Launch("layernorm_backward", grid, block, 0, gdy, gx, gw, gmean, grstd, gdx, n, F);
        double worst = MaxDiff(Array.ConvertAll(dx, v => (float)v), emu.Read(gdx));
        // dx = r·(g − mean g − x̂·mean(g·x̂)) cancels for F = 1 (it is 0): measured against its terms' size
        Assert.IsTrue(worst <= SumTol * Math.Max(dxTerms, dx.Max(Math.Abs)), $"layernorm dx: max |diff| {worst:E2}");
        int chunks = (n + chunkRows - 1) / chunkRows;
        var pw = chunks == 1 ? emu.Out(F) : emu.Out((long)chunks * F); var pb = chunks == 1 ? emu.Out(F) : emu.Out((long)chunks * F);
        emu.Launch("layernorm_param_partials", new Dim3((uint)Blocks(F, 32, 65535), (uint)chunks), new Dim3(32, 8), 32 * 8 * 4, gdy, gx, gmean, grstd, n, F, chunkRows, pw, pb);
        Buf gdw = pw, gdb = pb;
        if (chunks > 1)
        {
            gdw = emu.Out(F); gdb = emu.Out(F);
            emu.Launch("column_finish_sum", Blocks(F, 256, 65535), 256, 0, pw, chunks, F, gdw);
            emu.Launch("column_finish_sum", Blocks(F, 256, 65535), 256, 0, pb, chunks, F, gdb);
        }
        AssertClose("layernorm dw", dw, Array.ConvertAll(emu.Read(gdw), v => (double)v), SumTol);
        AssertClose("layernorm db", db, Array.ConvertAll(emu.Read(gdb), v => (double)v), SumTol);
    }

    /// <summary>Philox4x32-10 in C# (the backend's own copy will need the same): Random123's known answers, then the dropout kernels against it.</summary>
    [TestMethod]
    public void PhiloxReferenceGivesTheKnownAnswers()
    {
        CollectionAssert.AreEqual(new uint[] { 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 }, Philox(0, 0, 0, 0, 0, 0));
        CollectionAssert.AreEqual(new uint[] { 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd }, Philox(uint.MaxValue, uint.MaxValue, uint.MaxValue, uint.MaxValue, uint.MaxValue, uint.MaxValue));
        CollectionAssert.AreEqual(new uint[] { 0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1 }, Philox(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0));
    }

    /// <summary>
    /// dropout_forward/backward: element i kept when Philox({i/4, 0, step_lo, step_hi}, {seed, layer})[i % 4]
    /// ≥ threshold = round(P·2³²); y = x·scale or 0, bitwise (one float product). The unsigned arguments
    /// (a seed with the top bit set, a step beyond 2³²) go through the argument array as uint. The kept
    /// fraction is 1 − P within 5 standard deviations; the backward applies the same mask; in place allowed.
    /// </summary>
    [TestMethod]
    [DataRow(1, 0.1)]
    [DataRow(7, 0.5)]
    [DataRow(1000, 0.5)]
    [DataRow(40_001, 0.25)]
    public void DropoutMaskIsThePhiloxMask(int count, double p)
    {
        const uint seed = 0xDEADBEEF, layer = 2;
        ulong step = (5UL << 32) | 77; // a step beyond 2^32: step_hi = 5
        uint stepLo = (uint)step, stepHi = (uint)(step >> 32);
        double t = Math.Round(p * 4294967296.0);
        uint threshold = t >= uint.MaxValue ? uint.MaxValue : (uint)t;
        float scale = (float)(1 / (1 - p));
        var rng = new Random(count);
        float[] x = Normals(rng, count, 1f, 0.5f), dy = Normals(rng, count, 1f);
        float[] y = new float[count], dx = new float[count];
        int kept = 0;
        for (int i = 0; i < count; i++)
        {
            bool keep = Philox((uint)(i / 4), 0, stepLo, stepHi, seed, layer)[i % 4] >= threshold;
            kept += keep ? 1 : 0;
            y[i] = keep ? x[i] * scale : 0f;
            dx[i] = keep ? dy[i] * scale : 0f;
        }
        if (count > 1000) Assert.IsLessThan(5 * Math.Sqrt(p * (1 - p) / count), Math.Abs((double)kept / count - (1 - p)), $"kept fraction {(double)kept / count}");
        using var emu = NewEmu();
        int groups = (count + 3) / 4;
        var gy = emu.Out(count);
        emu.Launch("dropout_forward", Blocks(groups, 256, 65535), 256, 0, emu.In(x), gy, count, seed, layer, emu.Step(step), threshold, scale);
        AssertBitwise("dropout y", y, emu.Read(gy));
        var inPlace = emu.In(x);
        emu.Launch("dropout_forward", 1, 64, 0, inPlace, inPlace, count, seed, layer, emu.Step(step), threshold, scale);
        AssertBitwise("dropout y in place, one block", y, emu.Read(inPlace));
        var gdx = emu.In(dy);
        emu.Launch("dropout_backward", 3, 96, 0, gdx, gdx, count, seed, layer, emu.Step(step), threshold, scale);
        AssertBitwise("dropout dx (in place)", dx, emu.Read(gdx));
    }

    /// <summary>Philox4x32-10 (Salmon et al., SC'11; Random123's constants), counter (c0..c3), key (k0, k1).</summary>
    private static uint[] Philox(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1)
    {
        for (int round = 0; round < 10; round++)
        {
            if (round > 0) { k0 += 0x9E3779B9; k1 += 0xBB67AE85; }
            ulong p0 = 0xD2511F53UL * c0, p1 = 0xCD9E8D57UL * c2;
            (c0, c1, c2, c3) = ((uint)(p1 >> 32) ^ c1 ^ k0, (uint)p1, (uint)(p0 >> 32) ^ c3 ^ k1, (uint)p0);
        }
        return [c0, c1, c2, c3];
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
        MeanOf(emu, losses, n, loss);
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

        // ---- the fused kernels vs the chain: cross-entropy (as CudaBackend picks it) + sum_partials/sum_finish,
        // batchnorm_forward, then batchnorm_backward from the fused forward's tensors and the chain's dh
        var fd = emu.Out(nv); var fl = emu.Out(n); var floss = emu.Out(1);
        if (V <= 2048) emu.Launch("cross_entropy_warp", Blocks(n, 8, 65535), 256, 0, logits, gY, fd, fl, n, V);
        else emu.Launch("cross_entropy_block", Math.Min(n, 65535), V >= 16384 ? 1024 : 256, 0, logits, gY, fd, fl, n, V);
        MeanOf(emu, fl, n, floss);
        var fMean = emu.Out(H); var fVar = emu.Out(H); var fVinv = emu.Out(H); var fRaw = emu.Out(nh); var fH = emu.Out(nh);
        var bnGrid = (uint)Blocks(H, 32, 65535);
        // the makemore configuration: tanh (act 1), Bessel (biased 0), no running statistics, no dprev_bias
        emu.Launch("batchnorm_forward", new Dim3(bnGrid), new Dim3(32, 8), 32 * 8 * 4, hprebn, bngain, bnbias, fMean, fVar, fVinv, fRaw, fH, null, null, n, H, Eps, 0f, 1, 0, null);
        var fDpre = emu.Out(nh); var fDgain = emu.Out(H); var fDbias = emu.Out(H);
        emu.Launch("batchnorm_backward", new Dim3(bnGrid), new Dim3(32, 8), 32 * 8 * 4, dh, fH, fRaw, bngain, fVinv, fDpre, fDgain, fDbias, null, n, H, 1, 0);
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

        /// <summary>A training step's state (native/kernels/step_state.h) as step_begin leaves it for step <paramref name="current"/>, then <paramref name="rows"/> (3 floats each).</summary>
        public Buf Step(ulong current, float lr = 0, float stepSize = 0, float bc2Sqrt = 1, uint slot = 0, float[]? rows = null, ulong? next = null, ulong baseStep = 0, uint stride = 0, uint ring = 1, uint drawSeed = 0)
        {
            rows ??= [];
            var bytes = new byte[64 + rows.Length * 4];
            BitConverter.TryWriteBytes(bytes.AsSpan(0), next ?? current); // the loss kernel advances it
            BitConverter.TryWriteBytes(bytes.AsSpan(8), current);
            BitConverter.TryWriteBytes(bytes.AsSpan(16), baseStep);
            BitConverter.TryWriteBytes(bytes.AsSpan(24), (uint)Math.Max(1, rows.Length / 3));
            BitConverter.TryWriteBytes(bytes.AsSpan(28), stride);
            BitConverter.TryWriteBytes(bytes.AsSpan(32), ring);
            BitConverter.TryWriteBytes(bytes.AsSpan(36), slot);
            BitConverter.TryWriteBytes(bytes.AsSpan(44), lr);
            BitConverter.TryWriteBytes(bytes.AsSpan(48), stepSize);
            BitConverter.TryWriteBytes(bytes.AsSpan(52), bc2Sqrt);
            BitConverter.TryWriteBytes(bytes.AsSpan(56), drawSeed);
            for (int i = 0; i < rows.Length; i++) BitConverter.TryWriteBytes(bytes.AsSpan(64 + 4 * i), rows[i]);
            var b = Alloc(bytes.Length, 0);
            Upload(b.Pointer, bytes);
            return b;
        }

        /// <summary>The raw bytes of <paramref name="b"/>.</summary>
        public byte[] ReadBytes(Buf b)
        {
            CheckGuard(b);
            var o = new byte[b.Bytes];
            fixed (byte* p = o) Runtime.CopyToHost(p, b.Pointer, b.Bytes);
            return o;
        }

        public Buf InDoubles(double[] data)
        {
            var b = Alloc(data.Length * 8L, 0);
            fixed (double* p = data) Runtime.CopyToDevice(b.Pointer, p, data.Length * 8L);
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

        /// <summary>An output of <paramref name="elements"/> doubles, filled with NaN (0xFF bytes).</summary>
        public Buf OutDoubles(long elements) => Alloc(elements * 8, 0xFF);

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

        /// <summary>
        /// Launches <paramref name="kernel"/>: arguments are <see cref="Buf"/>, a raw ulong device pointer or null (pointers),
        /// int, uint (<c>unsigned</c>), float, double: what the C# backend passes.
        /// </summary>
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
                    case ulong ptr when isPointer: slots[i] = ptr; break;
                    case int v when p.StartsWith("int ", StringComparison.Ordinal): *(int*)&slots[i] = v; break;
                    case uint u when p.StartsWith("unsigned ", StringComparison.Ordinal): *(uint*)&slots[i] = u; break;
                    case float f when p.StartsWith("float ", StringComparison.Ordinal): *(float*)&slots[i] = f; break;
                    case double d when p.StartsWith("double ", StringComparison.Ordinal): *(double*)&slots[i] = d; break;
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
