namespace HpBackprop.Model;

/// <summary>A tensor does not have the shape the model needs. The message names the tensor and both shapes.</summary>
public sealed class ShapeException : ArgumentException
{
    /// <summary>Creates the exception for tensor <paramref name="tensor"/>.</summary>
    public ShapeException(string tensor, ReadOnlySpan<int> expected, ReadOnlySpan<int> actual)
        : base($"tensor '{tensor}' has shape {Format(actual)} but the model needs {Format(expected)}.")
    {
        Tensor = tensor;
    }

    /// <summary>Creates the exception with a free-form message about <paramref name="tensor"/>.</summary>
    public ShapeException(string tensor, string message) : base($"tensor '{tensor}': {message}") => Tensor = tensor;

    /// <summary>The name of the offending tensor.</summary>
    public string Tensor { get; }

    /// <summary>Formats a shape as <c>[a, b]</c>.</summary>
    public static string Format(ReadOnlySpan<int> shape) => "[" + string.Join(", ", shape.ToArray()) + "]";
}
