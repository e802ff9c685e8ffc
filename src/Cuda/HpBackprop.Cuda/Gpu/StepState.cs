using HpBackprop.Networks;

namespace HpBackprop.Cuda.Gpu;

/// <summary>
/// The training step's state on the device (native/kernels/step_state.h): the step number, the schedule rows the
/// optimisers read (learning rate, AdamW's bias corrections, computed on the host in double as the CPU does) and the loss
/// ring. A captured graph reads them at fixed addresses, so one graph replays every step. The host uploads a window of
/// <see cref="Rows"/> rows only when the step it runs is not the one the device expects or its row differs (a window
/// used up, a schedule the caller changed, a step count set by a resumed run): one row for every step while the rows do
/// not change (SGD at a constant rate), one row per step otherwise.
/// </summary>
internal sealed unsafe class StepState
{
    /// <summary>Bytes of the header (hpb_step).</summary>
    public const int HeaderBytes = 64;

    /// <summary>Floats of one schedule row: lr, step_size, bc2_sqrt.</summary>
    public const int RowFloats = 3;

    /// <summary>Schedule rows of one window, and slots of the loss ring.</summary>
    public const int Rows = 100;

    private const int OffsetNext = 0, OffsetBase = 16, OffsetRows = 24, OffsetStride = 28, OffsetRing = 32, OffsetFault = 40, OffsetSeed = 56;

    private readonly Gpu _g;
    private readonly NetworkOptions _o;
    private readonly byte[] _upload = new byte[HeaderBytes + Rows * RowFloats * 4];
    private readonly float[] _rows = new float[Rows * RowFloats];
    private long _base = -1, _deviceNext = -1;
    private int _rowCount;
    private bool _constant;
    private uint _deviceSeed;

    /// <summary>The seed of the minibatches step_begin draws (uploaded with the next step's header when it changed).</summary>
    public uint DrawSeed { get; set; }

    public StepState(Gpu g, NetworkOptions options)
    {
        _g = g;
        _o = options;
        Device = g.Alloc((HeaderBytes + Rows * RowFloats * 4) / 4);
        Ring = g.Alloc(Rows);
        g.Rt.Zero(Device, HeaderBytes);
    }

    /// <summary>The header, then the rows.</summary>
    public ulong Device { get; }

    /// <summary>The loss ring: the loss (with the L2 term) of step t is at slot t % <see cref="Rows"/>.</summary>
    public ulong Ring { get; }

    /// <summary>Uploads of the header and rows so far (tests).</summary>
    public int Uploads { get; private set; }

    /// <summary>The ring slot of step <paramref name="step"/>.</summary>
    public static int Slot(long step) => (int)(step % Rows);

    /// <summary>Makes the device's state ready for the step of <paramref name="args"/> (before it is queued).</summary>
    public void Prepare(in StepArgs args)
    {
        var (lr, size, bc2) = Scalars(args.LearningRate, args.AdamStep);
        if (_deviceNext == args.Step && _deviceSeed == DrawSeed && Covers(args.Step, lr, size, bc2)) return;
        Upload(args, lr, size, bc2);
    }

    /// <summary>The step of <paramref name="args"/> was queued: the device now expects the next one.</summary>
    public void Queued(in StepArgs args) => _deviceNext = args.Step + 1;

    /// <summary>The fault flag (a step that found no row of its own; always 0 unless the host is wrong). Synchronises.</summary>
    public uint ReadFault()
    {
        uint f;
        _g.Rt.CopyToHost(&f, Device + OffsetFault, 4);
        return f;
    }

    /// <summary>A schedule row: the rate, and AdamW's step size and √(1 − β₂ᵗ) computed in double as the CPU does.</summary>
    private (float Lr, float StepSize, float Bc2Sqrt) Scalars(float lr, long t)
    {
        if (_o.Optimizer is not AdamW w) return (lr, 0f, 1f);
        double bc1 = 1 - Math.Pow(w.Beta1, t), bc2 = 1 - Math.Pow(w.Beta2, t);
        return (lr, (float)(lr / bc1), (float)Math.Sqrt(bc2));
    }

    private bool Covers(long step, float lr, float size, float bc2)
    {
        long i = _constant ? 0 : step - _base;
        if (_base < 0 || i < 0 || i >= _rowCount) return false;
        return _rows[i * RowFloats] == lr && _rows[i * RowFloats + 1] == size && _rows[i * RowFloats + 2] == bc2;
    }

    private void Upload(in StepArgs args, float lr, float size, float bc2)
    {
        _base = args.Step;
        _rows[0] = lr; _rows[1] = size; _rows[2] = bc2;
        _constant = true;
        // the rows of the steps after it, from the schedule (the network computes every step's rate from it the same way)
        for (int i = 1; i < Rows; i++)
        {
            long s = args.Step + i;
            var (l, z, b) = Scalars(_o.Schedule.At(s, _o.Optimizer.LearningRate), args.AdamStep + i);
            _rows[i * RowFloats] = l; _rows[i * RowFloats + 1] = z; _rows[i * RowFloats + 2] = b;
            _constant &= l == lr && z == size && b == bc2;
        }
        _rowCount = _constant ? 1 : Rows;
        var u = _upload.AsSpan();
        u[..HeaderBytes].Clear();
        BitConverter.TryWriteBytes(u[OffsetNext..], (ulong)args.Step);
        BitConverter.TryWriteBytes(u[OffsetBase..], (ulong)args.Step);
        BitConverter.TryWriteBytes(u[OffsetRows..], (uint)_rowCount);
        BitConverter.TryWriteBytes(u[OffsetStride..], _constant ? 0u : 1u);
        BitConverter.TryWriteBytes(u[OffsetRing..], (uint)Rows);
        BitConverter.TryWriteBytes(u[OffsetSeed..], DrawSeed);
        for (int i = 0; i < _rowCount * RowFloats; i++) BitConverter.TryWriteBytes(u[(HeaderBytes + 4 * i)..], _rows[i]);
        fixed (byte* p = _upload) _g.ToDevice(Device, p, HeaderBytes + _rowCount * RowFloats * 4L);
        Uploads++;
        _deviceSeed = DrawSeed;
    }
}
