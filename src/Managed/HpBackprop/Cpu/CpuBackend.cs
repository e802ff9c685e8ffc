using HpBackprop.Data;
using HpBackprop.Model;
using HpBackprop.Training;

namespace HpBackprop.Cpu;

/// <summary>
/// The fused CPU backend: embedding gather, linear, batch norm + tanh in one pass, linear,
/// one-pass cross-entropy forward+backward, the fused batch-norm backward, the embedding
/// scatter-add and SGD over the flat buffers. All buffers are sized once in the constructor;
/// a step allocates nothing.
/// </summary>
public sealed class CpuBackend : ITrainingBackend
{
    /// <summary>Rows per chunk when evaluating or calibrating.</summary>
    public const int EvalChunk = 1024;

    private readonly int _n, _b, _e, _h, _v, _k;
    private readonly float _eps;
    // forward buffers (SPEC names)
    private readonly float[] embcat, hprebn, bnmeani, bnvar, bnvar_inv, bnraw, h, logits;
    // backward buffers
    private readonly float[] dlogits, dh, dhprebn, dembcat, scratch;
    // evaluation buffers
    private readonly float[] _evEmbcat, _evHprebn, _evH, _evLogits;
    private readonly double[] _calSum, _calSq;

    /// <summary>Creates a backend over <paramref name="parameters"/> for minibatches of <see cref="ModelConfig.BatchSize"/> rows.</summary>
    public CpuBackend(ParameterSet parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        Parameters = parameters;
        Config = parameters.Config;
        _n = Config.BatchSize; _b = Config.BlockSize; _e = Config.EmbeddingSize; _h = Config.HiddenSize; _v = Config.VocabSize;
        _k = Config.ContextWidth; _eps = (float)Config.Eps;
        embcat = new float[_n * _k]; hprebn = new float[_n * _h]; bnmeani = new float[_h]; bnvar = new float[_h]; bnvar_inv = new float[_h];
        bnraw = new float[_n * _h]; h = new float[_n * _h]; logits = new float[_n * _v];
        dlogits = new float[_n * _v]; dh = new float[_n * _h]; dhprebn = new float[_n * _h]; dembcat = new float[_n * _k]; scratch = new float[_h];
        int c = EvalChunk;
        _evEmbcat = new float[c * _k]; _evHprebn = new float[c * _h]; _evH = new float[c * _h]; _evLogits = new float[c * _v];
        _calSum = new double[_h]; _calSq = new double[_h];
    }

    /// <inheritdoc />
    public string Name => "cpu";

    /// <inheritdoc />
    public ModelConfig Config { get; }

    /// <inheritdoc />
    public ParameterSet Parameters { get; }

    /// <inheritdoc />
    public float RunningMomentum { get; set; } = 0.001f;

    /// <summary>
    /// A forward or backward buffer of the last step by SPEC name: embcat, hprebn, bnmeani, bnvar,
    /// bnvar_inv, bnraw, h, logits, dlogits, dh, dhprebn, dembcat.
    /// </summary>
    public ReadOnlySpan<float> Intermediate(string name) => name switch
    {
        "embcat" => embcat, "hprebn" => hprebn, "bnmeani" => bnmeani, "bnvar" => bnvar, "bnvar_inv" => bnvar_inv,
        "bnraw" => bnraw, "h" => h, "logits" => logits, "dlogits" => dlogits, "dh" => dh, "dhprebn" => dhprebn, "dembcat" => dembcat,
        _ => throw new ArgumentException($"the CPU backend keeps no buffer named '{name}'.", nameof(name)),
    };

    /// <inheritdoc />
    public float ForwardBackward(ReadOnlySpan<int> xb, ReadOnlySpan<int> yb)
    {
        CheckBatch(xb, yb);
        var p = Parameters;
        int n = _n;
        // forward
        Embedding.Forward(p.C, xb, embcat, n, _b, _e);
        Linear.Forward(embcat, p.W1, p.b1, hprebn, n, _k, _h);
        BatchNorm.ForwardTanh(hprebn, p.bngain, p.bnbias, bnmeani, bnvar, bnvar_inv, bnraw, h, n, _h, _eps);
        Linear.Forward(h, p.W2, p.b2, logits, n, _h, _v);
        float loss = CrossEntropy.ForwardBackward(logits, yb, dlogits, n, _v);
        // backward
        Linear.Backward(h, p.W2, dlogits, dh, p.dW2, p.db2, n, _h, _v);
        BatchNorm.Backward(dh, h, bnraw, p.bngain, bnvar_inv, dhprebn, p.dbngain, p.dbnbias, scratch, n, _h);
        Linear.Backward(embcat, p.W1, dhprebn, dembcat, p.dW1, p.db1, n, _k, _h);
        Embedding.Backward(dembcat, xb, p.dC, n, _b, _e);
        return loss;
    }

    /// <inheritdoc />
    public float Step(ReadOnlySpan<int> xb, ReadOnlySpan<int> yb, float lr)
    {
        float loss = ForwardBackward(xb, yb);
        Sgd.Update(Parameters.Data, Parameters.Grad, lr);
        UpdateRunning();
        return loss;
    }

    private void UpdateRunning()
    {
        float m = RunningMomentum;
        var mean = Parameters.RunningMean;
        var variance = Parameters.RunningVar;
        for (int c = 0; c < _h; c++)
        {
            mean[c] = (1 - m) * mean[c] + m * bnmeani[c];
            variance[c] = (1 - m) * variance[c] + m * bnvar[c];
        }
        Parameters.IsCalibrated = false;
    }

    /// <inheritdoc />
    public float Evaluate(Dataset data)
    {
        ArgumentNullException.ThrowIfNull(data);
        CheckBlock(data);
        if (data.Count == 0) throw new ArgumentException("cannot evaluate an empty data set.", nameof(data));
        double total = 0;
        for (int start = 0; start < data.Count; start += EvalChunk)
        {
            int rows = Math.Min(EvalChunk, data.Count - start);
            InferLogits(data.X.AsSpan(start * _b, rows * _b), rows, _evLogits);
            total += (double)CrossEntropy.ForwardBackward(_evLogits, data.Y.AsSpan(start, rows), default, rows, _v) * rows;
        }
        return (float)(total / data.Count);
    }

    /// <inheritdoc />
    public void Calibrate(Dataset train)
    {
        ArgumentNullException.ThrowIfNull(train);
        CheckBlock(train);
        if (train.Count < 2) throw new ArgumentException("calibration needs at least 2 examples.", nameof(train));
        Array.Clear(_calSum);
        Array.Clear(_calSq);
        // pass 1: mean; pass 2: Bessel variance about that mean (two passes, in double)
        for (int pass = 0; pass < 2; pass++)
        {
            for (int start = 0; start < train.Count; start += EvalChunk)
            {
                int rows = Math.Min(EvalChunk, train.Count - start);
                Embedding.Forward(Parameters.C, train.X.AsSpan(start * _b, rows * _b), _evEmbcat, rows, _b, _e);
                Linear.Forward(_evEmbcat, Parameters.W1, Parameters.b1, _evHprebn, rows, _k, _h);
                for (int i = 0; i < rows; i++)
                {
                    for (int c = 0; c < _h; c++)
                    {
                        double x = _evHprebn[i * _h + c];
                        if (pass == 0) _calSum[c] += x;
                        else { double d = x - _calSum[c]; _calSq[c] += d * d; }
                    }
                }
            }
            if (pass == 0) for (int c = 0; c < _h; c++) _calSum[c] /= train.Count;
        }
        for (int c = 0; c < _h; c++)
        {
            Parameters.RunningMean[c] = (float)_calSum[c];
            Parameters.RunningVar[c] = (float)(_calSq[c] / (train.Count - 1));
        }
        Parameters.IsCalibrated = true;
    }

    /// <inheritdoc />
    public void InferLogits(ReadOnlySpan<int> contexts, int rows, Span<float> logits)
    {
        if (rows < 1 || rows > EvalChunk) throw new ArgumentOutOfRangeException(nameof(rows), rows, $"rows must be in [1, {EvalChunk}].");
        if (contexts.Length != rows * _b) throw new ShapeException("contexts", [rows, _b], [contexts.Length]);
        if (logits.Length < rows * _v) throw new ShapeException("logits", [rows, _v], [logits.Length]);
        foreach (int id in contexts) if ((uint)id >= (uint)_v) throw new ArgumentOutOfRangeException(nameof(contexts), id, $"context id is outside [0, {_v}).");
        var p = Parameters;
        Embedding.Forward(p.C, contexts, _evEmbcat, rows, _b, _e);
        Linear.Forward(_evEmbcat, p.W1, p.b1, _evHprebn, rows, _k, _h);
        BatchNorm.InferenceTanh(_evHprebn, p.RunningMean, p.RunningVar, p.bngain, p.bnbias, _evH, scratch, rows, _h, _eps);
        Linear.Forward(_evH, p.W2, p.b2, logits, rows, _h, _v);
    }

    /// <inheritdoc />
    public void PullParameters() { }

    /// <inheritdoc />
    public void PushParameters() { }

    /// <inheritdoc />
    public void Dispose() { }

    private void CheckBatch(ReadOnlySpan<int> xb, ReadOnlySpan<int> yb)
    {
        if (yb.Length != _n) throw new ShapeException("Yb", [_n], [yb.Length]);
        if (xb.Length != _n * _b) throw new ShapeException("Xb", [_n, _b], [xb.Length / _b, _b]);
        for (int i = 0; i < xb.Length; i++) if ((uint)xb[i] >= (uint)_v) throw new ShapeException("Xb", $"id {xb[i]} at row {i / _b} is outside [0, {_v}).");
        for (int i = 0; i < yb.Length; i++) if ((uint)yb[i] >= (uint)_v) throw new ShapeException("Yb", $"id {yb[i]} at row {i} is outside [0, {_v}).");
    }

    private void CheckBlock(Dataset d)
    {
        if (d.BlockSize != _b) throw new ArgumentException($"the data set has block size {d.BlockSize} but the model has {_b}.", nameof(d));
    }
}
