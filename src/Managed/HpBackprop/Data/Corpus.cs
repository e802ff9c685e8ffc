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

    /// <summary>The longest line <see cref="Load"/> reads, in bytes (1 MiB): a longer one is refused naming it, so a file without line breaks (<c>/dev/zero</c>) cannot fill memory.</summary>
    public const int MaxLineBytes = 1 << 20;

    /// <summary>The most bytes <see cref="Load"/> reads from one file (256 MiB; makemore's names.txt is 228 KB): a larger or endless one is refused.</summary>
    public const long MaxBytes = 256L << 20;

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
    /// <exception cref="FileNotFoundException">The file does not exist or is a directory.</exception>
    /// <exception cref="CorpusException">The file holds no word, a word contains the boundary token or white space, a line is longer than
    /// <see cref="MaxLineBytes"/>, or the file is larger than <see cref="MaxBytes"/>.</exception>
    public static Corpus Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Directory.Exists(path))
            throw new FileNotFoundException($"Corpus file '{path}' is a directory; pass a text file with one word per line.", path);
        if (!File.Exists(path))
            throw new FileNotFoundException($"Corpus file '{path}' does not exist; pass a text file with one word per line.", path);
        return FromLines(ReadLines(path), path);
    }

    /// <summary>The lines of a UTF-8 file (an optional byte-order mark skipped); invalid UTF-8 is a <see cref="CorpusException"/> naming the line.</summary>
    private static IEnumerable<string> ReadLines(string path)
    {
        var strict = new System.Text.UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var line = new List<byte>();
        int lineNo = 0, b;
        long total = 0;
        while ((b = stream.ReadByte()) >= 0)
        {
            if (++total > MaxBytes)
                throw new CorpusException(path, lineNo + 1, $"the file is larger than {MaxBytes:N0} bytes, the most a corpus may hold (or it has no end); give a word list.");
            if (b == '\n') { yield return Decode(line, ++lineNo); line.Clear(); }
            else if (line.Count >= MaxLineBytes)
                throw new CorpusException(path, lineNo + 1, $"the line is longer than {MaxLineBytes:N0} bytes, the most a line may hold; a corpus has one word per line.");
            else line.Add((byte)b);
        }
        if (line.Count > 0) yield return Decode(line, ++lineNo);

        string Decode(List<byte> bytes, int number)
        {
            var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes);
            if (span.Length > 0 && span[^1] == (byte)'\r') span = span[..^1];
            if (number == 1 && span.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF])) span = span[3..];
            try { return strict.GetString(span); }
            catch (System.Text.DecoderFallbackException)
            {
                int at = System.Text.Unicode.Utf8.ToUtf16(span, new char[span.Length], out int read, out _, replaceInvalidSequences: false) == System.Buffers.OperationStatus.Done ? 0 : read;
                throw new CorpusException(path, number, $"the line is not valid UTF-8 (byte {at + 1} of the line, 0x{span[at]:X2}); save the corpus as UTF-8 text.");
            }
        }
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
            int lone = Vocabulary.LoneSurrogate(w);
            if (lone >= 0)
                throw new CorpusException(source, lineNo, $"the word has a lone surrogate (\\u{(int)w[lone]:X4} at character {lone + 1}): it is not valid Unicode text.");
            for (int i = 0; i < w.Length; i++)
            {
                char c = w[i];
                if (c == Vocabulary.Boundary)
                    throw new CorpusException(source, lineNo, $"word \"{Clip(w)}\" contains '{Vocabulary.Boundary}', which is reserved for the start/end-of-word token.");
                if (char.IsWhiteSpace(c) || char.IsControl(c))
                    throw new CorpusException(source, lineNo, $"word \"{Clip(w)}\" contains white space or a control character ('{Vocabulary.Printable(c)}'); put one word per line.");
            }
            words.Add(w);
            lineNumbers.Add(lineNo);
        }
        if (words.Count == 0)
            throw new CorpusException(source, 0, "the corpus is empty: it needs at least one word (one per line).");
        return new Corpus(source, words.ToArray(), lineNumbers.ToArray());
    }

    /// <summary>A word cut to 40 characters with control characters escaped, for error messages.</summary>
    private static string Clip(string w)
    {
        var sb = new System.Text.StringBuilder();
        foreach (char c in w.Length > 40 ? w[..40] : w) sb.Append(char.IsControl(c) ? $"\\u{(int)c:X4}" : c);
        if (w.Length > 40) sb.Append($"... ({w.Length:N0} characters)");
        return sb.ToString();
    }
}
