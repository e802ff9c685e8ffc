namespace HpBackprop.Model;

/// <summary>Where one named parameter lives in the flat buffers.</summary>
/// <param name="Name">The makemore name (C, W1, b1, W2, b2, bngain, bnbias).</param>
/// <param name="Offset">First element in <see cref="ParameterSet.Data"/> and <see cref="ParameterSet.Grad"/>.</param>
/// <param name="Shape">The makemore shape.</param>
internal sealed record ParameterInfo(string Name, int Offset, int[] Shape)
{
    /// <summary>Number of elements.</summary>
    public int Length => Shape.Aggregate(1, (a, b) => a * b);
}

/// <summary>
/// All parameters of the MLP in one flat buffer, all their gradients in another of the same
/// layout, with named views (docs/design.md: one SGD update, one device copy, one checkpoint format).
/// Each tensor starts on a 64-byte boundary of the buffer so vector loads line up.
/// Also holds the batch-norm statistics used at inference (not trained by SGD).
/// </summary>
internal sealed class ParameterSet
{
    /// <summary>The parameter names in buffer order.</summary>
    public static readonly IReadOnlyList<string> Names = ["C", "W1", "b1", "W2", "b2", "bngain", "bnbias"];

    private const int Align = 16; // floats
    private readonly ParameterInfo[] _infos;

    /// <summary>Allocates zeroed parameters for <paramref name="config"/>.</summary>
    public ParameterSet(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        Config = config.Validate();
        int v = config.VocabSize, e = config.EmbeddingSize, k = config.ContextWidth, h = config.HiddenSize;
        int[][] shapes = [[v, e], [k, h], [h], [h, v], [v], [1, h], [1, h]];
        _infos = new ParameterInfo[shapes.Length];
        int offset = 0;
        for (int i = 0; i < shapes.Length; i++)
        {
            _infos[i] = new ParameterInfo(Names[i], offset, shapes[i]);
            offset += (_infos[i].Length + Align - 1) / Align * Align;
        }
        Data = GC.AllocateUninitializedArray<float>(offset, pinned: true);
        Grad = GC.AllocateUninitializedArray<float>(offset, pinned: true);
        Array.Clear(Data);
        Array.Clear(Grad);
        RunningMean = new float[h];
        RunningVar = new float[h];
        RunningVar.AsSpan().Fill(1f);
    }

    /// <summary>The model dimensions.</summary>
    public ModelConfig Config { get; }

    /// <summary>All parameters, flat (padding between tensors is kept at zero).</summary>
    public float[] Data { get; }

    /// <summary>All gradients, same layout as <see cref="Data"/>.</summary>
    public float[] Grad { get; }

    /// <summary>Where each parameter lives, in buffer order.</summary>
    public IReadOnlyList<ParameterInfo> Layout => _infos;

    /// <summary>
    /// Batch-norm mean used at inference: a running average during training, replaced by the
    /// full-training-set mean when calibrated.
    /// </summary>
    public float[] RunningMean { get; }

    /// <summary>Batch-norm variance (Bessel-corrected) used at inference; see <see cref="RunningMean"/>.</summary>
    public float[] RunningVar { get; }

    /// <summary>Whether <see cref="RunningMean"/>/<see cref="RunningVar"/> come from a calibration pass over the training split.</summary>
    public bool IsCalibrated { get; set; }

    /// <summary>Looks up a parameter by makemore name.</summary>
    public ParameterInfo Info(string name) =>
        Array.Find(_infos, p => p.Name == name) ?? throw new ArgumentException($"no parameter named '{name}'; the names are {string.Join(", ", Names)}.", nameof(name));

    /// <summary>The values of a parameter.</summary>
    public Span<float> Value(string name) { var p = Info(name); return Data.AsSpan(p.Offset, p.Length); }

    /// <summary>The gradient of a parameter.</summary>
    public Span<float> Gradient(string name) { var p = Info(name); return Grad.AsSpan(p.Offset, p.Length); }

    /// <summary>Embedding table <c>C [V,E]</c>.</summary>
    public Span<float> C => View(Data, 0);
    /// <summary>First layer weights <c>W1 [B·E,H]</c>.</summary>
    public Span<float> W1 => View(Data, 1);
    /// <summary>First layer bias <c>b1 [H]</c>.</summary>
    public Span<float> b1 => View(Data, 2);
    /// <summary>Second layer weights <c>W2 [H,V]</c>.</summary>
    public Span<float> W2 => View(Data, 3);
    /// <summary>Second layer bias <c>b2 [V]</c>.</summary>
    public Span<float> b2 => View(Data, 4);
    /// <summary>Batch-norm gain <c>bngain [1,H]</c>.</summary>
    public Span<float> bngain => View(Data, 5);
    /// <summary>Batch-norm bias <c>bnbias [1,H]</c>.</summary>
    public Span<float> bnbias => View(Data, 6);

    /// <summary>Gradient <c>dC</c>.</summary>
    public Span<float> dC => View(Grad, 0);
    /// <summary>Gradient <c>dW1</c>.</summary>
    public Span<float> dW1 => View(Grad, 1);
    /// <summary>Gradient <c>db1</c>.</summary>
    public Span<float> db1 => View(Grad, 2);
    /// <summary>Gradient <c>dW2</c>.</summary>
    public Span<float> dW2 => View(Grad, 3);
    /// <summary>Gradient <c>db2</c>.</summary>
    public Span<float> db2 => View(Grad, 4);
    /// <summary>Gradient <c>dbngain</c>.</summary>
    public Span<float> dbngain => View(Grad, 5);
    /// <summary>Gradient <c>dbnbias</c>.</summary>
    public Span<float> dbnbias => View(Grad, 6);

    private Span<float> View(float[] buffer, int i) => buffer.AsSpan(_infos[i].Offset, _infos[i].Length);

    /// <summary>
    /// Fills the parameters with docs/makemore.md §2's initialisation (exercise 4), drawing standard normals
    /// from a generator seeded with <paramref name="seed"/>: C ~ N(0,1), W1 ~ N(0,1)·(5/3)/√(B·E),
    /// b1, W2, b2 ~ N(0,1)·0.1, bngain ~ N(0,1)·0.1 + 1, bnbias ~ N(0,1)·0.1.
    /// </summary>
    public void Initialize(int seed)
    {
        var rng = new NormalRng(seed);
        float w1Scale = (float)(5.0 / 3.0 / Math.Sqrt(Config.ContextWidth));
        Fill(C, rng, 1f, 0f);
        Fill(W1, rng, w1Scale, 0f);
        Fill(b1, rng, 0.1f, 0f);
        Fill(W2, rng, 0.1f, 0f);
        Fill(b2, rng, 0.1f, 0f);
        Fill(bngain, rng, 0.1f, 1f);
        Fill(bnbias, rng, 0.1f, 0f);
        Array.Clear(Grad);
        Array.Clear(RunningMean);
        RunningVar.AsSpan().Fill(1f);
        IsCalibrated = false;
    }

    private static void Fill(Span<float> t, NormalRng rng, float scale, float shift)
    {
        for (int i = 0; i < t.Length; i++) t[i] = (float)rng.Next() * scale + shift;
    }

    /// <summary>Copies values (not gradients) and batch-norm statistics from another set of the same configuration.</summary>
    public void CopyFrom(ParameterSet other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other.Config != Config) throw new ArgumentException($"cannot copy parameters of {other.Config} into {Config}.", nameof(other));
        other.Data.CopyTo(Data, 0);
        other.RunningMean.CopyTo(RunningMean, 0);
        other.RunningVar.CopyTo(RunningVar, 0);
        IsCalibrated = other.IsCalibrated;
    }

    /// <summary>Checks a tensor's shape against the parameter of that name; throws <see cref="ShapeException"/> naming both shapes.</summary>
    public void ValidateShape(string name, ReadOnlySpan<int> shape)
    {
        var p = Info(name);
        if (!shape.SequenceEqual(p.Shape))
        {
            // b1 [H] / b2 [V] may come as [1,H]/[1,V]; bngain/bnbias [1,H] may come as [H]: same data, accept.
            int len = 1; foreach (int d in shape) len *= d;
            bool sameVector = len == p.Length && shape.Length <= 2 && p.Shape.Length <= 2 && (shape.Length == 1 || shape[0] == 1) && (p.Shape.Length == 1 || p.Shape[0] == 1);
            if (!sameVector) throw new ShapeException(name, p.Shape, shape);
        }
    }
}
