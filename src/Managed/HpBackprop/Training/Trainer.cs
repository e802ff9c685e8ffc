using System.Diagnostics;
using HpBackprop.Data;
using HpBackprop.Model;

namespace HpBackprop.Training;

/// <summary>
/// Exercise 4: trains with manual gradients only. Each step draws n rows uniformly with
/// replacement from the training split (seeded), runs the backend's fused step and records the
/// loss. A non-finite loss stops training with <see cref="TrainingDivergedException"/>.
/// The loop allocates nothing per step.
/// </summary>
public sealed class Trainer
{
    private readonly ITrainingBackend _backend;
    private readonly Dataset _train;
    private readonly int[] _xb, _yb;
    private readonly NormalRng _rng;

    /// <summary>Creates a trainer for <paramref name="backend"/> over <paramref name="train"/>.</summary>
    public Trainer(ITrainingBackend backend, Dataset train, TrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(options);
        _backend = backend;
        _train = train;
        Options = options.Validate();
        if (train.BlockSize != backend.Config.BlockSize)
            throw new ArgumentException($"training data has block size {train.BlockSize}, the model {backend.Config.BlockSize}.", nameof(train));
        if (train.Count == 0) throw new ArgumentException("the training split is empty.", nameof(train));
        _xb = new int[backend.Config.BatchSize * train.BlockSize];
        _yb = new int[backend.Config.BatchSize];
        Losses = new float[options.Steps];
        _rng = new NormalRng(options.Seed);
    }

    /// <summary>The options.</summary>
    public TrainerOptions Options { get; }

    /// <summary>The loss of every step run so far (length <see cref="TrainerOptions.Steps"/>).</summary>
    public float[] Losses { get; }

    /// <summary>Steps completed.</summary>
    public int StepsDone { get; private set; }

    /// <summary>Wall time spent in <see cref="Run"/>.</summary>
    public TimeSpan Elapsed { get; private set; }

    /// <summary>Runs the remaining steps (after a cancellation, a second call continues with the same draws). Reports progress every <see cref="TrainerOptions.ReportEvery"/> steps and at the end.</summary>
    public void Run(Action<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var sw = Stopwatch.StartNew();
        int startStep = StepsDone;
        for (int step = StepsDone; step < Options.Steps; step++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            _train.DrawBatch(_rng, _xb, _yb);
            float lr = Options.LearningRateAt(step);
            float loss = _backend.Step(_xb, _yb, lr);
            if (!float.IsFinite(loss)) throw new TrainingDivergedException(step, lr, loss);
            Losses[step] = loss;
            StepsDone = step + 1;
            if (progress != null && Options.ReportEvery > 0 && (StepsDone % Options.ReportEvery == 0 || StepsDone == Options.Steps))
                progress(new TrainingProgress(StepsDone, Options.Steps, loss, (StepsDone - startStep) / Math.Max(sw.Elapsed.TotalSeconds, 1e-9)));
        }
        Elapsed += sw.Elapsed;
    }
}
