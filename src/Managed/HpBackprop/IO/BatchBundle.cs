using System.Globalization;
using HpBackprop.Model;

namespace HpBackprop.IO;

/// <summary>
/// One minibatch and a full set of parameters read from a safetensors file: the input of the
/// <c>grads</c> interchange and of the oracle bundles. Needs <c>Xb [n,B]</c> and <c>Yb [n]</c>
/// (I32 or I64) and <c>C, W1, b1, W2, b2, bngain, bnbias</c> (F32 or F64, docs/makemore.md §2 shapes);
/// other tensors are ignored. The dimensions are read off the shapes and checked against each other.
/// </summary>
internal sealed class BatchBundle
{
    private BatchBundle(ModelConfig config, int[] xb, int[] yb, Dictionary<string, double[]> parameters, DType floatType, SafeTensorsFile file)
    {
        Config = config; Xb = xb; Yb = yb; Parameters = parameters; FloatType = floatType; File = file;
    }

    /// <summary>The dimensions, with <see cref="ModelConfig.BatchSize"/> = n.</summary>
    public ModelConfig Config { get; }

    /// <summary>Contexts <c>[n,B]</c>.</summary>
    public int[] Xb { get; }

    /// <summary>Targets <c>[n]</c>.</summary>
    public int[] Yb { get; }

    /// <summary>The seven parameters by makemore name, widened to double (exact for F32).</summary>
    public IReadOnlyDictionary<string, double[]> Parameters { get; }

    /// <summary>The precision of the parameters in the file: F32 or F64 (the precision of <c>C</c>).</summary>
    public DType FloatType { get; }

    /// <summary>The whole file (for tensors beyond the inputs, such as the oracle's expected values).</summary>
    public SafeTensorsFile File { get; }

    /// <summary>Reads and validates a bundle file.</summary>
    /// <exception cref="ShapeException">A tensor is missing, has the wrong type or shape, or an id is out of range.</exception>
    public static BatchBundle Load(string path) => From(SafeTensorsFile.Read(path));

    /// <summary>Validates a parsed file.</summary>
    public static BatchBundle From(SafeTensorsFile f)
    {
        ArgumentNullException.ThrowIfNull(f);
        SafeTensor Need(string name)
        {
            if (!f.Contains(name)) throw new ShapeException(name, "the tensor is missing from the input file.");
            return f[name];
        }
        var xbT = Need("Xb"); var ybT = Need("Yb");
        foreach (var t in new[] { xbT, ybT })
            if (t.DType is not (DType.I32 or DType.I64)) throw new ShapeException(t.Name, $"it has dtype {t.DType}; I32 or I64 is needed.");
        if (xbT.Shape.Length != 2) throw new ShapeException("Xb", $"it has shape {ShapeException.Format(xbT.Shape)}; [n, B] is needed.");
        if (ybT.Shape.Length != 1) throw new ShapeException("Yb", $"it has shape {ShapeException.Format(ybT.Shape)}; [n] is needed.");
        int n = xbT.Shape[0], b = xbT.Shape[1];
        if (ybT.Shape[0] != n) throw new ShapeException("Yb", [n], ybT.Shape);
        if (n < 2) throw new ShapeException("Xb", $"n = {n} rows: batch norm needs at least 2 (a batch of 1 has no variance).");
        if (b < 1) throw new ShapeException("Xb", "block size B must be at least 1.");
        var c = Need("C");
        if (c.Shape.Length != 2) throw new ShapeException("C", $"it has shape {ShapeException.Format(c.Shape)}; [V, E] is needed.");
        int v = c.Shape[0], e = c.Shape[1];
        var w1 = Need("W1");
        if (w1.Shape.Length != 2 || w1.Shape[0] != b * e) throw new ShapeException("W1", $"it has shape {ShapeException.Format(w1.Shape)}; [B·E, H] = [{b * e}, H] is needed (B = {b} from Xb, E = {e} from C).");
        int h = w1.Shape[1];
        double eps = 1e-5;
        if (f.Metadata.TryGetValue("eps", out var epsText) && !double.TryParse(epsText, NumberStyles.Float, CultureInfo.InvariantCulture, out eps))
            throw new ShapeException("__metadata__.eps", $"'{epsText}' is not a number.");
        var config = new ModelConfig(v, b, e, h, n, eps);
        try { config.Validate(); }
        catch (ArgumentException ex) { throw new ShapeException("C", ex.Message); }
        var probe = new ParameterSet(config);
        var ps = new Dictionary<string, double[]>(StringComparer.Ordinal);
        foreach (string name in ParameterSet.Names)
        {
            var t = Need(name);
            if (t.DType is not (DType.F32 or DType.F64)) throw new ShapeException(name, $"it has dtype {t.DType}; F32 or F64 is needed.");
            probe.ValidateShape(name, t.Shape);
            ps[name] = t.ToDouble();
        }
        int[] xb = xbT.ToInt32(), yb = ybT.ToInt32();
        for (int i = 0; i < xb.Length; i++) if ((uint)xb[i] >= (uint)v) throw new ShapeException("Xb", $"id {xb[i]} at [{i / b}, {i % b}] is outside [0, {v}) (V = {v} from C).");
        for (int i = 0; i < yb.Length; i++) if ((uint)yb[i] >= (uint)v) throw new ShapeException("Yb", $"id {yb[i]} at [{i}] is outside [0, {v}) (V = {v} from C).");
        return new BatchBundle(config, xb, yb, ps, c.DType, f);
    }

    /// <summary>The parameters converted to <typeparamref name="T"/> (for the reference chain).</summary>
    public Dictionary<string, T[]> ParametersAs<T>() where T : System.Numerics.INumberBase<T> =>
        Parameters.ToDictionary(kv => kv.Key, kv => kv.Value.Select(T.CreateChecked).ToArray(), StringComparer.Ordinal);

    /// <summary>Copies the parameters (rounded to float) into a <see cref="ParameterSet"/> of the same configuration.</summary>
    public void CopyTo(ParameterSet p)
    {
        ArgumentNullException.ThrowIfNull(p);
        if (p.Config != Config) throw new ArgumentException($"parameter set is {p.Config}, bundle is {Config}.", nameof(p));
        foreach (var (name, values) in Parameters)
        {
            var dst = p.Value(name);
            for (int i = 0; i < values.Length; i++) dst[i] = (float)values[i];
        }
    }
}
