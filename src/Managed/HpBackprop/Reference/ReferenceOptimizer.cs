using System.Globalization;
using System.Numerics;
using HpBackprop.Networks;

namespace HpBackprop.Reference;

/// <summary>
/// The optimisers of docs/stacks.md as plain loops over named parameters, with the operation order of
/// PyTorch 1.13's single-tensor <c>torch.optim.SGD</c> and <c>torch.optim.AdamW</c>, and the
/// learning-rate schedule evaluated in double precision. Holds the optimiser state (momentum, AdamW's
/// moments and step count t) per parameter name.
/// </summary>
/// <remarks>
/// The hyper-parameters of <see cref="Optimizer"/> and <see cref="Schedule"/> are floats; the reference
/// widens each to the double closest to its shortest decimal form (0.1f → 0.1, not
/// 0.100000001490116…), which is the number the text form and PyTorch's Python floats mean.
/// </remarks>
/// <typeparam name="T"><see cref="float"/> or <see cref="double"/>.</typeparam>
public sealed class ReferenceOptimizer<T> where T : IFloatingPointIeee754<T>
{
    private readonly Dictionary<string, T[]> _m = new(StringComparer.Ordinal), _v = new(StringComparer.Ordinal);

    /// <summary>Creates the optimiser with empty state.</summary>
    /// <param name="optimizer"><see cref="Sgd"/> or <see cref="AdamW"/>.</param>
    /// <param name="schedule">The learning-rate schedule; null for constant.</param>
    public ReferenceOptimizer(Optimizer optimizer, Schedule? schedule = null)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        if (optimizer is not (Sgd or AdamW)) throw new ArgumentException($"'{optimizer}' is not an optimiser the reference knows.", nameof(optimizer));
        Optimizer = optimizer.Validate();
        Schedule = (schedule ?? Schedule.Constant).Validate();
    }

    /// <summary>The optimiser and its hyper-parameters.</summary>
    public Optimizer Optimizer { get; }

    /// <summary>The learning-rate schedule.</summary>
    public Schedule Schedule { get; }

    /// <summary>The number of steps taken (the next step is 0-based step <see cref="Steps"/>, AdamW's t = <see cref="Steps"/> + 1).</summary>
    public long Steps { get; private set; }

    /// <summary>The learning rate of 0-based <paramref name="step"/>: the base rate through the schedule, in double.</summary>
    public double LearningRate(long step) => ScheduledRate(Schedule, step, Exact(Optimizer.LearningRate));

    /// <summary>
    /// The rate of a schedule in double precision (the formulas of <see cref="ConstantSchedule"/>,
    /// <see cref="StepSchedule"/> and <see cref="CosineSchedule"/>, written out again independently).
    /// </summary>
    public static double ScheduledRate(Schedule schedule, long step, double lr) => schedule switch
    {
        ConstantSchedule => lr,
        StepSchedule s => step < s.AtStep ? lr : lr * Exact(s.Factor),
        CosineSchedule c when step < c.Warmup => lr * (step + 1) / c.Warmup,
        CosineSchedule c => Cosine(c, step, lr),
        _ => throw new ArgumentException($"'{schedule}' is not a schedule the reference knows.", nameof(schedule)),
    };

    private static double Cosine(CosineSchedule c, long step, double lr)
    {
        double p = c.Total > c.Warmup ? Math.Min((double)(step - c.Warmup) / (c.Total - c.Warmup), 1.0) : 1.0;
        double min = Exact(c.MinLr);
        return min + (lr - min) * 0.5 * (1 + Math.Cos(Math.PI * p));
    }

    /// <summary>The double nearest to the shortest decimal that round-trips <paramref name="value"/> (0.1f → 0.1).</summary>
    public static double Exact(float value) => double.Parse(value.ToString("R", CultureInfo.InvariantCulture), NumberStyles.Float, CultureInfo.InvariantCulture);

    /// <summary>
    /// One update of every parameter that has a gradient, at the learning rate of step <see cref="Steps"/>.
    /// SGD: <c>g = grad + wd·p</c>; with momentum <c>v = μ·v + g</c> (v starts as g), <c>p −= lr·v</c>.
    /// AdamW: <c>p *= 1 − lr·wd</c>; <c>m = β1·m + (1−β1)·g</c>; <c>v = β2·v + (1−β2)·g²</c>;
    /// <c>bc1 = 1 − β1ᵗ</c>, <c>bc2 = 1 − β2ᵗ</c> (in double); <c>p −= (lr/bc1)·m/(√v/√bc2 + eps)</c>.
    /// </summary>
    /// <param name="parameters">The parameters by name, updated in place.</param>
    /// <param name="gradients">Their gradients by name; each parameter named here is updated.</param>
    /// <exception cref="ArgumentException">A gradient has no parameter or a different length.</exception>
    public void Step(IDictionary<string, T[]> parameters, IReadOnlyDictionary<string, T[]> gradients)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(gradients);
        double lr = LearningRate(Steps);
        foreach (var (name, grad) in gradients)
        {
            if (!parameters.TryGetValue(name, out var p)) throw new ArgumentException($"gradient '{name}' has no parameter.", nameof(gradients));
            if (p.Length != grad.Length) throw new ArgumentException($"'{name}': {p.Length} values but {grad.Length} gradients.", nameof(gradients));
            if (Optimizer is Sgd sgd) SgdStep(sgd, name, p, grad, lr);
            else AdamWStep((AdamW)Optimizer, name, p, grad, lr, Steps + 1);
        }
        Steps++;
    }

    private void SgdStep(Sgd o, string name, T[] p, T[] grad, double lr)
    {
        T wd = T.CreateChecked(Exact(o.WeightDecay)), mu = T.CreateChecked(Exact(o.Momentum)), tlr = T.CreateChecked(lr);
        var g = new T[p.Length];
        for (int i = 0; i < p.Length; i++) g[i] = o.WeightDecay != 0 ? grad[i] + wd * p[i] : grad[i];
        if (o.Momentum != 0)
        {
            if (!_m.TryGetValue(name, out var v)) _m[name] = v = (T[])g.Clone();      // v starts as g
            else for (int i = 0; i < v.Length; i++) v[i] = mu * v[i] + g[i];
            g = v;
        }
        for (int i = 0; i < p.Length; i++) p[i] -= tlr * g[i];
    }

    private void AdamWStep(AdamW o, string name, T[] p, T[] grad, double lr, long t)
    {
        double b1 = Exact(o.Beta1), b2 = Exact(o.Beta2), wd = Exact(o.WeightDecay), eps = Exact(o.Eps);
        if (!_m.TryGetValue(name, out var m)) _m[name] = m = new T[p.Length];
        if (!_v.TryGetValue(name, out var v)) _v[name] = v = new T[p.Length];
        T decay = T.CreateChecked(1 - lr * wd);
        T tb1 = T.CreateChecked(b1), tb2 = T.CreateChecked(b2), c1 = T.CreateChecked(1 - b1), c2 = T.CreateChecked(1 - b2);
        double bc1 = 1 - Math.Pow(b1, t), bc2 = 1 - Math.Pow(b2, t);
        T stepSize = T.CreateChecked(lr / bc1), bc2Sqrt = T.CreateChecked(Math.Sqrt(bc2)), teps = T.CreateChecked(eps);
        for (int i = 0; i < p.Length; i++)
        {
            p[i] *= decay;                                           // p *= 1 − lr·wd
            m[i] = m[i] * tb1 + c1 * grad[i];                        // m = β1·m + (1−β1)·g
            v[i] = v[i] * tb2 + c2 * grad[i] * grad[i];              // v = β2·v + (1−β2)·g²
            T denom = T.Sqrt(v[i]) / bc2Sqrt + teps;                 // √v/√bc2 + eps
            p[i] -= stepSize * (m[i] / denom);                       // p −= lr/bc1 · m/denom
        }
    }
}
