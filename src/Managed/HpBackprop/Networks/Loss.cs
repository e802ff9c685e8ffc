namespace HpBackprop.Networks;

/// <summary>The loss that closes a stack, computed straight from the last layer's output <c>z [n,k]</c>.</summary>
public enum LossKind
{
    /// <summary><c>cross_entropy</c>: softmax cross-entropy against class ids <c>[n]</c>; <c>dz = (softmax(z) − onehot(t))/n</c>.</summary>
    CrossEntropy,
    /// <summary><c>mse</c>: the mean of <c>(z − t)²</c> over all <c>n·k</c> outputs, targets <c>[n,k]</c>.</summary>
    Mse,
    /// <summary><c>bce_with_logits</c>: binary cross-entropy of <c>sigmoid(z)</c> against targets in [0,1] <c>[n,k]</c>.</summary>
    BceWithLogits,
    /// <summary><c>mean</c>: the mean of all outputs (no targets), the objective used to check a bare layer's gradients.</summary>
    Mean,
}

/// <summary>The text forms of <see cref="LossKind"/>.</summary>
public static class Losses
{
    /// <summary>The text form: <c>cross_entropy</c>, <c>mse</c>, <c>bce_with_logits</c> or <c>mean</c>.</summary>
    public static string ToText(this LossKind loss) => loss switch
    {
        LossKind.CrossEntropy => "cross_entropy",
        LossKind.Mse => "mse",
        LossKind.BceWithLogits => "bce_with_logits",
        LossKind.Mean => "mean",
        _ => throw new ArgumentOutOfRangeException(nameof(loss), loss, "not a loss."),
    };

    /// <summary>Parses the text form.</summary>
    /// <exception cref="FormatException">Not one of the four names.</exception>
    public static LossKind Parse(string text) => text?.Trim().ToLowerInvariant() switch
    {
        "cross_entropy" => LossKind.CrossEntropy,
        "mse" => LossKind.Mse,
        "bce_with_logits" => LossKind.BceWithLogits,
        "mean" => LossKind.Mean,
        _ => throw new FormatException($"'{Layer.Clip(text ?? "")}' is not a loss: the losses are cross_entropy, mse, bce_with_logits and mean."),
    };

    /// <summary>Whether the loss takes class ids (cross-entropy), float targets (mse, bce) or nothing (mean).</summary>
    public static TargetKind Targets(this LossKind loss) => loss switch
    {
        LossKind.CrossEntropy => TargetKind.Classes,
        LossKind.Mean => TargetKind.None,
        _ => TargetKind.Floats,
    };
}

/// <summary>What a loss compares the output with.</summary>
public enum TargetKind
{
    /// <summary>Class ids <c>[n]</c>.</summary>
    Classes,
    /// <summary>Float targets <c>[n,k]</c>.</summary>
    Floats,
    /// <summary>No targets.</summary>
    None,
}
