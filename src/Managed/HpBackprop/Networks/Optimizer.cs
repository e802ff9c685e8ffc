using System.Globalization;

namespace HpBackprop.Networks;

/// <summary>
/// How parameters are updated from their gradients, with PyTorch's semantics so results can be
/// compared step by step: <see cref="Sgd"/> (momentum, weight decay) or <see cref="AdamW"/>.
/// The text form is <c>sgd:lr=0.1,momentum=0.9,weight_decay=0</c> or
/// <c>adamw:lr=0.001,beta1=0.9,beta2=0.999,eps=1e-08,weight_decay=0.01</c>.
/// </summary>
public abstract record Optimizer
{
    private protected Optimizer() { }

    /// <summary>The base learning rate (a schedule scales it per step).</summary>
    public abstract float LearningRate { get; init; }

    /// <summary>Floats of state per parameter (SGD with momentum 1, AdamW 2, plain SGD 0).</summary>
    public abstract int StateSlots { get; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first hyper-parameter out of range.</summary>
    public abstract Optimizer Validate();

    /// <summary>Parses the text form.</summary>
    /// <exception cref="FormatException">Not an optimiser, an unknown key or a number that does not parse.</exception>
    public static Optimizer Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string t = text.Trim();
        int colon = t.IndexOf(':');
        string head = (colon < 0 ? t : t[..colon]).ToLowerInvariant();
        var kv = Options.Parse(colon < 0 ? "" : t[(colon + 1)..], t);
        Optimizer o = head switch
        {
            "sgd" => new Sgd
            {
                LearningRate = kv.Take("lr", 0.1f),
                Momentum = kv.Take("momentum", 0f),
                WeightDecay = kv.Take("weight_decay", 0f),
            },
            "adamw" => new AdamW
            {
                LearningRate = kv.Take("lr", 0.001f),
                Beta1 = kv.Take("beta1", 0.9f),
                Beta2 = kv.Take("beta2", 0.999f),
                Eps = kv.Take("eps", 1e-8f),
                WeightDecay = kv.Take("weight_decay", 0.01f),
            },
            _ => throw new FormatException($"'{Layer.Clip(t)}' is not an optimiser: expected sgd:lr=…,momentum=…,weight_decay=… or adamw:lr=…,beta1=…,beta2=…,eps=…,weight_decay=…."),
        };
        kv.EnsureUsed();
        return o;
    }

    private protected static void Check(bool ok, string name, float value, string rule)
    {
        if (!ok) throw new ArgumentException($"{name} = {value.ToString(CultureInfo.InvariantCulture)} is invalid: it must be {rule}.", name);
    }
}

/// <summary>
/// <c>torch.optim.SGD(lr, momentum, weight_decay)</c>: <c>g = grad + weight_decay·p</c>; with momentum
/// <c>v = momentum·v + g</c> (v starts as g) and <c>p −= lr·v</c>, without it <c>p −= lr·g</c>.
/// </summary>
public sealed record Sgd : Optimizer
{
    /// <inheritdoc />
    public override float LearningRate { get; init; } = 0.1f;

    /// <summary>The momentum μ (0: none).</summary>
    public float Momentum { get; init; }

    /// <summary>Weight decay added to the gradient (applies to every parameter, as in PyTorch).</summary>
    public float WeightDecay { get; init; }

    /// <inheritdoc />
    public override int StateSlots => Momentum != 0 ? 1 : 0;

    /// <inheritdoc />
    public override Optimizer Validate()
    {
        Check(float.IsFinite(LearningRate) && LearningRate >= 0, "Sgd.LearningRate", LearningRate, "a finite number ≥ 0");
        Check(float.IsFinite(Momentum) && Momentum >= 0 && Momentum < 1, "Sgd.Momentum", Momentum, "in [0, 1)");
        Check(float.IsFinite(WeightDecay) && WeightDecay >= 0, "Sgd.WeightDecay", WeightDecay, "a finite number ≥ 0");
        return this;
    }

    /// <summary>The text form.</summary>
    public override string ToString() => FormattableString.Invariant($"sgd:lr={LearningRate:R},momentum={Momentum:R},weight_decay={WeightDecay:R}");
}

/// <summary>
/// <c>torch.optim.AdamW(lr, betas=(beta1, beta2), eps, weight_decay)</c>: <c>p *= 1 − lr·wd</c>;
/// <c>m = β1·m + (1−β1)·g</c>; <c>v = β2·v + (1−β2)·g²</c>;
/// <c>p −= lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + eps)</c>, t = 1, 2, …
/// </summary>
public sealed record AdamW : Optimizer
{
    /// <inheritdoc />
    public override float LearningRate { get; init; } = 0.001f;

    /// <summary>β1, the decay of the first moment.</summary>
    public float Beta1 { get; init; } = 0.9f;

    /// <summary>β2, the decay of the second moment.</summary>
    public float Beta2 { get; init; } = 0.999f;

    /// <summary>Added to the denominator.</summary>
    public float Eps { get; init; } = 1e-8f;

    /// <summary>Decoupled weight decay (applies to every parameter, as in PyTorch).</summary>
    public float WeightDecay { get; init; } = 0.01f;

    /// <inheritdoc />
    public override int StateSlots => 2;

    /// <inheritdoc />
    public override Optimizer Validate()
    {
        Check(float.IsFinite(LearningRate) && LearningRate >= 0, "AdamW.LearningRate", LearningRate, "a finite number ≥ 0");
        Check(float.IsFinite(Beta1) && Beta1 >= 0 && Beta1 < 1, "AdamW.Beta1", Beta1, "in [0, 1)");
        Check(float.IsFinite(Beta2) && Beta2 >= 0 && Beta2 < 1, "AdamW.Beta2", Beta2, "in [0, 1)");
        Check(float.IsFinite(Eps) && Eps > 0, "AdamW.Eps", Eps, "a finite number > 0");
        Check(float.IsFinite(WeightDecay) && WeightDecay >= 0, "AdamW.WeightDecay", WeightDecay, "a finite number ≥ 0");
        return this;
    }

    /// <summary>The text form.</summary>
    public override string ToString() => FormattableString.Invariant($"adamw:lr={LearningRate:R},beta1={Beta1:R},beta2={Beta2:R},eps={Eps:R},weight_decay={WeightDecay:R}");
}

/// <summary>
/// The learning rate of each step as a multiple of the optimiser's base rate. Text forms:
/// <c>constant</c>; <c>step:at=S,factor=F</c> (the rate times F from step S on; the lecture's decay is
/// <c>step:at=100000,factor=0.1</c>); <c>cosine:warmup=W,total=T,min_lr=M</c> (linear warm-up over W steps,
/// then a half cosine from the base rate down to M at step T).
/// </summary>
public abstract record Schedule
{
    private protected Schedule() { }

    /// <summary>The learning rate at 0-based <paramref name="step"/> for base rate <paramref name="lr"/>.</summary>
    public abstract float At(long step, float lr);

    /// <summary>A constant rate.</summary>
    public static Schedule Constant { get; } = new ConstantSchedule();

    /// <summary>Parses the text form.</summary>
    /// <exception cref="FormatException">Not a schedule, an unknown key or a number that does not parse.</exception>
    public static Schedule Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string t = text.Trim();
        int colon = t.IndexOf(':');
        string head = (colon < 0 ? t : t[..colon]).ToLowerInvariant();
        var kv = Options.Parse(colon < 0 ? "" : t[(colon + 1)..], t);
        Schedule s = head switch
        {
            "constant" => Constant,
            "step" => new StepSchedule(kv.TakeLong("at"), kv.Take("factor", 0.1f)),
            "cosine" => new CosineSchedule(kv.TakeLong("warmup", 0), kv.TakeLong("total"), kv.Take("min_lr", 0f)),
            _ => throw new FormatException($"'{Layer.Clip(t)}' is not a schedule: expected constant, step:at=S,factor=F or cosine:warmup=W,total=T,min_lr=M."),
        };
        kv.EnsureUsed();
        return s.Validate();
    }

    /// <summary>Throws <see cref="ArgumentException"/> for out-of-range settings.</summary>
    public virtual Schedule Validate() => this;
}

/// <summary>The base rate at every step.</summary>
public sealed record ConstantSchedule : Schedule
{
    /// <inheritdoc />
    public override float At(long step, float lr) => lr;

    /// <summary>The text form.</summary>
    public override string ToString() => "constant";
}

/// <summary>The base rate before step <paramref name="AtStep"/>, the base rate times <paramref name="Factor"/> from it on.</summary>
/// <param name="AtStep">The first 0-based step of the lower rate.</param>
/// <param name="Factor">The multiplier from <paramref name="AtStep"/> on.</param>
public sealed record StepSchedule(long AtStep, float Factor) : Schedule
{
    /// <inheritdoc />
    public override float At(long step, float lr) => step < AtStep ? lr : lr * Factor;

    /// <inheritdoc />
    public override Schedule Validate()
    {
        if (AtStep < 0) throw new ArgumentException($"StepSchedule.AtStep = {AtStep} is invalid: it must not be negative.", nameof(AtStep));
        if (!(float.IsFinite(Factor) && Factor >= 0)) throw new ArgumentException($"StepSchedule.Factor = {Factor.ToString(CultureInfo.InvariantCulture)} is invalid: it must be a finite number ≥ 0.", nameof(Factor));
        return this;
    }

    /// <summary>The text form.</summary>
    public override string ToString() => FormattableString.Invariant($"step:at={AtStep},factor={Factor:R}");
}

/// <summary>
/// Linear warm-up then a half cosine: for step t &lt; W, <c>lr·(t+1)/W</c>; after it, with
/// <c>p = min(1, (t−W)/(T−W))</c>, <c>M + (lr − M)·(1 + cos(π·p))/2</c>.
/// </summary>
/// <param name="Warmup">W, the steps of linear warm-up.</param>
/// <param name="Total">T, the step at which the rate reaches <paramref name="MinLr"/> (it stays there after).</param>
/// <param name="MinLr">M, the final rate.</param>
public sealed record CosineSchedule(long Warmup, long Total, float MinLr) : Schedule
{
    /// <inheritdoc />
    public override float At(long step, float lr)
    {
        if (step < Warmup) return (float)(lr * (double)(step + 1) / Warmup);
        double p = Total > Warmup ? Math.Min(1.0, (double)(step - Warmup) / (Total - Warmup)) : 1.0;
        // in double throughout (lr − MinLr in float would lose up to an ulp of lr before the product)
        return (float)(MinLr + ((double)lr - MinLr) * 0.5 * (1 + Math.Cos(Math.PI * p)));
    }

    /// <inheritdoc />
    public override Schedule Validate()
    {
        if (Warmup < 0) throw new ArgumentException($"CosineSchedule.Warmup = {Warmup} is invalid: it must not be negative.", nameof(Warmup));
        if (Total < Warmup) throw new ArgumentException($"CosineSchedule.Total = {Total} is invalid: it must be at least Warmup ({Warmup}).", nameof(Total));
        if (!(float.IsFinite(MinLr) && MinLr >= 0)) throw new ArgumentException($"CosineSchedule.MinLr = {MinLr.ToString(CultureInfo.InvariantCulture)} is invalid: it must be a finite number ≥ 0.", nameof(MinLr));
        return this;
    }

    /// <summary>The text form.</summary>
    public override string ToString() => FormattableString.Invariant($"cosine:warmup={Warmup},total={Total},min_lr={MinLr:R}");
}

/// <summary><c>key=value</c> lists of the optimiser and schedule text forms (invariant culture, no thousands separators).</summary>
internal sealed class Options
{
    private readonly Dictionary<string, string> _kv = new(StringComparer.OrdinalIgnoreCase);
    private readonly string _text;

    private Options(string text) => _text = text;

    public static Options Parse(string list, string whole)
    {
        var o = new Options(whole);
        foreach (string item in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = item.IndexOf('=');
            if (eq <= 0) throw new FormatException($"'{Layer.Clip(whole)}': '{Layer.Clip(item)}' is not key=value.");
            if (!o._kv.TryAdd(item[..eq].Trim(), item[(eq + 1)..].Trim())) throw new FormatException($"'{Layer.Clip(whole)}': '{item[..eq]}' is given twice.");
        }
        return o;
    }

    public float Take(string key, float fallback)
    {
        if (!_kv.Remove(key, out string? s)) return fallback;
        if (!float.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out float v) || !float.IsFinite(v))
            throw new FormatException($"'{Layer.Clip(_text)}': {key} = '{Layer.Clip(s)}' is not a finite number.");
        return v;
    }

    public long TakeLong(string key, long? fallback = null)
    {
        if (!_kv.Remove(key, out string? s))
            return fallback ?? throw new FormatException($"'{Layer.Clip(_text)}': {key}=… is required.");
        if (!long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v))
            throw new FormatException($"'{Layer.Clip(_text)}': {key} = '{Layer.Clip(s)}' is not a whole number.");
        return v;
    }

    public void EnsureUsed()
    {
        if (_kv.Count > 0) throw new FormatException($"'{Layer.Clip(_text)}': unknown setting '{_kv.Keys.First()}'.");
    }
}
