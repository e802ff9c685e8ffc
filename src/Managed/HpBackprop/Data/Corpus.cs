namespace HpBackprop.Data;

/// <summary>A list of words, one per line of a text file (docs/makemore.md §1).</summary>
public sealed class Corpus
{
    private Corpus(string source, string[] words, int[] lineNumbers)
    {
        Source = source;
        Words = words;
        LineNumbers = lineNumbers;
    }

    /// <summary>Where the words came from (a file path or a description), used in error messages.</summary>
    public string Source { get; }

    /// <summary>The words, in file order.</summary>
    public IReadOnlyList<string> Words { get; }

    /// <summary>
    /// The 1-based line of each word in <see cref="Source"/> (blank lines are skipped, so the
    /// line of word i is not i + 1 in general); used by error messages.
    /// </summary>
    public IReadOnlyList<int> LineNumbers { get; }

    /// <summary>
    /// Reads a corpus: one word per line, surrounding white space trimmed, blank lines skipped.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="CorpusException">The file holds no word, or a word contains the boundary token or white space.</exception>
    public static Corpus Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
            throw new FileNotFoundException($"Corpus file '{path}' does not exist; pass a text file with one word per line.", path);
        return FromLines(File.ReadLines(path), path);
    }

    /// <summary>Builds a corpus from lines of text (same rules as <see cref="Load"/>).</summary>
    public static Corpus FromLines(IEnumerable<string> lines, string source)
    {
        ArgumentNullException.ThrowIfNull(lines);
        ArgumentNullException.ThrowIfNull(source);
        var words = new List<string>();
        var lineNumbers = new List<int>();
        int lineNo = 0;
        foreach (string raw in lines)
        {
            lineNo++;
            string w = raw.Trim();
            if (w.Length == 0) continue;
            for (int i = 0; i < w.Length; i++)
            {
                char c = w[i];
                if (c == Vocabulary.Boundary)
                    throw new CorpusException(source, lineNo, $"word \"{w}\" contains '{Vocabulary.Boundary}', which is reserved for the start/end-of-word token.");
                if (char.IsWhiteSpace(c) || char.IsControl(c))
                    throw new CorpusException(source, lineNo, $"word \"{w}\" contains white space or a control character ('{Vocabulary.Printable(c)}'); put one word per line.");
            }
            words.Add(w);
            lineNumbers.Add(lineNo);
        }
        if (words.Count == 0)
            throw new CorpusException(source, 0, "the corpus is empty: it needs at least one word (one per line).");
        return new Corpus(source, words.ToArray(), lineNumbers.ToArray());
    }
}
