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
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var data = new Option<string?>("--data") { Description = "Corpus file, one word per line (default: the built-in first-name corpus)" };
        var steps = new Option<int>("--steps") { Description = "SGD steps", DefaultValueFactory = _ => 200_000 };
        var batch = new Option<int>("--batch") { Description = "Minibatch size n (at least 2)", DefaultValueFactory = _ => 32 };
        var embd = new Option<int>("--embd") { Description = "Embedding width E (n_embd)", DefaultValueFactory = _ => 10 };
        var hidden = new Option<int>("--hidden") { Description = "Hidden width H (n_hidden)", DefaultValueFactory = _ => 200 };
        var block = new Option<int>("--block") { Description = "Context length B", DefaultValueFactory = _ => 3 };
        var lr = new Option<float>("--lr") { Description = "Learning rate; a tenth of it from --lr-decay-step on", DefaultValueFactory = _ => 0.1f };
        var decay = new Option<int?>("--lr-decay-step") { Description = "First step of the decayed learning rate (default: half of --steps)" };
        var seed = new Option<int>("--seed") { Description = "Seed of initialisation, split, minibatches and samples", DefaultValueFactory = _ => 42 };
        var device = new Option<string>("--device") { Description = "cpu, cuda, auto, or emulator (the CUDA kernels on the host; slow, for testing)", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong(Backends.Devices);
        var momentum = new Option<float>("--bn-momentum") { Description = "Weight of each batch in the batch-norm running statistics", DefaultValueFactory = _ => 0.001f };
        var calibrate = new Option<bool>("--no-calibrate") { Description = "Use the running batch-norm statistics instead of a calibration pass" };
        var outFile = new Option<string?>("--out") { Description = "Write the trained model to this safetensors file" };
        var plot = new Option<string?>("--plot") { Description = "Write an SVG plot of the training loss to this file" };
        var samples = new Option<int>("--samples") { Description = "Words to sample after training", DefaultValueFactory = _ => 20 };
        var threads = new Option<int>("--threads") { Description = "CPU threads for large shapes (small steps stay on one)", DefaultValueFactory = _ => 1 };
        var scatter = new Option<string>("--scatter") { Description = "CUDA dC accumulation: deterministic or atomic", DefaultValueFactory = _ => "deterministic" };
        scatter.AcceptOnlyFromAmong("deterministic", "atomic");
        var json = new Option<bool>("--json") { Description = "Print one machine-readable JSON summary line on stdout (everything else goes to stderr)" };

        var layers = new Option<string?>("--layers") { Description = "The network as a layer stack, e.g. embedding:27x10,flatten,linear:30x200,batchnorm:200,tanh,linear:200x27 (default: the makemore MLP of --embd, --hidden and --block); see docs/stacks.md" };
        var loss = new Option<string>("--loss") { Description = "cross_entropy (the only loss for words: the targets are the next character's id)", DefaultValueFactory = _ => "cross_entropy" };
        var optimizer = new Option<string>("--optimizer") { Description = "sgd or adamw", DefaultValueFactory = _ => "sgd" };
        optimizer.AcceptOnlyFromAmong("sgd", "adamw");
        var sgdMomentum = new Option<float>("--momentum") { Description = "SGD momentum", DefaultValueFactory = _ => 0f };
        var weightDecay = new Option<float?>("--weight-decay") { Description = "Weight decay (default: 0 for sgd, 0.01 for adamw)" };
        var beta1 = new Option<float>("--beta1") { Description = "AdamW's first-moment decay", DefaultValueFactory = _ => 0.9f };
        var beta2 = new Option<float>("--beta2") { Description = "AdamW's second-moment decay", DefaultValueFactory = _ => 0.999f };
        var adamEps = new Option<float>("--adam-eps") { Description = "AdamW's epsilon", DefaultValueFactory = _ => 1e-8f };
        var schedule = new Option<string>("--schedule") { Description = "step (--lr, then a tenth of it from --lr-decay-step), constant, or cosine (linear warm-up over --warmup steps, then down to --min-lr)", DefaultValueFactory = _ => "step" };
        schedule.AcceptOnlyFromAmong("step", "constant", "cosine");
        var warmup = new Option<int>("--warmup") { Description = "Warm-up steps of the cosine schedule", DefaultValueFactory = _ => 0 };
        var minLr = new Option<float>("--min-lr") { Description = "Final learning rate of the cosine schedule", DefaultValueFactory = _ => 0f };
        var l2 = new Option<float>("--l2") { Description = "L2 penalty on linear weights: loss += L2 * sum(W^2)", DefaultValueFactory = _ => 0f };

        var cmd = new Command("train", "Train a network with manual gradients, calibrate batch norm, report train/dev loss and sample words.")
        {
            data, steps, batch, embd, hidden, block, layers, loss, optimizer, lr, sgdMomentum, weightDecay, beta1, beta2, adamEps, schedule, decay, warmup, minLr, l2,
            seed, device, threads, scatter, momentum, calibrate, outFile, plot, samples, json,
        };
        cmd.SetAction(pr =>
        {
            bool asJson = pr.GetValue(json);
            TextWriter say = asJson ? stderr : stdout;
            int nSteps = pr.GetValue(steps);
            if (nSteps < 1) throw new UserErrorException($"--steps {nSteps}: must be at least 1.");
            if (pr.GetValue(samples) < 0) throw new UserErrorException("--samples must not be negative.");
            int nThreads = pr.GetValue(threads);
            if (nThreads < 1 || nThreads > Environment.ProcessorCount * 4) throw new UserErrorException($"--threads {nThreads}: must be between 1 and {Environment.ProcessorCount * 4}.");
            if (Losses.Parse(pr.GetValue(loss)!) != LossKind.CrossEntropy)
                throw new UserErrorException($"--loss {pr.GetValue(loss)}: a word corpus gives class ids (the next character), so the loss is cross_entropy; the other losses take float targets (use the library's ExampleSet).");
            var corpus = Program.LoadCorpus(pr.GetValue(data));
            string? layersText = pr.GetValue(layers);
            Sequential? stack = null;
            int blockSize = pr.GetValue(block);
            if (layersText != null)
            {
                try { stack = Sequential.Parse(layersText); }
                catch (FormatException e) { throw new UserErrorException("--layers: " + e.Message); }
                if (!stack.TakesIds) throw new UserErrorException($"--layers: a stack trained on words starts with an embedding (ids in, one row per character); layer 0 is {stack.Layers[0]}.");
                blockSize = stack.ImpliedInputWidth() ?? blockSize;
            }
            if (blockSize < 1) throw new UserErrorException($"--block {blockSize}: the context length must be at least 1.");
            var split = DataSplit.Create(corpus, blockSize, pr.GetValue(seed));
            int V = split.Vocabulary.Size;
            stack ??= Sequential.Makemore(V, blockSize, pr.GetValue(embd), pr.GetValue(hidden));
            if (stack.Layers[0].In != V)
                throw new UserErrorException($"--layers: layer 0 ({stack.Layers[0]}) has {stack.Layers[0].In} ids but the corpus has a vocabulary of {V} ({split.Vocabulary.Characters}).");
            float lr0 = pr.GetValue(lr);
            Optimizer opt;
            Schedule sched;
            try
            {
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
            }
            catch (ArgumentException e)
            {
                throw new UserErrorException(OptionNames(e.Message));
            }
            var options = new NetworkOptions
            {
                BatchSize = pr.GetValue(batch), Optimizer = opt, Schedule = sched, L2 = pr.GetValue(l2), BatchNormMomentum = pr.GetValue(momentum),
                Threads = nThreads, InputWidth = blockSize,
            };
            try { Network.Check(stack, options); }
            catch (ArgumentException e) { throw new UserErrorException((layersText != null ? "--layers: " : "") + OptionNames(e.Message)); }
            string? outPath = pr.GetValue(outFile);
            // one training path on every device: the compiled CPU network runs every stack, the GPU the makemore stack with plain SGD
            string dev = pr.GetValue(device)!;
            var scatterMode = pr.GetValue(scatter) == "atomic" ? HpBackprop.Cuda.ScatterMode.Atomic : HpBackprop.Cuda.ScatterMode.Deterministic;
            var network = Backends.Create(dev, stack, options, m => say.WriteLine(m), scatterMode);
            Network net;
            float[] lossCurve;
            double seconds;
            string deviceName = network.Device;
            var sw = Stopwatch.StartNew();
            var trainSet = ExampleSet.FromWords(split.Train);
            try
            {
                say.WriteLine($"corpus: {corpus.Source}: {corpus.Words.Count:N0} words, vocabulary of {V} ({split.Vocabulary.Characters})");
                say.WriteLine($"examples: train {split.Train.Count:N0}, dev {split.Dev.Count:N0}, test {split.Test.Count:N0}");
                var progress = new ProgressPrinter(say, interactive: !asJson && !Console.IsOutputRedirected && ReferenceEquals(stdout, Console.Out));
                network.Initialize(pr.GetValue(seed));
                say.WriteLine($"model: {stack}, n={network.BatchSize}, {network.Parameters.Count:N0} parameters, device {network.Device}");
                say.WriteLine($"training: {nSteps:N0} steps, {opt}, schedule {sched}" + (options.L2 != 0 ? $", l2 {options.L2}" : ""));
                sw.Restart();
                lossCurve = network.Fit(trainSet, nSteps, pr.GetValue(seed), progress.Report, Math.Max(1, nSteps / 200));
                progress.Finish();
                seconds = sw.Elapsed.TotalSeconds;
                say.WriteLine($"trained {nSteps:N0} steps in {seconds:F1} s ({nSteps / seconds:N0} steps/s)");
                sw.Restart();
                if (!pr.GetValue(calibrate)) network.Calibrate(trainSet);
                network.PullParameters();
                if (network is Network cpu) net = cpu;
                else
                {
                    // evaluation, samples, the checkpoint and the plot run on the CPU from the trained values
                    net = Network.Create(stack, options);
                    net.Parameters.CopyFrom(network.Parameters);
                    net.StepCount = network.StepCount;
                }
            }
            catch
            {
                network.Dispose();
                throw;
            }
            if (!ReferenceEquals(net, network)) network.Dispose();
            using (net)
            {
                if (!pr.GetValue(calibrate)) say.WriteLine($"calibrated batch norm over {split.Train.Count:N0} training examples ({sw.Elapsed.TotalSeconds:F2} s)");
                else say.WriteLine("batch norm: running statistics (no calibration pass)");
                float trainLoss = net.Evaluate(trainSet);
                float devLoss = net.Evaluate(ExampleSet.FromWords(split.Dev));
                say.WriteLine($"train loss {trainLoss:F4}   dev loss {devLoss:F4}");

                var words = new Sampler(net, split.Vocabulary).Sample(pr.GetValue(samples), pr.GetValue(seed));
                if (words.Count > 0) say.WriteLine("samples: " + string.Join(" ", words));

                if (outPath != null)
                {
                    StackCheckpoint.Save(outPath, net, split.Vocabulary, new Dictionary<string, string>
                    {
                        ["train_loss"] = trainLoss.ToString("R", CultureInfo.InvariantCulture),
                        ["dev_loss"] = devLoss.ToString("R", CultureInfo.InvariantCulture),
                        ["steps"] = nSteps.ToString(CultureInfo.InvariantCulture),
                        ["optimizer"] = opt.ToString(),
                        ["schedule"] = sched.ToString(),
                        ["bn_calibrated"] = pr.GetValue(calibrate) ? "false" : "true",
                        ["corpus"] = corpus.Source,
                    });
                    say.WriteLine($"saved {outPath}");
                }
                string? plotPath = pr.GetValue(plot);
                if (plotPath != null)
                {
                    AtomicFile.Write(plotPath, System.Text.Encoding.UTF8.GetBytes(
                        LossPlot.Render(lossCurve, trainLoss, devLoss, $"HpBackprop: {nSteps:N0} steps, {Clip(stack.ToString())}, n={net.BatchSize}")));
                    say.WriteLine($"plot written to {plotPath}");
                }
                if (asJson)
                {
                    stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
                    {
                        ["steps"] = nSteps, ["batch"] = net.BatchSize, ["block"] = blockSize, ["layers"] = stack.ToString(),
                        ["parameters"] = net.Parameters.Count, ["vocab"] = V, ["device"] = deviceName, ["threads"] = nThreads,
                        ["train_seconds"] = Math.Round(seconds, 4), ["steps_per_second"] = Math.Round(nSteps / seconds, 1),
                        ["train_loss"] = trainLoss, ["dev_loss"] = devLoss,
                    }));
                }
            }
            return Program.Ok;
        });
        return cmd;
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
        .Replace("the optimizer's LearningRate", "learning rate (--lr)").Replace("train on the CPU (Network.Create)", "use --device cpu");
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
            output.Write($"\r[{new string('#', filled)}{new string('.', width - filled)}] step {p.Step,9:N0}/{p.TotalSteps:N0}  loss {p.Loss:F4}  {p.StepsPerSecond,8:N0} steps/s ");
        }
        else
        {
            int line = (int)((long)p.Step * 10 / p.TotalSteps);
            if (line == _lastLine && p.Step != p.TotalSteps) return;
            _lastLine = line;
            output.WriteLine($"step {p.Step,9:N0}/{p.TotalSteps:N0}  loss {p.Loss:F4}  {p.StepsPerSecond:N0} steps/s");
        }
    }

    public void Finish()
    {
        if (interactive) output.WriteLine();
    }
}
