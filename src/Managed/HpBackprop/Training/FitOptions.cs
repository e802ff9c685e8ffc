using HpBackprop.Training;

namespace HpBackprop.Networks;

/// <summary>How <see cref="Network.Fit(ExampleSet, FitOptions)"/> draws its minibatches.</summary>
public enum BatchOrder
{
    /// <summary>Every row of every minibatch drawn uniformly with replacement (the lecture's recipe).</summary>
    Uniform,

    /// <summary>
    /// Epochs without replacement: the examples are shuffled at the start of each epoch and taken n at a time, so an epoch
    /// is ⌊Count / n⌋ steps and sees every example at most once; the Count mod n examples left at the end of an epoch's
    /// order are not used in that epoch (PyTorch's <c>drop_last=True</c>), and are in another place of the next one's.
    /// </summary>
    Epochs,
}

/// <summary>
/// The training loop of <see cref="Network.Fit(ExampleSet, FitOptions)"/>: how many steps, how minibatches are drawn, the
/// validation set and how often it is evaluated, early stopping, progress and cancellation.
/// </summary>
public sealed record FitOptions
{
    /// <summary>The most steps to take (default 1,000); early stopping or a cancellation may end the loop sooner.</summary>
    public int Steps { get; init; } = 1000;

    /// <summary>The seed of the minibatch draws (default 42): the same seed gives the same minibatches on every device.</summary>
    public int Seed { get; init; } = 42;

    /// <summary>Uniform draws with replacement (default) or epochs without replacement.</summary>
    public BatchOrder Order { get; init; } = BatchOrder.Uniform;

    /// <summary>
    /// Examples to evaluate in inference mode (batch norm with running statistics, dropout off) every
    /// <see cref="ValidateEvery"/> steps and after the last step (null: none). Checked once, like the training set, before the first step.
    /// </summary>
    public ExampleSet? Validation { get; init; }

    /// <summary>Steps between two evaluations of <see cref="Validation"/>; 0 (the default): once per epoch, ⌊Count / n⌋ steps of the training set (at least 1).</summary>
    public int ValidateEvery { get; init; }

    /// <summary>
    /// Early stopping: the loop ends after this many evaluations in a row without a validation loss below the best so far
    /// (by more than <see cref="MinDelta"/>). 0 (the default): no early stopping. Needs <see cref="Validation"/>.
    /// </summary>
    public int Patience { get; init; }

    /// <summary>How much lower than the best a validation loss must be to count as an improvement (default 0).</summary>
    public float MinDelta { get; init; }

    /// <summary>
    /// When the loop ends (all steps done, stopped early or cancelled), put back the parameters and running statistics of the
    /// evaluation with the lowest validation loss (default true; only with <see cref="Validation"/>). The optimiser state and
    /// <see cref="Network.StepCount"/> stay those of the last step.
    /// </summary>
    public bool RestoreBest { get; init; } = true;

    /// <summary>
    /// Before each evaluation, calibrate batch norm over the training set (<see cref="Network.Calibrate"/>), so the
    /// validation loss of a stack with batch norm is that of the calibrated model rather than of running statistics that
    /// may lag (default false). Training itself is unchanged: a training step normalises with the batch's statistics.
    /// </summary>
    public bool CalibrateBeforeValidation { get; init; }

    /// <summary>Called every <see cref="ReportEvery"/> steps and after the last step, on the training thread (null: none).</summary>
    public Action<TrainingProgress>? Progress { get; init; }

    /// <summary>Steps between two progress reports (default 1,000; 0: none).</summary>
    public int ReportEvery { get; init; } = 1000;

    /// <summary>Stops the loop at the end of the current step; the history then holds the steps done.</summary>
    public CancellationToken CancellationToken { get; init; }

    /// <summary>Checks every option's range.</summary>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    public FitOptions Validate()
    {
        if (Steps < 0) throw new ArgumentException($"FitOptions.Steps = {Steps} is invalid: it must not be negative.", nameof(Steps));
        if (!Enum.IsDefined(Order)) throw new ArgumentException($"FitOptions.Order = {(int)Order} is not a BatchOrder.", nameof(Order));
        if (ValidateEvery < 0) throw new ArgumentException($"FitOptions.ValidateEvery = {ValidateEvery} is invalid: it must not be negative (0: once per epoch).", nameof(ValidateEvery));
        if (Patience < 0) throw new ArgumentException($"FitOptions.Patience = {Patience} is invalid: it must not be negative (0: no early stopping).", nameof(Patience));
        if (Patience > 0 && Validation == null) throw new ArgumentException($"FitOptions.Patience = {Patience} needs a validation set: early stopping watches the validation loss (FitOptions.Validation).", nameof(Patience));
        if (!(float.IsFinite(MinDelta) && MinDelta >= 0)) throw new ArgumentException($"FitOptions.MinDelta = {MinDelta} is invalid: it must be a finite number ≥ 0.", nameof(MinDelta));
        if (ReportEvery < 0) throw new ArgumentException($"FitOptions.ReportEvery = {ReportEvery} is invalid: it must not be negative (0: no reports).", nameof(ReportEvery));
        return this;
    }
}

/// <summary>Why <see cref="Network.Fit(ExampleSet, FitOptions)"/> ended.</summary>
public enum FitStop
{
    /// <summary>Every step was taken.</summary>
    Completed,

    /// <summary>The validation loss did not improve for <see cref="FitOptions.Patience"/> evaluations in a row.</summary>
    EarlyStopping,

    /// <summary>The cancellation token was cancelled.</summary>
    Cancelled,
}

/// <summary>One evaluation of the validation set during <see cref="Network.Fit(ExampleSet, FitOptions)"/>.</summary>
/// <param name="Step">The steps done when it was evaluated (1-based, as progress counts them).</param>
/// <param name="Loss">The mean validation loss in inference mode.</param>
/// <param name="Accuracy">The fraction of validation examples classified right, for a classifier (cross-entropy, or BCE with one output); else null.</param>
public readonly record struct ValidationPoint(int Step, float Loss, float? Accuracy);

/// <summary>What <see cref="Network.Fit(ExampleSet, FitOptions)"/> did: the loss of every step done, every validation, the best one and why it ended.</summary>
public sealed class TrainingHistory
{
    internal TrainingHistory(float[] losses, IReadOnlyList<ValidationPoint> validation, ValidationPoint? best, FitStop stop, bool restoredBest)
    {
        Losses = losses; Validation = validation; Best = best; Stop = stop; RestoredBest = restoredBest;
    }

    /// <summary>The training loss of every step done, and of those only (its length is <see cref="Steps"/>).</summary>
    public float[] Losses { get; }

    /// <summary>The steps done.</summary>
    public int Steps => Losses.Length;

    /// <summary>Every evaluation of the validation set, in order (empty without one).</summary>
    public IReadOnlyList<ValidationPoint> Validation { get; }

    /// <summary>The evaluation with the lowest validation loss (the first of equals), or null without a validation set.</summary>
    public ValidationPoint? Best { get; }

    /// <summary>Why the loop ended.</summary>
    public FitStop Stop { get; }

    /// <summary>Whether the parameters of <see cref="Best"/> were put back (<see cref="FitOptions.RestoreBest"/>, when the best was not the last step).</summary>
    public bool RestoredBest { get; }
}
