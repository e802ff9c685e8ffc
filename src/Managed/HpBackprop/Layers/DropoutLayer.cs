using System.Globalization;
using System.Numerics;
using HpBackprop.Model;

namespace HpBackprop.Networks;

/// <summary>
/// <c>dropout:P</c> (torch.nn.Dropout(P)), elementwise, any shape: in training <c>y = x·m/(1−P)</c> with the mask
/// <c>m</c> of <see cref="DropoutMask"/> (keyed by the seed, the optimiser step, the layer and the element, so every
/// backend draws the same mask and a resumed run draws what the uninterrupted one would); <c>dx = dy·m/(1−P)</c>.
/// In inference (evaluate, predict, calibrate) the identity.
/// </summary>
internal sealed class DropoutLayer : LayerType
{
    public override LayerKind Kind => LayerKind.Dropout;
    public override string Head => "dropout";
    public override string Form => "dropout:P with 0 ≤ P < 1 (e.g. dropout:0.1)";

    public override Layer Parse(string[] parts, string text)
    {
        if (parts.Length != 2 || !float.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out float p) || !(p >= 0 && p < 1))
            throw Bad(text);
        return Layer.Dropout(p);
    }

    public override string Format(Layer l) => "dropout:" + l.Rate.ToString("R", CultureInfo.InvariantCulture);

    protected override string? Sizes(Layer l) =>
        !(l.Rate >= 0 && l.Rate < 1) ? $"Rate = {l.Rate.ToString("R", CultureInfo.InvariantCulture)}; the probability of dropping an element must be in [0, 1)"
        : NoSizes(l, "Dropout");

    public override TensorShape Output(Layer l, TensorShape input, int index, string at, Func<string> prev) => input;

    private sealed record Cache(byte[] Keep);

    public override void Forward<T>(RefContext<T> c)
    {
        if (!c.Training)
        {
            c.X.CopyTo(c.Y, 0);
            return;
        }
        var keep = new byte[c.X.Length];
        DropoutMask.Fill(keep, c.Seed, c.Index, c.Step, c.Layer.Rate);
        T scale = T.One / (T.One - T.CreateChecked((double)c.Layer.Rate));
        for (int i = 0; i < keep.Length; i++) c.Y[i] = keep[i] != 0 ? c.X[i] * scale : T.Zero;
        c.Saved = new Cache(keep);
    }

    public override void Backward<T>(RefContext<T> c)
    {
        if (c.Dx.Length == 0) return;
        var keep = ((Cache)c.Saved!).Keep;
        T scale = T.One / (T.One - T.CreateChecked((double)c.Layer.Rate));
        for (int i = 0; i < keep.Length; i++) c.Dx[i] = keep[i] != 0 ? c.Dy[i] * scale : T.Zero;
    }
}
