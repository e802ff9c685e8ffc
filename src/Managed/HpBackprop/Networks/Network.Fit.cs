using HpBackprop.Model;
using HpBackprop.Training;

namespace HpBackprop.Networks;

// The training loop with a validation set, early stopping and epochs, and the class predictions: written once above the
// backends, like the rest of Network.
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
        int n = BatchSize, w = InputWidth, steps = options.Steps;
        var rng = new NormalRng(options.Seed);
        var order = options.Order == BatchOrder.Epochs ? new EpochOrder(train.Count, n, rng) : null;
        int every = options.ValidateEvery > 0 ? options.ValidateEvery : Math.Max(1, train.Count / n);
        var ids = train.Ids != null ? new int[n * w] : [];
        var feats = train.Features != null ? new float[n * w] : [];
        var cls = train.Classes != null ? new int[n] : [];
        var tg = train.Targets != null ? new float[n * train.TargetWidth] : [];
        bool classes = Options.Loss.Targets() == TargetKind.Classes, floats = Options.Loss.Targets() == TargetKind.Floats;
        var losses = new float[steps];
        var points = new List<ValidationPoint>(validation == null ? 0 : steps / every + 2);
        float[]? outputs = validation != null && IsClassifier ? new float[(long)EvalChunk * _k] : null;
        float[]? bestData = null, bestBuffers = null;
        long[]? bestTracked = null;
        ValidationPoint? best = null;
        int done = 0, sinceBest = 0;
        var stop = FitStop.Completed;
        var token = options.CancellationToken;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        using var use = _use.Enter();
        {
            fixed (int* pi = ids, pc = cls)
            fixed (float* pf = feats, pt = tg)
            {
                var batch = new Batch(n, train.Ids != null ? pi : null, train.Features != null ? pf : null, classes ? pc : null, floats ? pt : null);
                // a device that keeps the set draws every minibatch itself and holds the losses until they are read
                bool drawn = order == null && _backend.Reside(train, options.Seed);
                int unread = 0; // steps done whose losses are still on the device: done - unread, …, done - 1
                for (int s = 0; s < steps; s++)
                {
                    if (token.IsCancellationRequested) { stop = FitStop.Cancelled; break; }
                    float loss;
                    if (drawn)
                    {
                        _backend.StepDrawn(new StepArgs(true, LearningRate, StepCount + 1, StepCount));
                        StepCount++;
                        done = s + 1;
                        unread++;
                        if (unread < _backend.LossWindow && done < steps && !(validation != null && done % every == 0)
                            && !(options.Progress != null && options.ReportEvery > 0 && done % options.ReportEvery == 0))
                            continue;
                        ReadLosses(losses, done - unread, unread);
                        unread = 0;
                        loss = losses[s];
                    }
                    else
                    {
                        if (order != null) train.CopyRows(order.Next(), ids, feats, cls, tg);
                        else train.DrawBatch(options.Seed, StepCount, n, ids, feats, cls, tg);
                        float lr = LearningRate;
                        // the examples were checked once (CheckData): ids and classes are in range
                        loss = StepChecked(batch, true);
                        if (!float.IsFinite(loss)) throw new TrainingDivergedException(s + 1, lr, loss);
                        losses[s] = loss;
                        done = s + 1;
                    }
                    if (validation != null && (done % every == 0 || done == steps) && Validate() && options.Patience > 0 && sinceBest >= options.Patience
                        && done < steps) // patience running out at the last step is a completed run
                        stop = FitStop.EarlyStopping;
                    if (options.Progress != null && options.ReportEvery > 0 && (done % options.ReportEvery == 0 || done == steps || stop != FitStop.Completed))
                        options.Progress(new TrainingProgress(done, steps, loss, done / Math.Max(sw.Elapsed.TotalSeconds, 1e-9)) { Validation = points.Count > 0 ? points[^1] : null });
                    if (stop != FitStop.Completed) break;
                }
                if (unread > 0) ReadLosses(losses, done - unread, unread);
            }
            // a run cancelled between two evaluations: the parameters it ends with are evaluated too
            if (validation != null && done > 0 && (points.Count == 0 || points[^1].Step != done)) Validate();
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
            return new TrainingHistory(done == steps ? losses : losses[..done], points, best, stop, restored);
        }

        // evaluates the validation set after `done` steps, keeps the parameters when they are the best so far; true when evaluated
        bool Validate()
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
            return true;
        }
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
