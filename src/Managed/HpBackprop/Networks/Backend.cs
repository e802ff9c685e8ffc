namespace HpBackprop.Networks;

/// <summary>One minibatch or inference chunk as the backends take it: host pointers (null where the stack or loss takes none).</summary>
internal readonly unsafe struct Batch(int rows, int* ids, float* features, int* classes, float* targets)
{
    /// <summary>Rows.</summary>
    public int Rows { get; } = rows;

    /// <summary>Ids <c>[rows,B]</c> (a stack on ids).</summary>
    public int* Ids { get; } = ids;

    /// <summary>Features <c>[rows,D]</c>, or the activations entering the first step of an inference that starts inside the plan.</summary>
    public float* Features { get; } = features;

    /// <summary>Class ids <c>[rows]</c> (cross-entropy).</summary>
    public int* Classes { get; } = classes;

    /// <summary>Float targets <c>[rows,k]</c> (mse, bce_with_logits).</summary>
    public float* Targets { get; } = targets;
}

/// <summary>What one training step does beside forward and backward.</summary>
/// <param name="Update">Apply the optimiser.</param>
/// <param name="LearningRate">The scheduled rate of this step.</param>
/// <param name="AdamStep">AdamW's t (1-based) for this step.</param>
/// <param name="Step">The optimiser steps taken so far: the dropout masks' step.</param>
internal readonly record struct StepArgs(bool Update, float LearningRate, long AdamStep, long Step);

/// <summary>The host-visible buffers of the last training step (<see cref="Backend.ReadTraining"/>).</summary>
internal enum TrainingBuffer
{
    /// <summary>The output of a step, <c>[n, OutWidth]</c>.</summary>
    Output,
    /// <summary>The gradient of a step's output.</summary>
    OutputGradient,
    /// <summary>The gradient of the float input (<see cref="NetworkOptions.InputGradients"/>).</summary>
    InputGradient,
    /// <summary>The gradient of the float targets (<see cref="NetworkOptions.InputGradients"/>).</summary>
    TargetGradient,
}

/// <summary>
/// A device that runs compiled plans: it says which rows of the fusion table (<see cref="Plan.Fusions"/>) it runs and
/// makes a <see cref="Backend"/> for a plan. The CPU's is <see cref="Cpu.CpuDevice"/>; the CUDA package adds the GPU and
/// its kernel emulator.
/// </summary>
internal abstract class DeviceKind
{
    /// <summary>The fusions this device's ops implement.</summary>
    public abstract IReadOnlySet<string> Fusions { get; }

    /// <summary>Allocates the plan's buffers on the device and copies <paramref name="store"/> there.</summary>
    public abstract Backend Create(Plan plan, ParameterStore store);
}

/// <summary>
/// One op per <see cref="StepKind"/> for a device, wired to a <see cref="Plan"/>'s steps, buffers sized once: what
/// <see cref="Network"/> needs below the line where everything is written once (validation, the schedule, the training
/// loop, evaluation, prediction, calibration, checkpoints). Every method trusts its arguments: the network has checked them.
/// </summary>
internal abstract unsafe class Backend : IDisposable
{
    /// <summary>Where it runs: "cpu", "cuda (name, …)" or "cuda-emulator".</summary>
    public abstract string Device { get; }

    /// <summary>What the training steps asked of the device so far; null on the CPU.</summary>
    public virtual DeviceTraffic? Traffic => null;

    /// <summary>Rows per inference chunk.</summary>
    public const int EvalChunk = 1024;

    /// <summary>
    /// One training step on a minibatch of the plan's batch size: forward (batch statistics, running statistics updated,
    /// dropout masks of <see cref="StepArgs.Step"/>), the loss straight from the output, backward, the L2 penalty, and the
    /// optimiser when <see cref="StepArgs.Update"/>. Returns the loss (with the L2 term).
    /// </summary>
    public abstract float Step(in Batch batch, in StepArgs args);

    /// <summary>
    /// Keeps a copy of <paramref name="set"/> on the device (its values as they are now), replacing the one kept before, so that <see cref="StepDrawn"/>
    /// draws its minibatches there under <paramref name="seed"/> (<see cref="Model.MinibatchDraw"/>) with no copy from the
    /// host. False where the device has no use for it (the CPU, whose steps read the set where it is) or the set does not
    /// fit in the device's memory: the caller then draws on the host and calls <see cref="Step"/>.
    /// </summary>
    public virtual bool Reside(ExampleSet set, int seed) => false;

    /// <summary>
    /// One training step (as <see cref="Step"/>, with the optimiser) on the minibatch of optimiser step
    /// <see cref="StepArgs.Step"/> drawn on the device from the set of the last successful <see cref="Reside"/>. The loss
    /// stays in the device's ring of <see cref="LossWindow"/> slots until <see cref="ReadLosses"/>.
    /// </summary>
    public virtual void StepDrawn(in StepArgs args) => throw new NotSupportedException("this device keeps no example set");

    /// <summary>Whether the device queues training steps on the host's minibatches without reading each loss (<see cref="StepQueued"/>).</summary>
    public virtual bool QueuesSteps => false;

    /// <summary>
    /// Queues a training step on <paramref name="batch"/> (copied before this returns: the caller may reuse it) without
    /// waiting for it; its loss stays on the device with <see cref="StepDrawn"/>'s and is read by <see cref="ReadLosses"/>.
    /// </summary>
    public virtual void StepQueued(in Batch batch, in StepArgs args) => throw new NotSupportedException("this device runs each step when it is asked");

    /// <summary>How many of the latest <see cref="StepDrawn"/> and <see cref="StepQueued"/> steps' losses the device holds (read them before queueing more).</summary>
    public virtual int LossWindow => 0;

    /// <summary>Copies the losses (with the L2 term) of the optimiser steps <c>[first, first + destination.Length)</c>, the latest steps queued and at most <see cref="LossWindow"/>.</summary>
    public virtual void ReadLosses(long first, Span<float> destination) => throw new NotSupportedException("this device keeps no losses");

    /// <summary>
    /// Inference (running statistics, no dropout) of <paramref name="batch"/> (at most <see cref="EvalChunk"/> rows) from
    /// step <paramref name="from"/> (its input: the batch's ids or features when 0, else the batch's features hold the
    /// output of step <paramref name="from"/> − 1) up to step <paramref name="to"/> (exclusive). The result stays on the device.
    /// </summary>
    public abstract void Infer(in Batch batch, int from, int to);

    /// <summary>The sum over the rows of the loss of the last <see cref="Infer"/> through the whole plan, against the batch's targets.</summary>
    public abstract double InferLoss(in Batch batch);

    /// <summary>Copies the result of the last <see cref="Infer"/> (rows × its width) to <paramref name="destination"/>.</summary>
    public abstract void ReadInferred(Span<float> destination);

    /// <summary>Copies a buffer of the last training step (<paramref name="step"/> for the per-step buffers) to <paramref name="destination"/>.</summary>
    public abstract void ReadTraining(TrainingBuffer which, int step, Span<float> destination);

    /// <summary>Copies the device's parameters, gradients, optimiser state and running statistics to the store (nothing on the CPU).</summary>
    public abstract void Pull();

    /// <summary>Copies the store's parameters, gradients, optimiser state and running statistics to the device (nothing to copy on the CPU).</summary>
    public abstract void Push();

    /// <summary>Copies the store's running statistics alone to the device (after a calibration).</summary>
    public abstract void PushBuffers();

    /// <summary>Frees the device's buffers.</summary>
    public virtual void Dispose() { }
}
