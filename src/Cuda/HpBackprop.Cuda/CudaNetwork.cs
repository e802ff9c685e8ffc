using System.Globalization;
using System.Numerics.Tensors;
using HpBackprop.Cuda.Runtime;
using HpBackprop.Model;
using HpBackprop.Networks;

namespace HpBackprop.Cuda;

/// <summary>
/// The makemore stack (<c>embedding:VxE,flatten,linear:(B·E)xH,batchnorm:H,tanh,linear:HxV</c>, see
/// <see cref="Sequential.Makemore"/>) compiled for one batch size on a CUDA device, or on the kernel emulator
/// (the same kernels on the host, no GPU needed). Every parameter, gradient and running statistic lives on the
/// device; <see cref="Parameters"/> is the host copy in the state-dict layout of the equivalent
/// <c>torch.nn.Sequential</c> (<c>0.weight</c> [V,E], <c>2.weight</c> [H,B·E], <c>2.bias</c>, <c>3.weight</c>,
/// <c>3.bias</c>, <c>3.running_mean</c>, <c>3.running_var</c>, <c>5.weight</c> [V,H], <c>5.bias</c>), brought up to
/// date by <see cref="PullParameters"/> and sent back by <see cref="PushParameters"/>. Trained with plain SGD
/// (momentum 0, weight decay 0) under a constant or step schedule and cross-entropy; <see cref="FirstUnsupported"/>
/// says what else is not supported yet. A training step uploads the minibatch once and allocates nothing.
/// </summary>
/// <example>
/// <code>
/// var stack = Sequential.Makemore(vocabSize: 27);
/// var options = new NetworkOptions { BatchSize = 32, Schedule = new StepSchedule(100_000, 0.1f) };
/// using INetwork net = CudaProbe.WhyUnavailable() == null ? CudaNetwork.OnDevice(stack, options) : Network.Create(stack, options);
/// net.Initialize(seed: 42);
/// net.Fit(ExampleSet.FromWords(split.Train), steps: 200_000);
/// net.Calibrate(ExampleSet.FromWords(split.Train));
/// net.PullParameters();   // net.Parameters now holds the trained values
/// </code>
/// </example>
public sealed class CudaNetwork : INetwork
{
    private const string Supported = "the GPU runs the makemore stack embedding:VxE, flatten, linear:(B·E)xH, batchnorm:H, tanh, linear:HxV (linear layers with bias, batch norm in the Bessel mode)";

    private readonly CudaBackend _backend;
    private readonly ParameterSet _set;
    private readonly int _b, _v;
    private long _tracked;

    private CudaNetwork(Sequential stack, NetworkOptions options, CudaBackend backend, ParameterSet set)
    {
        Stack = stack;
        Options = options;
        _backend = backend;
        _set = set;
        var c = set.Config;
        _b = c.BlockSize; _v = c.VocabSize;
        _backend.RunningMomentum = options.BatchNormMomentum;
        // zeros and unit running variances on both sides, as the backend uploaded them
        Parameters = new ParameterStore(stack, options.Optimizer.StateSlots);
    }

    /// <summary>
    /// Compiles <paramref name="stack"/> for the first CUDA device. Every check happens first — <see cref="Network.Check"/> (the same as on the CPU), then <see cref="FirstUnsupported"/> —,
    /// before the driver is opened or anything is allocated.
    /// </summary>
    /// <exception cref="StackException">The stack or a setting does not fit (as on the CPU), or the GPU does not run it yet; the message names the first layer or setting.</exception>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    /// <exception cref="CudaUnavailableException">There is no usable GPU here; the message says why and what to do.</exception>
    public static CudaNetwork OnDevice(Sequential stack, NetworkOptions options, ScatterMode scatter = ScatterMode.Deterministic)
    {
        var config = Check(stack, options);
        return Create(stack, options, config, new DriverRuntime(), scatter, ownsRuntime: true);
    }

    /// <summary>Compiles <paramref name="stack"/> for the kernel emulator (the CUDA kernels run on the host; slow, for tests). Checks as <see cref="OnDevice"/>.</summary>
    /// <exception cref="StackException">The stack or a setting does not fit, or the GPU does not run it yet; the message names the first layer or setting.</exception>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    /// <exception cref="CudaUnavailableException">The emulator library was not built.</exception>
    public static CudaNetwork OnEmulator(Sequential stack, NetworkOptions options, ScatterMode scatter = ScatterMode.Deterministic)
    {
        var config = Check(stack, options);
        return Create(stack, options, config, new EmulatorRuntime(), scatter, ownsRuntime: true);
    }

    /// <summary>Compiles <paramref name="stack"/> on <paramref name="runtime"/>. Checks as <see cref="OnDevice"/>, before the runtime is used.</summary>
    /// <param name="stack">The makemore stack.</param>
    /// <param name="options">Batch size, loss, optimiser, schedule, batch-norm momentum and epsilon.</param>
    /// <param name="runtime">The device runtime.</param>
    /// <param name="scatter">How the embedding gradient is accumulated.</param>
    /// <param name="ownsRuntime">Dispose the runtime with the network (also when this method throws after the checks).</param>
    /// <exception cref="StackException">The stack or a setting does not fit, or the GPU does not run it yet; the message names the first layer or setting.</exception>
    /// <exception cref="ArgumentException">An option is out of range; the message names it.</exception>
    public static CudaNetwork On(IDeviceRuntime runtime, Sequential stack, NetworkOptions options, ScatterMode scatter = ScatterMode.Deterministic, bool ownsRuntime = false)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        var config = Check(stack, options);
        return Create(stack, options, config, runtime, scatter, ownsRuntime);
    }

    private static CudaNetwork Create(Sequential stack, NetworkOptions options, ModelConfig config, IDeviceRuntime runtime, ScatterMode scatter, bool ownsRuntime)
    {
        CudaBackend? backend = null;
        try
        {
            var set = new ParameterSet(config);
            backend = new CudaBackend(set, runtime, scatter, ownsRuntime);
            return new CudaNetwork(stack, options, backend, set);
        }
        catch
        {
            if (backend != null) backend.Dispose();
            else if (ownsRuntime) runtime.Dispose();
            throw;
        }
    }

    /// <summary>The factories' checks, before anything is allocated: <see cref="Network.Check"/> (the same as on the CPU), then <see cref="FirstUnsupported"/>.</summary>
    private static ModelConfig Check(Sequential stack, NetworkOptions options)
    {
        Network.Check(stack, options);
        if (FirstUnsupported(stack, options) is string why) throw new StackException(why);
        var l = stack.Layers;
        return new ModelConfig(l[0].In, l[2].In / l[0].Out, l[0].Out, l[2].Out, options.BatchSize, options.Eps).Validate();
    }

    /// <summary>
    /// Why the GPU does not run <paramref name="stack"/> with <paramref name="options"/> yet, naming the first layer
    /// (its index and text form, e.g. <c>layer 4 (relu) is not supported on the GPU yet</c>) or the first setting
    /// that differs from what it runs — the makemore stack (see <see cref="Sequential.Makemore"/>: linear layers with
    /// bias, batch norm in the Bessel mode, the last layer giving one output per id of the embedding) trained with
    /// <c>cross_entropy</c>, plain <see cref="Sgd"/> (momentum 0, weight decay 0), a constant or
    /// <see cref="StepSchedule"/> schedule and no L2 —; null when it runs them. Checks only this, not whether the
    /// stack fits together (<see cref="Network.Check"/> does).
    /// </summary>
    public static string? FirstUnsupported(Sequential stack, NetworkOptions options)
    {
        ArgumentNullException.ThrowIfNull(stack);
        ArgumentNullException.ThrowIfNull(options);
        var l = stack.Layers;
        var want = new[] { LayerKind.Embedding, LayerKind.Flatten, LayerKind.Linear, LayerKind.BatchNorm, LayerKind.Tanh, LayerKind.Linear };
        for (int i = 0; i < want.Length; i++)
        {
            if (i >= l.Count) return $"the stack ends after layer {i - 1} ({l[i - 1]}): {Supported}.";
            bool ok = l[i].Kind == want[i] && (l[i].Kind != LayerKind.Linear || l[i].HasBias) && (l[i].Kind != LayerKind.BatchNorm || l[i].Mode == BatchNormMode.Bessel);
            if (!ok) return $"layer {i} ({l[i]}) is not supported on the GPU yet: {Supported}.";
        }
        if (l.Count > want.Length) return $"layer {want.Length} ({l[want.Length]}) is not supported on the GPU yet: {Supported}.";
        if (l[2].In % l[0].Out != 0)
            return $"layer 2 ({l[2]}) takes {l[2].In} features, not a whole number of embeddings of width {l[0].Out} (layer 0, {l[0]}).";
        if (options.InputWidth is int w && w * l[0].Out != l[2].In)
            return $"layer 2 ({l[2]}) takes {l[2].In} features but the input width {w} gives {w * l[0].Out} (layer 0, {l[0]}).";
        if (l[3].In != l[2].Out) return $"layer 3 ({l[3]}) takes {l[3].In} features but layer 2 ({l[2]}) gives {l[2].Out}.";
        if (l[5].In != l[3].In) return $"layer 5 ({l[5]}) takes {l[5].In} features but layer 4 (tanh) gives {l[3].In}.";
        if (l[5].Out != l[0].In)
            return $"layer 5 ({l[5]}) gives {l[5].Out} outputs but the GPU needs one per id of layer 0 ({l[0]}), {l[0].In}: the classes are the ids.";
        if (options.Loss != LossKind.CrossEntropy) return $"the loss {options.Loss.ToText()} is not supported on the GPU yet: it trains with cross_entropy.";
        if (options.Optimizer is not Sgd { Momentum: 0, WeightDecay: 0 })
            return $"the optimiser {options.Optimizer} is not supported on the GPU yet: it runs plain sgd (momentum 0, weight_decay 0).";
        if (options.Schedule is not (ConstantSchedule or StepSchedule))
            return $"the schedule {options.Schedule} is not supported on the GPU yet: it runs constant or step:at=S,factor=F.";
        if (options.L2 != 0)
            return $"NetworkOptions.L2 = {options.L2.ToString(CultureInfo.InvariantCulture)} is not supported on the GPU yet: it must be 0.";
        return null;
    }

    /// <summary>Where it runs: the runtime's name, <c>cuda (device name, …)</c> or <c>cuda-emulator</c>.</summary>
    public string Device => _backend.Name;

    /// <inheritdoc />
    public Sequential Stack { get; }

    /// <inheritdoc />
    public NetworkOptions Options { get; }

    /// <summary>The input width: B ids per row.</summary>
    public int InputWidth => _b;

    /// <summary>The output width: V classes (the ids of the embedding).</summary>
    public int OutputWidth => _v;

    /// <inheritdoc />
    public int BatchSize => Options.BatchSize;

    /// <summary>The host copy of the parameters, gradients and running statistics, under the state-dict names (see <see cref="PullParameters"/>).</summary>
    public ParameterStore Parameters { get; }

    /// <inheritdoc />
    public long StepCount { get; set; }

    /// <inheritdoc />
    public float LearningRate => Options.Schedule.At(StepCount, Options.Optimizer.LearningRate);

    /// <summary>The backend (for the CLI's makemore bundles, the tests and the GPU kit: launch counts, intermediate buffers, steps without a synchronisation).</summary>
    internal CudaBackend Backend => _backend;

    /// <summary>
    /// Fills <see cref="Parameters"/> with <see cref="ParameterStore.Initialize"/> (the same values as on every other
    /// device), sends them to the device, clears the gradients there and sets <see cref="StepCount"/> to 0.
    /// </summary>
    public void Initialize(int seed)
    {
        Parameters.Initialize(seed);
        PushParameters();
        _backend.ClearGradients();
        StepCount = 0;
    }

    /// <summary>
    /// Forward and backward on ids <c>[n,B]</c> and class ids <c>[n]</c>: fills the gradients on the device (see
    /// <see cref="PullParameters"/>) and returns the loss. Does not update the parameters; the batch statistics enter
    /// the running ones, as in a training-mode forward on the CPU.
    /// </summary>
    /// <exception cref="ShapeException">The lengths do not fit n and B, or an id is out of range.</exception>
    public float ForwardBackward(ReadOnlySpan<int> ids, ReadOnlySpan<int> classes)
    {
        float loss = _backend.ForwardBackwardOnly(ids, classes, updateRunning: true);
        _tracked++;
        return loss;
    }

    /// <summary>One training step: forward, backward, SGD with the scheduled rate (<see cref="LearningRate"/>), the running statistics. Returns the loss before the update.</summary>
    /// <exception cref="ShapeException">The lengths do not fit n and B, or an id is out of range.</exception>
    public float Step(ReadOnlySpan<int> ids, ReadOnlySpan<int> classes)
    {
        float loss = _backend.Step(ids, classes, LearningRate);
        StepCount++;
        _tracked++;
        return loss;
    }

    /// <summary>The mean cross-entropy over every example of <paramref name="data"/> in inference mode (batch norm with the running statistics).</summary>
    /// <exception cref="ArgumentException">The examples are not ids of width B with class ids, are empty, or hold an id out of range.</exception>
    public float Evaluate(ExampleSet data)
    {
        CheckData(data, needsClasses: true);
        return _backend.Evaluate(data.Ids!, data.Classes!, data.Count);
    }

    /// <summary>Replaces the batch norm's running statistics with the mean and Bessel-corrected variance of its input over <paramref name="train"/> (two passes in double precision on the device).</summary>
    /// <exception cref="ArgumentException">The examples are not ids of width B, hold an id out of range, or are fewer than 2.</exception>
    public void Calibrate(ExampleSet train)
    {
        CheckData(train, needsClasses: false);
        if (train.Count < 2) throw new ArgumentException("calibration needs at least 2 examples.", nameof(train));
        _backend.Calibrate(train.Ids!, train.Count);
    }

    /// <summary>Class probabilities (softmax) <c>[rows,V]</c> for ids <c>[rows,B]</c> in inference mode, or with <paramref name="raw"/> the logits.</summary>
    /// <exception cref="ShapeException">The lengths do not fit <paramref name="rows"/>, B and V.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="rows"/> is negative or an id is out of range.</exception>
    public void Predict(ReadOnlySpan<int> ids, int rows, Span<float> output, bool raw = false)
    {
        if (rows < 0) throw new ArgumentOutOfRangeException(nameof(rows), rows, "rows must not be negative.");
        if ((long)ids.Length != (long)rows * _b) throw new ShapeException("input", [rows, _b], [ids.Length / _b, _b]);
        if ((long)output.Length < (long)rows * _v) throw new ShapeException("output", [rows, _v], [output.Length / _v, _v]);
        for (int r0 = 0; r0 < rows; r0 += CudaBackend.EvalChunk)
        {
            int r = Math.Min(CudaBackend.EvalChunk, rows - r0);
            var o = output.Slice(r0 * _v, r * _v);
            _backend.InferLogits(ids.Slice(r0 * _b, r * _b), r, o);
            if (!raw)
                for (int i = 0; i < r; i++) TensorPrimitives.SoftMax(o.Slice(i * _v, _v), o.Slice(i * _v, _v));
        }
    }

    private void CheckData(ExampleSet data, bool needsClasses)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.Ids is null) throw new ArgumentException($"the stack takes ids, but the examples have {(data.Features != null ? "float features" : "no inputs")}.", nameof(data));
        if (data.InputWidth != _b) throw new ArgumentException($"the examples have {data.InputWidth} inputs per row but the network takes {_b}.", nameof(data));
        if (data.Count == 0) throw new ArgumentException("the example set is empty.", nameof(data));
        foreach (int id in data.Ids.AsSpan(0, data.Count * _b))
            if ((uint)id >= (uint)_v) throw new ArgumentException($"the examples hold id {id}, outside [0, {_v}) (layer 0, {Stack.Layers[0]}).", nameof(data));
        if (!needsClasses) return;
        if (data.Classes is null) throw new ArgumentException("the loss cross_entropy takes class ids, but the examples have " + (data.Targets != null ? "float targets." : "none."), nameof(data));
        foreach (int c in data.Classes.AsSpan(0, data.Count))
            if ((uint)c >= (uint)_v) throw new ArgumentException($"the examples hold class id {c}, outside [0, {_v}).", nameof(data));
    }

    /// <summary>
    /// Copies the device's parameters, gradients and running statistics into <see cref="Parameters"/>: the linear
    /// weights and their gradients transposed to PyTorch's <c>[OUT,IN]</c>, the running statistics into
    /// <c>3.running_mean</c>/<c>3.running_var</c>, the training forwards so far into <c>num_batches_tracked</c>.
    /// </summary>
    public void PullParameters()
    {
        _backend.PullParameters();
        MakemoreLayout.ToStore(_set, Parameters, gradients: true);
        Parameters.BatchesTracked[0] = _tracked;
    }

    /// <summary>Copies the parameters, running statistics and <c>num_batches_tracked</c> of <see cref="Parameters"/> to the device (the linear weights transposed to the device's <c>[IN,OUT]</c>). Gradients are not copied.</summary>
    public void PushParameters()
    {
        MakemoreLayout.FromStore(Parameters, _set, gradients: false);
        _tracked = Parameters.BatchesTracked[0];
        _backend.PushParameters();
    }

    /// <summary>Frees the device buffers (and the runtime, when the network owns it).</summary>
    public void Dispose() => _backend.Dispose();
}
