using System.Text;
using HpBackprop.Data;
using HpBackprop.Model;

namespace HpBackprop.Training;

/// <summary>
/// Generates words from a trained model (SPEC §5): start from a context of boundary ids, forward
/// one row with the inference batch-norm statistics, soften the logits by a temperature, draw the
/// next id and stop at the boundary id or at the length guard.
/// </summary>
public sealed class Sampler
{
    private readonly ITrainingBackend _backend;
    private readonly Vocabulary _vocab;
    private readonly int[] _context;
    private readonly float[] _logits;
    private readonly double[] _p;

    /// <summary>Creates a sampler.</summary>
    public Sampler(ITrainingBackend backend, Vocabulary vocab)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(vocab);
        if (vocab.Size != backend.Config.VocabSize)
            throw new ArgumentException($"the vocabulary has {vocab.Size} ids but the model {backend.Config.VocabSize}.", nameof(vocab));
        _backend = backend; _vocab = vocab;
        _context = new int[backend.Config.BlockSize];
        _logits = new float[backend.Config.VocabSize];
        _p = new double[backend.Config.VocabSize];
    }

    /// <summary>Draws <paramref name="count"/> words.</summary>
    /// <param name="count">How many words.</param>
    /// <param name="seed">Seed of the draws.</param>
    /// <param name="temperature">Divides the logits: below 1 sharper, above 1 flatter. Must be positive.</param>
    /// <param name="maxLength">Longest word; a word that reaches it is cut there.</param>
    public IReadOnlyList<string> Sample(int count, int seed, double temperature = 1.0, int maxLength = 50)
    {
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count), count, "count must not be negative.");
        if (!(temperature > 0 && double.IsFinite(temperature))) throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "temperature must be a positive number.");
        if (maxLength < 1) throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, "maxLength must be at least 1.");
        var rng = new NormalRng(seed);
        var words = new List<string>(count);
        var sb = new StringBuilder();
        for (int w = 0; w < count; w++)
        {
            Array.Clear(_context);
            sb.Clear();
            while (sb.Length < maxLength)
            {
                _backend.InferLogits(_context, 1, _logits);
                int id = Draw(rng, temperature);
                if (id == 0) break;
                sb.Append(_vocab.Decode(id));
                Array.Copy(_context, 1, _context, 0, _context.Length - 1);
                _context[^1] = id;
            }
            words.Add(sb.ToString());
        }
        return words;
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
