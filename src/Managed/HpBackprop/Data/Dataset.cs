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
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="blockSize"/> is less than 1, or the examples need more memory than this process can use (the message gives the bytes).</exception>
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
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="blockSize"/> is less than 1, or the examples need more memory than this process can use (the message gives the bytes).</exception>
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
        var list = words as IReadOnlyList<string> ?? words.ToArray();
        // the sizes in 64 bits before anything is allocated: one example per character and one for the end of each word
        long count = CountExamples(list);
        CheckSize(count, blockSize, source);
        var x = new int[count * blockSize];
        var y = new int[count];
        var context = new int[blockSize];
        long row = 0;
        for (int index = 0; index < list.Count; index++)
        {
            Array.Clear(context);
            var runes = list[index].EnumerateRunes();
            for (bool more = true; more;)
            {
                more = runes.MoveNext();
                int id = more ? vocab.Encode(runes.Current, source, lineOf(index)) : 0;
                context.CopyTo(x, row * blockSize);
                y[row++] = id;
                Array.Copy(context, 1, context, 0, blockSize - 1);
                context[blockSize - 1] = id;
            }
        }
        return new Dataset(blockSize, x, y);
    }

    /// <summary>The examples of <paramref name="words"/>: one per character (Unicode scalar value) and one for the end of each word.</summary>
    internal static long CountExamples(IEnumerable<string> words)
    {
        long count = 0;
        foreach (string w in words)
        {
            count++;
            foreach (var _ in w.EnumerateRunes()) count++;
        }
        return count;
    }

    /// <summary>The bytes of <paramref name="count"/> examples of <paramref name="blockSize"/> ids (contexts and targets).</summary>
    internal static long Bytes(long count, int blockSize) => count * ((long)blockSize + 1) * sizeof(int);

    /// <summary>Refuses, before anything is allocated, examples whose contexts pass .NET's array limit or the memory this process can use.</summary>
    /// <exception cref="ArgumentOutOfRangeException">They do not fit; the message gives the bytes needed.</exception>
    internal static void CheckSize(long count, int blockSize, string source)
    {
        long ids = count * blockSize, bytes = Bytes(count, blockSize), available = Networks.MemoryBudget.Available;
        if (ids > Array.MaxLength)
            throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize,
                $"block size {blockSize:N0}: the {count:N0} examples of {source} need {ids:N0} context ids ({bytes:N0} bytes), more than .NET's array limit of {Array.MaxLength:N0} elements.");
        if (bytes > available)
            throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize,
                $"block size {blockSize:N0}: the {count:N0} examples of {source} need {bytes:N0} bytes; this process can use {available:N0}.");
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
