using System.Numerics;
using HpBackprop.Model;

namespace HpBackprop.Reference;

/// <summary>
/// Exercise 1: the forward pass broken into docs/makemore.md §2's atomic pieces and the backward pass
/// through every one of them (docs/makemore.md §3), producing all 26 named gradients. Written for clarity,
/// not speed, and generic over the element type so the formulas can be checked in
/// <see cref="double"/> apart from float rounding. Each backward line sits in the same order as
/// docs/makemore.md §3; <see cref="Tensors"/> exposes every intermediate and gradient by makemore name.
/// </summary>
/// <typeparam name="T"><see cref="float"/> or <see cref="double"/>.</typeparam>
internal sealed class ReferenceChain<T> where T : IFloatingPointIeee754<T>
{
    /// <summary>The forward intermediates in docs/makemore.md §2 order.</summary>
    public static readonly IReadOnlyList<string> ForwardNames =
    [
        "emb", "embcat", "hprebn", "bnmeani", "bndiff", "bndiff2", "bnvar", "bnvar_inv", "bnraw", "hpreact", "h",
        "logits", "logit_maxes", "norm_logits", "counts", "counts_sum", "counts_sum_inv", "probs", "logprobs",
    ];

    /// <summary>The 26 gradients in docs/makemore.md §3 order.</summary>
    public static readonly IReadOnlyList<string> GradientNames =
    [
        "dlogprobs", "dprobs", "dcounts_sum_inv", "dcounts_sum", "dcounts", "dnorm_logits", "dlogit_maxes", "dlogits",
        "dh", "dW2", "db2", "dhpreact", "dbngain", "dbnraw", "dbnbias", "dbnvar_inv", "dbnvar", "dbndiff2", "dbndiff",
        "dbnmeani", "dhprebn", "dembcat", "dW1", "db1", "demb", "dC",
    ];

    private readonly Dictionary<string, NamedTensor<T>> _t = new(StringComparer.Ordinal);
    private readonly int _n, _b, _e, _h, _v, _k;
    private readonly T _eps;

    /// <summary>
    /// Runs the forward and backward chain on one minibatch.
    /// </summary>
    /// <param name="config">Dimensions; <see cref="ModelConfig.BatchSize"/> is taken from <paramref name="yb"/>.</param>
    /// <param name="parameters">The seven parameters by makemore name (C, W1, b1, W2, b2, bngain, bnbias), row-major.</param>
    /// <param name="xb">Contexts <c>[n,B]</c>.</param>
    /// <param name="yb">Targets <c>[n]</c>.</param>
    public ReferenceChain(ModelConfig config, IReadOnlyDictionary<string, T[]> parameters, ReadOnlySpan<int> xb, ReadOnlySpan<int> yb)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(parameters);
        _n = yb.Length; _b = config.BlockSize; _e = config.EmbeddingSize; _h = config.HiddenSize; _v = config.VocabSize;
        _k = _b * _e;
        _eps = T.CreateChecked(config.Eps);
        (config with { BatchSize = _n }).Validate();
        if (xb.Length != _n * _b) throw new ShapeException("Xb", [_n, _b], [xb.Length / Math.Max(_b, 1), _b]);
        foreach (int id in xb) if ((uint)id >= (uint)_v) throw new ShapeException("Xb", $"id {id} is outside [0, {_v}).");
        foreach (int id in yb) if ((uint)id >= (uint)_v) throw new ShapeException("Yb", $"id {id} is outside [0, {_v}).");
        Put("C", [_v, _e], Param(parameters, "C", _v * _e));
        Put("W1", [_k, _h], Param(parameters, "W1", _k * _h));
        Put("b1", [_h], Param(parameters, "b1", _h));
        Put("W2", [_h, _v], Param(parameters, "W2", _h * _v));
        Put("b2", [_v], Param(parameters, "b2", _v));
        Put("bngain", [1, _h], Param(parameters, "bngain", _h));
        Put("bnbias", [1, _h], Param(parameters, "bnbias", _h));
        Forward(xb.ToArray(), yb.ToArray());
        Backward(xb.ToArray(), yb.ToArray());
    }

    /// <summary>The loss of the minibatch.</summary>
    public T Loss { get; private set; } = T.Zero;

    /// <summary>Every parameter, forward intermediate and gradient by makemore name.</summary>
    public IReadOnlyDictionary<string, NamedTensor<T>> Tensors => _t;

    /// <summary>One tensor's data by makemore name.</summary>
    public T[] this[string name] => _t.TryGetValue(name, out var t) ? t.Data : throw new KeyNotFoundException($"the reference chain has no tensor '{name}'.");

    private static T[] Param(IReadOnlyDictionary<string, T[]> p, string name, int length)
    {
        if (!p.TryGetValue(name, out var a)) throw new ShapeException(name, "the parameter is missing.");
        if (a.Length != length) throw new ShapeException(name, $"it has {a.Length} elements but the model needs {length}.");
        return (T[])a.Clone();
    }

    private T[] Put(string name, int[] shape, T[]? data = null)
    {
        int len = shape.Aggregate(1, (x, y) => x * y);
        data ??= new T[len];
        _t[name] = new NamedTensor<T>(name, shape, data);
        return data;
    }

    private static T Tn(int x) => T.CreateChecked(x);

    private void Forward(int[] Xb, int[] Yb)
    {
        int n = _n, B = _b, E = _e, H = _h, V = _v, K = _k;
        T[] C = this["C"], W1 = this["W1"], b1 = this["b1"], W2 = this["W2"], b2 = this["b2"], bngain = this["bngain"], bnbias = this["bnbias"];

        // emb = C[Xb]  [n,B,E]
        var emb = Put("emb", [n, B, E]);
        for (int i = 0; i < n; i++) for (int j = 0; j < B; j++) for (int e = 0; e < E; e++)
            emb[(i * B + j) * E + e] = C[Xb[i * B + j] * E + e];
        // embcat = emb.view(n, B*E)
        var embcat = Put("embcat", [n, K], (T[])emb.Clone());
        // hprebn = embcat @ W1 + b1  [n,H]
        var hprebn = Put("hprebn", [n, H]);
        MatMul(embcat, W1, hprebn, n, K, H);
        for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) hprebn[i * H + c] += b1[c];
        // bnmeani = 1/n * sum0(hprebn)  [1,H]
        var bnmeani = Put("bnmeani", [1, H]);
        T invN = T.One / Tn(n);
        for (int c = 0; c < H; c++) { T s = T.Zero; for (int i = 0; i < n; i++) s += hprebn[i * H + c]; bnmeani[c] = invN * s; }
        // bndiff = hprebn - bnmeani
        var bndiff = Put("bndiff", [n, H]);
        for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) bndiff[i * H + c] = hprebn[i * H + c] - bnmeani[c];
        // bndiff2 = bndiff^2
        var bndiff2 = Put("bndiff2", [n, H]);
        for (int x = 0; x < n * H; x++) bndiff2[x] = bndiff[x] * bndiff[x];
        // bnvar = 1/(n-1) * sum0(bndiff2)   (Bessel)
        var bnvar = Put("bnvar", [1, H]);
        T invNm1 = T.One / Tn(n - 1);
        for (int c = 0; c < H; c++) { T s = T.Zero; for (int i = 0; i < n; i++) s += bndiff2[i * H + c]; bnvar[c] = invNm1 * s; }
        // bnvar_inv = (bnvar + eps)^-0.5
        var bnvar_inv = Put("bnvar_inv", [1, H]);
        for (int c = 0; c < H; c++) bnvar_inv[c] = T.One / T.Sqrt(bnvar[c] + _eps);
        // bnraw = bndiff * bnvar_inv
        var bnraw = Put("bnraw", [n, H]);
        for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) bnraw[i * H + c] = bndiff[i * H + c] * bnvar_inv[c];
        // hpreact = bngain * bnraw + bnbias
        var hpreact = Put("hpreact", [n, H]);
        for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) hpreact[i * H + c] = bngain[c] * bnraw[i * H + c] + bnbias[c];
        // h = tanh(hpreact)
        var h = Put("h", [n, H]);
        for (int x = 0; x < n * H; x++) h[x] = T.Tanh(hpreact[x]);
        // logits = h @ W2 + b2  [n,V]
        var logits = Put("logits", [n, V]);
        MatMul(h, W2, logits, n, H, V);
        for (int i = 0; i < n; i++) for (int j = 0; j < V; j++) logits[i * V + j] += b2[j];
        // logit_maxes = max over columns  [n,1]
        var logit_maxes = Put("logit_maxes", [n, 1]);
        for (int i = 0; i < n; i++) { T m = logits[i * V]; for (int j = 1; j < V; j++) m = T.Max(m, logits[i * V + j]); logit_maxes[i] = m; }
        // norm_logits = logits - logit_maxes
        var norm_logits = Put("norm_logits", [n, V]);
        for (int i = 0; i < n; i++) for (int j = 0; j < V; j++) norm_logits[i * V + j] = logits[i * V + j] - logit_maxes[i];
        // counts = exp(norm_logits)
        var counts = Put("counts", [n, V]);
        for (int x = 0; x < n * V; x++) counts[x] = T.Exp(norm_logits[x]);
        // counts_sum = sum1(counts)  [n,1]
        var counts_sum = Put("counts_sum", [n, 1]);
        for (int i = 0; i < n; i++) { T s = T.Zero; for (int j = 0; j < V; j++) s += counts[i * V + j]; counts_sum[i] = s; }
        // counts_sum_inv = counts_sum^-1
        var counts_sum_inv = Put("counts_sum_inv", [n, 1]);
        for (int i = 0; i < n; i++) counts_sum_inv[i] = T.One / counts_sum[i];
        // probs = counts * counts_sum_inv
        var probs = Put("probs", [n, V]);
        for (int i = 0; i < n; i++) for (int j = 0; j < V; j++) probs[i * V + j] = counts[i * V + j] * counts_sum_inv[i];
        // logprobs = log(probs)
        var logprobs = Put("logprobs", [n, V]);
        for (int x = 0; x < n * V; x++) logprobs[x] = T.Log(probs[x]);
        // loss = -mean_i logprobs[i, Yb[i]]
        T loss = T.Zero;
        for (int i = 0; i < n; i++) loss -= logprobs[i * V + Yb[i]];
        Loss = loss / Tn(n);
        Put("loss", [], [Loss]);
    }

    private void Backward(int[] Xb, int[] Yb)
    {
        int n = _n, B = _b, E = _e, H = _h, V = _v, K = _k;
        T[] W1 = this["W1"], W2 = this["W2"], bngain = this["bngain"];
        T[] embcat = this["embcat"], bndiff = this["bndiff"], bnvar = this["bnvar"], bnvar_inv = this["bnvar_inv"], bnraw = this["bnraw"];
        T[] h = this["h"], logits = this["logits"], counts = this["counts"], counts_sum = this["counts_sum"], counts_sum_inv = this["counts_sum_inv"], probs = this["probs"];
        T invN = T.One / Tn(n), invNm1 = T.One / Tn(n - 1), two = Tn(2), half = T.One / two;

        // dlogprobs = zeros; dlogprobs[i, Yb[i]] = -1/n
        var dlogprobs = Put("dlogprobs", [n, V]);
        for (int i = 0; i < n; i++) dlogprobs[i * V + Yb[i]] = -invN;
        // dprobs = dlogprobs / probs
        var dprobs = Put("dprobs", [n, V]);
        for (int x = 0; x < n * V; x++) dprobs[x] = dlogprobs[x] / probs[x];
        // dcounts_sum_inv = sum1(counts * dprobs)
        var dcounts_sum_inv = Put("dcounts_sum_inv", [n, 1]);
        for (int i = 0; i < n; i++) { T s = T.Zero; for (int j = 0; j < V; j++) s += counts[i * V + j] * dprobs[i * V + j]; dcounts_sum_inv[i] = s; }
        // dcounts_sum = -counts_sum^-2 * dcounts_sum_inv
        var dcounts_sum = Put("dcounts_sum", [n, 1]);
        for (int i = 0; i < n; i++) dcounts_sum[i] = -(T.One / (counts_sum[i] * counts_sum[i])) * dcounts_sum_inv[i];
        // dcounts = counts_sum_inv * dprobs + dcounts_sum   (two paths add)
        var dcounts = Put("dcounts", [n, V]);
        for (int i = 0; i < n; i++) for (int j = 0; j < V; j++) dcounts[i * V + j] = counts_sum_inv[i] * dprobs[i * V + j] + dcounts_sum[i];
        // dnorm_logits = counts * dcounts
        var dnorm_logits = Put("dnorm_logits", [n, V]);
        for (int x = 0; x < n * V; x++) dnorm_logits[x] = counts[x] * dcounts[x];
        // dlogit_maxes = -sum1(dnorm_logits)
        var dlogit_maxes = Put("dlogit_maxes", [n, 1]);
        for (int i = 0; i < n; i++) { T s = T.Zero; for (int j = 0; j < V; j++) s += dnorm_logits[i * V + j]; dlogit_maxes[i] = -s; }
        // dlogits = dnorm_logits + onehot(argmax_row(logits)) * dlogit_maxes
        var dlogits = Put("dlogits", [n, V], (T[])dnorm_logits.Clone());
        for (int i = 0; i < n; i++)
        {
            int arg = 0;
            for (int j = 1; j < V; j++) if (logits[i * V + j] > logits[i * V + arg]) arg = j; // first maximum, as torch.max
            dlogits[i * V + arg] += dlogit_maxes[i];
        }
        // dh = dlogits @ W2^T
        var dh = Put("dh", [n, H]);
        MatMulBT(dlogits, W2, dh, n, V, H);
        // dW2 = h^T @ dlogits
        var dW2 = Put("dW2", [H, V]);
        MatMulAT(h, dlogits, dW2, n, H, V);
        // db2 = sum0(dlogits)
        var db2 = Put("db2", [V]);
        SumRows(dlogits, db2, n, V);
        // dhpreact = (1 - h^2) * dh
        var dhpreact = Put("dhpreact", [n, H]);
        for (int x = 0; x < n * H; x++) dhpreact[x] = (T.One - h[x] * h[x]) * dh[x];
        // dbngain = sum0(bnraw * dhpreact)
        var dbngain = Put("dbngain", [1, H]);
        for (int c = 0; c < H; c++) { T s = T.Zero; for (int i = 0; i < n; i++) s += bnraw[i * H + c] * dhpreact[i * H + c]; dbngain[c] = s; }
        // dbnraw = bngain * dhpreact
        var dbnraw = Put("dbnraw", [n, H]);
        for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) dbnraw[i * H + c] = bngain[c] * dhpreact[i * H + c];
        // dbnbias = sum0(dhpreact)
        var dbnbias = Put("dbnbias", [1, H]);
        SumRows(dhpreact, dbnbias, n, H);
        // dbnvar_inv = sum0(bndiff * dbnraw)
        var dbnvar_inv = Put("dbnvar_inv", [1, H]);
        for (int c = 0; c < H; c++) { T s = T.Zero; for (int i = 0; i < n; i++) s += bndiff[i * H + c] * dbnraw[i * H + c]; dbnvar_inv[c] = s; }
        // dbnvar = -0.5 * (bnvar + eps)^-1.5 * dbnvar_inv
        var dbnvar = Put("dbnvar", [1, H]);
        for (int c = 0; c < H; c++)
        {
            T ve = bnvar[c] + _eps;
            dbnvar[c] = -half / (ve * T.Sqrt(ve)) * dbnvar_inv[c];
        }
        // dbndiff2 = 1/(n-1) * dbnvar  (broadcast to [n,H])
        var dbndiff2 = Put("dbndiff2", [n, H]);
        for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) dbndiff2[i * H + c] = invNm1 * dbnvar[c];
        // dbndiff = bnvar_inv * dbnraw + 2 * bndiff * dbndiff2  (two paths add)
        var dbndiff = Put("dbndiff", [n, H]);
        for (int i = 0; i < n; i++) for (int c = 0; c < H; c++)
            dbndiff[i * H + c] = bnvar_inv[c] * dbnraw[i * H + c] + two * bndiff[i * H + c] * dbndiff2[i * H + c];
        // dbnmeani = -sum0(dbndiff)
        var dbnmeani = Put("dbnmeani", [1, H]);
        for (int c = 0; c < H; c++) { T s = T.Zero; for (int i = 0; i < n; i++) s += dbndiff[i * H + c]; dbnmeani[c] = -s; }
        // dhprebn = dbndiff + 1/n * dbnmeani  (two paths add)
        var dhprebn = Put("dhprebn", [n, H]);
        for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) dhprebn[i * H + c] = dbndiff[i * H + c] + invN * dbnmeani[c];
        // dembcat = dhprebn @ W1^T
        var dembcat = Put("dembcat", [n, K]);
        MatMulBT(dhprebn, W1, dembcat, n, H, K);
        // dW1 = embcat^T @ dhprebn
        var dW1 = Put("dW1", [K, H]);
        MatMulAT(embcat, dhprebn, dW1, n, K, H);
        // db1 = sum0(dhprebn)
        var db1 = Put("db1", [H]);
        SumRows(dhprebn, db1, n, H);
        // demb = dembcat.view(n, B, E)
        var demb = Put("demb", [n, B, E], (T[])dembcat.Clone());
        // dC = zeros; dC[Xb[k,j]] += demb[k,j]  (scatter-add)
        var dC = Put("dC", [V, E]);
        for (int i = 0; i < n; i++) for (int j = 0; j < B; j++)
        {
            int row = Xb[i * B + j];
            for (int e = 0; e < E; e++) dC[row * E + e] += demb[(i * B + j) * E + e];
        }
    }

    // c[m,n] = a[m,k] @ b[k,n]
    private static void MatMul(T[] a, T[] b, T[] c, int m, int k, int n)
    {
        for (int i = 0; i < m; i++) for (int j = 0; j < n; j++)
        {
            T s = T.Zero;
            for (int p = 0; p < k; p++) s += a[i * k + p] * b[p * n + j];
            c[i * n + j] = s;
        }
    }

    // c[m,n] = a[m,k] @ b[n,k]^T
    private static void MatMulBT(T[] a, T[] b, T[] c, int m, int k, int n)
    {
        for (int i = 0; i < m; i++) for (int j = 0; j < n; j++)
        {
            T s = T.Zero;
            for (int p = 0; p < k; p++) s += a[i * k + p] * b[j * k + p];
            c[i * n + j] = s;
        }
    }

    // c[k,n] = a[m,k]^T @ b[m,n]
    private static void MatMulAT(T[] a, T[] b, T[] c, int m, int k, int n)
    {
        for (int p = 0; p < k; p++) for (int j = 0; j < n; j++)
        {
            T s = T.Zero;
            for (int i = 0; i < m; i++) s += a[i * k + p] * b[i * n + j];
            c[p * n + j] = s;
        }
    }

    // out[cols] = sum over rows
    private static void SumRows(T[] a, T[] o, int rows, int cols)
    {
        for (int c = 0; c < cols; c++) { T s = T.Zero; for (int i = 0; i < rows; i++) s += a[i * cols + c]; o[c] = s; }
    }
}
