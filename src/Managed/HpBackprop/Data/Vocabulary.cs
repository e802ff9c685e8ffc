namespace HpBackprop.Data;

/// <summary>
/// The character vocabulary of docs/makemore.md §1: id 0 is the boundary token <c>'.'</c>, ids 1..V-1 are
/// the corpus's distinct characters in ordinal order.
/// </summary>
public sealed class Vocabulary
{
    /// <summary>The boundary token (start and end of a word), always id 0.</summary>
    public const char Boundary = '.';

    private readonly string _chars;           // index = id
    private readonly Dictionary<char, int> _ids;

    private Vocabulary(string chars)
    {
        _chars = chars;
        _ids = new Dictionary<char, int>(chars.Length);
        for (int i = 0; i < chars.Length; i++) _ids.Add(chars[i], i);
    }

    /// <summary>The number of ids, V (including the boundary token).</summary>
    public int Size => _chars.Length;

    /// <summary>All characters by id, starting with the boundary token: the form stored in checkpoints.</summary>
    public string Characters => _chars;

    /// <summary>Builds the vocabulary of a corpus: the sorted set of its characters after the boundary token.</summary>
    public static Vocabulary FromCorpus(Corpus corpus)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        var set = new SortedSet<char>(Comparer<char>.Create((a, b) => a.CompareTo(b)));
        foreach (string w in corpus.Words) foreach (char c in w) set.Add(c);
        return new Vocabulary(Boundary + string.Concat(set));
    }

    /// <summary>Restores a vocabulary from <see cref="Characters"/> (as stored in a checkpoint).</summary>
    /// <exception cref="ArgumentException">The string does not start with the boundary token or repeats a character.</exception>
    public static Vocabulary FromCharacters(string characters)
    {
        ArgumentNullException.ThrowIfNull(characters);
        if (characters.Length < 2 || characters[0] != Boundary)
            throw new ArgumentException($"A vocabulary needs the boundary token '{Boundary}' first and at least one character; got \"{characters}\".", nameof(characters));
        if (characters.Distinct().Count() != characters.Length)
            throw new ArgumentException($"A vocabulary may not repeat a character; got \"{characters}\".", nameof(characters));
        return new Vocabulary(characters);
    }

    /// <summary>The id of a character.</summary>
    /// <exception cref="CorpusException">The character is not in the vocabulary.</exception>
    public int Encode(char c, string source = "input", int line = 0)
    {
        if (_ids.TryGetValue(c, out int id)) return id;
        throw new CorpusException(source, line,
            $"character '{Printable(c)}' is not in the model's vocabulary \"{_chars}\"; use words made of those characters or retrain on a corpus that has it.");
    }

    /// <summary>Whether the character has an id.</summary>
    public bool Contains(char c) => _ids.ContainsKey(c);

    /// <summary>The character of an id.</summary>
    public char Decode(int id)
    {
        if ((uint)id >= (uint)_chars.Length)
            throw new ArgumentOutOfRangeException(nameof(id), id, $"id must be in [0, {_chars.Length}).");
        return _chars[id];
    }

    internal static string Printable(char c) => char.IsControl(c) || char.IsWhiteSpace(c) ? $"\\u{(int)c:X4}" : c.ToString();
}
