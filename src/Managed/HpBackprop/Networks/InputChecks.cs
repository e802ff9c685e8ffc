using System.Globalization;
using System.Numerics;
using HpBackprop.Model;

namespace HpBackprop.Networks;

/// <summary>
/// Checks of the values a caller hands a network, made before any kernel reads them: ids inside the embedding table,
/// class ids inside the output, features and targets finite, BCE targets in [0, 1]. A kernel indexes memory with an id,
/// so an id outside the table is a read of arbitrary memory; a non-finite input gives a finite loss but leaves
/// non-finite values in the parameters. Each refusal is a <see cref="ShapeException"/> naming the tensor, the row and the column.
/// </summary>
internal static unsafe class InputChecks
{
    /// <summary>Every id of <paramref name="ids"/> <c>[length / width, width]</c> in [0, V) of the stack's embedding.</summary>
    public static void Ids(int* ids, long length, int width, Sequential stack, string tensor = "ids")
    {
        int v = stack.Layers[0].In;
        for (long i = 0; i < length; i++)
            if ((uint)ids[i] >= (uint)v)
                throw new ShapeException(tensor, $"id {I(ids[i])} at row {L(i / width)}, column {L(i % width)} is outside [0, {I(v)}) (layer 0, {stack.Layers[0]}).");
    }

    /// <summary>Every class id of <paramref name="classes"/> in [0, k).</summary>
    public static void Classes(int* classes, long count, int k, Sequential stack, string tensor = "classes")
    {
        for (long i = 0; i < count; i++)
            if ((uint)classes[i] >= (uint)k)
                throw new ShapeException(tensor, $"class id {I(classes[i])} at row {L(i)} is outside [0, {I(k)}) (the output width of layer {I(stack.Layers.Count - 1)}, {stack.Layers[^1]}).");
    }

    /// <summary>Every value of <paramref name="x"/> <c>[length / width, width]</c> finite.</summary>
    public static void Finite(float* x, long length, int width, string tensor)
    {
        long bad = FirstNonFinite(x, length);
        if (bad >= 0)
            throw new ShapeException(tensor, $"{F(x[bad])} at row {L(bad / width)}, column {L(bad % width)}: the {tensor} must be finite numbers.");
    }

    /// <summary>Every value of <paramref name="t"/> in [0, 1] (the targets of BCE-with-logits; NaN is outside).</summary>
    public static void Probabilities(float* t, long length, int width, string tensor)
    {
        for (long i = 0; i < length; i++)
            if (!(t[i] >= 0f && t[i] <= 1f))
                throw new ShapeException(tensor, $"{F(t[i])} at row {L(i / width)}, column {L(i % width)} is outside [0, 1]: bce_with_logits takes targets in [0, 1].");
    }

    /// <summary>The float targets of <paramref name="loss"/>: finite, and for BCE in [0, 1].</summary>
    public static void Targets(float* t, long length, int width, LossKind loss, string tensor = "targets")
    {
        if (loss == LossKind.BceWithLogits) Probabilities(t, length, width, tensor);
        else Finite(t, length, width, tensor);
    }

    /// <summary>The contents of <paramref name="data"/> (whose kinds and widths fit the network): ids, class ids, features, targets.</summary>
    public static void Contents(ExampleSet data, Sequential stack, LossKind loss, int k)
    {
        long n = data.Count, w = data.InputWidth;
        fixed (int* ids = data.Ids, cls = data.Classes)
        fixed (float* f = data.Features, t = data.Targets)
        {
            if (ids != null) Ids(ids, n * w, data.InputWidth, stack);
            if (f != null) Finite(f, n * w, data.InputWidth, "features");
            if (cls != null && loss.Targets() == TargetKind.Classes) Classes(cls, n, k, stack);
            if (t != null && loss.Targets() == TargetKind.Floats) Targets(t, n * data.TargetWidth, data.TargetWidth, loss);
        }
    }

    /// <summary>The index of the first NaN or infinity, or −1 (x − x is 0 exactly for finite x, NaN otherwise).</summary>
    private static long FirstNonFinite(float* x, long length)
    {
        long i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            int w = Vector<float>.Count;
            for (; i + w <= length; i += w)
            {
                var v = Vector.Load(x + i);
                if (!Vector.EqualsAll(v - v, Vector<float>.Zero)) break;
            }
        }
        for (; i < length; i++)
            if (!float.IsFinite(x[i])) return i;
        return -1;
    }

    private static string I(int v) => v.ToString(CultureInfo.InvariantCulture);

    private static string L(long v) => v.ToString(CultureInfo.InvariantCulture);

    private static string F(float v) => v.ToString(CultureInfo.InvariantCulture);
}
