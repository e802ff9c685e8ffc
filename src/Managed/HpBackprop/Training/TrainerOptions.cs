namespace HpBackprop.Training;

/// <summary>The SPEC §5 recipe: plain SGD with a one-step learning-rate schedule over uniformly drawn minibatches.</summary>
public sealed record TrainerOptions
{
    /// <summary>Number of SGD steps (default 200,000).</summary>
    public int Steps { get; init; } = 200_000;

    /// <summary>Learning rate before <see cref="DecayStep"/> (default 0.1).</summary>
    public float LearningRate { get; init; } = 0.1f;

    /// <summary>Learning rate from <see cref="DecayStep"/> on (default 0.01).</summary>
    public float DecayedLearningRate { get; init; } = 0.01f;

    /// <summary>First step with the decayed rate; null means half of <see cref="Steps"/>.</summary>
    public int? DecayStep { get; init; }

    /// <summary>Seed of the minibatch draws.</summary>
    public int Seed { get; init; } = 42;

    /// <summary>How often (in steps) progress is reported; 0 disables reports.</summary>
    public int ReportEvery { get; init; } = 1000;

    /// <summary>The learning rate of a step.</summary>
    public float LearningRateAt(int step) => step < (DecayStep ?? Steps / 2) ? LearningRate : DecayedLearningRate;

    /// <summary>Throws <see cref="ArgumentException"/> for out-of-range options.</summary>
    public TrainerOptions Validate()
    {
        if (Steps < 0) throw new ArgumentException($"Steps = {Steps}: must not be negative.");
        if (!(float.IsFinite(LearningRate) && LearningRate >= 0)) throw new ArgumentException($"LearningRate = {LearningRate}: must be a finite number ≥ 0.");
        if (!(float.IsFinite(DecayedLearningRate) && DecayedLearningRate >= 0)) throw new ArgumentException($"DecayedLearningRate = {DecayedLearningRate}: must be a finite number ≥ 0.");
        if (ReportEvery < 0) throw new ArgumentException($"ReportEvery = {ReportEvery}: must not be negative.");
        return this;
    }
}

/// <summary>A progress report: the step just finished, its loss and the throughput so far.</summary>
/// <param name="Step">Steps completed.</param>
/// <param name="TotalSteps">Steps planned.</param>
/// <param name="Loss">Loss of the last step.</param>
/// <param name="StepsPerSecond">Average throughput since the start.</param>
public readonly record struct TrainingProgress(int Step, int TotalSteps, float Loss, double StepsPerSecond);
