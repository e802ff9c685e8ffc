using System.Numerics.Tensors;

namespace HpBackprop.Cpu;

/// <summary>
/// <c>layernorm:F</c> on the CPU, forward and backward side by side (docs/stacks.md): per row of <c>x [n,F]</c>,
/// <c>mu = mean(x)</c>, <c>var = mean((x − mu)²)</c>, <c>r = (var + eps)^−½</c>, <c>xhat = (x − mu)·r</c>,
/// <c>y = weight·xhat + bias</c>; backward <c>g = dy·weight</c>, <c>dx = r·(g − mean(g) − xhat·mean(g·xhat))</c>,
/// <c>dweight = sum0(dy·xhat)</c>, <c>dbias = sum0(dy)</c> (rows added in order). The training forward keeps xhat and r.
/// </summary>
internal sealed unsafe class LayerNormOp : LayerOp
{
    private readonly float* _w, _b, _dw, _db;
    private readonly int _f;
    private readonly float _eps;
    private readonly float[] _xhat, _r, _tmp;

    public LayerNormOp(float* weight, float* bias, float* dweight, float* dbias, int features, int rows, float eps)
    {
        _w = weight; _b = bias; _dw = dweight; _db = dbias; _f = features; _eps = eps;
        _xhat = new float[checked(rows * features)];
        _r = new float[rows];
        _tmp = new float[features];
    }

    public override string Pattern => "layernorm";

    public override void Forward(float* x, int* ids, float* y, int rows, bool training)
    {
        int f = _f;
        var w = new ReadOnlySpan<float>(_w, f);
        var b = new ReadOnlySpan<float>(_b, f);
        for (int i = 0; i < rows; i++)
        {
            var xi = new ReadOnlySpan<float>(x + (long)i * f, f);
            var yi = new Span<float>(y + (long)i * f, f);
            var xh = training ? _xhat.AsSpan(i * f, f) : yi;
            float mu = TensorPrimitives.Sum(xi) / f;
            TensorPrimitives.Subtract(xi, mu, xh);
            float r = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares((ReadOnlySpan<float>)xh) / f + _eps);
            TensorPrimitives.Multiply(xh, r, xh);
            TensorPrimitives.FusedMultiplyAdd(xh, w, b, yi);
            if (training) _r[i] = r;
        }
    }

    public override void Backward(float* x, int* ids, float* y, float* dy, float* dx, int rows)
    {
        int f = _f;
        var w = new ReadOnlySpan<float>(_w, f);
        var dw = new Span<float>(_dw, f);
        var db = new Span<float>(_db, f);
        dw.Clear();
        db.Clear();
        var g = _tmp.AsSpan();
        for (int i = 0; i < rows; i++)
        {
            var dyi = new ReadOnlySpan<float>(dy + (long)i * f, f);
            var xh = new ReadOnlySpan<float>(_xhat, i * f, f);
            TensorPrimitives.MultiplyAdd(dyi, xh, dw, dw);
            TensorPrimitives.Add(db, dyi, db);
            if (dx == null) continue;
            TensorPrimitives.Multiply(dyi, w, g);
            float a = TensorPrimitives.Sum((ReadOnlySpan<float>)g) / f, m = TensorPrimitives.Dot((ReadOnlySpan<float>)g, xh) / f;
            var dxi = new Span<float>(dx + (long)i * f, f);
            TensorPrimitives.Subtract((ReadOnlySpan<float>)g, a, dxi);
            TensorPrimitives.MultiplyAdd(xh, -m, dxi, dxi);
            TensorPrimitives.Multiply(dxi, _r[i], dxi);
        }
    }
}
