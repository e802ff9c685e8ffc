using System.Globalization;
using HpBackprop.Networks;
using HpBackprop.Reference;
using TorchSharp;
using static TorchSharp.torch;

namespace HpBackprop.TorchSharpTests;

/// <summary>
/// Runs a <see cref="ParityCase"/> in HpBackprop and in TorchSharp and compares every tensor. The rule, per case and
/// tensor: with the TorchSharp float64 run as the truth, HpBackprop's relative error (max |ours − truth| / max |truth|)
/// is at most <see cref="StackParity.Float32Tolerance"/> of TorchSharp float32's own relative error on the same tensor,
/// that is <c>8·max(err_torchsharp_f32, 32·2⁻²⁴)</c>: both round every operation to float32, so their errors have the same
/// causes (the case's conditioning) and size, and differ by summation orders and library functions. Nothing is one
/// constant: a tensor TorchSharp gets to 1e-7 must be within 8e-7 (or the floor), one it gets to 1e-3 (a 2-row batch norm)
/// within 8e-3. A gradient that is a sum over the batch (a linear weight and bias, an embedding row, a norm's gain and bias) and the mean objective are
/// measured against the larger of their size and the size of their terms (<c>max_c Σ_r |term|</c>, from the float64 run):
/// a float sum's rounding is relative to its terms, and LibTorch sums pairwise where a sequential sum (ours) keeps more of
/// it, which matters only where the terms cancel. Bias gradients that are zero by construction
/// (<see cref="StackParity.NearZero"/>) are measured against their terms alone (<see cref="StackParity.NearZeroScale"/>) and
/// inherit their weight gradient's TorchSharp error. TorchSharp's float32 error is the larger of two runs, the minibatch
/// as drawn and with its rows reversed (another order in every sum over the batch), where no dropout ties values to rows.
/// </summary>
internal static class Parity
{
    /// <summary>A network holding a case's values.</summary>
    public static Network Create(ParityCase c, CaseData d, int threads = 1)
    {
        var net = Network.Create(c.Stack, c.Options(threads));
        net.StepCount = c.Step;
        foreach (var s in net.Parameters.Parameters) d.Values[s.Name].CopyTo(net.Parameters.Value(s.Name));
        foreach (var s in net.Parameters.RunningStatistics) d.Values[s.Name].CopyTo(net.Parameters.Value(s.Name));
        return net;
    }

    public static float Run(Network net, Batch b, bool update)
    {
        if (b.Ids != null)
            return b.Classes != null ? (update ? net.Step(b.Ids, b.Classes) : net.ForwardBackward(b.Ids, b.Classes))
                : (update ? net.Step(b.Ids, (ReadOnlySpan<float>)(b.Targets ?? [])) : net.ForwardBackward(b.Ids, (ReadOnlySpan<float>)(b.Targets ?? [])));
        return b.Classes != null ? (update ? net.Step(b.Features, b.Classes) : net.ForwardBackward(b.Features, b.Classes))
            : (update ? net.Step(b.Features, (ReadOnlySpan<float>)(b.Targets ?? [])) : net.ForwardBackward(b.Features, (ReadOnlySpan<float>)(b.Targets ?? [])));
    }

    public static double[] Predict(Network net, Batch b)
    {
        var o = new float[b.Rows * net.OutputWidth];
        if (b.Ids != null) net.Predict(b.Ids, b.Rows, o, raw: true);
        else net.Predict(b.Features, b.Rows, o, raw: true);
        return D(o);
    }

    /// <summary>The batch as an <see cref="ExampleSet"/>, where the library has one for its kind (not ids with float targets).</summary>
    public static ExampleSet? Examples(ParityCase c, Batch b) => (b.Ids, b.Classes, b.Targets) switch
    {
        ({ } ids, { } cls, _) => ExampleSet.FromIds(ids, c.InputWidth, cls),
        (null, { } cls, _) => ExampleSet.FromFeatures(b.Features!, c.InputWidth, cls),
        (null, null, { } t) => ExampleSet.FromFeatures(b.Features!, c.InputWidth, t, c.OutputWidth),
        (null, null, null) => ExampleSet.FromFeatures(b.Features!, c.InputWidth),
        _ => null,
    };

    public static double[] D(ReadOnlySpan<float> a) { var o = new double[a.Length]; for (int i = 0; i < a.Length; i++) o[i] = a[i]; return o; }

    public static optim.Optimizer TorchOptimizer(Optimizer o, IEnumerable<TorchSharp.Modules.Parameter> ps) => o switch
    {
        Sgd s => optim.SGD(ps, s.LearningRate, momentum: s.Momentum, weight_decay: s.WeightDecay),
        AdamW a => optim.AdamW(ps, a.LearningRate, a.Beta1, a.Beta2, a.Eps, a.WeightDecay),
        _ => throw new NotSupportedException(o.ToString()),
    };

    /// <summary>
    /// The schedule as TorchSharp's own schedulers (stepped after each optimiser step): step → <c>StepLR</c> (the same for
    /// fewer than 2·at steps); cosine with warm-up W ≥ 2 → <c>SequentialLR(LinearLR(1/W → 1 over W − 1 steps),
    /// CosineAnnealingLR(T − W, min_lr))</c> switching at W, without warm-up <c>CosineAnnealingLR(T, min_lr)</c> (the same up
    /// to step T); constant → none.
    /// </summary>
    public static optim.lr_scheduler.LRScheduler? TorchSchedule(Schedule s, optim.Optimizer opt, int steps) => s switch
    {
        ConstantSchedule => null,
        StepSchedule st when steps <= 2 * st.AtStep => optim.lr_scheduler.StepLR(opt, (int)st.AtStep, st.Factor),
        CosineSchedule cs when cs.Warmup >= 2 && steps <= cs.Total + 1 => optim.lr_scheduler.SequentialLR(opt,
            [optim.lr_scheduler.LinearLR(opt, 1.0 / cs.Warmup, 1.0, (int)cs.Warmup - 1), optim.lr_scheduler.CosineAnnealingLR(opt, cs.Total - cs.Warmup, cs.MinLr)],
            [(int)cs.Warmup]),
        CosineSchedule { Warmup: 0 } cs when steps <= cs.Total + 1 => optim.lr_scheduler.CosineAnnealingLR(opt, cs.Total, cs.MinLr),
        _ => throw new NotSupportedException($"no TorchSharp scheduler for {s} over {steps} steps"),
    };

    /// <summary>What one side computed, by tensor name, with the near-zero scales of the float64 run.</summary>
    public sealed class Result
    {
        public Dictionary<string, double[]> T { get; } = new(StringComparer.Ordinal);
        public Dictionary<string, double> Scale { get; } = new(StringComparer.Ordinal);
        public Dictionary<string, long> Tracked { get; } = new(StringComparer.Ordinal);
        public List<double> LearningRates { get; } = [];
    }

    // ---- one step: loss, out, every gradient, grad.x/grad.y, running statistics, the parameters after the step,
    //      eval outputs and loss, calibration ---------------------------------------------------------------------

    public static Result OursOneStep(ParityCase c, CaseData d)
    {
        var r = new Result();
        var batch = CaseData.DrawBatch(c, 0);
        using (var net = Create(c, d))
        {
            float loss = Run(net, batch, update: false);
            r.T["loss"] = [loss];
            r.T["out"] = D(net.Output);
            foreach (var s in net.Parameters.Parameters) r.T["grad." + s.Name] = D(net.Parameters.Gradient(s.Name));
            if (batch.Features != null) r.T["grad.x"] = D(net.InputGradient);
            if (batch.Targets != null) r.T["grad.y"] = D(net.TargetGradient);
            foreach (var s in net.Parameters.RunningStatistics) r.T["after." + s.Name] = D(net.Parameters.Value(s.Name));
            var bns = c.Stack.BatchNormLayers();
            for (int j = 0; j < bns.Count; j++) r.Tracked[$"{bns[j]}.num_batches_tracked"] = net.Parameters.BatchesTracked[j];
            AfterTraining(c, net, r);
        }
        using (var net = Create(c, d))
        {
            Run(net, batch, update: true);
            foreach (var s in net.Parameters.Parameters)
            {
                var after = net.Parameters.Value(s.Name).ToArray();
                var before = d.Values[s.Name];
                r.T["step." + s.Name] = Enumerable.Range(0, before.Length).Select(i => (double)after[i] - before[i]).ToArray();
            }
        }
        return r;
    }

    /// <summary>Eval outputs and loss on a held-out batch; with batch norm, calibration on a training set and the eval outputs after it.</summary>
    private static void AfterTraining(ParityCase c, Network net, Result r)
    {
        var held = CaseData.DrawBatch(c, 1000, c.N + 5);
        r.T["eval.out"] = Predict(net, held);
        if (Examples(c, held) is { } set) r.T["eval.loss"] = [net.Evaluate(set)];
        var train = CaseData.DrawBatch(c, 2000, 3 * c.N + 1);
        if (c.Stack.BatchNormLayers().Count > 0 && Examples(c, train) is { } ts)
        {
            net.Calibrate(ts);
            foreach (var s in net.Parameters.RunningStatistics) r.T["calibrated." + s.Name] = D(net.Parameters.Value(s.Name));
            r.T["calibrated.eval.out"] = Predict(net, held);
        }
    }

    private static void TorchAfterTraining(ParityCase c, TorchStack ts, Result r)
    {
        var held = CaseData.DrawBatch(c, 1000, c.N + 5);
        r.T["eval.out"] = ts.Eval(held);
        if (Examples(c, held) is not null) r.T["eval.loss"] = [ts.EvalLoss(held)];
        var train = CaseData.DrawBatch(c, 2000, 3 * c.N + 1);
        if (c.Stack.BatchNormLayers().Count > 0 && Examples(c, train) is not null)
        {
            ts.Calibrate(train);
            var st = ts.State();
            foreach (int i in c.Stack.BatchNormLayers())
            {
                r.T[$"calibrated.{i}.running_mean"] = st[$"{i}.running_mean"];
                r.T[$"calibrated.{i}.running_var"] = st[$"{i}.running_var"];
            }
            r.T["calibrated.eval.out"] = ts.Eval(held);
        }
    }

    public static Result TorchOneStep(ParityCase c, CaseData d, ScalarType dtype, bool reversed = false)
    {
        var r = new Result();
        var batch = CaseData.DrawBatch(c, 0);
        if (reversed) batch = Reverse(batch);
        using var ts = new TorchStack(c.Stack, c.Loss, dtype, c.L2, c.BnMomentum, 1e-5f, c.DropoutSeed);
        ts.Load(d.Values, d.Tracked);
        ts.Step = c.Step;
        var opt = TorchOptimizer(c.Optimizer, ts.Model.parameters());
        foreach (var g in opt.ParamGroups) g.LearningRate = c.Schedule.At(c.Step, c.Optimizer.LearningRate);
        using (var scope = NewDisposeScope())
        {
            var (acts, x, y, loss) = ts.ForwardBackward(batch);
            r.T["loss"] = [loss.to_type(ScalarType.Float64).item<double>()];
            r.T["out"] = TorchStack.ToDoubles(acts[^1]);
            int k = r.T["out"].Length / batch.Rows;
            if (reversed) r.T["out"] = ReverseRows(r.T["out"], k)!;
            foreach (var (name, p) in ts.Model.named_parameters()) r.T["grad." + name] = TorchStack.ToDoubles(p.grad!);
            if (batch.Features != null) r.T["grad.x"] = TorchStack.ToDoubles(x.grad!);
            if (batch.Targets != null) r.T["grad.y"] = TorchStack.ToDoubles(y!.grad!);
            if (reversed && batch.Features != null) r.T["grad.x"] = ReverseRows(r.T["grad.x"], c.InputWidth)!;
            if (reversed && batch.Targets != null) r.T["grad.y"] = ReverseRows(r.T["grad.y"], k)!;
            var st = ts.State();
            foreach (int i in c.Stack.BatchNormLayers())
            {
                r.T[$"after.{i}.running_mean"] = st[$"{i}.running_mean"];
                r.T[$"after.{i}.running_var"] = st[$"{i}.running_var"];
                r.Tracked[$"{i}.num_batches_tracked"] = (long)st[$"{i}.num_batches_tracked"][0];
            }
            // the size of the terms of every gradient that is a sum over the batch (StackParity.NearZeroScale for a linear
            // bias, |dy|ᵀ·|x| for its weight, the scatter of |dy| for an embedding; Σ_r |dy·x̂| and Σ_r |dy| for a norm's gain
            // and bias), and of the mean objective's: a float sum's rounding
            // is relative to its terms, not to its value, which cancellation can make small
            using (no_grad())
                for (int i = 0; i < c.Stack.Layers.Count; i++)
                {
                    var l = c.Stack.Layers[i];
                    var dy = acts[i + 1].grad;
                    if (dy is null) continue;
                    if (l.Kind == LayerKind.Linear && l.HasBias) r.Scale[$"grad.{i}.bias"] = NearZeroScale(dy);
                    if (l.Kind == LayerKind.Linear)
                        r.Scale[$"grad.{i}.weight"] = dy.abs().t().mm(acts[i].abs().reshape(dy.shape[0], -1)).max().to_type(ScalarType.Float64).item<double>();
                    if (l.Kind == LayerKind.Embedding)
                        r.Scale[$"grad.{i}.weight"] = zeros(l.In, l.Out, dtype: dtype).index_add_(0, acts[i].reshape(-1), dy.abs().reshape(-1, l.Out), 1)
                            .max().to_type(ScalarType.Float64).item<double>();
                    if (l.Kind is LayerKind.BatchNorm or LayerKind.LayerNorm)
                    {
                        var sd = ts.Model.state_dict();
                        var xhat = (acts[i + 1] - sd[$"{i}.bias"]) / sd[$"{i}.weight"];
                        r.Scale[$"grad.{i}.weight"] = NearZeroScale(dy * xhat);
                        r.Scale[$"grad.{i}.bias"] = NearZeroScale(dy);
                    }
                }
            if (c.Loss == LossKind.Mean) r.Scale["loss"] = acts[^1].abs().mean().to_type(ScalarType.Float64).item<double>();
            // inference and calibration on the parameters of the step's forward (not after the update: AdamW's first
            // update of a gradient element near eps is ±lr on either side of the rounding)
            TorchAfterTraining(c, ts, r);
            opt.step();
        }
        var after = ts.State();
        foreach (var (name, _) in ts.Model.named_parameters())
            r.T["step." + name] = after[name].Select((v, i) => v - d.Values[name][i]).ToArray();
        return r;
    }

    /// <summary>The batch with its rows in reverse order: the same minibatch to every row-symmetric result, summed in another order.</summary>
    private static Batch Reverse(Batch b) => new(b.Rows, ReverseRows(b.Ids, b.Ids?.Length / b.Rows ?? 0), ReverseRows(b.Features, b.Features?.Length / b.Rows ?? 0),
        ReverseRows(b.Classes, 1), ReverseRows(b.Targets, b.Targets?.Length / b.Rows ?? 0));

    private static T[]? ReverseRows<T>(T[]? a, int width)
    {
        if (a is null) return null;
        var o = new T[a.Length];
        int rows = a.Length / width;
        for (int i = 0; i < rows; i++) Array.Copy(a, i * width, o, (rows - 1 - i) * width, width);
        return o;
    }

    /// <summary><c>max_c Σ_r |dy[r,c]|</c> (<see cref="StackParity.NearZeroScale"/>) of a layer's output gradient.</summary>
    public static double NearZeroScale(Tensor dy)
    {
        // (sum([0]): a bare sum(0) would take 0 as a ScalarType)
        using var s = dy.detach().abs().sum([0L], keepdim: false).max();
        return s.to_type(ScalarType.Float64).item<double>();
    }

    // ---- trajectories -----------------------------------------------------------------------------------------

    public static Result OursTrajectory(ParityCase c, CaseData d, int steps)
    {
        var r = new Result();
        using var net = Create(c, d);
        var losses = new double[steps];
        for (int t = 0; t < steps; t++)
        {
            r.LearningRates.Add(net.LearningRate);
            losses[t] = Run(net, CaseData.DrawBatch(c, t), update: true);
        }
        r.T["losses"] = losses;
        foreach (var s in net.Parameters.Parameters) r.T["final." + s.Name] = D(net.Parameters.Value(s.Name));
        foreach (var s in net.Parameters.RunningStatistics) r.T["final." + s.Name] = D(net.Parameters.Value(s.Name));
        var bns = c.Stack.BatchNormLayers();
        for (int j = 0; j < bns.Count; j++) r.Tracked[$"{bns[j]}.num_batches_tracked"] = net.Parameters.BatchesTracked[j];
        AfterTraining(c, net, r);
        return r;
    }

    public static Result TorchTrajectory(ParityCase c, CaseData d, ScalarType dtype, int steps)
    {
        var r = new Result();
        using var ts = new TorchStack(c.Stack, c.Loss, dtype, c.L2, c.BnMomentum, 1e-5f, c.DropoutSeed);
        ts.Load(d.Values, d.Tracked);
        var opt = TorchOptimizer(c.Optimizer, ts.Model.parameters());
        var sched = TorchSchedule(c.Schedule, opt, steps);
        var losses = new double[steps];
        for (int t = 0; t < steps; t++)
        {
            r.LearningRates.Add(opt.ParamGroups.First().LearningRate);
            ts.Step = c.Step + t;
            using var scope = NewDisposeScope();
            opt.zero_grad();
            var (_, _, _, loss) = ts.ForwardBackward(CaseData.DrawBatch(c, t));
            losses[t] = loss.to_type(ScalarType.Float64).item<double>();
            opt.step();
            sched?.step();
        }
        r.T["losses"] = losses;
        var st = ts.State();
        foreach (var (name, v) in st)
        {
            if (name.EndsWith(".num_batches_tracked", StringComparison.Ordinal)) r.Tracked[name] = (long)v[0];
            else r.T["final." + name] = v;
        }
        TorchAfterTraining(c, ts, r);
        return r;
    }

    // ---- the comparison -----------------------------------------------------------------------------------------

    public static double Rel(double[] truth, double[] actual, double scale)
    {
        if (truth.Length != actual.Length) return double.PositiveInfinity;
        double diff = StackParity.MaxAbsDiff(truth, actual);
        if (double.IsNaN(diff)) return double.PositiveInfinity;
        return diff == 0 ? 0 : diff / Math.Max(scale, 1e-300);
    }

    /// <summary>
    /// Every tensor of the truth: ours within <see cref="StackParity.Float32Tolerance"/> of TorchSharp float32's error.
    /// Returns the failures (empty when the case passes); <paramref name="report"/> gets one line per tensor.
    /// </summary>
    public static List<string> Compare(ParityCase c, Result truth, Result ts32, Result ours, List<string> report, bool trajectory = false, Result? second = null)
    {
        var failures = new List<string>();
        var nearZero = StackParity.NearZero(c.Stack);
        bool adam = c.Optimizer is AdamW;
        var errTs = new Dictionary<string, double>(StringComparer.Ordinal);
        var scales = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var (name, t) in truth.T)
        {
            string? nz = NearZeroName(name, nearZero);
            double scale = StackParity.MaxAbs(t);
            if (nz != null && name.StartsWith("grad.", StringComparison.Ordinal)) scale = truth.Scale["grad." + nz];
            else if (truth.Scale.TryGetValue(name, out double terms)) scale = Math.Max(scale, terms);
            if (name.StartsWith("step.", StringComparison.Ordinal) && truth.Scale.TryGetValue("grad." + name[5..], out double gterms))
                scale = Math.Max(scale, c.Schedule.At(c.Step, c.Optimizer.LearningRate) * gterms);
            scales[name] = scale;
            if (!ts32.T.TryGetValue(name, out var t32)) { failures.Add($"{name}: TorchSharp float32 has no such tensor"); continue; }
            errTs[name] = Rel(t, t32, scale);
            if (second != null && second.T.TryGetValue(name, out var t2)) errTs[name] = Math.Max(errTs[name], Rel(t, t2, scale));
        }
        // after many steps the rounding of every step has gone through every parameter (and chaotically so where a ReLU
        // or a dropout mask switches): a trajectory's float32 error is one figure for the run, TorchSharp's largest
        double runError = trajectory && errTs.Count > 0 ? errTs.Values.Max() : 0;
        foreach (var (name, t) in truth.T)
        {
            if (!errTs.ContainsKey(name)) continue;
            string? nz = NearZeroName(name, nearZero);
            // Adam turns a rounding-noise gradient into a step of ±lr: its update of a near-zero bias is noise
            if (nz != null && adam && name.StartsWith("step.", StringComparison.Ordinal)) continue;
            double err = Math.Max(errTs[name], runError);
            if (nz != null && (name.StartsWith("grad.", StringComparison.Ordinal) || name.StartsWith("step.", StringComparison.Ordinal)))
                err = Math.Max(err, errTs.GetValueOrDefault(name.Replace(".bias", ".weight", StringComparison.Ordinal)));
            if (adam && name.StartsWith("step.", StringComparison.Ordinal) && truth.T.TryGetValue("grad." + name[5..], out var g))
                err = Math.Max(err, AdamFirstStepError((AdamW)c.Optimizer, c.Schedule.At(c.Step, c.Optimizer.LearningRate), g,
                    errTs["grad." + name[5..]] * scales["grad." + name[5..]]) / Math.Max(scales[name], double.Epsilon));
            double tol = StackParity.Float32Tolerance(err);
            if (!ours.T.TryGetValue(name, out var o)) { failures.Add($"{name}: HpBackprop has no such tensor"); continue; }
            double mine = Rel(t, o, scales[name]);
            report.Add(string.Create(CultureInfo.InvariantCulture, $"{name}: hpbackprop {mine:E1} torchsharp-f32 {err:E1} tol {tol:E1}"));
            if (!(mine <= tol))
                failures.Add(string.Create(CultureInfo.InvariantCulture, $"{name}: HpBackprop's error {mine:E2} > {tol:E2} (TorchSharp float32: {err:E2})"));
        }
        foreach (var name in ours.T.Keys.Where(k => !truth.T.ContainsKey(k))) failures.Add($"{name}: TorchSharp has no such tensor");
        foreach (var (name, n) in truth.Tracked)
            if (ours.Tracked.GetValueOrDefault(name, -1) != n) failures.Add($"{name}: HpBackprop {ours.Tracked.GetValueOrDefault(name, -1)}, TorchSharp {n}");
        for (int t = 0; t < truth.LearningRates.Count; t++)
        {
            // the rate is a float in HpBackprop, a double in TorchSharp's schedulers: within one float ulp of it
            double lr = truth.LearningRates[t], mine = ours.LearningRates[t];
            if (!(Math.Abs(mine - lr) <= (double)MathF.BitIncrement((float)lr) - (float)lr))
                failures.Add(string.Create(CultureInfo.InvariantCulture, $"learning rate of step {t}: HpBackprop {mine:R}, TorchSharp {lr:R}"));
        }
        return failures;
    }

    /// <summary>
    /// AdamW's first step normalises each gradient element by its own size: <c>Δ = −lr·g/(|g| + eps)</c> (m̂ = g, √v̂ = |g| at
    /// t = 1), so an absolute gradient error δ moves it by <c>lr·eps·δ/(|g| + eps)²</c>, at most 2·lr (a flipped sign). With δ
    /// TorchSharp float32's own absolute gradient error, the largest such move is its float32 error carried into the step:
    /// large where a gradient element is as small as eps, which no rounding of the update itself shows.
    /// </summary>
    private static double AdamFirstStepError(AdamW a, double lr, double[] g, double delta)
    {
        double worst = 0;
        foreach (double gi in g)
        {
            double d = Math.Abs(gi) + a.Eps;
            worst = Math.Max(worst, Math.Min(2 * lr, lr * a.Eps * delta / (d * d)));
        }
        return worst;   // (0 for a zero gradient: then the step is exactly −lr·wd·p on both sides)
    }

    private static string? NearZeroName(string name, IReadOnlySet<string> nearZero)
    {
        int dot = name.IndexOf('.');
        if (dot < 0) return null;
        string rest = name[(dot + 1)..];
        return nearZero.Contains(rest) ? rest : null;
    }

    /// <summary>One case end to end: the one-step comparison (and a trajectory of <paramref name="steps"/> steps when given).</summary>
    public static (List<string> Failures, List<string> Report) Check(ParityCase c, int trajectorySteps = 0)
    {
        var d = CaseData.Draw(c);
        var report = new List<string>();
        // a second sample of TorchSharp's float32 error: the same minibatch with its rows reversed (another summation
        // order in every reduction over the batch), where no dropout mask ties values to row positions. One sample of
        // the error of a sum that cancels (a gradient of one element, say) can be lucky; the larger of two is the estimate.
        var second = c.Stack.Layers.Any(l => l.Kind == LayerKind.Dropout) ? null : TorchOneStep(c, d, ScalarType.Float32, reversed: true);
        var failures = Compare(c, TorchOneStep(c, d, ScalarType.Float64), TorchOneStep(c, d, ScalarType.Float32), OursOneStep(c, d), report, second: second);
        if (trajectorySteps > 0)
        {
            var tr = new List<string>();
            var ct = c with { Step = 0 };   // a run from step 0: the schedulers and AdamW's t start there
            failures.AddRange(Compare(ct, TorchTrajectory(ct, d, ScalarType.Float64, trajectorySteps), TorchTrajectory(ct, d, ScalarType.Float32, trajectorySteps),
                OursTrajectory(ct, d, trajectorySteps), tr, trajectory: true).Select(f => $"trajectory of {trajectorySteps} steps: {f}"));
            report.AddRange(tr.Select(l => $"trajectory: {l}"));
        }
        return (failures, report);
    }
}
