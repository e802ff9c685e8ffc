using HpBackprop.Model;
using HpBackprop.Networks;

namespace HpBackprop.Cuda.Gpu;

/// <summary>
/// <c>dropout</c> on the GPU: the mask of <see cref="DropoutMask"/> drawn in the kernel from Philox4x32-10 with the same key
/// as the CPU (seed, optimiser step, layer, element), recomputed in the backward; the identity in inference.
/// </summary>
internal sealed unsafe class GpuDropoutOp(Gpu g, PlanStep step, uint seed) : GpuOp(step)
{
    private readonly uint _threshold = DropoutMask.Threshold(step.Def.Rate);
    private readonly float _scale = DropoutMask.Scale(step.Def.Rate);

    public override void Forward(ulong x, ulong ids, ulong y, int rows, bool training, long step)
    {
        int count = checked(rows * Step.OutWidth);
        if (!training)
        {
            if (x != y) g.Rt.CopyOnDevice(y, x, count * 4L);
            return;
        }
        Launch("dropout_forward", x, y, count, step);
    }

    public override void Backward(ulong x, ulong ids, ulong y, ulong dy, ulong dx, int rows, long step)
    {
        if (dx != 0) Launch("dropout_backward", dy, dx, checked(rows * Step.OutWidth), step);
    }

    private void Launch(string kernel, ulong input, ulong output, int count, long step)
    {
        ulong a0 = input, a1 = output; int a2 = count; uint a3 = seed, a4 = (uint)Step.Layer, a5 = (uint)step, a6 = (uint)((ulong)step >> 32), a7 = _threshold; float a8 = _scale;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8 };
        g.Launch(g.K(kernel), new(Gpu.Blocks((count + 3) / 4, 256)), new(256), 0, args);
    }
}
