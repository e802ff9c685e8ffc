using HpBackprop.Data;

namespace HpBackprop.Cli;

/// <summary>
/// The corpus used when no file is given: the English first-name list that the Bogus package
/// ships (restored by the build, never copied into this repository), lower-cased and without
/// duplicates. About 3,000 names.
/// </summary>
public static class DefaultCorpus
{
    /// <summary>A description of the source, used in messages.</summary>
    public const string Description = "built-in corpus (first names of the Bogus package, locale en)";

    /// <summary>Loads the default corpus.</summary>
    public static Corpus Load()
    {
        var locale = Bogus.Database.GetLocale("en");
        var array = (Bogus.Bson.BArray)locale["name"]["first_name"];
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var words = new List<string>(array.Count);
        for (int i = 0; i < array.Count; i++)
        {
            string w = array[i].StringValue.Trim().ToLowerInvariant();
            if (w.Length > 0 && seen.Add(w)) words.Add(w);
        }
        return Corpus.FromLines(words, Description);
    }
}
