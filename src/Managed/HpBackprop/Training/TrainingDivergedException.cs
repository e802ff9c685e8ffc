namespace HpBackprop.Training;

/// <summary>Training produced a NaN or infinite loss. The message names the step and the learning rate.</summary>
public sealed class TrainingDivergedException : Exception
{
    /// <summary>Creates the exception.</summary>
    public TrainingDivergedException(int step, float learningRate, float loss)
        : base($"training diverged at step {step}: the loss is {loss} with learning rate {learningRate}. Lower the optimizer's LearningRate and start again.")
    {
        Step = step; LearningRate = learningRate; Loss = loss;
    }

    /// <summary>The 1-based step (as progress counts them) whose loss was not finite.</summary>
    public int Step { get; }

    /// <summary>The learning rate of that step.</summary>
    public float LearningRate { get; }

    /// <summary>The loss (NaN or infinite).</summary>
    public float Loss { get; }
}
