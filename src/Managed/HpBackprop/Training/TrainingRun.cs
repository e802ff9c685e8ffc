using HpBackprop.Training;
namespace HpBackprop.Networks;

/// <summary>
/// Where a training run of <see cref="Network.Fit(ExampleSet, TrainingRun, Action{TrainingProgress}?, int, CancellationToken, int?)"/>
/// stands: the steps done, the seed of its minibatches and the losses so far. Saved in a checkpoint with the
/// network (<see cref="IO.StackCheckpoint.Save(string, Network, Data.Vocabulary?, IReadOnlyDictionary{string, string}?, TrainingRun?)"/>)
/// it lets an interrupted run continue exactly where it stopped.
/// </summary>
public sealed class TrainingRun
{
    /// <summary>
    /// A run of <paramref name="totalSteps"/> steps whose minibatches are drawn under <paramref name="seed"/>: the minibatch
    /// of optimiser step t is a function of (seed, t) (<see cref="ExampleSet.DrawBatch"/>), so a resumed run draws what
    /// the run never stopped would have drawn.
    /// </summary>
    public TrainingRun(int seed, int totalSteps)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(totalSteps);
        Seed = seed;
        TotalSteps = totalSteps;
        Losses = new float[totalSteps];
        Array.Fill(Losses, float.NaN);
    }

    internal TrainingRun(int totalSteps, int completed, int seed, float[] losses)
    {
        TotalSteps = totalSteps;
        Completed = completed;
        Seed = seed;
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

    /// <summary>The seed of the minibatches.</summary>
    public int Seed { get; }
}
