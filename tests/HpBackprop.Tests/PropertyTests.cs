using HpBackprop.Model;
using HpBackprop.Reference;

namespace HpBackprop.Tests;

/// <summary>
/// The makemore stack compiled as the fused CPU network (float) against the reference chain on many shapes,
/// including the edges: n = 2 (1/(n-1) = 1), H = 1 (one batch-norm column), V = 2, B = 1, E = 1.
/// </summary>
[TestClass]
public sealed class PropertyTests
{
    /// <summary>
    /// Tolerance of the fused float backend against the reference chain (double or float), relative
    /// to the scales of <see cref="CompareFused"/>. Both sides round every operation to float
    /// (u = 6e-8) and sum in different orders over reductions of up to 70 terms here, so tens to
    /// hundreds of u are expected in the worst element; bnvar_inv amplifies further wherever a
    /// column's variance is not much larger than eps (then bndiff = hprebn − bnmeani has lost
    /// digits, and bnraw = bndiff/√(bnvar+eps) passes the loss on). Calibration: a sweep of 400
    /// random configurations (V 2..60, B 1..6, E 1..12, H 1..70, n 2..70, a quarter with n = 2)
    /// gave a worst error of 9.3e-5 (dW2 at n = 2, where a column with bnvar ≈ eps is likely) and
    /// at most 5.4e-5 for the other tensors (that sweep measured the dedicated backend the network replaced, with the same
    /// kernels); the ten fixed configurations below measure at most 1.9e-5 with the network (dhprebn at n = 2, H = 70;
    /// 7.1e-6 with the dedicated backend). So the oracle's <see cref="ParityTests.Float32Tolerance"/> (2e-4) fits here as well:
    /// twice the worst of the sweep, yet about 70 times below the smallest formula error it must
    /// catch (the missing Bessel factor n/(n−1) at n = 70 changes dhprebn by ~1/70 of its scale).
    /// </summary>
    internal const double FusedVsDoubleTolerance = ParityTests.Float32Tolerance;

    /// <summary>(V, B, E, H, n, seed): fixed, hand-picked to cover the ranges and their edges.</summary>
    public static IEnumerable<object[]> Configs =>
    [
        [27, 3, 10, 64, 32, 1],   // the seeds' shape
        [2, 1, 1, 1, 2, 2],       // every dimension at its minimum
        [60, 6, 12, 70, 70, 3],   // every dimension at its maximum
        [5, 2, 3, 1, 7, 4],       // H = 1
        [13, 4, 2, 17, 2, 5],     // n = 2
        [31, 1, 12, 33, 5, 6],    // B = 1
        [2, 5, 7, 50, 64, 7],     // V = 2, many repeated ids in the scatter-add
        [47, 3, 1, 2, 3, 8],      // E = 1
        [60, 2, 9, 70, 2, 9],     // n = 2 with a wide layer
        [17, 6, 5, 8, 70, 10],
    ];

    /// <summary>The tensors compared: the seven parameter gradients plus dlogits and dhprebn.</summary>
    internal static readonly string[] Checked = ["dC", "dW1", "db1", "dW2", "db2", "dbngain", "dbnbias", "dlogits", "dhprebn"];

    internal readonly record struct TensorError(string Name, double Relative);

    /// <summary>
    /// Relative error of each checked tensor of the network (by makemore name: gradients with W1 and W2 in their makemore
    /// layout, dlogits and dhprebn from the step's buffers) against <paramref name="expected"/>
    /// (a lookup by makemore name of the reference chain's tensors): max|actual − expected| / scale.
    /// The scale is the tensor's own largest magnitude, except for the tensors computed from the
    /// batch-norm backward (dhprebn, db1, dW1, dC), whose scale is the largest magnitude they
    /// would have without the cancellation inside that backward (<see cref="CancellationFreeScales"/>).
    /// </summary>
    internal static List<TensorError> CompareFused(MakemoreNet cpu, Func<string, double[]> expected, int[] xb)
    {
        var bounds = CancellationFreeScales(expected, cpu.Config, xb);
        var p = cpu.ToParameterSet();
        var o = new List<TensorError>();
        foreach (string g in Checked)
        {
            double[] actual = TestModels.ToDouble(g is "dlogits" or "dhprebn" ? cpu.Intermediate(g) : p.Gradient(g[1..]).ToArray());
            double[] exp = expected(g);
            Assert.HasCount(exp.Length, actual, g);
            double scale = bounds.TryGetValue(g, out double b) ? b : Oracle.MaxAbs(exp);
            o.Add(new TensorError(g, TestModels.RelativeError(actual, exp, scale)));
        }
        return o;
    }

    /// <summary>
    /// The scale of the float rounding error of the tensors downstream of the batch-norm backward.
    /// <c>dhprebn = s·(dhpreact − mean0(dhpreact) − bnraw·sum0(bnraw·dhpreact)/(n−1))</c> with
    /// <c>s = bngain·bnvar_inv</c> subtracts terms of size <c>S = |s·dhpreact|</c>; the rounding
    /// error is a multiple of u·S however small the difference is. The difference is small when
    /// n = 2: then bnraw = ±√(bnvar/(bnvar+eps))/√2 whatever the input, the three terms cancel
    /// to a factor eps/(bnvar+eps) ≈ 1e-5 and dhprebn is ~1e-5·S (docs/makemore.md §2 batch norm of two rows
    /// hardly depends on them). Measured against its own magnitude the float result is then only
    /// good to ~1e-2, whatever the formula. So the scale of dhprebn (and of db1, its column sums,
    /// ≈ 0 by construction, compared against the scale of dhprebn as for the oracle) is max S, and
    /// the scales of dW1 = embcatᵀ·dhprebn and dC = scatter(dhprebn·W1ᵀ) are the largest elements
    /// of the same products of absolute values, |embcat|ᵀ·S and scatter(S·|W1|ᵀ): the classical
    /// componentwise bound of a product. For n ≥ 3 these scales are within a small factor of the
    /// tensors' own magnitudes; the n = 2 values themselves (the eps-driven part) are checked in
    /// double by <see cref="FiniteDifferenceTests"/>.
    /// </summary>
    internal static Dictionary<string, double> CancellationFreeScales(Func<string, double[]> t, ModelConfig config, int[] xb)
    {
        int n = xb.Length / config.BlockSize, H = config.HiddenSize, K = config.ContextWidth, E = config.EmbeddingSize;
        double[] bngain = t("bngain"), bnvarInv = t("bnvar_inv"), dhpreact = t("dhpreact"), embcat = t("embcat"), W1 = t("W1");
        var S = new double[n * H];
        for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) S[i * H + c] = Math.Abs(bngain[c] * bnvarInv[c] * dhpreact[i * H + c]);
        double dW1 = 0;
        for (int k = 0; k < K; k++) for (int c = 0; c < H; c++)
        {
            double s = 0;
            for (int i = 0; i < n; i++) s += Math.Abs(embcat[i * K + k]) * S[i * H + c];
            dW1 = Math.Max(dW1, s);
        }
        var dC = new double[config.VocabSize * E];
        for (int i = 0; i < n; i++) for (int k = 0; k < K; k++)
        {
            double s = 0;
            for (int c = 0; c < H; c++) s += S[i * H + c] * Math.Abs(W1[k * H + c]);
            dC[xb[i * config.BlockSize + k / E] * E + k % E] += s;
        }
        double dhprebn = Oracle.MaxAbs(S);
        return new(StringComparer.Ordinal) { ["dhprebn"] = dhprebn, ["db1"] = dhprebn, ["dW1"] = dW1, ["dC"] = Oracle.MaxAbs(dC) };
    }

    private static (ModelConfig Config, ParameterSet P, int[] Xb, int[] Yb) Setup(int v, int b, int e, int h, int n, int seed)
    {
        var config = new ModelConfig(v, b, e, h, n);
        var p = TestModels.Initialized(config, seed);
        var (xb, yb) = TestModels.RandomBatch(new NormalRng(seed * 7919L + 1), n, b, v);
        return (config, p, xb, yb);
    }

    [TestMethod]
    [DynamicData(nameof(Configs))]
    public void FusedFloatMatchesDoubleReferenceChain(int v, int b, int e, int h, int n, int seed)
    {
        var (config, p, xb, yb) = Setup(v, b, e, h, n, seed);
        var chain = new ReferenceChain<double>(config, TestModels.ParametersAs<double>(p), xb, yb);
        using var cpu = new MakemoreNet(p);
        float loss = cpu.ForwardBackward(xb, yb);
        Assert.AreEqual(chain.Loss, loss, 1e-5 * Math.Max(1, Math.Abs(chain.Loss)), "loss");
        var errors = CompareFused(cpu, g => chain[g], xb);
        Console.WriteLine($"V{v} B{b} E{e} H{h} n{n}: " + string.Join("; ", errors.Select(x => $"{x.Name} {x.Relative:E2}")));
        var failures = errors.Where(x => !(x.Relative <= FusedVsDoubleTolerance)).ToList();
        Assert.IsEmpty(failures, string.Join("; ", failures.Select(x => $"{x.Name}: {x.Relative:E2}")));
    }

    [TestMethod]
    [DynamicData(nameof(Configs))]
    public void FusedFloatMatchesFloatReferenceChain(int v, int b, int e, int h, int n, int seed)
    {
        var (config, p, xb, yb) = Setup(v, b, e, h, n, seed);
        var chain = new ReferenceChain<float>(config, TestModels.ParametersAs<float>(p), xb, yb);
        using var cpu = new MakemoreNet(p);
        float loss = cpu.ForwardBackward(xb, yb);
        Assert.AreEqual(chain.Loss, loss, 1e-5f * Math.Max(1, Math.Abs(chain.Loss)), "loss");
        var errors = CompareFused(cpu, g => TestModels.ToDouble(chain[g]), xb);
        Console.WriteLine($"V{v} B{b} E{e} H{h} n{n}: " + string.Join("; ", errors.Select(x => $"{x.Name} {x.Relative:E2}")));
        var failures = errors.Where(x => !(x.Relative <= FusedVsFloatChainTolerance)).ToList();
        Assert.IsEmpty(failures, string.Join("; ", failures.Select(x => $"{x.Name}: {x.Relative:E2}")));
    }

    /// <summary>Same reasoning as <see cref="FusedVsDoubleTolerance"/> (worst of the same sweep: 4.8e-5).</summary>
    internal const double FusedVsFloatChainTolerance = ParityTests.Float32Tolerance;
}
