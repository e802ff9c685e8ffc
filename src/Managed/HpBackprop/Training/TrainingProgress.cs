namespace HpBackprop.Training;

/// <summary>A progress report: the step just finished, its loss and the throughput so far.</summary>
/// <param name="Step">Steps completed.</param>
/// <param name="TotalSteps">Steps planned.</param>
/// <param name="Loss">Loss of the last step.</param>
/// <param name="StepsPerSecond">Average throughput since the start.</param>
public readonly record struct TrainingProgress(int Step, int TotalSteps, float Loss, double StepsPerSecond)
{
    /// <summary>The latest evaluation of the validation set (<see cref="Networks.FitOptions.Validation"/>), or null before the first or without one.</summary>
    public Networks.ValidationPoint? Validation { get; init; }
}
