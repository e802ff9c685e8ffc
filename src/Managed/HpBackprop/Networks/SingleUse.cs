namespace HpBackprop.Networks;

/// <summary>
/// The one-thread-at-a-time rule of a network, enforced with one interlocked flag: a public entry point enters before it
/// touches the network's buffers and leaves when it is done; a second thread entering meanwhile gets an
/// <see cref="InvalidOperationException"/> naming the network instead of a silent race, and any entry after
/// <see cref="Dispose"/> an <see cref="ObjectDisposedException"/> naming it. Entering allocates nothing.
/// </summary>
internal sealed class SingleUse(Func<string> name)
{
    private const int Free = 0, InUse = 1, Disposed = 2;
    private int _state;

    /// <summary>How messages name a network: <c>Network(STACK, n=N)</c>, the stack's text form cut at 200 characters.</summary>
    public static string NameOf(Sequential stack, int batchSize)
    {
        string t = stack.ToString();
        return $"Network({(t.Length <= 200 ? t : t[..197] + "...")}, n={batchSize})";
    }

    /// <summary>Test hook: runs on the entering thread once it holds the network (to make a second thread's entry overlap deterministically).</summary>
    internal Action? WhileHeld { get; set; }

    /// <summary>Holds the network until the returned scope is disposed.</summary>
    /// <exception cref="InvalidOperationException">Another thread is using the network.</exception>
    /// <exception cref="ObjectDisposedException">The network was disposed.</exception>
    public Scope Enter()
    {
        int s = Interlocked.CompareExchange(ref _state, InUse, Free);
        if (s == Disposed) throw new ObjectDisposedException(name());
        if (s == InUse)
            throw new InvalidOperationException($"{name()} is in use by another thread: a network is used by one thread at a time (Step, ForwardBackward, Evaluate, Predict, Calibrate, Initialize); give each thread its own network, or take turns.");
        var scope = new Scope(this);
        if (WhileHeld is { } hook)
        {
            try { hook(); }
            catch { scope.Dispose(); throw; }
        }
        return scope;
    }

    /// <summary>Marks the network disposed; true the first time (its resources are then to be released), false after.</summary>
    /// <exception cref="InvalidOperationException">Another thread is using the network.</exception>
    public bool Dispose()
    {
        int s = Interlocked.CompareExchange(ref _state, Disposed, Free);
        if (s == InUse) throw new InvalidOperationException($"{name()} cannot be disposed while another thread is using it.");
        return s == Free;
    }

    /// <summary>Releases the network when disposed.</summary>
    public readonly struct Scope(SingleUse owner) : IDisposable
    {
        /// <summary>Leaves the network.</summary>
        public void Dispose() => Interlocked.CompareExchange(ref owner._state, Free, InUse);
    }
}
