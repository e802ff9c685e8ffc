using System.Numerics;
using HpBackprop.Reference;

namespace HpBackprop.Networks;

/// <summary>
/// <c>layernorm:F</c> (torch.nn.LayerNorm(F), elementwise affine): each row of <c>x [n,F]</c> normalised over its F
/// features with the biased variance, the same in training and inference:
/// <c>mu = mean_j x</c>, <c>var = mean_j (x − mu)²</c>, <c>r = (var + eps)^−½</c>, <c>xhat = (x − mu)·r</c>,
/// <c>y = weight·xhat + bias</c>. Backward per row: <c>g = dy·weight</c>,
/// <c>dx = r·(g − mean_j g − xhat·mean_j(g·xhat))</c>; <c>dweight = sum0(dy·xhat)</c>, <c>dbias = sum0(dy)</c>.
/// Parameters <c>{i}.weight</c>, <c>{i}.bias</c> <c>[F]</c>, initialised 1 and 0 as in PyTorch.
/// </summary>
internal sealed class LayerNormLayer : LayerType
{
    public override LayerKind Kind => LayerKind.LayerNorm;
    public override string Head => "layernorm";
    public override string Form => "layernorm:F (e.g. layernorm:200)";

    public override Layer Parse(string[] parts, string text)
    {
        if (parts.Length != 2) throw Bad(text);
        return Layer.LayerNorm(Positive(parts[1], text));
    }

    public override string Format(Layer l) => $"layernorm:{I(l.In)}";

    protected override string? Sizes(Layer l) => SameWidth(l, "layer norm", "LayerNorm");

    public override TensorShape Output(Layer l, TensorShape input, int index, string at, Func<string> prev)
    {
        if (input.Rows != 0) throw new StackException($"{at} takes [n,{l.In}] but {prev()} gives {input}: add 'flatten' after the embedding.");
        if (input.Width != l.In) throw new StackException($"{at} takes {l.In} features but {prev()} gives {input.Width}.");
        return input;
    }

    public override IEnumerable<(string, int[])> Parameters(Layer l) => [("weight", [l.In]), ("bias", [l.In])];

    public override int InitPhase => 3;

    /// <summary>weight 1, bias 0 (PyTorch's); nothing is drawn.</summary>
    public override void Initialize(Layer l, int index, InitContext c)
    {
        c.Value(index, "weight").Fill(1f);
        c.Value(index, "bias").Clear();
    }

    private sealed record Cache<T>(T[] Xhat, T[] R);

    public override void Forward<T>(RefContext<T> c)
    {
        int n = c.N, f = c.Layer.In;
        T tf = T.CreateChecked(f);
        var w = c.P("weight"); var b = c.P("bias");
        var xhat = new T[n * f]; var r = new T[n];
        for (int i = 0; i < n; i++)
        {
            var x = c.X.AsSpan(i * f, f);
            T s = T.Zero;
            foreach (T v in x) s += v;
            T mu = s / tf;
            T q = T.Zero;
            foreach (T v in x) q += (v - mu) * (v - mu);
            r[i] = T.One / T.Sqrt(q / tf + c.Eps);
            for (int j = 0; j < f; j++)
            {
                xhat[i * f + j] = (x[j] - mu) * r[i];
                c.Y[i * f + j] = w[j] * xhat[i * f + j] + b[j];
            }
        }
        c.Saved = new Cache<T>(xhat, r);
    }

    public override void Backward<T>(RefContext<T> c)
    {
        var s = (Cache<T>)c.Saved!;
        int n = c.N, f = c.Layer.In;
        T tf = T.CreateChecked(f);
        var w = c.P("weight"); var dw = c.G("weight"); var db = c.G("bias");
        Array.Clear(dw); Array.Clear(db);
        for (int i = 0; i < n; i++)
        {
            T a = T.Zero, m = T.Zero;
            for (int j = 0; j < f; j++)
            {
                T dyv = c.Dy[i * f + j], xh = s.Xhat[i * f + j];
                dw[j] += dyv * xh;
                db[j] += dyv;
                T g = dyv * w[j];
                a += g;
                m += g * xh;
            }
            if (c.Dx.Length == 0) continue;
            a /= tf; m /= tf;
            for (int j = 0; j < f; j++) c.Dx[i * f + j] = s.R[i] * (c.Dy[i * f + j] * w[j] - a - s.Xhat[i * f + j] * m);
        }
    }
}
