using HpBackprop.Networks;

namespace HpBackprop.IO;

/// <summary>
/// Examples in a safetensors file, as the <c>grads</c> interchange gives them: <c>x</c> (I32/I64 ids <c>[n,B]</c> or
/// F32/F64 features <c>[n,D]</c>) and <c>y</c> (I32/I64 class ids <c>[n]</c>, F32/F64 targets <c>[n,k]</c>, or absent).
/// </summary>
public static class ExampleFile
{
    /// <summary>Reads the examples of <paramref name="path"/>.</summary>
    /// <exception cref="SafeTensorsFormatException">The file is malformed, or <c>x</c>/<c>y</c> are missing, of the wrong type or shape, or ids do not fit in 32 bits; the message names the file and the tensor.</exception>
    public static ExampleSet Read(string path) => Read(SafeTensorsFile.Read(path), path);

    /// <summary>Reads the examples of a file already parsed (<paramref name="source"/> names it in messages).</summary>
    public static ExampleSet Read(SafeTensorsFile file, string source)
    {
        ArgumentNullException.ThrowIfNull(file);
        if (!file.Contains("x")) throw new SafeTensorsFormatException(source, "tensor 'x' (the inputs) is missing.");
        var x = file["x"];
        if (x.Shape.Length != 2 || x.Shape[0] < 1 || x.Shape[1] < 1)
            throw new SafeTensorsFormatException(source, $"tensor 'x' has shape {Model.ShapeException.Format(x.Shape)}; [n, width] expected.");
        int n = x.Shape[0], width = x.Shape[1];
        SafeTensor? y = file.Contains("y") ? file["y"] : null;
        bool ids = x.DType is DType.I32 or DType.I64;
        if (!ids && x.DType is not (DType.F32 or DType.F64)) throw new SafeTensorsFormatException(source, $"tensor 'x' is {x.DType}; I32/I64 ids or F32/F64 features expected.");
        if (y == null)
        {
            if (ids) throw new SafeTensorsFormatException(source, "tensor 'y' is missing: ids need class-id targets.");
            return ExampleSet.FromFeatures(x.ToSingle(), width);
        }
        if (y.DType is DType.I32 or DType.I64)
        {
            if (y.Shape.Length != 1 || y.Shape[0] != n) throw new SafeTensorsFormatException(source, $"tensor 'y' has shape {Model.ShapeException.Format(y.Shape)}; class ids [{n}] expected.");
            var classes = Ints(y, "y", source);
            return ids ? ExampleSet.FromIds(Ints(x, "x", source), width, classes) : ExampleSet.FromFeatures(x.ToSingle(), width, classes);
        }
        if (y.DType is not (DType.F32 or DType.F64)) throw new SafeTensorsFormatException(source, $"tensor 'y' is {y.DType}; class ids (I32/I64) or float targets (F32/F64) expected.");
        if (ids) throw new SafeTensorsFormatException(source, "ids with float targets are not supported: a stack on ids is trained with class ids.");
        if (y.Shape.Length != 2 || y.Shape[0] != n) throw new SafeTensorsFormatException(source, $"tensor 'y' has shape {Model.ShapeException.Format(y.Shape)}; float targets [{n}, k] expected.");
        return ExampleSet.FromFeatures(x.ToSingle(), width, y.ToSingle(), y.Shape[1]);
    }

    /// <summary>I32, or I64 that fit in 32 bits.</summary>
    internal static int[] Ints(SafeTensor t, string name, string source)
    {
        try { return t.ToInt32(); }
        catch (InvalidDataException e) { throw new SafeTensorsFormatException(source, e.Message); }
    }
}
