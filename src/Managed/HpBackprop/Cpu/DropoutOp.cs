using HpBackprop.Model;

namespace HpBackprop.Cpu;

/// <summary>
/// <c>dropout:P</c> on the CPU: in training <c>y = x·m·scale</c> with the mask of <see cref="DropoutMask"/> for
/// (seed, the step of <paramref name="state"/>, layer, element) and <c>scale = 1/(1−P)</c>; backward <c>dx = dy·m·scale</c>
/// with the forward's mask (kept as bytes). In inference the identity.
/// </summary>
internal sealed unsafe class DropoutOp(float rate, int layer, uint seed, StepState state, int rows, int width) : LayerOp
{
    private readonly byte[] _keep = new byte[checked(rows * width)];
    private readonly uint _threshold = DropoutMask.Threshold(rate);
    private readonly float _scale = DropoutMask.Scale(rate);

    public override string Pattern => "dropout (Philox4x32-10 mask)";

    public override void Forward(float* x, int* ids, float* y, int rows, bool training)
    {
        long count = (long)rows * OutWidth;
        if (!training)
        {
            if (x != y) Buffer.MemoryCopy(x, y, count * 4, count * 4);
            return;
        }
        long step = state.Step;
        uint lo = (uint)step, hi = (uint)((ulong)step >> 32), t = _threshold;
        float s = _scale;
        fixed (byte* keep = _keep)
        {
            for (long g = 0; g * 4 < count; g++)
            {
                var (a, b, c, d) = Philox.Block((uint)g, 0, lo, hi, seed, (uint)layer);
                long i = g * 4;
                if (i + 4 <= count)
                {
                    keep[i] = a >= t ? (byte)1 : (byte)0; y[i] = a >= t ? x[i] * s : 0f;
                    keep[i + 1] = b >= t ? (byte)1 : (byte)0; y[i + 1] = b >= t ? x[i + 1] * s : 0f;
                    keep[i + 2] = c >= t ? (byte)1 : (byte)0; y[i + 2] = c >= t ? x[i + 2] * s : 0f;
                    keep[i + 3] = d >= t ? (byte)1 : (byte)0; y[i + 3] = d >= t ? x[i + 3] * s : 0f;
                }
                else
                {
                    for (long j = i; j < count; j++)
                    {
                        bool k = (j - i) switch { 0 => a, 1 => b, _ => c } >= t;
                        keep[j] = k ? (byte)1 : (byte)0;
                        y[j] = k ? x[j] * s : 0f;
                    }
                }
            }
        }
    }

    public override void Backward(float* x, int* ids, float* y, float* dy, float* dx, int rows)
    {
        if (dx == null) return;
        long count = (long)rows * OutWidth;
        float s = _scale;
        fixed (byte* keep = _keep)
            for (long i = 0; i < count; i++) dx[i] = keep[i] != 0 ? dy[i] * s : 0f;
    }
}
