using System.Globalization;

namespace HpBackprop.Networks;

/// <summary>What a step of a compiled <see cref="Plan"/> computes; every backend supplies one op per kind.</summary>
internal enum StepKind
{
    /// <summary><c>embedding</c>: gather rows of the table by id (flatten after it is a view of the same memory).</summary>
    Gather,
    /// <summary><c>linear</c>: <c>y = x·Wᵀ + b</c>.</summary>
    Linear,
    /// <summary><c>batchnorm</c>, with the activation after it when that fusion runs.</summary>
    BatchNorm,
    /// <summary><c>layernorm</c>.</summary>
    LayerNorm,
    /// <summary>A standalone <c>tanh</c>, <c>relu</c> or <c>sigmoid</c>.</summary>
    Activation,
    /// <summary><c>dropout</c>.</summary>
    Dropout,
}

/// <summary>
/// One step of a compiled <see cref="Plan"/>: a layer, and the layers fused into it. It reads the buffer slot of the step
/// before it (the network's input for the first) and writes its own slot, named after the last layer it covers; a
/// training step also keeps the gradient of its slot. Flatten layers never make a step: they are views.
/// </summary>
internal sealed class PlanStep
{
    /// <summary>The op kind.</summary>
    public required StepKind Kind { get; init; }

    /// <summary>The index of the step's own layer.</summary>
    public required int Layer { get; init; }

    /// <summary>The step's own layer.</summary>
    public required Layer Def { get; init; }

    /// <summary>The layers this step covers (its own, then the fused ones and views after it).</summary>
    public int Layers { get; set; } = 1;

    /// <summary>The index of the last layer covered: the step's slot holds that layer's output.</summary>
    public int Last => Layer + Layers - 1;

    /// <summary>The name of the step's output slot, <c>out.{last layer}</c>.</summary>
    public string Slot => string.Create(CultureInfo.InvariantCulture, $"out.{Last}");

    /// <summary>Floats per row of the input and the output.</summary>
    public int InWidth { get; set; }

    /// <summary>Floats per row of the output.</summary>
    public int OutWidth { get; set; }

    /// <summary>Batch norm: the activation fused after it (Tanh, Relu, Sigmoid), or null for none.</summary>
    public LayerKind? Activation { get; set; }

    /// <summary>Linear with bias: its bias gradient is written by the step after it (a batch norm, which sums its input gradient anyway, or an activation, which writes it).</summary>
    public bool BiasGradientFromNext { get; set; }

    /// <summary>Batch norm or activation: also writes the bias gradient of the linear step before it, <c>sum0(dx)</c>.</summary>
    public bool WritesPreviousBiasGradient { get; set; }

    /// <summary>Linear (the last step, before cross-entropy): the loss's kernel adds its bias to the logits and writes its bias gradient in training steps.</summary>
    public bool BiasInLoss { get; set; }

    /// <summary>Linear with bias, before a batch norm or an activation: that step adds the bias to its input in training steps (the linear's output still holds <c>x·Wᵀ + b</c>).</summary>
    public bool BiasInNext { get; set; }

    /// <summary>Batch norm or activation: adds the bias of the linear step before it to its input as it reads it (and writes the sum back), in training steps.</summary>
    public bool AddsPreviousBias { get; set; }

    /// <summary>Linear: plain SGD is applied to its weight in the weight-gradient product's epilogue.</summary>
    public bool SgdInEpilogue { get; set; }

    /// <summary>The fusions of <see cref="Plan.Fusions"/> that rewrote this step.</summary>
    public List<string> Fused { get; } = [];

    /// <summary>The step as one line of <see cref="Network.Plan"/>.</summary>
    public override string ToString()
    {
        string what = Kind switch
        {
            StepKind.Gather => "embedding (gather)",
            StepKind.Linear => Def.HasBias ? "linear (bias in the product)" : "linear",
            StepKind.BatchNorm => (Def.Mode == BatchNormMode.Biased ? "batchnorm:biased" : "batchnorm") + (Activation is { } a ? "+" + a.ToString().ToLowerInvariant() : ""),
            StepKind.LayerNorm => "layernorm",
            StepKind.Activation => Def.ToString(),
            _ => Def.ToString(),
        };
        return string.Create(CultureInfo.InvariantCulture, $"layers {Layer}..{Last}: {what}") + (Fused.Count > 0 ? $" [{string.Join("; ", Fused)}]" : "");
    }
}

/// <summary>
/// A stack and its options compiled once, independent of the device: a list of <see cref="PlanStep"/>s over named buffer
/// slots, rewritten by the rows of one fusion table (<see cref="Fusions"/>) that the backend says it runs. Validation,
/// training, evaluation, calibration and checkpoints are written once above it (<see cref="Network"/>); each backend
/// supplies one op per <see cref="StepKind"/>.
/// </summary>
internal sealed class Plan
{
    /// <summary>Flatten is a view: it joins the step before it (the gather of an embedding), or the input. Every backend runs it.</summary>
    public const string FlattenView = "flatten as a view";

    /// <summary>Batch norm and the activation after it run as one step (one sweep over the columns).</summary>
    public const string BatchNormActivation = "batchnorm+activation";

    /// <summary>The bias gradient of a linear right before a batch norm is written by the batch norm's backward, which sums its input gradient anyway.</summary>
    public const string BiasGradientFromBatchNorm = "linear bias gradient from the batch norm";

    /// <summary>
    /// The bias of a linear right before a batch norm is added by the batch norm's training forward as it first reads its
    /// input (in place: the linear's output still holds <c>x·Wᵀ + b</c>, with the bits of a separate bias add).
    /// </summary>
    public const string BiasInBatchNorm = "linear bias in the batch norm";

    /// <summary>
    /// The bias of a linear right before a standalone <c>tanh</c>, <c>relu</c> or <c>sigmoid</c> is added by the activation's
    /// training forward as it reads its input (written back: the linear's output still holds <c>x·Wᵀ + b</c>, with the bits
    /// of a separate bias add). The GPU's counterpart of a GEMM epilogue's bias and activation.
    /// </summary>
    public const string BiasInActivation = "linear bias in the activation";

    /// <summary>
    /// The bias gradient of a linear right before a standalone <c>tanh</c>, <c>relu</c> or <c>sigmoid</c> is summed by the
    /// activation's backward as it writes its input gradient, in the order of the separate column sum (the same bits).
    /// </summary>
    public const string BiasGradientFromActivation = "linear bias gradient from the activation";

    /// <summary>Plain SGD (no momentum, weight decay or L2) on a linear weight in the epilogue of its gradient's product.</summary>
    public const string SgdInEpilogue = "SGD in the weight-gradient epilogue";

    /// <summary>
    /// The last linear's bias added to the logits and its gradient summed by the cross-entropy's kernel, with the loss's
    /// sum, in training steps whose batch fits one block (<see cref="BiasInLossMaxRows"/> rows, <see cref="BiasInLossMaxWidth"/> classes).
    /// </summary>
    public const string BiasInLoss = "last bias in the loss";

    /// <summary>The largest batch of <see cref="BiasInLoss"/>.</summary>
    public const int BiasInLossMaxRows = 1024;

    /// <summary>The most classes of <see cref="BiasInLoss"/>.</summary>
    public const int BiasInLossMaxWidth = 2048;

    /// <summary>
    /// The whole training step of <c>embedding, flatten, linear, batchnorm(+act), linear</c> with cross-entropy as row
    /// blocks carried through every layer while they are in cache (the CPU's, at large n).
    /// </summary>
    public const string RowBlockPipeline = "row-block pipeline";

    /// <summary>The fusion table: each row rewrites adjacent steps when the backend runs it, in this order.</summary>
    public static IReadOnlyList<(string Name, string Does)> Fusions { get; } =
    [
        (FlattenView, "flatten joins the step before it: the gather of an embedding writes the flattened rows"),
        (BatchNormActivation, "a batch norm and the tanh, relu or sigmoid after it in one step"),
        (BiasGradientFromBatchNorm, "the batch norm's backward writes sum0(dx) as the bias gradient of the linear before it"),
        (BiasInBatchNorm, "the batch norm's training forward adds the bias of the linear before it as it reads its input"),
        (BiasInActivation, "a tanh, relu or sigmoid's training forward adds the bias of the linear before it as it reads its input"),
        (BiasGradientFromActivation, "a tanh, relu or sigmoid's backward sums its input gradient as the bias gradient of the linear before it"),
        (SgdInEpilogue, "plain SGD updates each linear weight in its gradient product's epilogue"),
        (BiasInLoss, "cross-entropy adds the last linear's bias, sums the loss and the bias gradient in one kernel (n <= 1024, at most 2048 classes)"),
        (RowBlockPipeline, "embedding, flatten, linear, batchnorm(+act), linear with cross-entropy as one pass of row blocks"),
    ];

    private Plan(Sequential stack, NetworkOptions options, TensorShape[] shapes, int inputWidth, PlanStep[] steps, bool pipeline)
    {
        Stack = stack; Options = options; Shapes = shapes; InputWidth = inputWidth; Steps = steps; WholeStepPipeline = pipeline;
    }

    /// <summary>The stack.</summary>
    public Sequential Stack { get; }

    /// <summary>The options.</summary>
    public NetworkOptions Options { get; }

    /// <summary>Every layer's output shape.</summary>
    public TensorShape[] Shapes { get; }

    /// <summary>B ids or D features per row.</summary>
    public int InputWidth { get; }

    /// <summary>k, the width of the output.</summary>
    public int OutputWidth => Shapes[^1].Width;

    /// <summary>The steps in order.</summary>
    public PlanStep[] Steps { get; }

    /// <summary>Whether the stack matches the <see cref="RowBlockPipeline"/> pattern and the backend runs it (the backend may still decline for a batch size or a CPU).</summary>
    public bool WholeStepPipeline { get; }

    /// <summary>
    /// Compiles a checked stack (<see cref="Network.Check"/>) for a backend that runs <paramref name="fusions"/>
    /// (<see cref="FlattenView"/> is always applied).
    /// </summary>
    public static Plan Compile(Sequential stack, NetworkOptions options, TensorShape[] shapes, int inputWidth, IReadOnlySet<string> fusions)
    {
        var layers = stack.Layers;
        var steps = new List<PlanStep>();
        int leadingViews = 0;
        for (int i = 0; i < layers.Count; i++)
        {
            var l = layers[i];
            int inWidth = i == 0 ? inputWidth : shapes[i - 1].PerRow;
            if (l.Kind == LayerKind.Flatten)
            {
                // the view row: flatten joins the step before it (or the input)
                if (steps.Count == 0) leadingViews++;
                else { steps[^1].Layers++; steps[^1].OutWidth = shapes[i].PerRow; if (steps[^1].Kind == StepKind.Gather) Note(steps[^1], FlattenView); }
                continue;
            }
            var kind = l.Kind switch
            {
                LayerKind.Embedding => StepKind.Gather,
                LayerKind.Linear => StepKind.Linear,
                LayerKind.BatchNorm => StepKind.BatchNorm,
                LayerKind.LayerNorm => StepKind.LayerNorm,
                LayerKind.Dropout => StepKind.Dropout,
                _ => StepKind.Activation,
            };
            steps.Add(new PlanStep { Kind = kind, Layer = i, Def = l, InWidth = inWidth, OutWidth = shapes[i].PerRow });
        }
        _ = leadingViews;

        if (fusions.Contains(BatchNormActivation))
            for (int k = steps.Count - 2; k >= 0; k--)
                if (steps[k].Kind == StepKind.BatchNorm && steps[k].Layers == 1 && steps[k + 1].Kind == StepKind.Activation && steps[k + 1].Layer == steps[k].Last + 1)
                {
                    steps[k].Activation = steps[k + 1].Def.Kind;
                    steps[k].Layers += steps[k + 1].Layers;
                    steps[k].OutWidth = steps[k + 1].OutWidth;
                    Note(steps[k], BatchNormActivation);
                    steps.RemoveAt(k + 1);
                }

        // a linear with bias right before a batch norm or a standalone tanh, relu or sigmoid: that step may write the
        // linear's bias gradient and add its bias
        for (int k = 0; k + 1 < steps.Count; k++)
        {
            if (steps[k] is not { Kind: StepKind.Linear, Def.HasBias: true, Layers: 1 }) continue;
            var next = steps[k + 1];
            bool norm = next.Kind == StepKind.BatchNorm;
            if (!norm && !(next.Kind == StepKind.Activation && next.Def.Kind is LayerKind.Tanh or LayerKind.Relu or LayerKind.Sigmoid)) continue;
            string gradient = norm ? BiasGradientFromBatchNorm : BiasGradientFromActivation, bias = norm ? BiasInBatchNorm : BiasInActivation;
            if (fusions.Contains(gradient))
            {
                steps[k].BiasGradientFromNext = true;
                next.WritesPreviousBiasGradient = true;
                Note(steps[k], gradient);
                Note(next, gradient);
            }
            if (fusions.Contains(bias))
            {
                steps[k].BiasInNext = true;
                next.AddsPreviousBias = true;
                Note(steps[k], bias);
                Note(next, bias);
            }
        }

        if (fusions.Contains(SgdInEpilogue) && options.Optimizer is Sgd { Momentum: 0, WeightDecay: 0 } && options.L2 == 0)
            foreach (var s in steps.Where(s => s.Kind == StepKind.Linear))
            {
                s.SgdInEpilogue = true;
                Note(s, SgdInEpilogue);
            }

        if (fusions.Contains(BiasInLoss) && options.Loss == LossKind.CrossEntropy && options.BatchSize <= BiasInLossMaxRows
            && steps[^1] is { Kind: StepKind.Linear, Def.HasBias: true, Layers: 1, BiasGradientFromNext: false } last && last.OutWidth <= BiasInLossMaxWidth)
        {
            last.BiasInLoss = true;
            Note(last, BiasInLoss);
        }

        bool pipeline = fusions.Contains(RowBlockPipeline) && options.Loss == LossKind.CrossEntropy && layers.Count == 6 && steps.Count == 4
            && steps[0] is { Kind: StepKind.Gather, Layers: 2 } && steps[1].Kind == StepKind.Linear
            && steps[2] is { Kind: StepKind.BatchNorm, Activation: not null } && steps[3].Kind == StepKind.Linear;

        return new Plan(stack, options, shapes, inputWidth, steps.ToArray(), pipeline);

        static void Note(PlanStep s, string fusion) { if (!s.Fused.Contains(fusion)) s.Fused.Add(fusion); }
    }

    /// <summary>The linear layers' weight names (the L2 penalty's tensors).</summary>
    public IEnumerable<string> LinearWeights => Steps.Where(s => s.Kind == StepKind.Linear).Select(s => LayerType.Name(s.Layer, "weight"));

    /// <summary>The batch-norm steps in layer order (calibration).</summary>
    public IEnumerable<int> BatchNormSteps => Enumerable.Range(0, Steps.Length).Where(k => Steps[k].Kind == StepKind.BatchNorm);

    /// <summary>The output width of step <paramref name="k"/>'s input: the network's input width for the first step.</summary>
    public int WidthBefore(int k) => k == 0 ? InputWidth * (Stack.TakesIds ? 1 : 1) : Steps[k - 1].OutWidth;
}
