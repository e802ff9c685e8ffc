namespace HpBackprop.Networks;

/// <summary>
/// The buffers of the last training step of a network of the makemore stack (<see cref="Sequential.Makemore"/>)
/// under the makemore names of the makemore format, for the <c>grads</c> and <c>check</c> commands, the oracle tests and
/// the benchmarks. Parameters and gradients by makemore name: <see cref="IO.StackCheckpoint.ToParameterSet"/>.
/// </summary>
internal static class MakemoreView
{
    /// <summary>The names <see cref="Intermediate"/> knows, in the order of the step.</summary>
    public static readonly string[] Names = ["embcat", "hprebn", "bnmeani", "bnvar", "bnvar_inv", "bnraw", "h", "logits", "dlogits", "dh", "dhprebn", "dembcat"];

    /// <summary>
    /// A copy of a buffer of the last training step (<c>ForwardBackward</c> or <c>Step</c>) by makemore name: the op outputs
    /// embcat (op 0), hprebn (op 1), h (op 2), logits (op 3) and their gradients dembcat, dhprebn, dh, dlogits; the
    /// batch statistics bnmeani, bnvar (Bessel), bnvar_inv; and bnraw = (hprebn − bnmeani)·bnvar_inv, computed here.
    /// </summary>
    /// <exception cref="ArgumentException">The network is not of the makemore stack, or the name is unknown.</exception>
    /// <exception cref="InvalidOperationException">dh of a step that took the row-block pipeline, which never stores it whole.</exception>
    public static float[] Intermediate(Network net, string name)
    {
        ArgumentNullException.ThrowIfNull(net);
        var l = net.Stack.Layers;
        if (l.Count != 6 || l[0].Kind != LayerKind.Embedding || l[1].Kind != LayerKind.Flatten || l[2].Kind != LayerKind.Linear
            || l[3].Kind != LayerKind.BatchNorm || l[3].Mode != BatchNormMode.Bessel || l[4].Kind != LayerKind.Tanh || l[5].Kind != LayerKind.Linear)
            throw new ArgumentException($"the network '{Layer.Clip(net.Stack.ToString())}' is not the makemore stack.", nameof(net));
        switch (name)
        {
            case "embcat": return net.OpOutput(0).ToArray();
            case "hprebn": return net.OpOutput(1).ToArray();
            case "h": return net.OpOutput(2).ToArray();
            case "logits": return net.OpOutput(3).ToArray();
            case "dembcat": return net.OpOutputGradient(0).ToArray();
            case "dhprebn": return net.OpOutputGradient(1).ToArray();
            case "dlogits": return net.OpOutputGradient(3).ToArray();
            case "dh":
                if (net.Pipelined) throw new InvalidOperationException("the row-block pipeline does not store dh whole: turn it off (PipelineEnabled = false) to read dh.");
                return net.OpOutputGradient(2).ToArray();
            case "bnmeani": return (float[])net.BatchStatistics(2).Mean.Clone();
            case "bnvar": return (float[])net.BatchStatistics(2).Variance.Clone();
            case "bnvar_inv": return (float[])net.BatchStatistics(2).VarInv.Clone();
            case "bnraw":
                {
                    var (mean, _, varInv) = net.BatchStatistics(2);
                    var hp = net.OpOutput(1);
                    int H = l[3].In;
                    var raw = new float[hp.Length];
                    for (int i = 0; i < raw.Length; i++) raw[i] = (hp[i] - mean[i % H]) * varInv[i % H];
                    return raw;
                }
            default:
                throw new ArgumentException($"the makemore network keeps no buffer named '{name}'; the names are {string.Join(", ", Names)}.", nameof(name));
        }
    }
}
