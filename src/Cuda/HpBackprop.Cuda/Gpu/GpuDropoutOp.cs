using HpBackprop.Model;
using HpBackprop.Networks;

namespace HpBackprop.Cuda.Gpu;

/// <summary>
/// <c>dropout</c> on the GPU: the mask of <see cref="DropoutMask"/> drawn in the kernel from Philox4x32-10 with the same key
/// as the CPU (seed, optimiser step, layer, element), recomputed in the backward; the identity in inference. The step is
/// the one the device's step state holds (<see cref="StepState"/>), so a captured graph draws each replay's own masks.
/// </summary>
internal sealed unsafe class GpuDropoutOp(Gpu g, PlanStep step, uint seed, ulong stepState) : GpuOp(step)
{
    private readonly uint _threshold = DropoutMask.Threshold(step.Def.Rate);
    private readonly float _scale = DropoutMask.Scale(step.Def.Rate);

    public override void Forward(ulong x, ulong ids, ulong y, int rows, bool training)
    {
        int count = checked(rows * Step.OutWidth);
        if (!training)
        {
            if (x != y) g.Rt.CopyOnDevice(y, x, count * 4L);
            return;
        }
        Launch("dropout_forward", x, y, count);
    }

    public override void Backward(ulong x, ulong ids, ulong y, ulong dy, ulong dx, int rows)
    {
        if (dx != 0) Launch("dropout_backward", dy, dx, checked(rows * Step.OutWidth));
    }

    private void Launch(string kernel, ulong input, ulong output, int count)
    {
        ulong a0 = input, a1 = output; int a2 = count; uint a3 = seed, a4 = (uint)Step.Layer; ulong a5 = stepState; uint a6 = _threshold; float a7 = _scale;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7 };
        g.Launch(g.K(kernel), new(Gpu.Blocks((count + 3) / 4, 256)), new(256), 0, args);
    }
}
