namespace HpBackprop.Data;

/// <summary>
/// The train/dev/test split of docs/makemore.md §1: the words are shuffled with a seeded RNG, then the first
/// 80% make the training examples, the next 10% the dev examples and the rest the test examples.
/// </summary>
public sealed class DataSplit
{
    private DataSplit(Vocabulary vocab, Dataset train, Dataset dev, Dataset test)
    {
        Vocabulary = vocab;
        Train = train;
        Dev = dev;
        Test = test;
    }

    /// <summary>The corpus vocabulary.</summary>
    public Vocabulary Vocabulary { get; }

    /// <summary>Training examples (80% of the words).</summary>
    public Dataset Train { get; }

    /// <summary>Dev (validation) examples (10% of the words).</summary>
    public Dataset Dev { get; }

    /// <summary>Test examples (the last 10% of the words).</summary>
    public Dataset Test { get; }

    /// <summary>Shuffles (Fisher–Yates with <paramref name="seed"/>), splits 80/10/10 and builds the examples.</summary>
    /// <exception cref="CorpusException">The corpus has too few words for every split to hold one.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="blockSize"/> is less than 1, or the examples need more memory than this process can use (the message gives the bytes).</exception>
    public static DataSplit Create(Corpus corpus, int blockSize, int seed = 42)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        Dataset.ValidateBlockSize(blockSize);
        Dataset.CheckSize(Dataset.CountExamples(corpus.Words), blockSize, corpus.Source);   // the three splits together, before any is built
        var vocab = Vocabulary.FromCorpus(corpus);
        string[] words = corpus.Words.ToArray();
        var rng = new Random(seed);
        for (int i = words.Length - 1; i > 0; i--)
        {
            int j = rng.Next(i + 1);
            (words[i], words[j]) = (words[j], words[i]);
        }
        int n1 = (int)(0.8 * words.Length);
        int n2 = (int)(0.9 * words.Length);
        if (n1 == 0 || n2 == n1 || n2 == words.Length)
            throw new CorpusException(corpus.Source, 0,
                $"the corpus has {words.Length} word(s), which leaves a split empty (80/10/10 of the words); give it at least 10 words.");
        return new DataSplit(vocab,
            Dataset.Build(words[..n1], vocab, blockSize, corpus.Source + " (train split)"),
            Dataset.Build(words[n1..n2], vocab, blockSize, corpus.Source + " (dev split)"),
            Dataset.Build(words[n2..], vocab, blockSize, corpus.Source + " (test split)"));
    }
}
