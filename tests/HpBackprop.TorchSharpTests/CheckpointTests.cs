using System.Globalization;
using HpBackprop.IO;
using HpBackprop.Networks;
using HpBackprop.Reference;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace HpBackprop.TorchSharpTests;

/// <summary>
/// Checkpoints both ways, through safetensors files and nothing else. A network trained 20 steps in HpBackprop and saved
/// with <see cref="StackCheckpoint.Save"/> (what <c>train</c> writes) loads into the TorchSharp <c>Sequential</c> of the
/// same stack with TorchSharp.PyBridge's <c>load_safetensors</c> (strict: every name and shape); a model trained 20 steps
/// in TorchSharp and written with <c>save_safetensors</c> loads into HpBackprop with <see cref="StackCheckpoint.Load"/>.
/// Either way every tensor arrives bit for bit, and the eval-mode predictions and loss on a held-out batch agree within
/// the tolerance of <see cref="Parity"/>: 8× TorchSharp float32's error against TorchSharp float64 run on the same
/// (float32) parameters.
/// </summary>
[TestClass]
public sealed class CheckpointTests
{
    private const int Steps = 20;

    /// <summary>Both batch-norm modes, layer norm, dropout, embeddings and features, every loss but the mean objective.</summary>
    public static IEnumerable<object[]> Cases =>
        new[] { "makemore", "makemore_biased", "deep", "layernorm_ids", "dropout_bn", "odd", "mlp_bce", "ln_dropout_adamw", "l2_bn" }.Select(n => new object[] { n });

    private static ParityCase Get(string name) => FixedCases.All.Single(c => c.Name == name) with { Step = 0 };

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void HpBackpropCheckpointLoadsIntoTorchSharp(string name)
    {
        TorchSharpRuntime.Require();
        var c = Get(name);
        var d = CaseData.Draw(c);
        string path = TempFile();
        try
        {
            using var net = Parity.Create(c, d);
            for (int t = 0; t < Steps; t++) Parity.Run(net, CaseData.DrawBatch(c, t), update: true);
            StackCheckpoint.Save(path, net, null);

            using var ts = NewTorchStack(c, ScalarType.Float32);
            ts.Model.load_safetensors(path, strict: true);
            var state = ts.State();
            var failures = new List<string>();
            foreach (var s in net.Parameters.Parameters.Concat(net.Parameters.RunningStatistics))
                if (!state[s.Name].SequenceEqual(Parity.D(net.Parameters.Value(s.Name)))) failures.Add($"{s.Name}: TorchSharp loaded other values");
            var bns = c.Stack.BatchNormLayers();
            for (int j = 0; j < bns.Count; j++)
                if ((long)state[$"{bns[j]}.num_batches_tracked"][0] != net.Parameters.BatchesTracked[j]) failures.Add($"{bns[j]}.num_batches_tracked differs");

            var held = CaseData.DrawBatch(c, 1000, c.N + 5);
            double? ourLoss = Parity.Examples(c, held) is { } set ? net.Evaluate(set) : null;
            failures.AddRange(ComparePredictions(c, ts, held, Parity.Predict(net, held), ourLoss));
            Assert.IsEmpty(failures, $"{c}:\n" + string.Join("\n", failures));
        }
        finally { File.Delete(path); }
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void TorchSharpModelLoadsIntoHpBackprop(string name)
    {
        TorchSharpRuntime.Require();
        var c = Get(name);
        var d = CaseData.Draw(c);
        string tsPath = TempFile(), path = TempFile();
        try
        {
            using var ts = NewTorchStack(c, ScalarType.Float32);
            ts.Load(d.Values, d.Tracked);
            var opt = Parity.TorchOptimizer(c.Optimizer, ts.Model.parameters());
            var sched = Parity.TorchSchedule(c.Schedule, opt, Steps);
            for (int t = 0; t < Steps; t++)
            {
                ts.Step = c.Step + t;
                using var scope = NewDisposeScope();
                opt.zero_grad();
                ts.ForwardBackward(CaseData.DrawBatch(c, t));
                opt.step();
                sched?.step();
            }
            ts.Model.save_safetensors(tsPath);

            // TorchSharp's file is a state dict alone; without the stack's description HpBackprop refuses it, naming what is missing
            var refused = Assert.ThrowsExactly<SafeTensorsFormatException>(() => StackCheckpoint.Load(tsPath));
            StringAssert.Contains(refused.Message, "metadata");
            // with the description that train writes (the tensors as TorchSharp wrote them, byte for byte), it loads
            var f = SafeTensorsFile.Read(tsPath);
            f.Metadata["format"] = StackCheckpoint.Format;
            f.Metadata["layers"] = c.Stack.ToString();
            f.Metadata["loss"] = c.Loss.ToText();
            f.Metadata["input_width"] = c.InputWidth.ToString(CultureInfo.InvariantCulture);
            f.Metadata["batch_size"] = c.N.ToString(CultureInfo.InvariantCulture);
            f.Metadata["eps"] = 1e-5f.ToString("R", CultureInfo.InvariantCulture);
            f.Metadata["bn_momentum"] = c.BnMomentum.ToString("R", CultureInfo.InvariantCulture);
            f.Metadata["dropout_seed"] = c.DropoutSeed.ToString(CultureInfo.InvariantCulture);
            f.Save(path);
            var loaded = StackCheckpoint.Load(path);
            using var net = loaded.Network;

            var state = ts.State();
            var failures = new List<string>();
            foreach (var s in net.Parameters.Parameters.Concat(net.Parameters.RunningStatistics))
                if (!state[s.Name].SequenceEqual(Parity.D(net.Parameters.Value(s.Name)))) failures.Add($"{s.Name}: HpBackprop loaded other values");
            var bns = c.Stack.BatchNormLayers();
            for (int j = 0; j < bns.Count; j++)
                if ((long)state[$"{bns[j]}.num_batches_tracked"][0] != net.Parameters.BatchesTracked[j]) failures.Add($"{bns[j]}.num_batches_tracked differs");
            if (bns.Count > 0 && net.Parameters.BatchesTracked[0] != Steps) failures.Add($"num_batches_tracked {net.Parameters.BatchesTracked[0]}, not {Steps}: TorchSharp did not train");

            var held = CaseData.DrawBatch(c, 1000, c.N + 5);
            double? ourLoss = Parity.Examples(c, held) is { } set ? net.Evaluate(set) : null;
            failures.AddRange(ComparePredictions(c, ts, held, Parity.Predict(net, held), ourLoss));
            Assert.IsEmpty(failures, $"{c}:\n" + string.Join("\n", failures));
        }
        finally
        {
            File.Delete(tsPath);
            File.Delete(path);
        }
    }

    private static TorchStack NewTorchStack(ParityCase c, ScalarType dtype) => new(c.Stack, c.Loss, dtype, c.L2, c.BnMomentum, 1e-5f, c.DropoutSeed);

    /// <summary>
    /// Eval-mode outputs (and loss) of HpBackprop against TorchSharp float64 on <paramref name="ts"/>'s parameters, within
    /// 8× TorchSharp float32's own error there (<see cref="StackParity.Float32Tolerance"/>).
    /// </summary>
    private static List<string> ComparePredictions(ParityCase c, TorchStack ts, Batch held, double[] ours, double? ourLoss)
    {
        var failures = new List<string>();
        var state = ts.State();
        using var ts64 = NewTorchStack(c, ScalarType.Float64);
        ts64.Load(state.Where(kv => !kv.Key.EndsWith(".num_batches_tracked", StringComparison.Ordinal)).ToDictionary(kv => kv.Key, kv => kv.Value.Select(v => (float)v).ToArray()),
            state.Where(kv => kv.Key.EndsWith(".num_batches_tracked", StringComparison.Ordinal)).ToDictionary(kv => kv.Key, kv => (long)kv.Value[0]));
        void One(string what, double[] truth, double[] t32, double[] mine)
        {
            double scale = StackParity.MaxAbs(truth);
            double tol = StackParity.Float32Tolerance(Parity.Rel(truth, t32, scale));
            double err = Parity.Rel(truth, mine, scale);
            if (!(err <= tol)) failures.Add($"{what}: HpBackprop off by {err:G3} of {scale:G3}, tolerance {tol:G3}");
        }
        One("eval outputs", ts64.Eval(held), ts.Eval(held), ours);
        if (ourLoss is { } l) One("eval loss", [ts64.EvalLoss(held)], [ts.EvalLoss(held)], [l]);
        return failures;
    }

    private static string TempFile() => Path.Combine(Path.GetTempPath(), $"hpb-ts-{Guid.NewGuid():N}.safetensors");
}
