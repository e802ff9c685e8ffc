namespace HpBackprop.Data;

/// <summary>
/// Raised when a corpus or a word cannot be used: an empty corpus, a character outside the
/// vocabulary, a reserved character, or a split that would be empty. The message names the
/// source (a file path or a description) and, where there is one, the 1-based line.
/// </summary>
public sealed class CorpusException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="source">The file path or description of where the words came from.</param>
    /// <param name="line">The 1-based line number, or 0 when the problem is not on one line.</param>
    /// <param name="message">What is wrong and what to do about it.</param>
    public CorpusException(string source, int line, string message)
        : base(line > 0 ? $"{source}:{line}: {message}" : $"{source}: {message}")
    {
        Source = source;
        Line = line;
    }

    /// <summary>The file path or description of where the words came from.</summary>
    public new string Source { get; }

    /// <summary>The 1-based line number, or 0 when the problem concerns the whole corpus.</summary>
    public int Line { get; }
}
