using System.Globalization;
using System.Numerics;
using HpBackprop.Networks;
using HpBackprop.Reference;

namespace HpBackprop.IO;

/// <summary>
/// An optimiser trajectory of a layer stack (the oracle's <c>optim_{case}</c> bundles): metadata
/// <c>layers</c>, <c>loss</c>, <c>l2</c>, <c>bn_momentum</c>, <c>optimizer</c> (the text form of
/// <see cref="Networks.Optimizer"/>), <c>schedule</c> (of <see cref="Networks.Schedule"/>) and <c>steps</c> S;
/// tensors <c>x</c> <c>[S,n,…]</c> and <c>y</c> <c>[S,…]</c> (one minibatch per step), the initial
/// parameters and batch-norm buffers under their state-dict names, and the expected <c>losses</c>
/// <c>[S]</c> (the loss of each step before its update), <c>lr</c> <c>[S]</c> (F64, the rate of each step)
/// and <c>final.{name}</c> (parameters and buffers after the S steps).
/// </summary>
public sealed class StackTrajectoryBundle
{
    private readonly StackFileHeader _h;
    private readonly List<(int[]? Ids, double[]? Features, int[]? Classes, double[]? Targets)> _steps;

    private StackTrajectoryBundle(string source, SafeTensorsFile file, StackFileHeader h, Optimizer optimizer, Schedule schedule, int n, int width,
        List<(int[]?, double[]?, int[]?, double[]?)> steps, Dictionary<string, double[]> parameters, Dictionary<string, double[]> running,
        Dictionary<string, long> tracked)
    {
        Source = source; File = file; _h = h; Optimizer = optimizer; Schedule = schedule; N = n; InputWidth = width; _steps = steps;
        Parameters = parameters; RunningStatistics = running; BatchesTracked = tracked;
    }

    /// <summary>The file name, used in messages.</summary>
    public string Source { get; }

    /// <summary>The whole file.</summary>
    public SafeTensorsFile File { get; }

    /// <summary>The stack.</summary>
    public Sequential Stack => _h.Stack;

    /// <summary>The loss.</summary>
    public LossKind Loss => _h.Loss;

    /// <summary>The L2 penalty.</summary>
    public double L2 => _h.L2;

    /// <summary>The batch-norm momentum.</summary>
    public double BatchNormMomentum => _h.Momentum;

    /// <summary>Metadata <c>dropout_seed</c>: the seed of the dropout masks (default 42).</summary>
    public int Seed => _h.Seed;

    /// <summary>Metadata <c>step</c>: the optimiser step of the first step's dropout masks (default 0).</summary>
    public long Step => _h.Step;

    /// <summary>The batch-norm epsilon.</summary>
    public double Eps => _h.Eps;

    /// <summary>F32 or F64.</summary>
    public DType Precision => _h.Precision;

    /// <summary>The optimiser (metadata <c>optimizer</c>).</summary>
    public Optimizer Optimizer { get; }

    /// <summary>The learning-rate schedule (metadata <c>schedule</c>).</summary>
    public Schedule Schedule { get; }

    /// <summary>The number of steps S.</summary>
    public int Steps => _steps.Count;

    /// <summary>Rows per step.</summary>
    public int N { get; }

    /// <summary>B or D.</summary>
    public int InputWidth { get; }

    /// <summary>The initial parameters by state-dict name.</summary>
    public IReadOnlyDictionary<string, double[]> Parameters { get; }

    /// <summary>The initial running statistics present in the file.</summary>
    public IReadOnlyDictionary<string, double[]> RunningStatistics { get; }

    /// <summary>The initial <c>{i}.num_batches_tracked</c> present in the file.</summary>
    public IReadOnlyDictionary<string, long> BatchesTracked { get; }

    /// <summary>Reads and validates a trajectory file.</summary>
    /// <exception cref="SafeTensorsFormatException">A tensor or metadata entry is missing or malformed.</exception>
    /// <exception cref="StackException">The data do not fit the stack.</exception>
    public static StackTrajectoryBundle Load(string path)
    {
        string source = Path.GetFileName(path);
        var f = SafeTensorsFile.Read(path);
        var h = StackFileHeader.Read(f, source);
        string Meta(string key) => f.Metadata.TryGetValue(key, out var v) ? v : throw new SafeTensorsFormatException(source, $"metadata '{key}' is missing.");
        Optimizer optimizer;
        Schedule schedule;
        try { optimizer = Optimizer.Parse(Meta("optimizer")).Validate(); }
        catch (Exception e) when (e is FormatException or ArgumentException) { throw new SafeTensorsFormatException(source, $"metadata 'optimizer': {e.Message}"); }
        try { schedule = Schedule.Parse(Meta("schedule")); }
        catch (Exception e) when (e is FormatException or ArgumentException) { throw new SafeTensorsFormatException(source, $"metadata 'schedule': {e.Message}"); }
        var x = StackFileHeader.Need(f, source, "x");
        if (x.Shape.Length != 3) throw new StackException($"{source}: tensor 'x' has shape {StackBundle.Fmt(x.Shape)}; [steps, n, B or D] is needed.");
        int steps = x.Shape[0], n = x.Shape[1], width = x.Shape[2];
        SafeTensor? y = f.Contains("y") ? f["y"] : null;
        if (y != null && (y.Shape.Length < 2 || y.Shape[0] != steps))
            throw new StackException($"{source}: tensor 'y' has shape {StackBundle.Fmt(y.Shape)}; [{steps}, …] (one row of targets per step) is needed.");
        var list = new List<(int[]?, double[]?, int[]?, double[]?)>();
        for (int s = 0; s < steps; s++)
        {
            string name = string.Create(CultureInfo.InvariantCulture, $"x[{s}]");
            list.Add(StackFileHeader.ReadInputs(f, source, h, Slice(x, s), y is null ? null : Slice(y, s), n, width, name,
                string.Create(CultureInfo.InvariantCulture, $"y[{s}]")));
        }
        var (ps, running, tracked) = StackFileHeader.ReadParameters(f, source, h, "");
        var losses = StackFileHeader.Need(f, source, "losses");
        if (losses.Length != steps) throw new SafeTensorsFormatException(source, $"tensor 'losses' has shape {StackBundle.Fmt(losses.Shape)}; [{steps}] is needed.");
        return new StackTrajectoryBundle(source, f, h, optimizer, schedule, n, width, list, ps, running, tracked);
    }

    private static SafeTensor Slice(SafeTensor t, int s)
    {
        int per = t.Data.Length / t.Shape[0];
        return new SafeTensor($"{t.Name}[{s}]", t.DType, t.Shape[1..], t.Data.AsSpan(s * per, per).ToArray());
    }

    /// <summary>The minibatch of 0-based step <paramref name="step"/> in <typeparamref name="T"/>.</summary>
    public StackInput<T> InputAs<T>(int step) where T : IFloatingPointIeee754<T>
    {
        var (ids, features, classes, targets) = _steps[step];
        return new StackInput<T>(N, ids, features is null ? null : StackBundle.Convert<T>(features), classes, targets is null ? null : StackBundle.Convert<T>(targets));
    }

    /// <summary>The initial parameters in <typeparamref name="T"/> (fresh arrays).</summary>
    public Dictionary<string, T[]> ParametersAs<T>() where T : IFloatingPointIeee754<T> =>
        Parameters.ToDictionary(kv => kv.Key, kv => StackBundle.Convert<T>(kv.Value), StringComparer.Ordinal);

    /// <summary>The initial running statistics in <typeparamref name="T"/>.</summary>
    public BatchNormBuffers<T> BuffersAs<T>() where T : IFloatingPointIeee754<T> =>
        BatchNormBuffers<T>.From(Stack, RunningStatistics.ToDictionary(kv => kv.Key, kv => StackBundle.Convert<T>(kv.Value)), BatchesTracked);

    /// <summary>A reference for this bundle's stack, loss, l2, momentum and eps.</summary>
    public StackReference<T> ReferenceAs<T>() where T : IFloatingPointIeee754<T> => new(Stack, Loss, InputWidth)
    {
        L2 = T.CreateChecked(L2),
        BatchNormMomentum = T.CreateChecked(BatchNormMomentum),
        Eps = T.CreateChecked(Eps),
        Seed = unchecked((uint)_h.Seed),
        Step = _h.Step,
    };

    /// <summary>The expected loss of each step (before its update).</summary>
    public double[] ExpectedLosses => File["losses"].ToDouble();

    /// <summary>The learning rate of each step as the oracle computed it (tensor <c>lr</c>), or null when absent.</summary>
    public double[]? ExpectedLearningRates => File.Contains("lr") ? File["lr"].ToDouble() : null;

    /// <summary>The expected value of a parameter or running buffer after the last step (tensor <c>final.{name}</c>).</summary>
    /// <exception cref="SafeTensorsFormatException">The file has no such tensor.</exception>
    public double[] ExpectedFinal(string name) => StackFileHeader.Need(File, Source, "final." + name).ToDouble();
}
