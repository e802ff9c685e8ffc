namespace HpBackprop.Reference;

/// <summary>A named, shaped, row-major array: one entry of the exercise-1 table.</summary>
/// <typeparam name="T">The element type.</typeparam>
/// <param name="Name">The makemore name (for example <c>hprebn</c> or <c>dbnvar_inv</c>).</param>
/// <param name="Shape">The makemore shape.</param>
/// <param name="Data">The elements, row-major.</param>
public sealed record NamedTensor<T>(string Name, int[] Shape, T[] Data);
