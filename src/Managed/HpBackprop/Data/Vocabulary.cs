using System.Text;

namespace HpBackprop.Data;

/// <summary>
/// The character vocabulary of docs/makemore.md §1: id 0 is the boundary token <c>'.'</c>, ids 1..V-1 are
/// the corpus's distinct characters in ordinal order. A character is a Unicode scalar value
/// (<see cref="Rune"/>), so characters outside the Basic Multilingual Plane (emoji) are one id each.
/// </summary>
public sealed class Vocabulary
{
    /// <summary>The boundary token (start and end of a word), always id 0.</summary>
    public const char Boundary = '.';

    private readonly string _chars;           // the runes by id, as text
    private readonly Rune[] _runes;           // index = id
    private readonly Dictionary<Rune, int> _ids;

    private Vocabulary(string chars)
    {
        _chars = chars;
        _runes = chars.EnumerateRunes().ToArray();
        _ids = new Dictionary<Rune, int>(_runes.Length);
        for (int i = 0; i < _runes.Length; i++) _ids.Add(_runes[i], i);
    }

    /// <summary>The number of ids, V (including the boundary token).</summary>
    public int Size => _runes.Length;

    /// <summary>All characters by id, starting with the boundary token: the form stored in checkpoints.</summary>
    public string Characters => _chars;

    /// <summary>Builds the vocabulary of a corpus: the sorted set of its characters (scalar values) after the boundary token.</summary>
    public static Vocabulary FromCorpus(Corpus corpus)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        var set = new SortedSet<Rune>();
        foreach (string w in corpus.Words) foreach (Rune r in w.EnumerateRunes()) set.Add(r);
        set.Remove(new Rune(Boundary));
        var sb = new StringBuilder().Append(Boundary);
        foreach (Rune r in set) sb.Append(r.ToString());
        return new Vocabulary(sb.ToString());
    }

    /// <summary>Restores a vocabulary from <see cref="Characters"/> (as stored in a checkpoint).</summary>
    /// <exception cref="ArgumentException">The string does not start with the boundary token, holds a lone surrogate, or repeats a character.</exception>
    public static Vocabulary FromCharacters(string characters)
    {
        ArgumentNullException.ThrowIfNull(characters);
        if (characters.Length < 2 || characters[0] != Boundary)
            throw new ArgumentException($"A vocabulary needs the boundary token '{Boundary}' first and at least one character; got \"{Clip(characters)}\".", nameof(characters));
        int at = LoneSurrogate(characters);
        if (at >= 0)
            throw new ArgumentException($"A vocabulary must be valid Unicode; character {at} is a lone surrogate (\\u{(int)characters[at]:X4}).", nameof(characters));
        var runes = characters.EnumerateRunes().ToArray();
        if (runes.Distinct().Count() != runes.Length)
            throw new ArgumentException($"A vocabulary may not repeat a character; got \"{Clip(characters)}\".", nameof(characters));
        return new Vocabulary(characters);
    }

    /// <summary>The index of the first UTF-16 unit of <paramref name="s"/> that is a surrogate without its pair, or -1.</summary>
    internal static int LoneSurrogate(string s)
    {
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) { i++; continue; }
            if (char.IsSurrogate(s[i])) return i;
        }
        return -1;
    }

    /// <summary>The id of a character.</summary>
    /// <exception cref="CorpusException">The character is not in the vocabulary.</exception>
    public int Encode(char c, string source = "input", int line = 0) =>
        Rune.TryCreate(c, out Rune r) ? Encode(r, source, line)
        : throw new CorpusException(source, line, $"character '\\u{(int)c:X4}' is half of a surrogate pair; encode the pair as one Rune.");

    /// <summary>The id of a character (a Unicode scalar value).</summary>
    /// <exception cref="CorpusException">The character is not in the vocabulary.</exception>
    public int Encode(Rune c, string source = "input", int line = 0)
    {
        if (_ids.TryGetValue(c, out int id)) return id;
        throw new CorpusException(source, line,
            $"character '{Printable(c)}' is not in the model's vocabulary \"{Clip(_chars)}\"; use words made of those characters or retrain on a corpus that has it.");
    }

    /// <summary>Whether the character has an id.</summary>
    public bool Contains(char c) => Rune.TryCreate(c, out Rune r) && _ids.ContainsKey(r);

    /// <summary>Whether the character (a Unicode scalar value) has an id.</summary>
    public bool Contains(Rune c) => _ids.ContainsKey(c);

    /// <summary>The character of an id.</summary>
    public Rune Decode(int id)
    {
        if ((uint)id >= (uint)_runes.Length)
            throw new ArgumentOutOfRangeException(nameof(id), id, $"id must be in [0, {_runes.Length}).");
        return _runes[id];
    }

    internal static string Printable(char c) => char.IsControl(c) || char.IsWhiteSpace(c) || char.IsSurrogate(c) ? $"\\u{(int)c:X4}" : c.ToString();

    internal static string Printable(Rune c) => Rune.IsControl(c) || Rune.IsWhiteSpace(c) ? $"\\u{c.Value:X4}" : c.ToString();

    private static string Clip(string s) => s.Length <= 200 ? s : s[..200] + "...";
}
