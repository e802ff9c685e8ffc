using HpBackprop.Model;
using HpBackprop.Training;

namespace HpBackprop.Networks;

// The training loop (one, RunSteps, under both Fit overloads) with a validation set, early stopping and epochs, and the
// class predictions: written once above the backends, like the rest of Network.
public sealed unsafe partial class Network
{
    /// <summary>
    /// Trains on <paramref name="train"/> as <paramref name="options"/> say: up to <see cref="FitOptions.Steps"/> steps on
    /// minibatches drawn uniformly with replacement or in epochs without replacement (<see cref="FitOptions.Order"/>, seeded
    /// by <see cref="FitOptions.Seed"/>: the same draws on every device); with a <see cref="FitOptions.Validation"/> set, its
    /// loss (and accuracy, for a classifier) in inference mode every <see cref="FitOptions.ValidateEvery"/> steps (default
    /// once per epoch) and after the last step, early stopping after <see cref="FitOptions.Patience"/> evaluations without
    /// improvement, and at the end the parameters of the best evaluation put back (<see cref="FitOptions.RestoreBest"/>).
    /// Every example of both sets is checked once before the first step (ids and class ids in range, features and targets
    /// finite: the refusal names the row and column of the set). A cancellation stops the loop at the end of a step. The
    /// returned history holds the loss of every step done and of those only. A training step allocates nothing.
    /// </summary>
    /// <exception cref="ArgumentException">An option is out of range, or a set does not fit the network (its kinds, widths or contents; the message names the row and column).</exception>
    /// <exception cref="TrainingDivergedException">A loss was NaN or infinite; the message names the 1-based step and the rate.</exception>
    /// <exception cref="ObjectDisposedException">The network was disposed.</exception>
    public TrainingHistory Fit(ExampleSet train, FitOptions options)
    {
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        // the history (one float per step) is allocated up front: its size is checked first, in 64 bits
        long historyBytes = 4L * options.Steps;
        if (options.Steps > Array.MaxLength || historyBytes > MemoryBudget.Available)
            throw new ArgumentException($"FitOptions.Steps = {options.Steps:N0} needs {historyBytes:N0} bytes for the loss history; this process can use {MemoryBudget.Available:N0}: train in shorter runs.", nameof(options));
        var validation = options.Validation;
        CheckData(train);
        if (validation != null)
        {
            try { CheckData(validation); }
            catch (ArgumentException e) when (e is not ShapeException) { throw new ArgumentException("FitOptions.Validation: " + e.Message, nameof(options), e); }
        }
        int steps = options.Steps;
        var order = options.Order == BatchOrder.Epochs ? new EpochOrder(train.Count, BatchSize, new NormalRng(options.Seed)) : null;
        int every = options.ValidateEvery > 0 ? options.ValidateEvery : Math.Max(1, train.Count / BatchSize);
        var run = new TrainingRun(steps, 0, options.Seed, new float[steps]);
        var points = new List<ValidationPoint>(validation == null ? 0 : steps / every + 2);
        float[]? outputs = validation != null && IsClassifier ? new float[(long)EvalChunk * _k] : null;
        float[]? bestData = null, bestBuffers = null;
        long[]? bestTracked = null;
        ValidationPoint? best = null;
        int sinceBest = 0;
        bool stoppedEarly = false;
        using var use = _use.Enter();
        int done = RunSteps(train, run, steps, order, options.Progress, options.ReportEvery, options.CancellationToken,
            validation != null ? ValidateAndCheckPatience : null, every, points);
        var stop = stoppedEarly ? FitStop.EarlyStopping : done < steps ? FitStop.Cancelled : FitStop.Completed;
        // a run cancelled between two evaluations: the parameters it ends with are evaluated too
        if (validation != null && done > 0 && (points.Count == 0 || points[^1].Step != done)) Validate(done);
        bool restored = false;
        if (options.RestoreBest && best is { } b && b.Step != done)
        {
            _backend.Pull(); // the device's optimiser state and gradients, kept as they are
            bestData!.CopyTo(Parameters.Data, 0);
            bestBuffers!.CopyTo(Parameters.Buffers, 0);
            bestTracked!.CopyTo(Parameters.BatchesTracked, 0);
            _backend.Push();
            restored = true;
        }
        return new TrainingHistory(done == steps ? run.Losses : run.Losses[..done], points, best, stop, restored);

        // the loop's validation hook: evaluates after `done` steps; true (stop early) when the patience has run out
        bool ValidateAndCheckPatience(int done)
        {
            Validate(done);
            // patience running out at the last step is a completed run
            stoppedEarly = options.Patience > 0 && sinceBest >= options.Patience && done < steps;
            return stoppedEarly;
        }

        // evaluates the validation set after `done` steps, keeps the parameters when they are the best so far
        void Validate(int done)
        {
            if (options.CalibrateBeforeValidation && train.Count >= 2 && Stack.BatchNormLayers().Count > 0)
                fixed (int* ti = train.Ids)
                fixed (float* tf = train.Features)
                    CalibrateAll(ti, tf, train.Count);
            double total = EvaluateChecked(validation!, outputs, out long correct);
            var point = new ValidationPoint(done, (float)(total / validation!.Count), outputs != null ? (float)((double)correct / validation.Count) : null);
            points.Add(point);
            if (best is not { } b || point.Loss < b.Loss - options.MinDelta)
            {
                best = point;
                sinceBest = 0;
                if (options.RestoreBest)
                {
                    _backend.Pull();
                    bestData ??= new float[Parameters.Data.Length];
                    bestBuffers ??= new float[Parameters.Buffers.Length];
                    bestTracked ??= new long[Parameters.BatchesTracked.Length];
                    Parameters.Data.CopyTo(bestData, 0);
                    Parameters.Buffers.CopyTo(bestBuffers, 0);
                    Parameters.BatchesTracked.CopyTo(bestTracked, 0);
                }
            }
            else sinceBest++;
        }
    }

    /// <summary>
    /// The training loop of both <c>Fit</c> overloads (the caller holds the network and has checked the set): steps
    /// <paramref name="run"/> from <see cref="TrainingRun.Completed"/> up to <paramref name="until"/> (of its
    /// <see cref="TrainingRun.TotalSteps"/>) on minibatches drawn under its seed (by the device that keeps the set, else by the
    /// host), or in the order of <paramref name="order"/> (epochs: drawn by the host), recording each loss in
    /// <see cref="TrainingRun.Losses"/> and moving <see cref="TrainingRun.Completed"/> with every step whose loss has been read
    /// and found finite. Progress every <paramref name="reportEvery"/> steps of the run, at its last step and at an early
    /// stop, its rate over the steps of this call, with the last of <paramref name="points"/>. At every
    /// <paramref name="validateEvery"/>-th step and at <paramref name="until"/>, once the losses so far are read, it calls
    /// <paramref name="validate"/> with the steps done, which says whether to stop early. A cancellation stops it at the end
    /// of a step; the steps still queued on the device count once their losses are read and checked. Returns the number of
    /// steps done by this call; allocates nothing per step.
    /// </summary>
    /// <exception cref="TrainingDivergedException">A loss was NaN or infinite; the message names the 1-based step and the rate.</exception>
    private int RunSteps(ExampleSet train, TrainingRun run, int until, EpochOrder? order, Action<TrainingProgress>? progress, int reportEvery,
        CancellationToken cancellationToken, Func<int, bool>? validate, int validateEvery, List<ValidationPoint>? points)
    {
        int n = BatchSize, w = InputWidth, first = run.Completed, total = run.TotalSteps;
        var losses = run.Losses;
        var ids = train.Ids != null ? new int[n * w] : [];
        var feats = train.Features != null ? new float[n * w] : [];
        var cls = train.Classes != null ? new int[n] : [];
        var tg = train.Targets != null ? new float[n * train.TargetWidth] : [];
        bool classes = Options.Loss.Targets() == TargetKind.Classes, floats = Options.Loss.Targets() == TargetKind.Floats;
        bool reports = progress != null && reportEvery > 0;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        // a device that keeps the set draws every minibatch itself and holds the losses until they are read
        bool drawn = order == null && until > first && _backend.Reside(train, run.Seed);
        // else a device that queues steps takes the host's minibatches (in two staging buffers) without a loss read each
        bool queued = !drawn && until > first && _backend.QueuesSteps;
        int unread = 0; // steps queued whose losses are still on the device: the `unread` steps after run.Completed
        fixed (int* pi = ids, pc = cls)
        fixed (float* pf = feats, pt = tg)
        {
            var batch = new Batch(n, train.Ids != null ? pi : null, train.Features != null ? pf : null, classes ? pc : null, floats ? pt : null);
            for (int s = first; s < until; s++)
            {
                if (cancellationToken.IsCancellationRequested) break;
                int done = s + 1;
                bool report = reports && (done % reportEvery == 0 || done == total);
                bool validation = validate != null && (done % validateEvery == 0 || done == until);
                float loss;
                // the host draws unless the device does; the examples were checked once (CheckData): ids and classes are in range
                if (!drawn)
                {
                    if (order != null) train.CopyRows(order.Next(), ids, feats, cls, tg);
                    else train.DrawBatch(run.Seed, StepCount, n, ids, feats, cls, tg);
                }
                if (drawn || queued)
                {
                    var args = new StepArgs(true, LearningRate, StepCount + 1, StepCount);
                    if (drawn) _backend.StepDrawn(args);
                    else _backend.StepQueued(batch, args);
                    StepCount++;
                    unread++;
                    if (unread < _backend.LossWindow && done < until && !report && !validation) continue;
                    ReadLosses(losses, done - unread, unread);
                    unread = 0;
                    loss = losses[s];
                }
                else
                {
                    float lr = LearningRate;
                    loss = StepChecked(batch, true);
                    if (!float.IsFinite(loss)) throw new TrainingDivergedException(done, lr, loss);
                    losses[s] = loss;
                }
                run.Completed = done;
                bool stop = validation && validate!(done);
                if (report || (reports && stop))
                    progress!(new TrainingProgress(done, total, loss, (done - first) / Math.Max(sw.Elapsed.TotalSeconds, 1e-9)) { Validation = points is { Count: > 0 } ? points[^1] : null });
                if (stop) break;
            }
        }
        if (unread > 0)
        {
            // cancelled with steps queued: their losses are read and checked before they count as done
            ReadLosses(losses, run.Completed, unread);
            run.Completed += unread;
        }
        return run.Completed - first;
    }

    /// <summary>
    /// Reads the losses of the last <paramref name="count"/> steps, which were queued on the device and are entries
    /// <paramref name="first"/>… of <paramref name="losses"/>, and refuses the first that is not finite by its step (1-based, as
    /// progress counts) and the rate that step ran with.
    /// </summary>
    private void ReadLosses(float[] losses, int first, int count)
    {
        long firstStep = StepCount - count;
        _backend.ReadLosses(firstStep, losses.AsSpan(first, count));
        for (int i = 0; i < count; i++)
            if (!float.IsFinite(losses[first + i]))
                throw new TrainingDivergedException(first + i + 1, Options.Schedule.At(firstStep + i, Options.Optimizer.LearningRate), losses[first + i]);
    }

    /// <summary>Whether the network classifies: cross-entropy (the class of the largest output), or BCE-with-logits with one output (class 1 when the logit is positive).</summary>
    public bool IsClassifier => Options.Loss == LossKind.CrossEntropy || (Options.Loss == LossKind.BceWithLogits && _k == 1);

    /// <summary>
    /// The class of each of <paramref name="rows"/> rows of float features, in inference mode: the index of the largest output
    /// for cross-entropy (the first of equals), or 1 when the logit is positive (probability above 0.5) for BCE-with-logits
    /// with one output. Written to <paramref name="classes"/> <c>[rows]</c>.
    /// </summary>
    /// <exception cref="InvalidOperationException">The network is not a classifier (<see cref="IsClassifier"/>).</exception>
    /// <exception cref="ArgumentException">The sizes do not fit, or a feature is not finite (the message names the row and column).</exception>
    public void PredictClasses(ReadOnlySpan<float> features, int rows, Span<int> classes)
    {
        if (Stack.TakesIds) throw new ArgumentException("this stack takes ids, not float features.", nameof(features));
        RequireClassifier();
        CheckRows(features.Length, rows, rows * _k);
        if (classes.Length < rows) throw new ShapeException("classes", [rows], [classes.Length]);
        using var use = _use.Enter();
        fixed (float* pf = features)
        {
            InputChecks.Finite(pf, features.Length, InputWidth, "features");
            ClassesOf(pf, null, rows, classes);
        }
    }

    /// <summary>The class of each of <paramref name="rows"/> rows of ids (see the features overload).</summary>
    /// <exception cref="InvalidOperationException">The network is not a classifier (<see cref="IsClassifier"/>).</exception>
    /// <exception cref="ArgumentException">The sizes do not fit, or an id is outside the embedding table (the message names the row and column).</exception>
    public void PredictClasses(ReadOnlySpan<int> ids, int rows, Span<int> classes)
    {
        if (!Stack.TakesIds) throw new ArgumentException("this stack takes float features, not ids.", nameof(ids));
        RequireClassifier();
        CheckRows(ids.Length, rows, rows * _k);
        if (classes.Length < rows) throw new ShapeException("classes", [rows], [classes.Length]);
        using var use = _use.Enter();
        fixed (int* pi = ids)
        {
            InputChecks.Ids(pi, ids.Length, InputWidth, Stack);
            ClassesOf(null, pi, rows, classes);
        }
    }

    private void RequireClassifier()
    {
        if (!IsClassifier)
            throw new InvalidOperationException($"the network's loss is {Options.Loss.ToText()} with {_k} output(s): it predicts values, not classes (PredictClasses needs cross_entropy, or bce_with_logits with one output).");
    }

    private void ClassesOf(float* features, int* ids, int rows, Span<int> classes)
    {
        var o = new float[(long)Math.Min(rows, EvalChunk) * _k];
        for (int r0 = 0; r0 < rows; r0 += EvalChunk)
        {
            int r = Math.Min(EvalChunk, rows - r0);
            var b = new Batch(r, ids == null ? null : ids + (long)r0 * InputWidth, features == null ? null : features + (long)r0 * InputWidth, null, null);
            _backend.Infer(b, 0, _plan.Steps.Length);
            var chunk = o.AsSpan(0, r * _k);
            _backend.ReadInferred(chunk);
            for (int i = 0; i < r; i++) classes[r0 + i] = ClassOf(chunk.Slice(i * _k, _k));
        }
    }

    /// <summary>The class of one row of outputs (see <see cref="PredictClasses(ReadOnlySpan{float}, int, Span{int})"/>).</summary>
    private int ClassOf(ReadOnlySpan<float> z)
    {
        if (Options.Loss == LossKind.BceWithLogits) return z[0] > 0 ? 1 : 0;
        int arg = 0;
        for (int j = 1; j < z.Length; j++) if (z[j] > z[arg]) arg = j;
        return arg;
    }

    /// <summary>The rows of <paramref name="r"/> outputs (rows r0… of <paramref name="data"/>) whose class is the example's (its class id, or its BCE target rounded).</summary>
    private long CorrectClasses(ReadOnlySpan<float> outputs, int r, ExampleSet data, int r0)
    {
        long correct = 0;
        for (int i = 0; i < r; i++)
        {
            int c = ClassOf(outputs.Slice(i * _k, _k));
            int want = data.Classes != null ? data.Classes[r0 + i] : data.Targets![r0 + i] >= 0.5f ? 1 : 0;
            if (c == want) correct++;
        }
        return correct;
    }
}
