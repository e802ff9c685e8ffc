using System.Numerics;
using HpBackprop.Networks;

namespace HpBackprop.Reference;

/// <summary>
/// docs/stacks.md, one layer and one loss at a time: each forward as plain loops with its backward right
/// beside it, generic over the element type (<see cref="double"/> for the oracle, <see cref="float"/>
/// to see plain single-precision rounding). Written for clarity, not speed: the reference the fast
/// path is tested against. Tensors are row-major spans; <c>n</c> is the number of rows. Every
/// backward <em>writes</em> (not accumulates) its outputs; an empty <c>dx</c> span means "not needed".
/// </summary>
/// <typeparam name="T"><see cref="float"/> or <see cref="double"/>.</typeparam>
public static class ReferenceLayers<T> where T : IFloatingPointIeee754<T>
{
    private static T Tn(int x) => T.CreateChecked(x);

    // ------------------------------------------------------------------ embedding:VxE

    /// <summary><c>emb = weight[ids]</c>: ids <c>[n,B]</c> (flat, <c>n·B</c> of them) → <c>emb [n,B,E]</c> (gather).</summary>
    /// <param name="ids">The ids, each in <c>[0, V)</c> (not checked here).</param>
    /// <param name="weight">The table <c>[V,E]</c>.</param>
    /// <param name="emb">Output <c>[n·B, E]</c>.</param>
    /// <param name="width">E.</param>
    public static void EmbeddingForward(ReadOnlySpan<int> ids, ReadOnlySpan<T> weight, Span<T> emb, int width)
    {
        for (int r = 0; r < ids.Length; r++)
            for (int e = 0; e < width; e++) emb[r * width + e] = weight[ids[r] * width + e];
    }

    /// <summary><c>dweight = zeros; dweight[ids[r]] += demb[r]</c> for every id (scatter-add: repeated ids accumulate).</summary>
    /// <param name="ids">The ids of the forward pass.</param>
    /// <param name="demb">The gradient of the output, <c>[n·B, E]</c>.</param>
    /// <param name="dweight">Output <c>[V,E]</c>, overwritten.</param>
    /// <param name="width">E.</param>
    public static void EmbeddingBackward(ReadOnlySpan<int> ids, ReadOnlySpan<T> demb, Span<T> dweight, int width)
    {
        dweight.Clear();
        for (int r = 0; r < ids.Length; r++)
            for (int e = 0; e < width; e++) dweight[ids[r] * width + e] += demb[r * width + e];
    }

    // ------------------------------------------------------------------ flatten

    /// <summary><c>y = x.view(n, B·E)</c>: row-major data is unchanged (a copy here).</summary>
    public static void FlattenForward(ReadOnlySpan<T> x, Span<T> y) => x.CopyTo(y);

    /// <summary><c>dx = dy.view(n, B, E)</c>: a copy.</summary>
    public static void FlattenBackward(ReadOnlySpan<T> dy, Span<T> dx) => dy.CopyTo(dx);

    // ------------------------------------------------------------------ linear:INxOUT

    /// <summary><c>y = x·weightᵀ + bias</c>: <c>x [n,IN]</c>, weight <c>[OUT,IN]</c> (PyTorch's layout), bias <c>[OUT]</c> or empty, <c>y [n,OUT]</c>.</summary>
    public static void LinearForward(ReadOnlySpan<T> x, ReadOnlySpan<T> weight, ReadOnlySpan<T> bias, Span<T> y, int n, int inFeatures, int outFeatures)
    {
        for (int i = 0; i < n; i++)
            for (int o = 0; o < outFeatures; o++)
            {
                T s = T.Zero;
                for (int p = 0; p < inFeatures; p++) s += x[i * inFeatures + p] * weight[o * inFeatures + p];
                y[i * outFeatures + o] = bias.IsEmpty ? s : s + bias[o];
            }
    }

    /// <summary>
    /// <c>dx = dy·weight</c> <c>[n,IN]</c>; <c>dweight = dyᵀ·x</c> <c>[OUT,IN]</c>; <c>dbias = sum0(dy)</c> <c>[OUT]</c>.
    /// An empty <paramref name="dx"/> or <paramref name="dbias"/> is skipped.
    /// </summary>
    public static void LinearBackward(ReadOnlySpan<T> x, ReadOnlySpan<T> weight, ReadOnlySpan<T> dy, Span<T> dx, Span<T> dweight, Span<T> dbias, int n, int inFeatures, int outFeatures)
    {
        if (!dx.IsEmpty)
            for (int i = 0; i < n; i++)
                for (int p = 0; p < inFeatures; p++)
                {
                    T s = T.Zero;
                    for (int o = 0; o < outFeatures; o++) s += dy[i * outFeatures + o] * weight[o * inFeatures + p];
                    dx[i * inFeatures + p] = s;
                }
        for (int o = 0; o < outFeatures; o++)
            for (int p = 0; p < inFeatures; p++)
            {
                T s = T.Zero;
                for (int i = 0; i < n; i++) s += dy[i * outFeatures + o] * x[i * inFeatures + p];
                dweight[o * inFeatures + p] = s;
            }
        if (!dbias.IsEmpty) SumRows(dy, dbias, n, outFeatures);
    }

    /// <summary>The L2 penalty of one linear weight: returns <c>l2·sum(W²)</c> and adds <c>2·l2·W</c> to <paramref name="dweight"/>.</summary>
    public static T L2Penalty(ReadOnlySpan<T> weight, Span<T> dweight, T l2)
    {
        T s = T.Zero, twoL2 = Tn(2) * l2;
        for (int i = 0; i < weight.Length; i++)
        {
            s += weight[i] * weight[i];
            dweight[i] += twoL2 * weight[i];
        }
        return l2 * s;
    }

    // ------------------------------------------------------------------ batchnorm:F[:biased]

    /// <summary>
    /// Batch norm in training mode over the rows of <c>x [n,F]</c>, docs/makemore.md §2 names:
    /// <c>bnmeani = 1/n·sum0(x)</c>; <c>bndiff = x − bnmeani</c>; <c>bnvar = 1/(n−1)·sum0(bndiff²)</c>
    /// (<see cref="BatchNormMode.Bessel"/>) or <c>1/n·sum0(bndiff²)</c> (<see cref="BatchNormMode.Biased"/>);
    /// <c>bnvar_inv = (bnvar + eps)^−½</c>; <c>bnraw = bndiff·bnvar_inv</c>; <c>y = gain·bnraw + bias</c>.
    /// Also returns the unbiased variance (over <c>n−1</c>, whatever the mode) for the running update.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> &lt; 2: a batch of one row has no variance.</exception>
    public static void BatchNormForward(ReadOnlySpan<T> x, ReadOnlySpan<T> gain, ReadOnlySpan<T> bias, Span<T> y,
        Span<T> bnraw, Span<T> bnmeani, Span<T> bnvarInv, Span<T> bnvarUnbiased, int n, int features, BatchNormMode mode, T eps)
    {
        if (n < 2) throw new ArgumentOutOfRangeException(nameof(n), n, "batch norm in training mode needs at least 2 rows: a batch of 1 has no variance.");
        T invN = T.One / Tn(n);
        T invVar = mode == BatchNormMode.Bessel ? T.One / Tn(n - 1) : invN;
        for (int c = 0; c < features; c++)
        {
            T s = T.Zero;
            for (int i = 0; i < n; i++) s += x[i * features + c];
            T mean = invN * s;
            T s2 = T.Zero;
            for (int i = 0; i < n; i++) { T d = x[i * features + c] - mean; s2 += d * d; }
            T bnvar = invVar * s2;
            T inv = T.One / T.Sqrt(bnvar + eps);
            bnmeani[c] = mean;
            bnvarInv[c] = inv;
            bnvarUnbiased[c] = s2 / Tn(n - 1);
            for (int i = 0; i < n; i++)
            {
                T raw = (x[i * features + c] - mean) * inv;
                bnraw[i * features + c] = raw;
                y[i * features + c] = gain[c] * raw + bias[c];
            }
        }
    }

    /// <summary>
    /// docs/makemore.md §4 per column: <c>dgain = sum0(bnraw·dy)</c>, <c>dbias = sum0(dy)</c>,
    /// <c>dx = gain·bnvar_inv/n·(n·dy − sum0(dy) − f·bnraw·sum0(dy·bnraw))</c> with <c>f = n/(n−1)</c>
    /// (<see cref="BatchNormMode.Bessel"/>) or <c>f = 1</c> (<see cref="BatchNormMode.Biased"/>).
    /// An empty <paramref name="dx"/> is skipped.
    /// </summary>
    public static void BatchNormBackward(ReadOnlySpan<T> dy, ReadOnlySpan<T> bnraw, ReadOnlySpan<T> bnvarInv, ReadOnlySpan<T> gain,
        Span<T> dx, Span<T> dgain, Span<T> dbias, int n, int features, BatchNormMode mode)
    {
        T tn = Tn(n);
        T f = mode == BatchNormMode.Bessel ? tn / Tn(n - 1) : T.One;
        for (int c = 0; c < features; c++)
        {
            T sdy = T.Zero, sdyraw = T.Zero;
            for (int i = 0; i < n; i++) { sdy += dy[i * features + c]; sdyraw += dy[i * features + c] * bnraw[i * features + c]; }
            dgain[c] = sdyraw;
            dbias[c] = sdy;
            if (dx.IsEmpty) continue;
            T k = gain[c] * bnvarInv[c] / tn;
            for (int i = 0; i < n; i++)
                dx[i * features + c] = k * (tn * dy[i * features + c] - sdy - f * bnraw[i * features + c] * sdyraw);
        }
    }

    /// <summary><c>running = (1 − momentum)·running + momentum·batch_stat</c>, the mean and the unbiased variance (both modes).</summary>
    public static void BatchNormRunningUpdate(ReadOnlySpan<T> bnmeani, ReadOnlySpan<T> bnvarUnbiased, Span<T> runningMean, Span<T> runningVar, T momentum)
    {
        T keep = T.One - momentum;
        for (int c = 0; c < runningMean.Length; c++)
        {
            runningMean[c] = keep * runningMean[c] + momentum * bnmeani[c];
            runningVar[c] = keep * runningVar[c] + momentum * bnvarUnbiased[c];
        }
    }

    /// <summary>Batch norm at inference: <c>y = (x − running_mean)/√(running_var + eps)·gain + bias</c>.</summary>
    public static void BatchNormInference(ReadOnlySpan<T> x, ReadOnlySpan<T> gain, ReadOnlySpan<T> bias, ReadOnlySpan<T> runningMean, ReadOnlySpan<T> runningVar,
        Span<T> y, int n, int features, T eps)
    {
        for (int c = 0; c < features; c++)
        {
            T inv = T.One / T.Sqrt(runningVar[c] + eps);
            for (int i = 0; i < n; i++) y[i * features + c] = (x[i * features + c] - runningMean[c]) * inv * gain[c] + bias[c];
        }
    }

    // ------------------------------------------------------------------ tanh, relu, sigmoid

    /// <summary><c>y = tanh(x)</c>.</summary>
    public static void TanhForward(ReadOnlySpan<T> x, Span<T> y) { for (int i = 0; i < x.Length; i++) y[i] = T.Tanh(x[i]); }

    /// <summary><c>dx = (1 − y²)·dy</c>.</summary>
    public static void TanhBackward(ReadOnlySpan<T> y, ReadOnlySpan<T> dy, Span<T> dx) { for (int i = 0; i < y.Length; i++) dx[i] = (T.One - y[i] * y[i]) * dy[i]; }

    /// <summary><c>y = max(x, 0)</c>.</summary>
    public static void ReluForward(ReadOnlySpan<T> x, Span<T> y) { for (int i = 0; i < x.Length; i++) y[i] = x[i] > T.Zero ? x[i] : T.Zero; }

    /// <summary><c>dx = (x &gt; 0)·dy</c>.</summary>
    public static void ReluBackward(ReadOnlySpan<T> x, ReadOnlySpan<T> dy, Span<T> dx) { for (int i = 0; i < x.Length; i++) dx[i] = x[i] > T.Zero ? dy[i] : T.Zero; }

    /// <summary><c>y = 1/(1 + exp(−x))</c>.</summary>
    public static void SigmoidForward(ReadOnlySpan<T> x, Span<T> y) { for (int i = 0; i < x.Length; i++) y[i] = Sigmoid(x[i]); }

    /// <summary><c>dx = y·(1 − y)·dy</c>.</summary>
    public static void SigmoidBackward(ReadOnlySpan<T> y, ReadOnlySpan<T> dy, Span<T> dx) { for (int i = 0; i < y.Length; i++) dx[i] = y[i] * (T.One - y[i]) * dy[i]; }

    private static T Sigmoid(T x) => T.One / (T.One + T.Exp(-x));

    // ------------------------------------------------------------------ losses (z [n,k])

    /// <summary>
    /// Softmax cross-entropy against class ids (docs/makemore.md §4): per row, with <c>m</c> the row max,
    /// <c>loss_i = log(sum_j exp(z_ij − m)) + m − z[i, t_i]</c>; returns the mean over rows and writes
    /// <c>dz = (softmax(z) − onehot(t))/n</c>.
    /// </summary>
    public static T CrossEntropy(ReadOnlySpan<T> z, ReadOnlySpan<int> classes, Span<T> dz, int n, int k)
    {
        T loss = T.Zero, invN = T.One / Tn(n);
        for (int i = 0; i < n; i++)
        {
            var row = z.Slice(i * k, k);
            T m = row[0];
            for (int j = 1; j < k; j++) m = T.Max(m, row[j]);
            T s = T.Zero;
            for (int j = 0; j < k; j++) s += T.Exp(row[j] - m);
            loss += T.Log(s) + m - row[classes[i]];
            for (int j = 0; j < k; j++) dz[i * k + j] = T.Exp(row[j] - m) / s * invN;
            dz[i * k + classes[i]] -= invN;
        }
        return loss * invN;
    }

    /// <summary>Mean squared error over all <c>n·k</c> outputs: returns <c>mean((z − t)²)</c>; <c>dz = 2(z − t)/(n·k)</c>, <c>dt = −dz</c> (<paramref name="dt"/> may be empty).</summary>
    public static T Mse(ReadOnlySpan<T> z, ReadOnlySpan<T> t, Span<T> dz, Span<T> dt)
    {
        T s = T.Zero, nk = Tn(z.Length), two = Tn(2);
        for (int i = 0; i < z.Length; i++)
        {
            T d = z[i] - t[i];
            s += d * d;
            dz[i] = two * d / nk;
            if (!dt.IsEmpty) dt[i] = -dz[i];
        }
        return s / nk;
    }

    /// <summary>
    /// Binary cross-entropy of <c>sigmoid(z)</c> against targets in [0,1]: returns the mean of
    /// <c>max(z,0) − z·t + log(1 + exp(−|z|))</c>; <c>dz = (sigmoid(z) − t)/(n·k)</c>, <c>dt = −z/(n·k)</c>
    /// (<paramref name="dt"/> may be empty).
    /// </summary>
    public static T BceWithLogits(ReadOnlySpan<T> z, ReadOnlySpan<T> t, Span<T> dz, Span<T> dt)
    {
        T s = T.Zero, nk = Tn(z.Length);
        for (int i = 0; i < z.Length; i++)
        {
            s += T.Max(z[i], T.Zero) - z[i] * t[i] + T.Log(T.One + T.Exp(-T.Abs(z[i])));
            dz[i] = (Sigmoid(z[i]) - t[i]) / nk;
            if (!dt.IsEmpty) dt[i] = -z[i] / nk;
        }
        return s / nk;
    }

    /// <summary>The mean of all outputs (no targets): <c>dz = 1/(n·k)</c>.</summary>
    public static T Mean(ReadOnlySpan<T> z, Span<T> dz)
    {
        T s = T.Zero, nk = Tn(z.Length);
        for (int i = 0; i < z.Length; i++) { s += z[i]; dz[i] = T.One / nk; }
        return s / nk;
    }

    // out[cols] = sum over rows
    private static void SumRows(ReadOnlySpan<T> a, Span<T> o, int rows, int cols)
    {
        for (int c = 0; c < cols; c++) { T s = T.Zero; for (int i = 0; i < rows; i++) s += a[i * cols + c]; o[c] = s; }
    }
}
