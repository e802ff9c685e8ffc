using System.Text;
using HpBackprop.Data;
using HpBackprop.Model;

namespace HpBackprop.Training;

/// <summary>
/// Generates words from a trained model (docs/makemore.md §5): start from a context of boundary ids, forward
/// one row with the inference batch-norm statistics, soften the logits by a temperature, draw the
/// next id and stop at the boundary id or at the length guard.
/// </summary>
public sealed class Sampler
{
    private delegate void InferRow(ReadOnlySpan<int> context, Span<float> logits);

    private readonly InferRow _infer;
    private readonly Vocabulary _vocab;
    private readonly int[] _context;
    private readonly float[] _logits;
    private readonly double[] _p;

    /// <summary>Creates a sampler over a network on ids whose output is one logit per character (a stack trained on words), on any device.</summary>
    public Sampler(Networks.Network network, Vocabulary vocab)
        : this(vocab, (network ?? throw new ArgumentNullException(nameof(network))).InputWidth, network.OutputWidth, (c, l) => network.Predict(c, 1, l, raw: true))
    {
        if (!network.Stack.TakesIds) throw new ArgumentException("the network takes float features, not character ids: it cannot sample words.", nameof(network));
    }

    private Sampler(Vocabulary vocab, int blockSize, int outputs, InferRow infer)
    {
        ArgumentNullException.ThrowIfNull(vocab);
        if (vocab.Size != outputs)
            throw new ArgumentException($"the vocabulary has {vocab.Size} ids but the model {outputs}.", nameof(vocab));
        _infer = infer; _vocab = vocab;
        _context = new int[blockSize];
        _logits = new float[outputs];
        _p = new double[outputs];
    }

    /// <summary>Draws <paramref name="count"/> words.</summary>
    /// <param name="count">How many words.</param>
    /// <param name="seed">Seed of the draws.</param>
    /// <param name="temperature">Divides the logits: below 1 sharper, above 1 flatter. Must be positive.</param>
    /// <param name="maxLength">Longest word; a word that reaches it is cut there.</param>
    public IReadOnlyList<string> Sample(int count, int seed, double temperature = 1.0, int maxLength = 50) => Generate(count, seed, temperature, maxLength).ToList();

    /// <summary>The words of <see cref="Sample"/>, one at a time as they are drawn (nothing is collected: any count streams).</summary>
    /// <param name="count">How many words.</param>
    /// <param name="seed">Seed of the draws.</param>
    /// <param name="temperature">Divides the logits: below 1 sharper, above 1 flatter. Must be positive.</param>
    /// <param name="maxLength">Longest word; a word that reaches it is cut there.</param>
    public IEnumerable<string> Generate(int count, int seed, double temperature = 1.0, int maxLength = 50)
    {
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count), count, "count must not be negative.");
        if (!(temperature > 0 && double.IsFinite(temperature))) throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "temperature must be a positive number.");
        if (maxLength < 1) throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, "maxLength must be at least 1.");
        return Words(count, seed, temperature, maxLength);
    }

    private IEnumerable<string> Words(int count, int seed, double temperature, int maxLength)
    {
        var rng = new NormalRng(seed);
        var sb = new StringBuilder();
        for (int w = 0; w < count; w++)
        {
            Array.Clear(_context);
            sb.Clear();
            for (int length = 0; length < maxLength; length++)
            {
                _infer(_context, _logits);
                int id = Draw(rng, temperature);
                if (id == 0) break;
                AppendRune(sb, _vocab.Decode(id));
                Array.Copy(_context, 1, _context, 0, _context.Length - 1);
                _context[^1] = id;
            }
            yield return sb.ToString();
        }
    }

    private static void AppendRune(StringBuilder sb, Rune r)
    {
        Span<char> units = stackalloc char[2];
        sb.Append(units[..r.EncodeToUtf16(units)]);
    }

    private int Draw(NormalRng rng, double temperature)
    {
        double m = double.NegativeInfinity;
        foreach (float l in _logits) m = Math.Max(m, l);
        double sum = 0;
        for (int j = 0; j < _p.Length; j++) { _p[j] = Math.Exp((_logits[j] - m) / temperature); sum += _p[j]; }
        double u = rng.NextDouble() * sum;
        for (int j = 0; j < _p.Length; j++) { u -= _p[j]; if (u < 0) return j; }
        return _p.Length - 1;
    }
}
