namespace HpBackprop.Data;

/// <summary>
/// (context, target) examples of SPEC §1: <see cref="X"/> holds <see cref="Count"/> rows of
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
    /// left after each character of <c>word + '.'</c>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="blockSize"/> is less than 1.</exception>
    /// <exception cref="CorpusException">A word has a character outside the vocabulary.</exception>
    public static Dataset Build(IEnumerable<string> words, Vocabulary vocab, int blockSize, string source = "words")
    {
        ArgumentNullException.ThrowIfNull(words);
        ArgumentNullException.ThrowIfNull(vocab);
        ValidateBlockSize(blockSize);
        var x = new List<int>();
        var y = new List<int>();
        var context = new int[blockSize];
        int line = 0;
        foreach (string w in words)
        {
            line++;
            Array.Clear(context);
            for (int i = 0; i <= w.Length; i++)
            {
                int id = i < w.Length ? vocab.Encode(w[i], source, line) : 0;
                x.AddRange(context);
                y.Add(id);
                Array.Copy(context, 1, context, 0, blockSize - 1);
                context[blockSize - 1] = id;
            }
        }
        return new Dataset(blockSize, x.ToArray(), y.ToArray());
    }

    internal static void ValidateBlockSize(int blockSize)
    {
        if (blockSize < 1)
            throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, "block size (context length) must be at least 1.");
    }
}
