using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Training;

namespace HpBackprop.Cli;

/// <summary><c>hpbackprop train</c>: the SPEC §5 recipe, then calibration, evaluation and samples.</summary>
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

        var cmd = new Command("train", "Train the MLP with manual gradients (SPEC §5), calibrate batch norm, report train/dev loss and sample words.")
        {
            data, steps, batch, embd, hidden, block, lr, decay, seed, device, threads, scatter, momentum, calibrate, outFile, plot, samples, json,
        };
        cmd.SetAction(pr =>
        {
            bool asJson = pr.GetValue(json);
            TextWriter say = asJson ? stderr : stdout;
            int nSteps = pr.GetValue(steps);
            if (nSteps < 1) throw new UserErrorException($"--steps {nSteps}: must be at least 1.");
            if (pr.GetValue(samples) < 0) throw new UserErrorException("--samples must not be negative.");
            var corpus = Program.LoadCorpus(pr.GetValue(data));
            int blockSize = pr.GetValue(block);
            if (blockSize < 1) throw new UserErrorException($"--block {blockSize}: the context length must be at least 1.");
            var split = DataSplit.Create(corpus, blockSize, pr.GetValue(seed));
            var config = new ModelConfig(split.Vocabulary.Size, blockSize, pr.GetValue(embd), pr.GetValue(hidden), pr.GetValue(batch)).Validate();
            var parameters = new ParameterSet(config);
            parameters.Initialize(pr.GetValue(seed));
            float lr0 = pr.GetValue(lr);
            var options = new TrainerOptions
            {
                Steps = nSteps, LearningRate = lr0, DecayedLearningRate = lr0 / 10, DecayStep = pr.GetValue(decay),
                Seed = pr.GetValue(seed), ReportEvery = Math.Max(1, nSteps / 200),
            }.Validate();
            int nThreads = pr.GetValue(threads);
            if (nThreads < 1 || nThreads > Environment.ProcessorCount * 4) throw new UserErrorException($"--threads {nThreads}: must be between 1 and {Environment.ProcessorCount * 4}.");
            var scatterMode = pr.GetValue(scatter) == "atomic" ? HpBackprop.Cuda.ScatterMode.Atomic : HpBackprop.Cuda.ScatterMode.Deterministic;
            using var backend = Backends.Create(pr.GetValue(device)!, parameters, m => say.WriteLine(m), scatterMode, nThreads);
            backend.RunningMomentum = pr.GetValue(momentum);

            say.WriteLine($"corpus: {corpus.Source}: {corpus.Words.Count:N0} words, vocabulary of {config.VocabSize} ({split.Vocabulary.Characters})");
            say.WriteLine($"examples: train {split.Train.Count:N0}, dev {split.Dev.Count:N0}, test {split.Test.Count:N0}");
            say.WriteLine($"model: B={config.BlockSize} E={config.EmbeddingSize} H={config.HiddenSize} n={config.BatchSize}, {parameters.Layout.Sum(p => p.Length):N0} parameters, device {backend.Name}");
            say.WriteLine($"training: {nSteps:N0} steps, lr {options.LearningRate} then {options.DecayedLearningRate} from step {options.DecayStep ?? nSteps / 2:N0}");

            var trainer = new Trainer(backend, split.Train, options);
            var progress = new ProgressPrinter(say, interactive: !asJson && !Console.IsOutputRedirected && ReferenceEquals(stdout, Console.Out));
            trainer.Run(progress.Report);
            progress.Finish();
            double seconds = trainer.Elapsed.TotalSeconds;
            say.WriteLine($"trained {nSteps:N0} steps in {seconds:F1} s ({nSteps / seconds:N0} steps/s)");

            var sw = Stopwatch.StartNew();
            if (!pr.GetValue(calibrate))
            {
                backend.Calibrate(split.Train);
                say.WriteLine($"calibrated batch norm over {split.Train.Count:N0} training examples ({sw.Elapsed.TotalSeconds:F2} s)");
            }
            else say.WriteLine("batch norm: running statistics (no calibration pass)");
            float trainLoss = backend.Evaluate(split.Train);
            float devLoss = backend.Evaluate(split.Dev);
            backend.PullParameters();
            say.WriteLine($"train loss {trainLoss:F4}   dev loss {devLoss:F4}");

            var words = new Sampler(backend, split.Vocabulary).Sample(pr.GetValue(samples), pr.GetValue(seed));
            if (words.Count > 0) say.WriteLine("samples: " + string.Join(" ", words));

            string? outPath = pr.GetValue(outFile);
            if (outPath != null)
            {
                Checkpoint.Save(outPath, parameters, split.Vocabulary, new Dictionary<string, string>
                {
                    ["train_loss"] = trainLoss.ToString("R", CultureInfo.InvariantCulture),
                    ["dev_loss"] = devLoss.ToString("R", CultureInfo.InvariantCulture),
                    ["steps"] = nSteps.ToString(CultureInfo.InvariantCulture),
                    ["corpus"] = corpus.Source,
                });
                say.WriteLine($"saved {outPath}");
            }
            string? plotPath = pr.GetValue(plot);
            if (plotPath != null)
            {
                AtomicFile.Write(plotPath, System.Text.Encoding.UTF8.GetBytes(
                    LossPlot.Render(trainer.Losses, trainLoss, devLoss, $"HpBackprop: {nSteps:N0} steps, B={config.BlockSize} E={config.EmbeddingSize} H={config.HiddenSize} n={config.BatchSize}")));
                say.WriteLine($"plot written to {plotPath}");
            }
            if (asJson)
            {
                stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
                {
                    ["steps"] = nSteps, ["batch"] = config.BatchSize, ["block"] = config.BlockSize, ["embd"] = config.EmbeddingSize,
                    ["hidden"] = config.HiddenSize, ["vocab"] = config.VocabSize, ["device"] = backend.Name, ["threads"] = nThreads,
                    ["train_seconds"] = Math.Round(seconds, 4), ["steps_per_second"] = Math.Round(nSteps / seconds, 1),
                    ["train_loss"] = trainLoss, ["dev_loss"] = devLoss,
                }));
            }
            return Program.Ok;
        });
        return cmd;
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
