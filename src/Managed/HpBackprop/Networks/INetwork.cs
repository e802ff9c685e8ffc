using HpBackprop.Training;

namespace HpBackprop.Networks;

/// <summary>
/// A stack compiled for one batch size on one device: what a training program needs from it, whether it runs
/// on the CPU (<see cref="Network"/>) or on a GPU (<c>HpBackprop.Cuda.CudaNetwork</c>, the makemore stack). The
/// parameters live on the device; <see cref="Parameters"/> is the host copy in the state-dict layout,
/// brought up to date by <see cref="PullParameters"/> and sent back by <see cref="PushParameters"/> (both do
/// nothing on the CPU, where the two are the same buffers).
/// </summary>
public interface INetwork : IDisposable
{
    /// <summary>Where it runs: "cpu", or the GPU's name.</summary>
    string Device { get; }

    /// <summary>The stack.</summary>
    Sequential Stack { get; }

    /// <summary>The options it was compiled with.</summary>
    NetworkOptions Options { get; }

    /// <summary>The input width: B ids or D features per row.</summary>
    int InputWidth { get; }

    /// <summary>The output width k of the last layer.</summary>
    int OutputWidth { get; }

    /// <summary>Rows of every training minibatch.</summary>
    int BatchSize { get; }

    /// <summary>The host copy of the parameters, gradients and running statistics, under the state-dict names.</summary>
    ParameterStore Parameters { get; }

    /// <summary>Optimiser steps taken so far (the schedule's position).</summary>
    long StepCount { get; set; }

    /// <summary>The learning rate the next step will use.</summary>
    float LearningRate { get; }

    /// <summary>Fills the parameters from a generator seeded with <paramref name="seed"/> (the same values on every device) and clears the rest.</summary>
    void Initialize(int seed);

    /// <summary>Forward and backward on ids <c>[n,B]</c> and class ids <c>[n]</c>: fills the gradients, returns the loss. Does not update.</summary>
    float ForwardBackward(ReadOnlySpan<int> ids, ReadOnlySpan<int> classes);

    /// <summary>One training step on ids and class ids: forward, backward, the optimiser with the scheduled rate. Returns the loss before the update.</summary>
    float Step(ReadOnlySpan<int> ids, ReadOnlySpan<int> classes);

    /// <summary>The mean loss over every example of <paramref name="data"/> in inference mode (batch norm with running statistics).</summary>
    float Evaluate(ExampleSet data);

    /// <summary>Replaces every batch norm's running statistics with the mean and Bessel-corrected variance of its input over <paramref name="train"/>.</summary>
    void Calibrate(ExampleSet train);

    /// <summary>Outputs <c>[rows,k]</c> for ids <c>[rows,B]</c> in inference mode: probabilities, or with <paramref name="raw"/> the logits.</summary>
    void Predict(ReadOnlySpan<int> ids, int rows, Span<float> output, bool raw = false);

    /// <summary>Copies the device's parameters, gradients and statistics into <see cref="Parameters"/> (nothing to do on the CPU).</summary>
    void PullParameters();

    /// <summary>Copies <see cref="Parameters"/> to the device (nothing to do on the CPU).</summary>
    void PushParameters();
}

/// <summary>The training loop every <see cref="INetwork"/> shares.</summary>
public static class NetworkTraining
{
    /// <summary>
    /// Trains <paramref name="network"/> for <paramref name="steps"/> steps on minibatches drawn uniformly with
    /// replacement from <paramref name="train"/> (seeded by <paramref name="seed"/>; the same draws on every device),
    /// reporting progress every <paramref name="reportEvery"/> steps. Returns the loss of every step. The loop
    /// allocates nothing per step; a cancellation stops it at the end of a step (the losses so far are in the
    /// returned array, the rest are NaN).
    /// </summary>
    /// <exception cref="TrainingDivergedException">A loss was NaN or infinite; the message names the step and the rate.</exception>
    public static float[] Fit(this INetwork network, ExampleSet train, int steps, int seed = 42, Action<TrainingProgress>? progress = null, int reportEvery = 1000, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(steps);
        var run = new TrainingRun(seed, steps);
        network.Fit(train, run, progress, reportEvery, cancellationToken);
        return run.Losses;
    }

    /// <summary>
    /// Continues <paramref name="run"/>: trains <paramref name="network"/> from step <see cref="TrainingRun.Completed"/>
    /// up to <paramref name="untilStep"/> (default: <see cref="TrainingRun.TotalSteps"/>) on minibatches drawn by the
    /// run's generator, recording each loss in <see cref="TrainingRun.Losses"/>. A run saved with
    /// <see cref="IO.StackCheckpoint"/> and continued here gives bitwise the parameters of the same run never
    /// stopped. The loop allocates nothing per step; a cancellation stops it at the end of a step. Returns the
    /// number of steps taken by this call.
    /// </summary>
    /// <exception cref="TrainingDivergedException">A loss was NaN or infinite; the message names the 1-based step and the rate.</exception>
    public static int Fit(this INetwork network, ExampleSet train, TrainingRun run, Action<TrainingProgress>? progress = null, int reportEvery = 1000,
        CancellationToken cancellationToken = default, int? untilStep = null)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(run);
        int until = untilStep ?? run.TotalSteps;
        if (until < run.Completed || until > run.TotalSteps)
            throw new ArgumentOutOfRangeException(nameof(untilStep), until, $"untilStep must be in [{run.Completed}, {run.TotalSteps}].");
        if (network is Network cpu) cpu.CheckExamples(train);
        else if (train.Ids == null || train.Classes == null || train.InputWidth != network.InputWidth)
            throw new ArgumentException($"the network on {network.Device} trains on ids [n,{network.InputWidth}] and class ids.", nameof(train));
        int n = network.BatchSize, w = network.InputWidth;
        var ids = train.Ids != null ? new int[n * w] : [];
        var feats = train.Features != null ? new float[n * w] : [];
        var cls = train.Classes != null ? new int[n] : [];
        var tg = train.Targets != null ? new float[n * train.TargetWidth] : [];
        var losses = run.Losses;
        var rng = run.Rng;
        int steps = run.TotalSteps, first = run.Completed;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        for (int s = first; s < until; s++)
        {
            if (cancellationToken.IsCancellationRequested) break;
            train.DrawBatch(rng, n, ids, feats, cls, tg);
            float lr = network.LearningRate;
            float loss = network is Network net ? net.StepOn(ids, feats, cls, tg) : network.Step(ids, cls);
            if (!float.IsFinite(loss)) throw new TrainingDivergedException(s + 1, lr, loss);
            losses[s] = loss;
            run.Completed = s + 1;
            if (progress != null && reportEvery > 0 && ((s + 1) % reportEvery == 0 || s + 1 == steps))
                progress(new TrainingProgress(s + 1, steps, loss, (s + 1 - first) / Math.Max(sw.Elapsed.TotalSeconds, 1e-9)));
        }
        return run.Completed - first;
    }
}

/// <summary>
/// Where a training run of <see cref="NetworkTraining.Fit(INetwork, ExampleSet, TrainingRun, Action{TrainingProgress}?, int, CancellationToken, int?)"/>
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
