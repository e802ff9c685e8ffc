namespace HpBackprop.Bench;

/// <summary>
/// The exercise-1 "atomic" chains in float, one array pass per docs/makemore.md §3 line, buffers allocated
/// once: the side the fused kernels are measured against.
/// </summary>
public sealed class AtomicCrossEntropy(int n, int V)
{
    private readonly float[] maxes = new float[n], norm = new float[n * V], counts = new float[n * V], sum = new float[n], sumInv = new float[n],
        probs = new float[n * V], logprobs = new float[n * V], dlogprobs = new float[n * V], dprobs = new float[n * V], dsumInv = new float[n],
        dsum = new float[n], dcounts = new float[n * V], dnorm = new float[n * V], dmaxes = new float[n];

    /// <summary>Forward chain logits → loss, then backward chain → dlogits.</summary>
    public float Run(float[] logits, int[] Yb, float[] dlogits)
    {
        for (int i = 0; i < n; i++) { float m = float.NegativeInfinity; for (int j = 0; j < V; j++) m = MathF.Max(m, logits[i * V + j]); maxes[i] = m; }
        for (int i = 0; i < n; i++) for (int j = 0; j < V; j++) norm[i * V + j] = logits[i * V + j] - maxes[i];
        for (int k = 0; k < n * V; k++) counts[k] = MathF.Exp(norm[k]);
        for (int i = 0; i < n; i++) { float s = 0; for (int j = 0; j < V; j++) s += counts[i * V + j]; sum[i] = s; }
        for (int i = 0; i < n; i++) sumInv[i] = 1f / sum[i];
        for (int i = 0; i < n; i++) for (int j = 0; j < V; j++) probs[i * V + j] = counts[i * V + j] * sumInv[i];
        for (int k = 0; k < n * V; k++) logprobs[k] = MathF.Log(probs[k]);
        float loss = 0;
        for (int i = 0; i < n; i++) loss -= logprobs[i * V + Yb[i]];
        loss /= n;
        // backward
        Array.Clear(dlogprobs);
        for (int i = 0; i < n; i++) dlogprobs[i * V + Yb[i]] = -1f / n;
        for (int k = 0; k < n * V; k++) dprobs[k] = dlogprobs[k] / probs[k];
        for (int i = 0; i < n; i++) { float s = 0; for (int j = 0; j < V; j++) s += counts[i * V + j] * dprobs[i * V + j]; dsumInv[i] = s; }
        for (int i = 0; i < n; i++) dsum[i] = -1f / (sum[i] * sum[i]) * dsumInv[i];
        for (int i = 0; i < n; i++) for (int j = 0; j < V; j++) dcounts[i * V + j] = sumInv[i] * dprobs[i * V + j] + dsum[i];
        for (int k = 0; k < n * V; k++) dnorm[k] = counts[k] * dcounts[k];
        for (int i = 0; i < n; i++) { float s = 0; for (int j = 0; j < V; j++) s += dnorm[i * V + j]; dmaxes[i] = -s; }
        for (int k = 0; k < n * V; k++) dlogits[k] = dnorm[k];
        for (int i = 0; i < n; i++)
        {
            int am = 0;
            for (int j = 1; j < V; j++) if (logits[i * V + j] > logits[i * V + am]) am = j;
            dlogits[i * V + am] += dmaxes[i];
        }
        return loss;
    }
}

/// <summary>The batch-norm (and tanh) backward of exercise 1, atomic: dh → dhpreact → … → dhprebn.</summary>
public sealed class AtomicBatchNorm(int n, int H)
{
    private readonly float[] dhpreact = new float[n * H], dbnraw = new float[n * H], dbnvarInv = new float[H], dbnvar = new float[H],
        dbndiff2 = new float[n * H], dbndiff = new float[n * H], dbnmeani = new float[H];

    /// <summary>Needs the forward's <c>bndiff</c>, <c>bnraw</c>, <c>bnvar</c>, <c>bnvar_inv</c>, <c>h</c>.</summary>
    public void Run(float[] dh, float[] h, float[] bndiff, float[] bnraw, float[] bnvar, float[] bnvarInv, float[] bngain,
        float[] dhprebn, float[] dbngain, float[] dbnbias)
    {
        for (int k = 0; k < n * H; k++) dhpreact[k] = (1f - h[k] * h[k]) * dh[k];
        Array.Clear(dbngain); for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) dbngain[c] += bnraw[i * H + c] * dhpreact[i * H + c];
        for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) dbnraw[i * H + c] = bngain[c] * dhpreact[i * H + c];
        Array.Clear(dbnbias); for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) dbnbias[c] += dhpreact[i * H + c];
        Array.Clear(dbnvarInv); for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) dbnvarInv[c] += bndiff[i * H + c] * dbnraw[i * H + c];
        for (int c = 0; c < H; c++) dbnvar[c] = -0.5f * MathF.Pow(bnvar[c] + 1e-5f, -1.5f) * dbnvarInv[c];
        for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) dbndiff2[i * H + c] = 1f / (n - 1) * dbnvar[c];
        for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) dbndiff[i * H + c] = bnvarInv[c] * dbnraw[i * H + c] + 2 * bndiff[i * H + c] * dbndiff2[i * H + c];
        Array.Clear(dbnmeani); for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) dbnmeani[c] -= dbndiff[i * H + c];
        for (int i = 0; i < n; i++) for (int c = 0; c < H; c++) dhprebn[i * H + c] = dbndiff[i * H + c] + 1f / n * dbnmeani[c];
    }
}
