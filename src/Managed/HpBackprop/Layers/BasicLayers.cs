using System.Numerics;
using HpBackprop.Reference;

namespace HpBackprop.Networks;

/// <summary><c>embedding:VxE</c>: ids <c>[n,B]</c> → rows of a <c>[V,E]</c> table, <c>[n,B,E]</c> (torch.nn.Embedding(V, E)).</summary>
internal sealed class EmbeddingLayer : LayerType
{
    public override LayerKind Kind => LayerKind.Embedding;
    public override string Head => "embedding";
    public override string Form => "embedding:VxE (e.g. embedding:27x10)";

    public override Layer Parse(string[] parts, string text)
    {
        if (parts.Length != 2) throw Bad(text);
        var (v, e) = Pair(parts[1], text);
        return Layer.Embedding(v, e);
    }

    public override string Format(Layer l) => $"embedding:{I(l.In)}x{I(l.Out)}";

    protected override string? Sizes(Layer l) => BothPositive(l);

    public override TensorShape Output(Layer l, TensorShape input, int index, string at, Func<string> prev)
    {
        if (index != 0) throw new StackException($"{at}: an embedding takes ids, so it must be the first layer.");
        return new TensorShape(false, input.Width, l.Out);
    }

    public override IEnumerable<(string, int[])> Parameters(Layer l) => [("weight", [l.In, l.Out])];

    public override int InitPhase => 0;

    public override void Initialize(Layer l, int index, InitContext c) => c.Normal(c.Value(index, "weight"), 1f, 0f);

    public override void Forward<T>(RefContext<T> c) => ReferenceLayers<T>.EmbeddingForward(c.Ids, c.P("weight"), c.Y, c.Layer.Out);

    public override void Backward<T>(RefContext<T> c) => ReferenceLayers<T>.EmbeddingBackward(c.Ids, c.Dy, c.G("weight"), c.Layer.Out);
}

/// <summary><c>flatten</c>: <c>[n,B,E]</c> → <c>[n,B·E]</c> (torch.nn.Flatten(1)); a no-op on <c>[n,D]</c>. Row-major data is unchanged, so it is a view.</summary>
internal sealed class FlattenLayer : LayerType
{
    public override LayerKind Kind => LayerKind.Flatten;
    public override string Head => "flatten";
    public override string Form => "flatten";

    public override Layer Parse(string[] parts, string text)
    {
        NoArguments(parts, text);
        return Layer.Flatten();
    }

    public override string Format(Layer l) => "flatten";

    protected override string? Sizes(Layer l) => NoSizes(l, "Flatten");

    public override TensorShape Output(Layer l, TensorShape input, int index, string at, Func<string> prev) => new(false, 0, input.PerRow);

    public override void Forward<T>(RefContext<T> c) => ReferenceLayers<T>.FlattenForward(c.X, c.Y);

    public override void Backward<T>(RefContext<T> c)
    {
        if (c.Dx.Length != 0) ReferenceLayers<T>.FlattenBackward(c.Dy, c.Dx);
    }
}

/// <summary><c>linear:INxOUT[:nobias]</c>: <c>y = x·weightᵀ + bias</c>, weight <c>[OUT,IN]</c> (torch.nn.Linear).</summary>
internal sealed class LinearLayer : LayerType
{
    public override LayerKind Kind => LayerKind.Linear;
    public override string Head => "linear";
    public override string Form => "linear:INxOUT or linear:INxOUT:nobias (e.g. linear:30x200)";

    public override Layer Parse(string[] parts, string text)
    {
        if (parts.Length is < 2 or > 3) throw Bad(text);
        var (i, o) = Pair(parts[1], text);
        if (parts.Length == 3 && !parts[2].Equals("nobias", StringComparison.OrdinalIgnoreCase)) throw Bad(text);
        return Layer.Linear(i, o, parts.Length == 2);
    }

    public override string Format(Layer l) => $"linear:{I(l.In)}x{I(l.Out)}" + (l.HasBias ? "" : ":nobias");

    protected override string? Sizes(Layer l) => BothPositive(l);

    public override TensorShape Output(Layer l, TensorShape input, int index, string at, Func<string> prev)
    {
        if (input.Rows != 0) throw new StackException($"{at} takes [n,{l.In}] but {prev()} gives {input}: add 'flatten' after the embedding.");
        if (input.Width != l.In) throw new StackException($"{at} takes {l.In} features but {prev()} gives {input.Width}.");
        return new TensorShape(false, 0, l.Out);
    }

    public override IEnumerable<(string, int[])> Parameters(Layer l) => l.HasBias ? [("weight", [l.Out, l.In]), ("bias", [l.Out])] : [("weight", [l.Out, l.In])];

    public override int InitPhase => 1;

    /// <summary>
    /// weight ~ N(0,1)·gain/√IN drawn as its transpose <c>[IN,OUT]</c> row by row (gain 5/3 when a tanh follows, √2 for ReLU, 1
    /// otherwise, looking past a batch norm, a layer norm or a dropout), or N(0,1)·0.1 for the last linear layer; bias ~ N(0,1)·0.1.
    /// </summary>
    public override void Initialize(Layer l, int index, InitContext c)
    {
        var layers = c.Stack.Layers;
        bool last = true;
        for (int j = index + 1; j < layers.Count; j++) if (layers[j].Kind == LayerKind.Linear) last = false;
        float scale = last ? 0.1f : (float)(Gain() / Math.Sqrt(l.In));
        var w = c.Value(index, "weight");
        for (int r = 0; r < l.In; r++)
            for (int o = 0; o < l.Out; o++) w[o * l.In + r] = (float)c.Rng.Next() * scale;
        if (l.HasBias) c.Normal(c.Value(index, "bias"), 0.1f, 0f);

        double Gain()
        {
            int j = index + 1;
            while (j < layers.Count && layers[j].Kind is LayerKind.BatchNorm or LayerKind.LayerNorm or LayerKind.Dropout) j++;
            return j < layers.Count ? layers[j].Kind switch { LayerKind.Tanh => 5.0 / 3.0, LayerKind.Relu => Math.Sqrt(2), _ => 1.0 } : 1.0;
        }
    }

    public override void Forward<T>(RefContext<T> c) =>
        ReferenceLayers<T>.LinearForward(c.X, c.P("weight"), c.Layer.HasBias ? c.P("bias") : default, c.Y, c.N, c.Layer.In, c.Layer.Out);

    public override void Backward<T>(RefContext<T> c) =>
        ReferenceLayers<T>.LinearBackward(c.X, c.P("weight"), c.Dy, c.Dx, c.G("weight"), c.Layer.HasBias ? c.G("bias") : default, c.N, c.Layer.In, c.Layer.Out);
}

/// <summary><c>batchnorm:F[:biased]</c>: batch normalisation over the rows of <c>[n,F]</c> (torch.nn.BatchNorm1d, see <see cref="BatchNormMode"/>).</summary>
internal sealed class BatchNormLayer : LayerType
{
    public override LayerKind Kind => LayerKind.BatchNorm;
    public override string Head => "batchnorm";
    public override string Form => "batchnorm:F or batchnorm:F:biased (e.g. batchnorm:200)";

    public override Layer Parse(string[] parts, string text)
    {
        if (parts.Length is < 2 or > 3) throw Bad(text);
        int f = Positive(parts[1], text);
        if (parts.Length == 3 && !parts[2].Equals("biased", StringComparison.OrdinalIgnoreCase)) throw Bad(text);
        return Layer.BatchNorm1d(f, parts.Length == 3 ? BatchNormMode.Biased : BatchNormMode.Bessel);
    }

    public override string Format(Layer l) => $"batchnorm:{I(l.In)}" + (l.Mode == BatchNormMode.Biased ? ":biased" : "");

    protected override string? Sizes(Layer l) => SameWidth(l, "batch norm", "BatchNorm1d");

    public override TensorShape Output(Layer l, TensorShape input, int index, string at, Func<string> prev)
    {
        if (input.Rows != 0) throw new StackException($"{at} takes [n,{l.In}] but {prev()} gives {input}: add 'flatten' after the embedding.");
        if (input.Width != l.In) throw new StackException($"{at} takes {l.In} features but {prev()} gives {input.Width}.");
        return new TensorShape(false, 0, l.Out);
    }

    public override IEnumerable<(string, int[])> Parameters(Layer l) => [("weight", [l.In]), ("bias", [l.In])];

    public override int RunningFeatures(Layer l) => l.In;

    public override int InitPhase => 2;

    /// <summary>weight ~ 1 + N(0,1)·0.1, bias ~ N(0,1)·0.1.</summary>
    public override void Initialize(Layer l, int index, InitContext c)
    {
        c.Normal(c.Value(index, "weight"), 0.1f, 1f);
        c.Normal(c.Value(index, "bias"), 0.1f, 0f);
    }

    private sealed record Cache<T>(T[] Raw, T[] VarInv);

    public override void Forward<T>(RefContext<T> c)
    {
        int n = c.N, f = c.Layer.In;
        if (!c.Training)
        {
            ReferenceLayers<T>.BatchNormInference(c.X, c.P("weight"), c.P("bias"), c.Running.RunningMean(c.Index), c.Running.RunningVar(c.Index), c.Y, n, f, c.Eps);
            return;
        }
        var raw = new T[n * f]; var mean = new T[f]; var varInv = new T[f]; var unbiased = new T[f];
        ReferenceLayers<T>.BatchNormForward(c.X, c.P("weight"), c.P("bias"), c.Y, raw, mean, varInv, unbiased, n, f, c.Layer.Mode, c.Eps);
        ReferenceLayers<T>.BatchNormRunningUpdate(mean, unbiased, c.Running.RunningMean(c.Index), c.Running.RunningVar(c.Index), c.Momentum);
        c.Running.Track(c.Index);
        c.Saved = new Cache<T>(raw, varInv);
    }

    public override void Backward<T>(RefContext<T> c)
    {
        var s = (Cache<T>)c.Saved!;
        ReferenceLayers<T>.BatchNormBackward(c.Dy, s.Raw, s.VarInv, c.P("weight"), c.Dx, c.G("weight"), c.G("bias"), c.N, c.Layer.In, c.Layer.Mode);
    }
}

/// <summary><c>tanh</c>, <c>relu</c>, <c>sigmoid</c>: elementwise, any shape.</summary>
internal sealed class ActivationLayer(LayerKind kind, string head) : LayerType
{
    public override LayerKind Kind => kind;
    public override string Head => head;
    public override string Form => head;
    public override bool IsActivation => true;

    public override Layer Parse(string[] parts, string text)
    {
        NoArguments(parts, text);
        return new Layer(kind);
    }

    public override string Format(Layer l) => head;

    protected override string? Sizes(Layer l) => NoSizes(l, kind.ToString());

    public override TensorShape Output(Layer l, TensorShape input, int index, string at, Func<string> prev) => input;

    public override void Forward<T>(RefContext<T> c)
    {
        switch (kind)
        {
            case LayerKind.Tanh: ReferenceLayers<T>.TanhForward(c.X, c.Y); break;
            case LayerKind.Relu: ReferenceLayers<T>.ReluForward(c.X, c.Y); break;
            default: ReferenceLayers<T>.SigmoidForward(c.X, c.Y); break;
        }
    }

    public override void Backward<T>(RefContext<T> c)
    {
        if (c.Dx.Length == 0) return;
        switch (kind)
        {
            case LayerKind.Tanh: ReferenceLayers<T>.TanhBackward(c.Y, c.Dy, c.Dx); break;
            case LayerKind.Relu: ReferenceLayers<T>.ReluBackward(c.X, c.Dy, c.Dx); break;
            default: ReferenceLayers<T>.SigmoidBackward(c.Y, c.Dy, c.Dx); break;
        }
    }
}
