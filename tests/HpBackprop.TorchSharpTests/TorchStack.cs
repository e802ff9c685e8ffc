using HpBackprop.Model;
using HpBackprop.Networks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using TsSequential = TorchSharp.Modules.Sequential;

namespace HpBackprop.TorchSharpTests;

/// <summary>
/// The lecture's batch norm (docs/stacks.md, <c>batchnorm:F</c>) as a TorchSharp module, written from its definition with
/// autograd doing the backward: in training the batch variance with Bessel's correction (over n − 1), running statistics
/// <c>m·batch + (1 − m)·running</c> with that variance; in eval the running statistics. Its parameters and buffers have
/// <c>BatchNorm1d</c>'s names (<c>weight</c>, <c>bias</c>, <c>running_mean</c>, <c>running_var</c>, <c>num_batches_tracked</c>),
/// so its state dict is the one a checkpoint holds.
/// </summary>
internal sealed class BesselBatchNorm : nn.Module<Tensor, Tensor>
{
    private readonly double _eps, _momentum;

    public BesselBatchNorm(long features, double eps, double momentum, ScalarType dtype) : base(nameof(BesselBatchNorm))
    {
        _eps = eps;
        _momentum = momentum;
        register_parameter("weight", new Parameter(torch.ones(features, dtype: dtype)));
        register_parameter("bias", new Parameter(torch.zeros(features, dtype: dtype)));
        register_buffer("running_mean", torch.zeros(features, dtype: dtype));
        register_buffer("running_var", torch.ones(features, dtype: dtype));
        register_buffer("num_batches_tracked", torch.tensor(0L));
    }

    private Tensor Buffer(string name) => get_buffer(name)!;

    public override Tensor forward(Tensor x)
    {
        var weight = get_parameter("weight")!;
        var bias = get_parameter("bias")!;
        if (!training)
            return (x - Buffer("running_mean")) * (Buffer("running_var") + _eps).pow(-0.5) * weight + bias;
        long n = x.shape[0];
        var mean = x.sum([0L], keepdim: true) / n;
        var diff = x - mean;
        var variance = diff.pow(2).sum([0L], keepdim: true) / (n - 1);
        var raw = diff * (variance + _eps).pow(-0.5);
        using (torch.no_grad())
        {
            Buffer("running_mean").copy_(mean.squeeze(0) * _momentum + Buffer("running_mean") * (1 - _momentum));
            Buffer("running_var").copy_(variance.squeeze(0) * _momentum + Buffer("running_var") * (1 - _momentum));
            Buffer("num_batches_tracked").add_(1);
        }
        return weight * raw + bias;
    }
}

/// <summary>
/// <c>torch.nn.Dropout(P)</c> with the library's mask (docs/stacks.md: Philox4x32-10 keyed by seed, step, layer and
/// element, <see cref="DropoutMask"/>): in training <c>x·mask/(1 − P)</c>, in eval the identity. The caller sets
/// <see cref="Step"/> before each training forward, as the network's step count.
/// </summary>
internal sealed class MaskDropout(float rate, int layer, int seed) : nn.Module<Tensor, Tensor>(nameof(MaskDropout))
{
    public long Step { get; set; }

    public override Tensor forward(Tensor x)
    {
        if (!training || rate == 0) return x.alias();   // a new handle: Sequential.forward disposes each intermediate
        var keep = new byte[x.numel()];
        DropoutMask.Fill(keep, (uint)seed, layer, Step, rate);
        var mask = torch.tensor(keep.Select(k => (double)k).ToArray(), x.shape, dtype: x.dtype);
        return x * mask * (1.0 / (1.0 - rate));
    }
}

/// <summary>
/// A stack of docs/stacks.md as a TorchSharp <c>nn.Sequential</c> of the same modules, in float32 or float64, with the
/// state-dict names of the stack (<c>{i}.weight</c>, …): embedding, flatten, linear, <c>BatchNorm1d</c> (<c>:biased</c>) or
/// <see cref="BesselBatchNorm"/>, <c>LayerNorm</c>, <see cref="MaskDropout"/>, tanh/relu/sigmoid; the losses through
/// <c>torch.nn.functional</c> and the L2 penalty on every linear weight.
/// </summary>
internal sealed class TorchStack : IDisposable
{
    public Networks.Sequential Stack { get; }
    public LossKind Loss { get; }
    public ScalarType Dtype { get; }
    public TsSequential Model { get; }
    public double L2 { get; }
    private readonly List<nn.Module<Tensor, Tensor>> _modules = [];

    public TorchStack(Networks.Sequential stack, LossKind loss, ScalarType dtype, double l2 = 0, double bnMomentum = 0.001f, double eps = 1e-5f, int dropoutSeed = 42)
    {
        Stack = stack;
        Loss = loss;
        Dtype = dtype;
        L2 = l2;
        for (int i = 0; i < stack.Layers.Count; i++)
        {
            var l = stack.Layers[i];
            nn.Module<Tensor, Tensor> m = l.Kind switch
            {
                LayerKind.Embedding => nn.Embedding(l.In, l.Out, dtype: dtype),
                LayerKind.Flatten => nn.Flatten(1),
                LayerKind.Linear => nn.Linear(l.In, l.Out, hasBias: l.HasBias, dtype: dtype),
                LayerKind.BatchNorm when l.Mode == BatchNormMode.Biased => nn.BatchNorm1d(l.In, eps: eps, momentum: bnMomentum, dtype: dtype),
                LayerKind.BatchNorm => new BesselBatchNorm(l.In, eps, bnMomentum, dtype),
                LayerKind.LayerNorm => nn.LayerNorm(l.In, eps: eps, dtype: dtype),
                LayerKind.Dropout => new MaskDropout(l.Rate, i, dropoutSeed),
                LayerKind.Tanh => nn.Tanh(),
                LayerKind.Relu => nn.ReLU(),
                LayerKind.Sigmoid => nn.Sigmoid(),
                _ => throw new NotSupportedException(l.ToString()),
            };
            _modules.Add(m);
        }
        Model = nn.Sequential(_modules.ToArray());
    }

    /// <summary>Sets every dropout layer's step (the network's step count of the next forward).</summary>
    public long Step { set { foreach (var m in _modules.OfType<MaskDropout>()) m.Step = value; } }

    /// <summary>Loads a state dict given as float values by name (num_batches_tracked as counts), strictly.</summary>
    public void Load(IReadOnlyDictionary<string, float[]> values, IReadOnlyDictionary<string, long> tracked)
    {
        using var scope = torch.NewDisposeScope();
        var sd = new Dictionary<string, Tensor>();
        foreach (var (name, t) in Model.state_dict())
        {
            if (name.EndsWith(".num_batches_tracked", StringComparison.Ordinal)) { sd[name] = torch.tensor(tracked.GetValueOrDefault(name)); continue; }
            if (!values.TryGetValue(name, out var v)) throw new KeyNotFoundException($"no value for {name}");
            sd[name] = torch.tensor(v.Select(f => (double)f).ToArray(), t.shape, dtype: Dtype);
        }
        var (missing, unexpected) = Model.load_state_dict(sd, strict: true);
        if (missing.Count + unexpected.Count > 0) throw new InvalidOperationException($"state dict: missing {string.Join(",", missing)}, unexpected {string.Join(",", unexpected)}");
    }

    /// <summary>The state dict as doubles (num_batches_tracked included, as a one-element array).</summary>
    public Dictionary<string, double[]> State()
    {
        var d = new Dictionary<string, double[]>(StringComparer.Ordinal);
        foreach (var (name, t) in Model.state_dict()) d[name] = ToDoubles(t);
        return d;
    }

    public static double[] ToDoubles(Tensor t)
    {
        using var c = t.detach().to_type(ScalarType.Float64).contiguous().cpu();
        return c.data<double>().ToArray();
    }

    public Tensor Input(Batch b, bool requiresGrad)
    {
        if (b.Ids != null) return torch.tensor(b.Ids.Select(i => (long)i).ToArray(), [b.Rows, b.Ids.Length / b.Rows], dtype: ScalarType.Int64);
        var x = torch.tensor(b.Features!.Select(f => (double)f).ToArray(), [b.Rows, b.Features!.Length / b.Rows], dtype: Dtype);
        return requiresGrad ? x.requires_grad_(true) : x;
    }

    public Tensor? Target(Batch b, bool requiresGrad)
    {
        if (b.Classes != null) return torch.tensor(b.Classes.Select(i => (long)i).ToArray(), [b.Rows], dtype: ScalarType.Int64);
        if (b.Targets != null)
        {
            var t = torch.tensor(b.Targets.Select(f => (double)f).ToArray(), [b.Rows, b.Targets.Length / b.Rows], dtype: Dtype);
            return requiresGrad ? t.requires_grad_(true) : t;
        }
        return null;
    }

    /// <summary>The mean loss of docs/stacks.md (without the L2 penalty).</summary>
    public Tensor LossOf(Tensor z, Tensor? y) => Loss switch
    {
        LossKind.CrossEntropy => nn.functional.cross_entropy(z, y!),
        LossKind.Mse => nn.functional.mse_loss(z, y!),
        LossKind.BceWithLogits => nn.functional.binary_cross_entropy_with_logits(z, y!),
        _ => z.mean(),
    };

    /// <summary><c>l2·ΣW²</c> over every linear weight, or null.</summary>
    public Tensor? Penalty()
    {
        if (L2 == 0) return null;
        Tensor? total = null;
        for (int i = 0; i < Stack.Layers.Count; i++)
            if (Stack.Layers[i].Kind == LayerKind.Linear)
            {
                var w = ((Linear)_modules[i]).weight!;
                var s = w.pow(2).sum();
                total = total is null ? s : total + s;
            }
        return total is null ? null : total * L2;
    }

    /// <summary>
    /// One training forward module by module (each output keeps its gradient), the loss with the penalty, backward.
    /// Returns the activations (input first) and the loss; the caller owns the dispose scope.
    /// </summary>
    public (List<Tensor> Acts, Tensor X, Tensor? Y, Tensor Loss) ForwardBackward(Batch b)
    {
        Model.train();
        var x = Input(b, requiresGrad: b.Features != null);
        var y = Target(b, requiresGrad: b.Targets != null);
        var acts = new List<Tensor> { x };
        foreach (var m in _modules)
        {
            var a = m.call(acts[^1]);
            if (a.requires_grad) a.retain_grad();
            acts.Add(a);
        }
        var loss = LossOf(acts[^1], y);
        if (Penalty() is { } p) loss = loss + p;
        loss.backward();
        return (acts, x, y, loss);
    }

    /// <summary>Raw outputs in eval mode for <paramref name="b"/>'s inputs.</summary>
    public double[] Eval(Batch b)
    {
        using var scope = torch.NewDisposeScope();
        using var ng = torch.no_grad();
        Model.eval();
        var z = Model.call(Input(b, false));
        Model.train();
        return ToDoubles(z);
    }

    /// <summary>The mean eval-mode loss (no penalty) over <paramref name="b"/>.</summary>
    public double EvalLoss(Batch b)
    {
        using var scope = torch.NewDisposeScope();
        using var ng = torch.no_grad();
        Model.eval();
        var z = Model.call(Input(b, false));
        double l = LossOf(z, Target(b, false)).to_type(ScalarType.Float64).item<double>();
        Model.train();
        return l;
    }

    /// <summary>
    /// Calibration as docs/stacks.md defines it, in TorchSharp: for each batch norm in layer order, its input over all of
    /// <paramref name="b"/> in eval mode (the batch norms before it already calibrated), then running_mean = the mean and
    /// running_var = the Bessel-corrected variance of each column (<c>torch.var</c>, unbiased).
    /// </summary>
    public void Calibrate(Batch b)
    {
        using var ng = torch.no_grad();
        Model.eval();
        foreach (int k in Stack.BatchNormLayers())
        {
            using var scope = torch.NewDisposeScope();
            var a = Input(b, false);
            for (int i = 0; i < k; i++) a = _modules[i].call(a);
            var mean = a.mean([0]);
            var variance = a.var(0, unbiased: true);
            var sd = Model.state_dict();
            sd[$"{k}.running_mean"].copy_(mean);
            sd[$"{k}.running_var"].copy_(variance);
        }
        Model.train();
    }

    public void Dispose() => Model.Dispose();
}

/// <summary>A minibatch: ids or features, and class ids, float targets or nothing.</summary>
internal sealed record Batch(int Rows, int[]? Ids, float[]? Features, int[]? Classes, float[]? Targets);
