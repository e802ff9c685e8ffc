using HpBackprop.Training;
namespace HpBackprop.Networks;

/// <summary>
/// Where a training run of <see cref="Network.Fit(ExampleSet, TrainingRun, Action{TrainingProgress}?, int, CancellationToken, int?)"/>
/// stands: the steps done, the minibatch generator's state and the losses so far. Saved in a checkpoint with the
/// network (<see cref="IO.StackCheckpoint.Save(string, Network, Data.Vocabulary?, IReadOnlyDictionary{string, string}?, TrainingRun?)"/>)
/// it lets an interrupted run continue exactly where it stopped.
/// </summary>
public sealed class TrainingRun
{
    /// <summary>A run of <paramref name="totalSteps"/> steps whose minibatches are drawn by a generator seeded with <paramref name="seed"/>.</summary>
    public TrainingRun(int seed, int totalSteps)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(totalSteps);
        Rng = new Model.NormalRng(seed);
        TotalSteps = totalSteps;
        Losses = new float[totalSteps];
        Array.Fill(Losses, float.NaN);
    }

    internal TrainingRun(int totalSteps, int completed, (ulong, double, bool) rngState, float[] losses)
    {
        TotalSteps = totalSteps;
        Completed = completed;
        Rng = new Model.NormalRng(0) { State = rngState };
        Losses = losses;
    }

    /// <summary>The steps of the whole run.</summary>
    public int TotalSteps { get; }

    /// <summary>The steps done so far.</summary>
    public int Completed { get; internal set; }

    /// <summary>The loss of every step (NaN for the steps not run yet).</summary>
    public float[] Losses { get; }

    /// <summary>Whether every step has run.</summary>
    public bool IsFinished => Completed == TotalSteps;

    internal Model.NormalRng Rng { get; }
}
