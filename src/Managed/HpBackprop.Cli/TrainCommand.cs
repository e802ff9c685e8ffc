using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Networks;
using HpBackprop.Training;

namespace HpBackprop.Cli;

/// <summary><c>hpbackprop train</c>: the docs/makemore.md §5 recipe, then calibration, evaluation and samples.</summary>
internal static class TrainCommand
{
    /// <summary>The longest run --steps allows (its loss curve is kept in memory, 4 bytes a step).</summary>
    public const int MaxSteps = 100_000_000;

    /// <summary>The most words --samples prints (on one line, streamed as they are drawn; <c>hpbackprop sample -n</c> streams any number, one per line).</summary>
    public const int MaxSamples = 10_000;

    /// <summary>The divergence check runs at least this often (in steps), besides the end of the run and every checkpoint.</summary>
    private const int DivergenceCheckEvery = 1000;

    public static Command Create(TextWriter stdout, TextWriter stderr, StopRequest stop)
    {
        var data = new Option<string?>("--data") { Description = "Corpus file, one word per line (default: the built-in first-name corpus)" };
        var steps = new Option<int>("--steps") { Description = $"SGD steps (1 to {MaxSteps:N0})", DefaultValueFactory = _ => 200_000 };
        var batch = new Option<int>("--batch") { Description = "Minibatch size n (at least 2)", DefaultValueFactory = _ => 32 };
        var embd = new Option<int>("--embd") { Description = "Embedding width E (n_embd)", DefaultValueFactory = _ => 10 };
        var hidden = new Option<int>("--hidden") { Description = "Hidden width H (n_hidden)", DefaultValueFactory = _ => 200 };
        var block = new Option<int>("--block") { Description = "Context length B", DefaultValueFactory = _ => 3 };
        var lr = Inputs.Float("--lr", "Learning rate; a tenth of it from --lr-decay-step on", 0.1f);
        var decay = new Option<int?>("--lr-decay-step") { Description = "First step of the decayed learning rate (default: half of --steps)" };
        var seed = new Option<int>("--seed") { Description = "Seed of initialisation, split, minibatches and samples", DefaultValueFactory = _ => 42 };
        var device = Backends.DeviceOption();
        var momentum = Inputs.Float("--bn-momentum", "Weight of each batch in the batch-norm running statistics (0 to 1)", 0.001f, 0f, 1f);
        var calibrate = new Option<bool>("--no-calibrate") { Description = "Use the running batch-norm statistics instead of a calibration pass" };
        var outFile = new Option<string?>("--out") { Description = "Write the trained model to this safetensors file (and, on Ctrl-C/SIGTERM or --checkpoint-every, a checkpoint to resume)" };
        var plot = new Option<string?>("--plot") { Description = "Write an SVG plot of the training loss to this file" };
        var samples = new Option<int>("--samples") { Description = "Words to sample after training", DefaultValueFactory = _ => 20 };
        var threads = new Option<int>("--threads") { Description = "CPU threads for large shapes (small steps stay on one)", DefaultValueFactory = _ => 1 };
        var scatter = new Option<string>("--scatter") { Description = "CUDA dC accumulation: deterministic or atomic", DefaultValueFactory = _ => "deterministic" };
        scatter.AcceptOnlyFromAmong("deterministic", "atomic");
        var json = new Option<bool>("--json") { Description = "Print one machine-readable JSON summary line on stdout (everything else goes to stderr)" };
        var resume = new Option<string?>("--resume") { Description = "Continue the run saved in this checkpoint (by Ctrl-C/SIGTERM or --checkpoint-every); the run's options come from it" };
        var checkpointEvery = new Option<int>("--checkpoint-every") { Description = "Save a checkpoint to resume to --out every N steps (0: only on Ctrl-C/SIGTERM)", DefaultValueFactory = _ => 0 };

        var layers = new Option<string?>("--layers") { Description = "The network as a layer stack, e.g. embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x27 (default: the makemore MLP of --embd, --hidden and --block); see docs/stacks.md" };
        var loss = new Option<string>("--loss") { Description = "cross_entropy (words, whose targets are the next character's id, and a table's class labels); with --csv also mse (a target of numbers) or bce_with_logits (a target of two labels)", DefaultValueFactory = _ => "cross_entropy" };
        var optimizer = new Option<string>("--optimizer") { Description = "sgd or adamw", DefaultValueFactory = _ => "sgd" };
        optimizer.AcceptOnlyFromAmong("sgd", "adamw");
        var sgdMomentum = Inputs.Float("--momentum", "SGD momentum", 0f);
        var weightDecay = Inputs.NullableFloat("--weight-decay", "Weight decay (default: 0 for sgd, 0.01 for adamw)");
        var beta1 = Inputs.Float("--beta1", "AdamW's first-moment decay", 0.9f);
        var beta2 = Inputs.Float("--beta2", "AdamW's second-moment decay", 0.999f);
        var adamEps = Inputs.Float("--adam-eps", "AdamW's epsilon", 1e-8f);
        var schedule = new Option<string>("--schedule") { Description = "step (--lr, then a tenth of it from --lr-decay-step), constant, or cosine (linear warm-up over --warmup steps, then down to --min-lr)", DefaultValueFactory = _ => "step" };
        schedule.AcceptOnlyFromAmong("step", "constant", "cosine");
        var warmup = new Option<int>("--warmup") { Description = "Warm-up steps of the cosine schedule", DefaultValueFactory = _ => 0 };
        var minLr = Inputs.Float("--min-lr", "Final learning rate of the cosine schedule", 0f);
        var l2 = Inputs.Float("--l2", "L2 penalty on linear weights: loss += L2 * sum(W^2)", 0f);

        var table = new TableTrainCommand.TableOptions();
        Option[] runDefining = [steps, batch, embd, hidden, block, layers, loss, optimizer, lr, sgdMomentum, weightDecay, beta1, beta2, adamEps, schedule, decay, warmup, minLr, l2, seed, momentum];
        var cmd = new Command("train", "Train a network with manual gradients on a word list (then calibrate batch norm, report train/dev loss and sample words) or, with --csv, on a table (then report dev and test metrics).")
        {
            data, steps, batch, embd, hidden, block, layers, loss, optimizer, lr, sgdMomentum, weightDecay, beta1, beta2, adamEps, schedule, decay, warmup, minLr, l2,
            seed, device, threads, scatter, momentum, calibrate, outFile, plot, samples, json, resume, checkpointEvery,
            table.Csv, table.Target, table.Features, table.Dev, table.Test, table.Epochs, table.EvalEvery, table.Patience, table.NoStandardize,
        };
        var common = new TableTrainCommand.CommonOptions(steps, batch, layers, loss, optimizer, lr, sgdMomentum, weightDecay, beta1, beta2, adamEps, schedule, decay, warmup, minLr, l2,
            seed, device, threads, momentum, calibrate, outFile, plot, json);
        cmd.SetAction(pr =>
        {
            bool asJson = pr.GetValue(json);
            TextWriter say = asJson ? stderr : stdout;
            int nSamples = pr.GetValue(samples);
            if (nSamples < 0 || nSamples > MaxSamples)
                throw new UserErrorException($"--samples {nSamples}: must be between 0 and {MaxSamples:N0} (they are printed on one line; 'hpbackprop sample -n' streams any number, one per line).");
            int nThreads = pr.GetValue(threads);
            if (nThreads < 1 || nThreads > Environment.ProcessorCount * 4) throw new UserErrorException($"--threads {nThreads}: must be between 1 and {Environment.ProcessorCount * 4}.");
            // options that conflict: each is an error naming both, never one of them ignored in silence
            if (Inputs.Given(pr, layers))
                foreach (var o in new Option[] { block, embd, hidden })
                    if (Inputs.Given(pr, o)) throw new UserErrorException($"{o.Name} and --layers cannot be given together: the stack gives every width (the block size is the first linear's input over the embedding's width); drop {o.Name}.");
            string scheduleName = pr.GetValue(schedule)!, optimizerName = pr.GetValue(optimizer)!;
            if (scheduleName != "cosine")
                foreach (var o in new Option[] { warmup, minLr })
                    if (Inputs.Given(pr, o)) throw new UserErrorException($"{o.Name} and --schedule {scheduleName} cannot be given together: {o.Name} belongs to the cosine schedule; give --schedule cosine or drop {o.Name}.");
            if (scheduleName != "step" && Inputs.Given(pr, decay))
                throw new UserErrorException($"--lr-decay-step and --schedule {scheduleName} cannot be given together: the decay step belongs to the step schedule; give --schedule step or drop --lr-decay-step.");
            if (optimizerName == "adamw" && Inputs.Given(pr, sgdMomentum))
                throw new UserErrorException("--momentum and --optimizer adamw cannot be given together: --momentum is SGD's; AdamW's moments are --beta1 and --beta2.");
            if (optimizerName == "sgd")
                foreach (var o in new Option[] { beta1, beta2, adamEps })
                    if (Inputs.Given(pr, o)) throw new UserErrorException($"{o.Name} and --optimizer sgd cannot be given together: {o.Name} is AdamW's; give --optimizer adamw or drop {o.Name}.");
            if (pr.GetValue(device) == "cpu" && Inputs.Given(pr, scatter))
                throw new UserErrorException("--scatter and --device cpu cannot be given together: --scatter chooses how the GPU sums the embedding gradient; the CPU's is always deterministic.");
            // a word list (--data, or the built-in corpus) or a table (--csv): told apart by the option, never by the file
            if (Inputs.Given(pr, table.Csv))
            {
                foreach (var o in new Option[] { data, embd, hidden, block, samples, resume, checkpointEvery, scatter })
                    if (Inputs.Given(pr, o))
                        throw new UserErrorException($"{o.Name} and --csv cannot be given together: {o.Name} belongs to training on words; --csv trains on a table.");
                return TableTrainCommand.Run(pr, common, table, stdout, stderr, stop);
            }
            foreach (var o in table.TableOnly)
                if (Inputs.Given(pr, o)) throw new UserErrorException($"{o.Name} needs --csv: it belongs to training on a table (--csv FILE --target NAME).");
            if (!Inputs.Given(pr, layers) && pr.GetValue(resume) == null)
                foreach (var (o, what) in new[] { (embd, "the embedding width"), (hidden, "the hidden width"), (block, "the context length") })
                    if (pr.GetValue(o) < 1) throw new UserErrorException($"{o.Name} {pr.GetValue(o)}: {what} must be at least 1.");
            int every = pr.GetValue(checkpointEvery);
            if (every < 0) throw new UserErrorException($"--checkpoint-every {every}: must not be negative (0: no periodic checkpoints).");
            string? outPath = pr.GetValue(outFile), plotPath = pr.GetValue(plot), dataPath = pr.GetValue(data), resumePath = pr.GetValue(resume);
            if (every > 0 && outPath == null) throw new UserErrorException("--checkpoint-every needs --out: the checkpoints are written there.");
            // every path before any work: inputs that are directories, outputs that would overwrite an input or each other, outputs that cannot be written
            Inputs.CheckInputFile("--data", dataPath);
            Inputs.CheckInputFile("--resume", resumePath);
            Inputs.CheckDistinct(("--data", dataPath), ("--out", outPath), ("--plot", plotPath));
            Inputs.CheckDistinct(("--resume", resumePath), ("--plot", plotPath));
            Inputs.CheckDistinct(("--resume", resumePath), ("--data", dataPath));
            Inputs.CheckWritable("--out", outPath);
            Inputs.CheckWritable("--plot", plotPath);

            LoadedModel? resumed = null;
            IReadOnlyDictionary<string, string>? meta = null;
            if (resumePath != null)
            {
                foreach (var o in runDefining)
                    if (Inputs.Given(pr, o))
                        throw new UserErrorException($"{o.Name} cannot be given with --resume: the run's options come from the checkpoint {Inputs.Clip(resumePath)}.");
                resumed = StackCheckpoint.Load(resumePath);
                if (resumed.Training == null || resumed.Vocabulary == null)
                {
                    resumed.Network.Dispose();
                    throw new UserErrorException($"--resume {Inputs.Clip(resumePath)}: the file holds no training state to continue (a finished model, or one not trained on words); resume a checkpoint written on Ctrl-C/SIGTERM or by --checkpoint-every.");
                }
                meta = resumed.Metadata;
            }
            try
            {
                return Train(resumed, meta);
            }
            finally
            {
                resumed?.Network.Dispose();
            }

            int Train(LoadedModel? resumed, IReadOnlyDictionary<string, string>? meta)
            {
                string Meta(string key) => meta!.TryGetValue(key, out var v) ? v
                    : throw new UserErrorException($"--resume {Inputs.Clip(resumePath!)}: metadata '{key}' is missing; the checkpoint was not written by 'train' and cannot be resumed.");
                int nSteps = meta != null ? resumed!.Training!.Run.TotalSteps : pr.GetValue(steps);
                if (nSteps < 1 || nSteps > MaxSteps) throw new UserErrorException($"--steps {nSteps}: must be between 1 and {MaxSteps:N0}.");
                int seedValue = meta != null ? MetaInt("seed") : pr.GetValue(seed);
                LossKind lossKind;
                try { lossKind = Losses.Parse(pr.GetValue(loss)!); }
                catch (FormatException e) { throw new UserErrorException($"--loss {Inputs.Clip(pr.GetValue(loss)!)}: {e.Message}"); }
                if (lossKind != LossKind.CrossEntropy)
                    throw new UserErrorException($"--loss {pr.GetValue(loss)}: a word corpus gives class ids (the next character), so the loss is cross_entropy; the other losses take float targets (use the library's ExampleSet).");
                if (dataPath == null && meta != null && Meta("corpus") != DefaultCorpus.Description)
                {
                    // the corpus a resumed run takes from its checkpoint is an input too: no output may be the same file
                    dataPath = Meta("corpus");
                    Inputs.CheckDistinct(("the corpus of --resume", dataPath), ("--out", outPath), ("--plot", plotPath));
                }
                Corpus corpus;
                try { corpus = Program.LoadCorpus(dataPath); }
                catch (CorpusException e) when (TableTrainCommand.LooksLikeTable(dataPath))
                {
                    throw new UserErrorException(e.Message + " (--data reads a word list, one word per line; to train on a table give --csv FILE --target NAME)");
                }
                if (TableTrainCommand.LooksLikeTable(dataPath))
                    stderr.WriteLine($"note: --data reads {Inputs.Clip(dataPath!)} as a word list, one word per line, as it does any file; to train on a table give --csv FILE --target NAME.");
                string? layersText = meta != null ? Meta("layers") : pr.GetValue(layers);
                Sequential? stack = null;
                int blockSize = meta != null ? MetaInt("input_width") : pr.GetValue(block);
                if (layersText != null)
                {
                    try { stack = Sequential.Parse(layersText); }
                    catch (FormatException e) { throw new UserErrorException("--layers: " + e.Message); }
                    if (!stack.TakesIds) throw new UserErrorException($"--layers: a stack trained on words starts with an embedding (ids in, one row per character); layer 0 is {stack.Layers[0]}.");
                    blockSize = stack.ImpliedInputWidth() ?? blockSize;
                }
                if (blockSize < 1) throw new UserErrorException($"--block {blockSize}: the context length must be at least 1.");
                var vocabulary = Vocabulary.FromCorpus(corpus);
                int V = vocabulary.Size;
                if (meta != null && (resumed!.Vocabulary!.Characters != vocabulary.Characters || Meta("corpus_sha256") != CorpusHash(corpus)))
                    throw new UserErrorException($"--data {Inputs.Clip(corpus.Source)}: not the corpus the run in {Inputs.Clip(resumePath!)} was trained on ({Inputs.Clip(Meta("corpus"))}); resume with that corpus.");
                // the examples' size in 64 bits before they are built (contexts of B ids per character)
                long examples = Dataset.CountExamples(corpus.Words);
                if (examples * blockSize > Array.MaxLength)
                    throw new UserErrorException($"--block {blockSize}: the {examples:N0} examples of {Inputs.Clip(corpus.Source)} need {examples * blockSize:N0} context ids ({Dataset.Bytes(examples, blockSize):N0} bytes), more than .NET's array limit of {Array.MaxLength:N0}.");
                if (stack == null)
                {
                    int e = pr.GetValue(embd), h = pr.GetValue(hidden);
                    if ((long)blockSize * e > int.MaxValue)
                        throw new UserErrorException($"--block {blockSize} and --embd {e}: the first linear layer takes B·E = {(long)blockSize * e:N0} inputs, more than {int.MaxValue:N0}.");
                    stack = Sequential.Makemore(V, blockSize, e, h);
                }
                if (stack.Layers[0].In != V)
                    throw new UserErrorException($"--layers: layer 0 ({stack.Layers[0]}) has {stack.Layers[0].In} ids but the corpus has a vocabulary of {V} ({vocabulary.Characters}).");
                Optimizer opt;
                Schedule sched;
                float l2Value, bnMomentum;
                int batchSize;
                try
                {
                    if (meta != null)
                    {
                        opt = Optimizer.Parse(Meta("optimizer")).Validate();
                        sched = Schedule.Parse(Meta("schedule"));
                        l2Value = float.Parse(Meta("l2"), NumberStyles.Float, CultureInfo.InvariantCulture);
                        bnMomentum = float.Parse(Meta("bn_momentum"), NumberStyles.Float, CultureInfo.InvariantCulture);
                        batchSize = MetaInt("batch_size");
                    }
                    else
                    {
                        float lr0 = pr.GetValue(lr);
                        opt = pr.GetValue(optimizer) == "adamw"
                            ? new AdamW { LearningRate = lr0, Beta1 = pr.GetValue(beta1), Beta2 = pr.GetValue(beta2), Eps = pr.GetValue(adamEps), WeightDecay = pr.GetValue(weightDecay) ?? 0.01f }
                            : new Sgd { LearningRate = lr0, Momentum = pr.GetValue(sgdMomentum), WeightDecay = pr.GetValue(weightDecay) ?? 0f };
                        opt.Validate();
                        int? decayStep = pr.GetValue(decay);
                        if (decayStep < 0) throw new UserErrorException($"--lr-decay-step {decayStep}: must not be negative.");
                        sched = pr.GetValue(schedule) switch
                        {
                            "constant" => Schedule.Constant,
                            "cosine" => new CosineSchedule(pr.GetValue(warmup), nSteps, pr.GetValue(minLr)).Validate(),
                            _ => new StepSchedule(decayStep ?? nSteps / 2, 0.1f),
                        };
                        l2Value = pr.GetValue(l2);
                        bnMomentum = pr.GetValue(momentum);
                        batchSize = pr.GetValue(batch);
                    }
                }
                catch (FormatException e)
                {
                    throw new UserErrorException($"--resume {Inputs.Clip(resumePath!)}: {e.Message}");
                }
                catch (ArgumentException e)
                {
                    throw new UserErrorException(OptionNames(e.Message));
                }
                var options = new NetworkOptions
                {
                    BatchSize = batchSize, Optimizer = opt, Schedule = sched, L2 = l2Value, BatchNormMomentum = bnMomentum,
                    Threads = nThreads, InputWidth = blockSize, Seed = seedValue,
                };
                TensorShape[] shapes;
                try { shapes = Network.Check(stack, options); }
                catch (ArgumentException e) { throw new UserErrorException((layersText != null ? "--layers: " : "") + OptionNames(e.Message)); }
                if (shapes[^1].Width != V)
                    throw new UserErrorException($"--layers: the last layer ({stack.Layers[^1]}) gives {shapes[^1].Width} outputs, but the next character is one of the corpus's vocabulary of {V} ({vocabulary.Characters}): the last width must be {V}.");
                // everything this run allocates, in 64 bits, before any of it is: the examples and the network
                long dataBytes = Dataset.Bytes(examples, blockSize), netBytes = Network.RequiredBytes(stack, options, shapes, blockSize), available = MemoryBudget.Available;
                if (dataBytes + netBytes > available)
                    throw new UserErrorException($"this run needs {dataBytes + netBytes:N0} bytes (the examples of --block {blockSize}: {dataBytes:N0}; the network: {netBytes:N0}); this process can use {available:N0}. Lower --block, --hidden, --embd, --batch or the corpus.");
                var split = DataSplit.Create(corpus, blockSize, seedValue);
                var checkpointMeta = new Dictionary<string, string>
                {
                    ["steps"] = nSteps.ToString(CultureInfo.InvariantCulture),
                    ["seed"] = seedValue.ToString(CultureInfo.InvariantCulture),
                    ["optimizer"] = opt.ToString(),
                    ["schedule"] = sched.ToString(),
                    ["l2"] = l2Value.ToString("R", CultureInfo.InvariantCulture),
                    ["corpus"] = corpus.Source,
                    ["corpus_sha256"] = CorpusHash(corpus),
                };
                // one training path on every device
                string dev = pr.GetValue(device)!;
                var scatterMode = pr.GetValue(scatter) == "atomic" ? HpBackprop.Cuda.ScatterMode.Atomic : HpBackprop.Cuda.ScatterMode.Deterministic;
                var network = Backends.Create(dev, stack, options, m => say.WriteLine(m), scatterMode);
                Network net;
                TrainingRun run;
                double seconds;
                int stepsThisProcess;
                string deviceName = network.Device;
                var sw = Stopwatch.StartNew();
                var trainSet = ExampleSet.FromWords(split.Train);
                try
                {
                    say.WriteLine($"corpus: {corpus.Source}: {corpus.Words.Count:N0} words, vocabulary of {V} ({vocabulary.Characters})");
                    say.WriteLine($"examples: train {split.Train.Count:N0}, dev {split.Dev.Count:N0}, test {split.Test.Count:N0}");
                    var progress = new ProgressPrinter(say, interactive: !asJson && !Console.IsOutputRedirected && ReferenceEquals(stdout, Console.Out));
                    if (resumed != null)
                    {
                        try { run = resumed.Training!.RestoreInto(network, resumed); }
                        catch (ArgumentException e) { throw new UserErrorException($"--resume {Inputs.Clip(resumePath!)}: {e.Message}"); }
                    }
                    else
                    {
                        network.Initialize(seedValue);
                        run = new TrainingRun(seedValue, nSteps);
                    }
                    int startStep = run.Completed;
                    say.WriteLine($"model: {stack}, n={network.BatchSize}, {network.Parameters.Count:N0} parameters, device {network.Device}");
                    say.WriteLine($"training: {nSteps:N0} steps, {opt}, schedule {sched}" + (options.L2 != 0 ? $", l2 {options.L2}" : "")
                        + (resumed != null ? $", resumed at step {startStep:N0} from {resumePath}" : ""));
                    sw.Restart();
                    stop.Honoured = true;
                    while (!run.IsFinished && !stop.Token.IsCancellationRequested)
                    {
                        long nextCheck = ((long)run.Completed / DivergenceCheckEvery + 1) * DivergenceCheckEvery;
                        if (every > 0) nextCheck = Math.Min(nextCheck, ((long)run.Completed / every + 1) * every);
                        int until = (int)Math.Min(run.TotalSteps, nextCheck);
                        network.Fit(trainSet, run, progress.Report, Math.Max(1, nSteps / 200), stop.Token, until);
                        // a finite but exploded loss is a divergence too: checked before any checkpoint, so none holds an exploded run
                        Divergence.Check(run, network.LearningRate, outPath);
                        if (every > 0 && run.Completed % every == 0 && !run.IsFinished && !stop.Token.IsCancellationRequested)
                        {
                            SaveState(network, stack, options, vocabulary, checkpointMeta, run, outPath!);
                            stderr.WriteLine($"checkpoint: step {run.Completed:N0} of {nSteps:N0} saved to {outPath}");
                        }
                    }
                    stepsThisProcess = run.Completed - startStep;
                    if (stop.Token.IsCancellationRequested)
                    {
                        progress.Finish();
                        if (outPath != null)
                        {
                            SaveState(network, stack, options, vocabulary, checkpointMeta, run, outPath);
                            stderr.WriteLine($"interrupted at step {run.Completed:N0} of {nSteps:N0}: saved the run to {outPath}; continue it with 'hpbackprop train --resume {outPath}'.");
                        }
                        else stderr.WriteLine($"interrupted at step {run.Completed:N0} of {nSteps:N0}: nothing saved (give --out to keep an interrupted run).");
                        network.Dispose();
                        return stop.ExitCode;
                    }
                    // the stop request stays honoured (a signal does not end the process) until the model is saved
                    progress.Finish();
                    seconds = sw.Elapsed.TotalSeconds;
                    say.WriteLine($"trained {stepsThisProcess:N0} steps in {seconds:F1} s ({stepsThisProcess / seconds:N0} steps/s)");
                    sw.Restart();
                    if (!pr.GetValue(calibrate)) network.Calibrate(trainSet);
                    network.PullParameters();
                    net = network; // evaluation, samples and the checkpoint on the same device, through the same network
                }
                catch
                {
                    network.Dispose();
                    throw;
                }
                using (net)
                {
                    if (!pr.GetValue(calibrate)) say.WriteLine($"calibrated batch norm over {split.Train.Count:N0} training examples ({sw.Elapsed.TotalSeconds:F2} s)");
                    else say.WriteLine("batch norm: running statistics (no calibration pass)");
                    float trainLoss = net.Evaluate(trainSet);
                    float devLoss = net.Evaluate(ExampleSet.FromWords(split.Dev));
                    say.WriteLine($"train loss {trainLoss:F4}   dev loss {devLoss:F4}");

                    // the model is saved before the samples, which a stop request may cut short
                    if (outPath != null)
                    {
                        var final = new Dictionary<string, string>(checkpointMeta)
                        {
                            ["train_loss"] = trainLoss.ToString("R", CultureInfo.InvariantCulture),
                            ["dev_loss"] = devLoss.ToString("R", CultureInfo.InvariantCulture),
                            ["bn_calibrated"] = pr.GetValue(calibrate) ? "false" : "true",
                        };
                        StackCheckpoint.Save(outPath, net, vocabulary, final);
                        say.WriteLine($"saved {outPath}");
                    }
                    if (plotPath != null)
                    {
                        AtomicFile.Write(plotPath, System.Text.Encoding.UTF8.GetBytes(
                            LossPlot.Render(run.Losses, trainLoss, devLoss, $"HpBackprop: {nSteps:N0} steps, {Clip(stack.ToString())}, n={net.BatchSize}")));
                        say.WriteLine($"plot written to {plotPath}");
                    }
                    if (stop.Token.IsCancellationRequested)
                    {
                        stderr.WriteLine($"stopped after training: {(outPath != null ? $"the model is saved to {outPath}" : "nothing saved (no --out)")}; no samples drawn.");
                        return stop.ExitCode;
                    }
                    if (nSamples > 0)
                    {
                        // streamed: each word is written as it is drawn, none collected
                        say.Write("samples:");
                        foreach (string word in new Sampler(net, vocabulary).Generate(nSamples, seedValue))
                        {
                            say.Write(" " + word);
                            if (stop.Token.IsCancellationRequested) break;
                        }
                        say.WriteLine();
                        if (stop.Token.IsCancellationRequested)
                        {
                            stderr.WriteLine($"stopped while sampling{(outPath != null ? $": the model is saved to {outPath}" : "")}.");
                            return stop.ExitCode;
                        }
                    }
                    if (asJson)
                    {
                        // written field by field (no reflection: the CLI stays trim- and NativeAOT-safe)
                        var buffer = new System.IO.MemoryStream();
                        using (var w = new Utf8JsonWriter(buffer))
                        {
                            w.WriteStartObject();
                            w.WriteNumber("steps", nSteps); w.WriteNumber("batch", net.BatchSize); w.WriteNumber("block", blockSize); w.WriteNumber("vocab", V);
                            WriteRun(w, net, stack, deviceName, nThreads, seconds, stepsThisProcess);
                            w.WriteNumber("train_loss", trainLoss); w.WriteNumber("dev_loss", devLoss);
                            w.WriteEndObject();
                        }
                        stdout.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
                    }
                }
                return Program.Ok;

                int MetaInt(string key) => int.TryParse(Meta(key), NumberStyles.None, CultureInfo.InvariantCulture, out int v) ? v
                    : throw new UserErrorException($"--resume {Inputs.Clip(resumePath!)}: metadata '{key}' = '{Inputs.Clip(Meta(key))}' is not a whole number.");
            }
        });
        return cmd;
    }

    /// <summary>
    /// The fields every <c>train --json</c> line has, word and table runs alike: the stack, the device, the training time and
    /// rate of this process's steps, and on a GPU what those steps asked of it, averaged per step (every copy counted, the
    /// loss reads included), with the training set's upload apart.
    /// </summary>
    internal static void WriteRun(Utf8JsonWriter w, Network net, Sequential stack, string device, int threads, double seconds, long steps)
    {
        w.WriteString("layers", stack.ToString()); w.WriteNumber("parameters", net.Parameters.Count);
        w.WriteString("device", device); w.WriteNumber("threads", threads);
        w.WriteNumber("train_seconds", Math.Round(seconds, 4)); w.WriteNumber("steps_per_second", Math.Round(steps / seconds, 1));
        w.WriteNumber("us_per_step", Math.Round(seconds * 1e6 / Math.Max(1, steps), 2));
        if (net.Traffic is DeviceTraffic t)
        {
            w.WriteNumber("launches_per_step", Math.Round(t.LaunchesPerStep, 4));
            w.WriteNumber("graph_nodes", t.GraphNodes);
            w.WriteNumber("host_device_bytes_per_step", Math.Round(t.BytesPerStep, 2));
            w.WriteNumber("host_device_setup_bytes", t.SetupBytes);
        }
    }

    /// <summary>The optimiser and schedule of the options (a table run; a word run reads them the same way, or from its checkpoint).</summary>
    internal static (Optimizer, Schedule) OptimizerAndSchedule(ParseResult pr, TableTrainCommand.CommonOptions o, int nSteps)
    {
        try
        {
            float lr0 = pr.GetValue(o.Lr);
            Optimizer opt = pr.GetValue(o.Optimizer) == "adamw"
                ? new AdamW { LearningRate = lr0, Beta1 = pr.GetValue(o.Beta1), Beta2 = pr.GetValue(o.Beta2), Eps = pr.GetValue(o.AdamEps), WeightDecay = pr.GetValue(o.WeightDecay) ?? 0.01f }
                : new Sgd { LearningRate = lr0, Momentum = pr.GetValue(o.Momentum), WeightDecay = pr.GetValue(o.WeightDecay) ?? 0f };
            opt.Validate();
            int? decayStep = pr.GetValue(o.Decay);
            if (decayStep < 0) throw new UserErrorException($"--lr-decay-step {decayStep}: must not be negative.");
            Schedule sched = pr.GetValue(o.Schedule) switch
            {
                "constant" => Schedule.Constant,
                "cosine" => new CosineSchedule(pr.GetValue(o.Warmup), nSteps, pr.GetValue(o.MinLr)).Validate(),
                _ => new StepSchedule(decayStep ?? nSteps / 2, 0.1f),
            };
            return (opt, sched);
        }
        catch (ArgumentException e)
        {
            throw new UserErrorException(OptionNames(e.Message));
        }
    }

    /// <summary>Saves the network mid-run with the run's state (a checkpoint to resume), through the CPU for a GPU network.</summary>
    private static void SaveState(Network network, Sequential stack, NetworkOptions options, Vocabulary vocab, Dictionary<string, string> meta, TrainingRun run, string path)
    {
        network.PullParameters();
        StackCheckpoint.Save(path, network, vocab, meta, run);
    }

    /// <summary>SHA-256 of the corpus's words, one per line: a resumed run checks it trains on the same words.</summary>
    internal static string CorpusHash(Corpus corpus)
    {
        using var h = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        foreach (var w in corpus.Words) { h.AppendData(System.Text.Encoding.UTF8.GetBytes(w)); h.AppendData("\n"u8); }
        return Convert.ToHexStringLower(h.GetHashAndReset());
    }

    private static string Clip(string s) => s.Length <= 60 ? s : s[..57] + "...";

    /// <summary>The library's names in a validation message, in the command's options.</summary>
    internal static string OptionNames(string message) => message
        .Replace("Sgd.LearningRate", "--lr").Replace("AdamW.LearningRate", "--lr").Replace("Sgd.Momentum", "--momentum")
        .Replace("Sgd.WeightDecay", "--weight-decay").Replace("AdamW.WeightDecay", "--weight-decay").Replace("AdamW.Beta1", "--beta1")
        .Replace("AdamW.Beta2", "--beta2").Replace("AdamW.Eps", "--adam-eps").Replace("CosineSchedule.Warmup", "--warmup")
        .Replace("CosineSchedule.Total", "--steps").Replace("CosineSchedule.MinLr", "--min-lr").Replace("NetworkOptions.BatchSize", "--batch")
        .Replace("NetworkOptions.L2", "--l2").Replace("NetworkOptions.BatchNormMomentum", "--bn-momentum").Replace(" (Parameter 'o')", "")
        .Replace(" (Parameter 'AtStep')", "").Replace(" (Parameter 'Warmup')", "").Replace(" (Parameter 'Total')", "").Replace(" (Parameter 'MinLr')", "")
        .Replace("the optimizer's LearningRate", "learning rate (--lr)").Replace("train on the CPU (Network.Create)", "use --device cpu")
        .Replace("NetworkOptions.Threads", "--threads").StripParameterName();

    /// <summary>The message without the " (Parameter 'name')" that <see cref="ArgumentException.Message"/> appends: the command names options, not parameters.</summary>
    internal static string StripParameterName(this string message)
    {
        int at = message.LastIndexOf(" (Parameter '", StringComparison.Ordinal);
        return at >= 0 && message.EndsWith("')", StringComparison.Ordinal) ? message[..at] : message;
    }
}

/// <summary>A progress bar on a terminal, plain periodic lines otherwise.</summary>
internal sealed class ProgressPrinter(TextWriter output, bool interactive)
{
    private int _lastLine = -1;

    public void Report(TrainingProgress p)
    {
        if (interactive)
        {
            const int width = 30;
            int filled = (int)((long)p.Step * width / p.TotalSteps);
            output.Write($"\r[{new string('#', filled)}{new string('.', width - filled)}] step {p.Step,9:N0}/{p.TotalSteps:N0}  loss {p.Loss:F4}{Dev(p)}  {p.StepsPerSecond,8:N0} steps/s ");
        }
        else
        {
            int line = (int)((long)p.Step * 10 / p.TotalSteps);
            if (line == _lastLine && p.Step != p.TotalSteps) return;
            _lastLine = line;
            output.WriteLine($"step {p.Step,9:N0}/{p.TotalSteps:N0}  loss {p.Loss:F4}{Dev(p)}  {p.StepsPerSecond:N0} steps/s");
        }
    }

    /// <summary>The latest dev evaluation of a table run (nothing for a word run, which has none during training).</summary>
    private static string Dev(TrainingProgress p) => p.Validation is { } v
        ? $"  dev loss {v.Loss:F4}" + (v.Accuracy is float a ? $" accuracy {a:F4}" : "")
        : "";

    public void Finish()
    {
        if (interactive) output.WriteLine();
    }
}
