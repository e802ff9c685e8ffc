namespace HpBackprop.Data;

/// <summary>
/// (context, target) examples of docs/makemore.md §1: <see cref="X"/> holds <see cref="Count"/> rows of
/// <see cref="BlockSize"/> ids, <see cref="Y"/> the id that follows each context.
/// </summary>
public sealed class Dataset
{
    internal Dataset(int blockSize, int[] x, int[] y)
    {
        BlockSize = blockSize;
        X = x;
        Y = y;
    }

    /// <summary>The context length B.</summary>
    public int BlockSize { get; }

    /// <summary>Number of examples.</summary>
    public int Count => Y.Length;

    /// <summary>Contexts, row-major <c>[Count, BlockSize]</c>.</summary>
    public int[] X { get; }

    /// <summary>Targets, <c>[Count]</c>.</summary>
    public int[] Y { get; }

    /// <summary>
    /// Builds the examples of a list of words: the context starts as B boundary ids and shifts
    /// left after each character of <c>word + '.'</c>. An error names <paramref name="source"/>
    /// and the 1-based position of the word in <paramref name="words"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="blockSize"/> is less than 1.</exception>
    /// <exception cref="CorpusException">A word has a character outside the vocabulary.</exception>
    public static Dataset Build(IEnumerable<string> words, Vocabulary vocab, int blockSize, string source = "words")
    {
        ArgumentNullException.ThrowIfNull(words);
        return Build(words, vocab, blockSize, source, static i => i + 1);
    }

    /// <summary>
    /// Builds the examples of all words of a corpus (for example a dev or test file encoded with
    /// a trained model's vocabulary). An error names the corpus source and the word's line in it.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="blockSize"/> is less than 1.</exception>
    /// <exception cref="CorpusException">A word has a character outside the vocabulary.</exception>
    public static Dataset Build(Corpus corpus, Vocabulary vocab, int blockSize)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        return Build(corpus.Words, vocab, blockSize, corpus.Source, i => corpus.LineNumbers[i]);
    }

    private static Dataset Build(IEnumerable<string> words, Vocabulary vocab, int blockSize, string source, Func<int, int> lineOf)
    {
        ArgumentNullException.ThrowIfNull(vocab);
        ValidateBlockSize(blockSize);
        var x = new List<int>();
        var y = new List<int>();
        var context = new int[blockSize];
        int index = 0;
        foreach (string w in words)
        {
            Array.Clear(context);
            var runes = w.EnumerateRunes();
            for (bool more = true; more;)
            {
                more = runes.MoveNext();
                int id = more ? vocab.Encode(runes.Current, source, lineOf(index)) : 0;
                x.AddRange(context);
                y.Add(id);
                Array.Copy(context, 1, context, 0, blockSize - 1);
                context[blockSize - 1] = id;
            }
            index++;
        }
        return new Dataset(blockSize, x.ToArray(), y.ToArray());
    }

    /// <summary>
    /// Draws a minibatch of <c>yb.Length</c> rows uniformly with replacement (docs/makemore.md §5) and copies their
    /// contexts into <paramref name="xb"/> <c>[n,B]</c> and targets into <paramref name="yb"/> <c>[n]</c>.
    /// Allocates nothing.
    /// </summary>
    public void DrawBatch(Model.NormalRng rng, Span<int> xb, Span<int> yb)
    {
        ArgumentNullException.ThrowIfNull(rng);
        if (Count == 0) throw new InvalidOperationException("cannot draw a minibatch from an empty data set.");
        if (xb.Length != yb.Length * BlockSize)
            throw new ArgumentException($"xb has {xb.Length} ids but {yb.Length} rows of block size {BlockSize} need {yb.Length * BlockSize}.", nameof(xb));
        for (int r = 0; r < yb.Length; r++)
        {
            int row = rng.NextInt(Count);
            X.AsSpan(row * BlockSize, BlockSize).CopyTo(xb.Slice(r * BlockSize, BlockSize));
            yb[r] = Y[row];
        }
    }

    internal static void ValidateBlockSize(int blockSize)
    {
        if (blockSize < 1)
            throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, "block size (context length) must be at least 1.");
    }
}
