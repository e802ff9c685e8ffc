using HpBackprop.Model;

namespace HpBackprop.Networks;

/// <summary>
/// The rows of <see cref="BatchOrder.Epochs"/>: a permutation of the examples, shuffled (Fisher–Yates with the run's
/// generator) at the start of each epoch and taken n rows at a time; the rows left over at the end of an epoch are
/// skipped. Allocated once per run; a minibatch allocates nothing.
/// </summary>
internal sealed class EpochOrder
{
    private readonly int[] _order;
    private readonly NormalRng _rng;
    private readonly int _rows;
    private int _next;

    public EpochOrder(int count, int rows, NormalRng rng)
    {
        if (count < rows) throw new ArgumentException($"an epoch of {count:N0} examples holds no whole minibatch of {rows:N0} rows: give more examples or a smaller batch, or draw uniformly (BatchOrder.Uniform).");
        _order = new int[count];
        for (int i = 0; i < count; i++) _order[i] = i;
        _rows = rows;
        _rng = rng;
        _next = count; // shuffle before the first minibatch
    }

    /// <summary>Minibatches per epoch, ⌊Count / n⌋.</summary>
    public int StepsPerEpoch => _order.Length / _rows;

    /// <summary>The rows of the next minibatch.</summary>
    public ReadOnlySpan<int> Next()
    {
        if (_next + _rows > _order.Length)
        {
            for (int i = _order.Length - 1; i > 0; i--)
            {
                int j = _rng.NextInt(i + 1);
                (_order[i], _order[j]) = (_order[j], _order[i]);
            }
            _next = 0;
        }
        var rows = new ReadOnlySpan<int>(_order, _next, _rows);
        _next += _rows;
        return rows;
    }
}
