using HpBackprop.Data;
using HpBackprop.Model;

namespace HpBackprop.Training;

/// <summary>
/// The CUDA backend's contract for the makemore MLP over a
/// <see cref="ParameterSet"/>, so it can fuse freely (docs/design.md). It also evaluates, calibrates
/// batch norm and produces logits for sampling. A step allocates nothing.
/// </summary>
internal interface ITrainingBackend : IDisposable
{
    /// <summary>A short name for messages ("cpu", "cuda", "cuda-emulator").</summary>
    string Name { get; }

    /// <summary>The dimensions; <see cref="ModelConfig.BatchSize"/> is the minibatch size every step must have.</summary>
    ModelConfig Config { get; }

    /// <summary>The host copy of the parameters (see <see cref="PullParameters"/> and <see cref="PushParameters"/>).</summary>
    ParameterSet Parameters { get; }

    /// <summary>Weight of the newest batch in the batch-norm running statistics (default 0.001).</summary>
    float RunningMomentum { get; set; }

    /// <summary>Forward and backward on one minibatch: fills the gradients, returns the loss. Does not update.</summary>
    /// <param name="xb">Contexts <c>[n,B]</c>.</param>
    /// <param name="yb">Targets <c>[n]</c>.</param>
    float ForwardBackward(ReadOnlySpan<int> xb, ReadOnlySpan<int> yb);

    /// <summary>One training step: forward, backward, SGD with <paramref name="lr"/>, running statistics. Returns the loss before the update.</summary>
    float Step(ReadOnlySpan<int> xb, ReadOnlySpan<int> yb, float lr);

    /// <summary>The mean loss over a data set, forward only, using the inference batch-norm statistics.</summary>
    float Evaluate(Dataset data);

    /// <summary>Replaces the inference statistics with the mean and Bessel variance of <c>hprebn</c> over <paramref name="train"/>.</summary>
    void Calibrate(Dataset train);

    /// <summary>Logits <c>[rows,V]</c> for contexts <c>[rows,B]</c> with inference statistics (for sampling).</summary>
    void InferLogits(ReadOnlySpan<int> contexts, int rows, Span<float> logits);

    /// <summary>Copies the backend's parameters, gradients and statistics into <see cref="Parameters"/> (no-op on the CPU).</summary>
    void PullParameters();

    /// <summary>Copies <see cref="Parameters"/> into the backend (no-op on the CPU).</summary>
    void PushParameters();
}
