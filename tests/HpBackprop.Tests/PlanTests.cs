using System.Globalization;
using HpBackprop.Cpu;
using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Networks;
using HpBackprop.Reference;

namespace HpBackprop.Tests;

/// <summary>
/// The compiled plan (one list of steps for every device, rewritten by the rows of one fusion table that the device
/// runs), and what is new with it on the CPU: layer norm and dropout (the Philox4x32-10 mask shared with the GPU and the
/// oracle), and calibration whose cost grows linearly with the number of batch norms.
/// </summary>
[TestClass]
public sealed class PlanTests
{
    /// <summary>A CPU that runs only some rows of the fusion table (the GPU runs a subset too): the steps it gets are still the plan's.</summary>
    private sealed class PartialCpu(params string[] fusions) : DeviceKind
    {
        private readonly HashSet<string> _fusions = [.. fusions];

        public override IReadOnlySet<string> Fusions => _fusions;

        public override Backend Create(Plan plan, ParameterStore store) => new CpuBackend(plan, store);
    }

    private const string Makemore = "embedding:27x10,flatten,linear:30x64,batchnorm:64,tanh,linear:64x27";

    [TestMethod]
    public void TheFusionTableRewritesOnlyTheRowsTheDeviceRuns()
    {
        var stack = Sequential.Parse(Makemore);
        var options = new NetworkOptions { BatchSize = 8 };
        var shapes = stack.Resolve();
        var all = Plan.Compile(stack, options, shapes, 3, CpuDevice.Instance.Fusions);
        CollectionAssert.AreEqual(new[] { StepKind.Gather, StepKind.Linear, StepKind.BatchNorm, StepKind.Linear }, all.Steps.Select(s => s.Kind).ToArray());
        Assert.AreEqual(LayerKind.Tanh, all.Steps[2].Activation);
        Assert.IsTrue(all.Steps[1].BiasGradientFromNext && all.Steps[2].WritesPreviousBiasGradient);
        Assert.IsTrue(all.Steps[1].SgdInEpilogue && all.Steps[3].SgdInEpilogue);
        Assert.IsTrue(all.WholeStepPipeline);
        CollectionAssert.AreEqual(new[] { "out.1", "out.2", "out.4", "out.5" }, all.Steps.Select(s => s.Slot).ToArray());

        var none = Plan.Compile(stack, options, shapes, 3, new HashSet<string>());
        CollectionAssert.AreEqual(new[] { StepKind.Gather, StepKind.Linear, StepKind.BatchNorm, StepKind.Activation, StepKind.Linear }, none.Steps.Select(s => s.Kind).ToArray());
        Assert.IsFalse(none.Steps.Any(s => s.BiasGradientFromNext || s.WritesPreviousBiasGradient || s.SgdInEpilogue || s.Activation != null));
        Assert.IsFalse(none.WholeStepPipeline);
        Assert.AreEqual(2, none.Steps[0].Layers, "flatten is a view: it joins the gather whatever the device runs");

        // the optimiser decides the epilogue row: momentum, weight decay or L2 need the state pass
        var momentum = Plan.Compile(stack, options with { Optimizer = new Networks.Sgd { Momentum = 0.9f } }, shapes, 3, CpuDevice.Instance.Fusions);
        Assert.IsFalse(momentum.Steps.Any(s => s.SgdInEpilogue));
    }

    /// <summary>
    /// The GPU's rows for a linear's bias before a standalone activation: they rewrite a linear with bias and the tanh, relu
    /// or sigmoid right after it, and nothing else (no bias, a dropout or layer norm between, a batch norm's own rows).
    /// </summary>
    [TestMethod]
    public void ALinearsBiasRidesOnlyOnTheActivationRightAfterIt()
    {
        var stack = Sequential.Parse("linear:4x8,relu,linear:8x8,tanh,linear:8x8:nobias,sigmoid,linear:8x8,dropout:0.1,relu,linear:8x8,layernorm:8,relu,linear:8x8,batchnorm:8,sigmoid,linear:8x3");
        var options = new NetworkOptions { BatchSize = 8, Loss = LossKind.Mse };
        var rows = new HashSet<string> { Plan.BatchNormActivation, Plan.BiasInActivation, Plan.BiasGradientFromActivation, Plan.BiasInBatchNorm, Plan.BiasGradientFromBatchNorm };
        var plan = Plan.Compile(stack, options, stack.Resolve(), 4, rows);
        var linears = plan.Steps.Where(s => s.Kind == StepKind.Linear).ToArray();
        CollectionAssert.AreEqual(new[] { true, true, false, false, false, true, false }, linears.Select(s => s.BiasInNext).ToArray(), string.Join("\n", plan.Steps));
        CollectionAssert.AreEqual(new[] { true, true, false, false, false, true, false }, linears.Select(s => s.BiasGradientFromNext).ToArray());
        var activations = plan.Steps.Where(s => s.Kind == StepKind.Activation).ToArray();
        CollectionAssert.AreEqual(new[] { true, true, false, false, false }, activations.Select(s => s.AddsPreviousBias && s.WritesPreviousBiasGradient).ToArray());
        StringAssert.Contains(activations[0].ToString(), Plan.BiasInActivation);
        StringAssert.Contains(linears[1].ToString(), Plan.BiasGradientFromActivation);
        Assert.IsTrue(plan.Steps.Single(s => s.Kind == StepKind.BatchNorm).AddsPreviousBias, "the batch norm keeps its own row");
        // one row without the other
        var biasOnly = Plan.Compile(stack, options, stack.Resolve(), 4, new HashSet<string> { Plan.BiasInActivation });
        Assert.IsTrue(biasOnly.Steps[0].BiasInNext && !biasOnly.Steps[0].BiasGradientFromNext && !biasOnly.Steps[1].WritesPreviousBiasGradient);
        // the CPU runs neither
        Assert.IsFalse(CpuDevice.Instance.Fusions.Contains(Plan.BiasInActivation) || CpuDevice.Instance.Fusions.Contains(Plan.BiasGradientFromActivation));
    }

    /// <summary>
    /// The same minibatch through a CPU that runs every fusion and one that runs none (batch norm and tanh as two steps,
    /// the bias gradient as its own column sum, SGD as a pass over the flat buffer): the same loss and gradients up to
    /// float rounding (the orders of the sums differ), and the same parameters after a step.
    /// </summary>
    [TestMethod]
    [DataRow(Makemore, 32)]
    [DataRow("linear:6x16,batchnorm:16:biased,relu,linear:16x16,layernorm:16,sigmoid,dropout:0.3,linear:16x3", 300)]
    public void EveryFusionComputesWhatTheUnfusedStepsCompute(string layers, int n)
    {
        var stack = Sequential.Parse(layers);
        var loss = stack.TakesIds ? LossKind.CrossEntropy : LossKind.Mse;
        var options = new NetworkOptions { BatchSize = n, Loss = loss };
        using var fused = Network.Create(stack, options, CpuDevice.Instance);
        using var plain = Network.Create(stack, options, new PartialCpu(Plan.FlattenView));
        Assert.IsGreaterThan(fused.Plan.Count, plain.Plan.Count, string.Join("\n", plain.Plan));
        fused.Initialize(3);
        plain.Initialize(3);
        var rng = new Random(4);
        int w = fused.InputWidth, k = fused.OutputWidth;
        var ids = Enumerable.Range(0, n * w).Select(_ => rng.Next(27)).ToArray();
        var classes = Enumerable.Range(0, n).Select(_ => rng.Next(k)).ToArray();
        var x = Enumerable.Range(0, n * w).Select(_ => (float)StackTestData.Normal(rng)).ToArray();
        var t = Enumerable.Range(0, n * k).Select(_ => (float)StackTestData.Normal(rng)).ToArray();
        float a = stack.TakesIds ? fused.Step(ids, classes) : fused.Step(x, t);
        float b = stack.TakesIds ? plain.Step(ids, classes) : plain.Step(x, t);
        Assert.AreEqual(a, b, 1e-5 * Math.Abs(a), "loss");
        foreach (var slot in fused.Parameters.Parameters)
        {
            double rel = CudaParity.Relative(fused.Parameters.Gradient(slot.Name), plain.Parameters.Gradient(slot.Name));
            double relP = CudaParity.Relative(fused.Parameters.Value(slot.Name), plain.Parameters.Value(slot.Name));
            // the bias before a batch norm is 0 but for rounding: measured against the gradient it sums
            double tol = StackParity.NearZero(stack).Contains(slot.Name) ? 1 : 1e-4;
            Assert.IsLessThanOrEqualTo(tol, rel, $"grad {slot.Name}");
            Assert.IsLessThanOrEqualTo(1e-5, relP, $"{slot.Name} after the step");
        }
    }

    [TestMethod]
    public void PhiloxGivesTheKnownAnswers()
    {
        // Random123's known-answer vectors for Philox4x32-10 (counter words, then key words)
        Assert.AreEqual((0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u), Philox.Block(0, 0, 0, 0, 0, 0));
        Assert.AreEqual((0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu), Philox.Block(uint.MaxValue, uint.MaxValue, uint.MaxValue, uint.MaxValue, uint.MaxValue, uint.MaxValue));
        Assert.AreEqual((0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u), Philox.Block(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0));
    }

    /// <summary>The oracle draws its masks with an independent Philox (numpy) keyed as documented: ours must be the same bits.</summary>
    [TestMethod]
    [DataRow("dropout")]
    [DataRow("dropout_bn")]
    public void TheDropoutMaskIsTheOraclesMask(string name)
    {
        var b = StackOracle.Load(name, "f32");
        int masks = 0;
        for (int i = 0; i < b.Stack.Layers.Count; i++)
        {
            if (b.Stack.Layers[i].Kind != LayerKind.Dropout) continue;
            var expected = b.File["mask." + i.ToString(CultureInfo.InvariantCulture)].Data;
            var ours = new byte[expected.Length];
            DropoutMask.Fill(ours, (uint)b.Seed, i, b.Step, b.Stack.Layers[i].Rate);
            CollectionAssert.AreEqual(expected, ours, $"mask.{i}");
            Assert.IsTrue(ours.Contains((byte)0) && ours.Contains((byte)1), "a mask that drops some and keeps some");
            masks++;
        }
        Assert.IsGreaterThan(0, masks);
    }

    [TestMethod]
    [DataRow(0.1f)]
    [DataRow(0.5f)]
    [DataRow(0.9f)]
    public void ADropoutMaskKeepsOneMinusPAndDiffersByStepAndLayer(float p)
    {
        const int count = 1 << 20;
        var m = new byte[count];
        DropoutMask.Fill(m, 42, 3, 7, p);
        double kept = m.Count(v => v == 1) / (double)count, sigma = Math.Sqrt(p * (1 - p) / count);
        Assert.AreEqual(1 - p, kept, 5 * sigma, "kept fraction");
        var other = new byte[count];
        DropoutMask.Fill(other, 42, 3, 8, p);
        Assert.IsFalse(m.AsSpan().SequenceEqual(other), "another step, another mask");
        DropoutMask.Fill(other, 42, 4, 7, p);
        Assert.IsFalse(m.AsSpan().SequenceEqual(other), "another layer, another mask");
        DropoutMask.Fill(other, 43, 3, 7, p);
        Assert.IsFalse(m.AsSpan().SequenceEqual(other), "another seed, another mask");
        // neighbouring elements are independent: P(both kept) = (1 − p)²
        double both = Enumerable.Range(0, count - 1).Count(i => m[i] == 1 && m[i + 1] == 1) / (double)(count - 1);
        Assert.AreEqual((1 - p) * (1 - p), both, 5 * Math.Sqrt((1 - p) * (1 - p) * (1 - (1 - p) * (1 - p)) / count));
        DropoutMask.Fill(m, 42, 3, 7, 0f);
        Assert.IsTrue(m.All(v => v == 1), "P = 0 keeps everything");
    }

    /// <summary>Dropout is the identity in inference: Predict and Evaluate are the plain linear layers' (computed here in double).</summary>
    [TestMethod]
    public void DropoutIsTheIdentityInInference()
    {
        using var net = Network.Create(Sequential.Parse("linear:4x8,dropout:0.5,linear:8x2"), new NetworkOptions { BatchSize = 4, Loss = LossKind.Mse });
        net.Initialize(11);
        var rng = new Random(5);
        var x = Enumerable.Range(0, 10 * 4).Select(_ => (float)StackTestData.Normal(rng)).ToArray();
        var t = Enumerable.Range(0, 10 * 2).Select(_ => (float)StackTestData.Normal(rng)).ToArray();
        var ps = net.Parameters;
        float[] W1 = ps.Value("0.weight").ToArray(), b1 = ps.Value("0.bias").ToArray(), W2 = ps.Value("2.weight").ToArray(), b2 = ps.Value("2.bias").ToArray();
        var expected = new double[20];
        double mse = 0;
        for (int r = 0; r < 10; r++)
            for (int o = 0; o < 2; o++)
            {
                double z = b2[o];
                for (int h = 0; h < 8; h++)
                {
                    double a = b1[h];
                    for (int i = 0; i < 4; i++) a += (double)x[r * 4 + i] * W1[h * 4 + i];
                    z += a * W2[o * 8 + h];
                }
                expected[r * 2 + o] = z;
                mse += (z - t[r * 2 + o]) * (z - t[r * 2 + o]);
            }
        var output = new float[20];
        net.Predict(x, 10, output, raw: true);
        for (int i = 0; i < 20; i++) Assert.AreEqual(expected[i], output[i], 1e-5, $"output {i}");
        Assert.AreEqual(mse / 20, net.Evaluate(ExampleSet.FromFeatures(x, 4, t, 2)), 1e-5);
    }

    /// <summary>A run with dropout (and layer norm, AdamW) cut in two and resumed from its checkpoint draws the masks of the uninterrupted run: bitwise the same parameters.</summary>
    [TestMethod]
    public void AResumedRunWithDropoutIsBitwiseTheUninterruptedOne()
    {
        var stack = Sequential.Parse("linear:5x16,layernorm:16,tanh,dropout:0.3,linear:16x3");
        var options = new NetworkOptions { BatchSize = 8, Loss = LossKind.Mse, Optimizer = new AdamW { LearningRate = 0.01f }, Seed = 9 };
        var rng = new Random(2);
        var data = ExampleSet.FromFeatures(Enumerable.Range(0, 200 * 5).Select(_ => (float)StackTestData.Normal(rng)).ToArray(), 5,
            Enumerable.Range(0, 200 * 3).Select(_ => (float)StackTestData.Normal(rng)).ToArray(), 3);
        using var whole = Network.Create(stack, options);
        whole.Initialize(1);
        whole.Fit(data, new TrainingRun(4, 40));

        using var first = Network.Create(stack, options);
        first.Initialize(1);
        var run = new TrainingRun(4, 40);
        first.Fit(data, run, untilStep: 17);
        using var dir = new TempDir();
        StackCheckpoint.Save(dir.File("cut.safetensors"), first, null, null, run);
        var loaded = StackCheckpoint.Load(dir.File("cut.safetensors"));
        using (loaded.Network)
        {
            Assert.AreEqual(9, loaded.Network.Options.Seed, "the dropout seed travels in the checkpoint");
            using var second = Network.Create(stack, options);
            var resumed = loaded.Training!.RestoreInto(second, loaded);
            second.Fit(data, resumed);
            CollectionAssert.AreEqual(whole.Parameters.Data, second.Parameters.Data);
            CollectionAssert.AreEqual(whole.Parameters.OptimizerState, second.Parameters.OptimizerState);
        }
    }

    /// <summary>
    /// Calibration of a stack of L batch norms: every batch norm's statistics are those of its input over the whole set with
    /// the ones before it calibrated (checked against the double reference run on the prefix of the stack), the same bits
    /// whether the inputs are kept or recomputed, and the work is one pass of each step over the set (L·chunks step
    /// forwards when kept, not the L²/2·chunks of recomputing every input from the examples).
    /// </summary>
    [TestMethod]
    public void CalibrationPassesEachStepOverTheSetOnceAndGetsTheStatisticsOfEveryInput()
    {
        const int L = 6, N = 2500; // three chunks of 1024
        var layers = new List<Layer>();
        int w = 5;
        for (int j = 0; j < L; j++) { layers.Add(Layer.Linear(w, 7, bias: j % 2 == 0)); layers.Add(Layer.BatchNorm1d(7)); layers.Add(Layer.Tanh()); w = 7; }
        layers.Add(Layer.Linear(7, 2));
        var stack = new Sequential([.. layers]);
        var rng = new Random(8);
        var x = Enumerable.Range(0, N * 5).Select(_ => (float)StackTestData.Normal(rng)).ToArray();
        var data = ExampleSet.FromFeatures(x, 5, new float[N * 2], 2);
        var options = new NetworkOptions { BatchSize = 16, Loss = LossKind.Mse };
        using var kept = Network.Create(stack, options);
        kept.Initialize(3);
        kept.Calibrate(data);
        int chunks = (N + Network.EvalChunk - 1) / Network.EvalChunk;
        int lastBatchNormStep = kept.CompiledPlan.BatchNormSteps.Last();
        Assert.AreEqual((long)lastBatchNormStep * chunks, kept.CalibrationForwards, "each step before the last batch norm ran once over the set");

        using var recomputed = Network.Create(stack, options);
        recomputed.Initialize(3);
        recomputed.CalibrationMemoryLimit = 0;
        recomputed.Calibrate(data);
        long quadratic = kept.CompiledPlan.BatchNormSteps.Sum(k => 2L * k * chunks);
        Assert.AreEqual(quadratic, recomputed.CalibrationForwards, "without memory for the inputs, two passes from the examples per batch norm");
        CollectionAssert.AreEqual(kept.Parameters.Buffers, recomputed.Parameters.Buffers, "the same statistics either way");

        // each batch norm's statistics: its input through the double reference of the stack before it
        var p = kept.Parameters.Parameters.ToDictionary(s => s.Name, s => kept.Parameters.Value(s.Name).ToArray().Select(v => (double)v).ToArray(), StringComparer.Ordinal);
        foreach (int i in stack.BatchNormLayers())
        {
            var prefix = new Sequential([.. stack.Layers.Take(i)]);
            var running = BatchNormBuffers<double>.From(prefix, kept.Parameters.RunningStatistics.ToDictionary(s => s.Name, s => kept.Parameters.Value(s.Name).ToArray().Select(v => (double)v).ToArray()));
            var input = new StackReference<double>(prefix, LossKind.Mean, 5).Forward(new StackInput<double>(N, Features: x.Select(v => (double)v).ToArray()), p, running, training: false);
            for (int c = 0; c < 7; c++)
            {
                double mean = 0, sq = 0;
                for (int r = 0; r < N; r++) mean += input[r * 7 + c];
                mean /= N;
                for (int r = 0; r < N; r++) sq += (input[r * 7 + c] - mean) * (input[r * 7 + c] - mean);
                string layer = i.ToString(CultureInfo.InvariantCulture);
                Assert.AreEqual(mean, kept.Parameters.Value(layer + ".running_mean")[c], 1e-5, $"layer {i} mean {c}");
                Assert.AreEqual(sq / (N - 1), kept.Parameters.Value(layer + ".running_var")[c], 1e-5 * Math.Max(1, sq / (N - 1)), $"layer {i} var {c}");
            }
        }
    }
}
