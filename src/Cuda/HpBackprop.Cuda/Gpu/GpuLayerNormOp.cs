using HpBackprop.Networks;

namespace HpBackprop.Cuda.Gpu;

/// <summary>
/// <c>layernorm</c> on the GPU: one warp per row forward (keeping the row's mean and 1/σ for the backward) and backward for
/// dx; dweight and dbias as per-chunk column partial sums finished in order (native/kernels/layernorm.cu).
/// </summary>
internal sealed unsafe class GpuLayerNormOp : GpuOp
{
    private readonly Gpu _g;
    private readonly ulong _w, _b, _dw, _db, _mean, _rstd, _p1, _p2;
    private readonly int _f;
    private readonly float _eps;

    public GpuLayerNormOp(Gpu g, DeviceStore s, PlanStep step, int rows, float eps) : base(step)
    {
        _g = g;
        _f = step.Def.In;
        _eps = eps;
        _w = s.P(LayerType.Name(step.Layer, "weight")); _b = s.P(LayerType.Name(step.Layer, "bias"));
        _dw = s.G(LayerType.Name(step.Layer, "weight")); _db = s.G(LayerType.Name(step.Layer, "bias"));
        _mean = g.Alloc(rows); _rstd = g.Alloc(rows);
        int chunks = g.Chunks(rows);
        if (chunks > 1) { _p1 = g.Alloc((long)chunks * _f); _p2 = g.Alloc((long)chunks * _f); }
    }

    public override void Forward(ulong x, ulong ids, ulong y, int rows, bool training)
    {
        ulong a0 = x, a1 = _w, a2 = _b, a3 = y, a4 = training ? _mean : 0, a5 = training ? _rstd : 0; int a6 = rows, a7 = _f; float a8 = _eps;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8 };
        _g.Launch(_g.K("layernorm_forward"), new(Gpu.Blocks(rows, 8)), new(256), 0, args);
    }

    public override void Backward(ulong x, ulong ids, ulong y, ulong dy, ulong dx, int rows)
    {
        int chunks = _g.Chunks(rows);
        {
            ulong a0 = dy, a1 = x, a2 = _mean, a3 = _rstd; int a4 = rows, a5 = _f, a6 = _g.RowsPerChunk; ulong a7 = chunks == 1 ? _dw : _p1, a8 = chunks == 1 ? _db : _p2;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8 };
            _g.Launch(_g.K("layernorm_param_partials"), new(Gpu.Blocks(_f, 32), (uint)chunks), new(32, 8), 32 * 8 * 4, args);
        }
        if (chunks > 1)
        {
            _g.FinishColumns(_p1, chunks, _f, _dw);
            _g.FinishColumns(_p2, chunks, _f, _db);
        }
        if (dx == 0) return;
        {
            ulong a0 = dy, a1 = x, a2 = _w, a3 = _mean, a4 = _rstd, a5 = dx; int a6 = rows, a7 = _f;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7 };
            _g.Launch(_g.K("layernorm_backward"), new(Gpu.Blocks(rows, 8)), new(256), 0, args);
        }
    }
}
