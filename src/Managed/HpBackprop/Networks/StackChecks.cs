using System.Globalization;

namespace HpBackprop.Networks;

/// <summary>
/// The invariants of layers, stacks and options that every public entry point checks before any memory is touched
/// (<see cref="Sequential(Layer[])"/>, <see cref="Network.Check"/>). A layer built through the public <see cref="Layer"/>
/// constructor may hold any values: an undefined kind or mode, a width below 1, a batch norm whose In and Out differ;
/// the compiled network would read or write outside its buffers with them, so they are refused here.
/// </summary>
internal static class StackChecks
{
    /// <summary>Every layer a defined kind with the widths its kind needs (≥ 1), batch norm In == Out, and nothing its kind does not use.</summary>
    /// <exception cref="StackException">A layer breaks the invariants of its kind; the message names it and the rule.</exception>
    public static void Layers(IReadOnlyList<Layer> layers)
    {
        for (int i = 0; i < layers.Count; i++) Check(layers[i], i);
    }

    private static void Check(Layer l, int i)
    {
        string at = $"layer {i} ({Layer.Clip(l.ToString())})";
        var type = LayerType.Find(l.Kind)
            ?? throw new StackException($"{at}: {((int)l.Kind).ToString(CultureInfo.InvariantCulture)} is not a LayerKind; the kinds are {string.Join(", ", Enum.GetNames<LayerKind>())}.");
        if (!Enum.IsDefined(l.Mode))
            throw new StackException($"{at}: {((int)l.Mode).ToString(CultureInfo.InvariantCulture)} is not a BatchNormMode; the modes are {string.Join(", ", Enum.GetNames<BatchNormMode>())}.");
        if (type.Invalid(l) is string why) throw new StackException($"{at}: {why}.");
    }

    /// <summary>The stack computes something: a stack of only flatten layers has no op to run and no output of its own.</summary>
    /// <exception cref="StackException">Every layer is a flatten.</exception>
    public static void ProducesOutput(Sequential stack)
    {
        if (stack.Layers.All(l => l.Kind == LayerKind.Flatten))
            throw new StackException($"the stack '{Layer.Clip(stack.ToString())}' computes nothing: it holds only flatten layers, which are views; add a layer that computes (linear, batch norm, an activation).");
    }

    /// <summary>The most threads a network may use: four per processor (results are the same on any count; more only oversubscribe the machine).</summary>
    public static int MaxThreads => 4 * Math.Max(1, Environment.ProcessorCount);

    /// <summary>The options' enum values are defined and the thread count is bounded.</summary>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    public static void Options(NetworkOptions o)
    {
        if (!Enum.IsDefined(o.Loss))
            throw new ArgumentException($"NetworkOptions.Loss = {((int)o.Loss).ToString(CultureInfo.InvariantCulture)} is invalid: it must be one of {string.Join(", ", Enum.GetNames<LossKind>())}.", nameof(o));
        if (o.Threads > MaxThreads)
            throw new ArgumentException($"NetworkOptions.Threads = {I(o.Threads)} is invalid: it must be between 1 and {I(MaxThreads)} (4 × Environment.ProcessorCount).", nameof(o));
        if (o.InputWidth is < 1) throw new ArgumentException($"NetworkOptions.InputWidth = {I(o.InputWidth.Value)} is invalid: it must be at least 1.", nameof(o));
    }

    private static string I(int v) => v.ToString(CultureInfo.InvariantCulture);
}
