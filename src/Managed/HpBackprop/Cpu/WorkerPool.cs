namespace HpBackprop.Cpu;

/// <summary>
/// A piece of parallel work: <see cref="Run"/> is called once on each of the pool's threads
/// with that thread's index. The work object is allocated once and reused, so running it
/// allocates nothing. Implementations split their range statically by <c>thread</c>, which
/// keeps results deterministic.
/// </summary>
internal abstract class ParallelWork
{
    /// <summary>Runs share <paramref name="thread"/> of <paramref name="threads"/>.</summary>
    public abstract void Run(int thread, int threads);

    /// <summary>The half-open share <c>[begin,end)</c> of <paramref name="count"/> items for one thread (contiguous, static).</summary>
    public static (int Begin, int End) Share(int count, int thread, int threads)
    {
        long begin = (long)count * thread / threads, end = (long)count * (thread + 1) / threads;
        return ((int)begin, (int)end);
    }
}

/// <summary>
/// A small persistent pool: <c>threads − 1</c> background workers plus the calling thread.
/// <see cref="Run"/> hands the same work object to every thread and returns when all are done.
/// No allocation per run; workers spin briefly, then sleep on an event.
/// </summary>
internal sealed class WorkerPool : IDisposable
{
    private readonly Thread[] _workers;
    private readonly ManualResetEventSlim[] _go;
    private readonly ManualResetEventSlim _done;
    private ParallelWork? _work;
    private int _pending;
    private volatile bool _stop;
    private Exception? _error;

    /// <summary>Creates a pool of <paramref name="threads"/> threads in all (the caller counts as one).</summary>
    public WorkerPool(int threads)
    {
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(threads), threads, "the thread count must be at least 1.");
        Threads = threads;
        _workers = new Thread[threads - 1];
        _go = new ManualResetEventSlim[threads - 1];
        _done = new ManualResetEventSlim(false, 2047);
        // ManualResetEventSlim creates its lock object on the first wait that has to block, which
        // would be an allocation inside some later training step (it happened on a loaded machine).
        // One short blocking wait here creates it up front.
        _done.Wait(1);
        for (int w = 0; w < threads - 1; w++)
        {
            _go[w] = new ManualResetEventSlim(false, 2047);
            int index = w + 1;
            _workers[w] = new Thread(() => Loop(index)) { IsBackground = true, Name = $"HpBackprop.Cpu worker {index}" };
            _workers[w].Start();
        }
    }

    /// <summary>Threads in all, the caller included.</summary>
    public int Threads { get; }

    /// <summary>Runs <paramref name="work"/> on every thread (share 0 on the caller) and waits for all of them.</summary>
    public void Run(ParallelWork work)
    {
        if (Threads == 1) { work.Run(0, 1); return; }
        _work = work;
        _error = null;
        _done.Reset();
        Volatile.Write(ref _pending, Threads - 1);
        for (int w = 0; w < _go.Length; w++) _go[w].Set();
        Exception? mine = null;
        try { work.Run(0, Threads); }
        catch (Exception e) { mine = e; }
        _done.Wait();
        _work = null;
        var err = mine ?? _error;
        if (err is not null) throw new InvalidOperationException("a CPU worker failed: " + err.Message, err);
    }

    private void Loop(int index)
    {
        var go = _go[index - 1];
        while (true)
        {
            go.Wait();
            go.Reset();
            if (_stop) return;
            try { _work!.Run(index, Threads); }
            catch (Exception e) { _error = e; }
            if (Interlocked.Decrement(ref _pending) == 0) _done.Set();
        }
    }

    /// <summary>Stops the workers.</summary>
    public void Dispose()
    {
        if (_stop) return;
        _stop = true;
        foreach (var g in _go) g.Set();
        foreach (var t in _workers) t.Join();
        foreach (var g in _go) g.Dispose();
        _done.Dispose();
    }
}
