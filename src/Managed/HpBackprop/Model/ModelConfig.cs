namespace HpBackprop.Model;

/// <summary>
/// The dimensions of the makemore MLP (docs/makemore.md notation in brackets): vocabulary size [V], block
/// size [B], embedding width [E = n_embd], hidden width [H = n_hidden], batch size [n] and the
/// batch-norm epsilon.
/// </summary>
/// <param name="VocabSize">V, including the boundary token.</param>
/// <param name="BlockSize">B, the context length.</param>
/// <param name="EmbeddingSize">E (n_embd), the width of one character's embedding.</param>
/// <param name="HiddenSize">H (n_hidden), the width of the hidden layer.</param>
/// <param name="BatchSize">n, the rows of a training minibatch (at least 2: batch norm needs a variance).</param>
/// <param name="Eps">The batch-norm epsilon added to the variance.</param>
internal sealed record ModelConfig(int VocabSize, int BlockSize = 3, int EmbeddingSize = 10, int HiddenSize = 200, int BatchSize = 32, double Eps = 1e-5)
{
    /// <summary>B·E, the width of <c>embcat</c> and the rows of <c>W1</c>.</summary>
    public int ContextWidth => BlockSize * EmbeddingSize;

    /// <summary>Floating-point operations of the six matrix products of one training step, <c>6·n·(B·E·H + H·V)</c>.</summary>
    public double GemmFlopsPerStep => 6.0 * BatchSize * ((double)ContextWidth * HiddenSize + (double)HiddenSize * VocabSize);

    /// <summary>Throws an <see cref="ArgumentException"/> naming the first dimension that is out of range.</summary>
    public ModelConfig Validate()
    {
        Check(VocabSize >= 2, nameof(VocabSize), VocabSize, "at least 2 (the boundary token and one character)");
        Check(BlockSize >= 1, nameof(BlockSize), BlockSize, "at least 1");
        Check(EmbeddingSize >= 1, nameof(EmbeddingSize), EmbeddingSize, "at least 1");
        Check(HiddenSize >= 1, nameof(HiddenSize), HiddenSize, "at least 1");
        Check(BatchSize >= 2, nameof(BatchSize), BatchSize, "at least 2: a batch of 1 has no variance for batch norm (docs/makemore.md §2)");
        Check(double.IsFinite(Eps) && Eps > 0, nameof(Eps), Eps, "a positive finite number");
        Check((long)VocabSize * EmbeddingSize + (long)ContextWidth * HiddenSize + (long)HiddenSize * VocabSize < int.MaxValue / 2,
            "size", VocabSize, "small enough for 2^30 parameters");
        return this;
    }

    private static void Check(bool ok, string name, object value, string rule)
    {
        if (!ok) throw new ArgumentException($"ModelConfig.{name} = {value} is invalid: it must be {rule}.", name);
    }
}
