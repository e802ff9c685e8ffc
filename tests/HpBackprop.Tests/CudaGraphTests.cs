using HpBackprop.Cuda;
using HpBackprop.Cuda.Gpu;
using HpBackprop.Cuda.Runtime;
using HpBackprop.Networks;

namespace HpBackprop.Tests;

/// <summary>
/// The training step as one captured graph (issue 21): a replay gives the bits of the same step launched kernel by kernel,
/// reads the rate and the dropout step of its own step from the device's step state, and a capture refuses what capture
/// cannot hold. On the emulator (<see cref="CudaNetworkTests"/>) and on a GPU (<see cref="CudaNetworkDriverTests"/>, not run
/// without one).
/// </summary>
public abstract partial class CudaNetworkTestsBase
{
    public static IEnumerable<object[]> GraphCases =>
    [
        ["makemore, SGD, a step schedule at step 5", "embedding:27x4,flatten,linear:12x16,batchnorm:16,tanh,linear:16x27", "sgd", "ce", 5L],
        ["dropout, layer norm, AdamW, L2, cosine", "embedding:27x4,flatten,linear:12x16,batchnorm:16,tanh,dropout:0.3,linear:16x16,layernorm:16,relu,linear:16x27", "adamw", "ce", 0L],
        ["features, MSE, SGD with momentum and weight decay", "linear:6x8,relu,linear:8x3", "momentum", "mse", 0L],
    ];

    private static NetworkOptions GraphOptions(string optimizer, string loss, long stepAt) => new()
    {
        BatchSize = 8,
        InputWidth = loss == "mse" ? 6 : 3,
        Loss = loss == "mse" ? LossKind.Mse : LossKind.CrossEntropy,
        Optimizer = optimizer switch
        {
            "adamw" => new AdamW { LearningRate = 0.01f, WeightDecay = 0.05f },
            "momentum" => new Sgd { LearningRate = 0.05f, Momentum = 0.9f, WeightDecay = 0.01f },
            _ => new Sgd { LearningRate = 0.2f },
        },
        L2 = optimizer == "adamw" ? 0.001f : 0f,
        Schedule = stepAt > 0 ? new StepSchedule(stepAt, 0.1f) : optimizer == "adamw" ? new CosineSchedule(2, 12, 0.001f) : Schedule.Constant,
        Seed = 5,
    };

    /// <summary>Steps <paramref name="net"/> <paramref name="steps"/> times on minibatches drawn from <paramref name="seed"/>; returns the losses.</summary>
    private static float[] Train(Network net, int steps, int seed)
    {
        var rng = new Random(seed);
        int n = net.BatchSize, w = net.InputWidth;
        var losses = new float[steps];
        for (int s = 0; s < steps; s++)
        {
            if (net.Stack.TakesIds)
                losses[s] = net.Step(Enumerable.Range(0, n * w).Select(_ => rng.Next(27)).ToArray(), Enumerable.Range(0, n).Select(_ => rng.Next(27)).ToArray());
            else
                losses[s] = net.Step(Enumerable.Range(0, n * w).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(),
                    Enumerable.Range(0, n * net.OutputWidth).Select(_ => (float)rng.NextDouble()).ToArray());
        }
        return losses;
    }

    [TestMethod]
    [DynamicData(nameof(GraphCases))]
    public void AReplayedStepIsBitwiseTheStepLaunchedKernelByKernel(string name, string stack, string optimizer, string loss, long stepAt)
    {
        var options = GraphOptions(optimizer, loss, stepAt);
        using var graph = Gpu(Sequential.Parse(stack), options);
        using var eager = Gpu(Sequential.Parse(stack), options);
        CudaNetwork.Backend(eager)!.UseGraphs = false;
        graph.Initialize(3);
        eager.Initialize(3);
        float[] a = Train(graph, 12, 7), b = Train(eager, 12, 7);
        CollectionAssert.AreEqual(b, a, $"{name}: the losses of the replayed steps");
        var gb = CudaNetwork.Backend(graph)!;
        Assert.AreEqual(1, gb.LaunchesPerStep, $"{name}: a step after the first is one launch");
        Assert.IsGreaterThan(1, CudaNetwork.Backend(eager)!.LaunchesPerStep);
        Assert.IsGreaterThan(1, gb.GraphNodes);
        graph.PullParameters();
        eager.PullParameters();
        CollectionAssert.AreEqual(eager.Parameters.Data.ToArray(), graph.Parameters.Data.ToArray(), $"{name}: parameters");
        CollectionAssert.AreEqual(eager.Parameters.OptimizerState.ToArray(), graph.Parameters.OptimizerState.ToArray(), $"{name}: optimiser state");
        CollectionAssert.AreEqual(eager.Parameters.Buffers.ToArray(), graph.Parameters.Buffers.ToArray(), $"{name}: running statistics");
        Assert.AreEqual(0u, gb.State.ReadFault(), "every step found its schedule row");
        Assert.AreEqual(1, gb.State.Uploads, $"{name}: one window of rows covers the 12 steps, the schedule's change included");
    }

    /// <summary>
    /// Capture a step, then change the learning rate between replays (as a caller's own schedule would): each replay uses
    /// the rate of its step (the eager backend given the same rates agrees bitwise; one that keeps the first rate does not),
    /// and the step state is uploaded only for a step whose rate is not the one its rows hold.
    /// </summary>
    [TestMethod]
    public unsafe void AReplayUsesTheRateGivenForItsStep()
    {
        var stack = Sequential.Parse("linear:6x8,tanh,linear:8x3");
        var options = GraphOptions("sgd", "mse", 0) with { Optimizer = new Sgd { LearningRate = 0.1f } };
        float[] rates = [0.1f, 0.1f, 0.1f, 0.05f, 0.05f, 0.3f, 0.3f];
        using var graph = Gpu(stack, options);
        using var eager = Gpu(stack, options);
        using var fixedRate = Gpu(stack, options);
        var nets = new[] { graph, eager, fixedRate };
        CudaNetwork.Backend(eager)!.UseGraphs = false;
        foreach (var net in nets) net.Initialize(1);
        var rng = new Random(3);
        var x = Enumerable.Range(0, 8 * 6).Select(_ => (float)rng.NextDouble()).ToArray();
        var t = Enumerable.Range(0, 8 * 3).Select(_ => (float)rng.NextDouble()).ToArray();
        fixed (float* px = x, pt = t)
        {
            var batch = new Batch(8, null, px, null, pt);
            for (int s = 0; s < rates.Length; s++)
                for (int i = 0; i < nets.Length; i++)
                    CudaNetwork.Backend(nets[i])!.Step(batch, new StepArgs(true, i == 2 ? rates[0] : rates[s], s + 1, s));
        }
        Assert.AreEqual(1, CudaNetwork.Backend(graph)!.LaunchesPerStep);
        Assert.AreEqual(5, CudaNetwork.Backend(graph)!.State.Uploads, "the state goes up at the first step and at each step whose rate is not the schedule's (3 to 6)");
        foreach (var net in nets) net.PullParameters();
        CollectionAssert.AreEqual(eager.Parameters.Data.ToArray(), graph.Parameters.Data.ToArray(), "the replays used the rates given");
        CollectionAssert.AreNotEqual(fixedRate.Parameters.Data.ToArray(), graph.Parameters.Data.ToArray(), "a replay kept the captured rate");
    }

    /// <summary>The step state goes up once per window of rows: once for a constant rate, every 100 steps for AdamW, and again when the step count is set.</summary>
    /// <summary>A makemore-like set of 1,000 examples of 3 ids over 27 characters.</summary>
    private static ExampleSet WordLikeSet(int seed, int rows = 1_000)
    {
        var rng = new Random(seed);
        return ExampleSet.FromIds(Enumerable.Range(0, rows * 3).Select(_ => rng.Next(27)).ToArray(), 3, Enumerable.Range(0, rows).Select(_ => rng.Next(27)).ToArray());
    }

    /// <summary>
    /// Fit keeps the set on the device: the device draws each minibatch (the rows the host draws: the same losses, bitwise, as
    /// steps on <see cref="ExampleSet.DrawBatch"/>'s rows), one launch per step after the first, and nothing crosses per step
    /// but the losses, read 100 at a time, and the step state's one upload; the set's upload is counted apart.
    /// </summary>
    [TestMethod]
    public void FitDrawsItsMinibatchesOnTheDeviceAndReadsTheLossesEveryHundredSteps()
    {
        var stack = Sequential.Parse("embedding:27x4,flatten,linear:12x16,batchnorm:16,tanh,linear:16x27");
        var options = new NetworkOptions { BatchSize = 8, Optimizer = new Sgd { LearningRate = 0.2f } };
        var set = WordLikeSet(1);
        const int steps = 250;
        using var fit = Gpu(stack, options);
        fit.Initialize(3);
        float[] losses = fit.Fit(set, steps, seed: 11);
        using var byHand = Gpu(stack, options);
        byHand.Initialize(3);
        var ids = new int[8 * 3];
        var cls = new int[8];
        for (int s = 0; s < steps; s++)
        {
            set.DrawBatch(11, byHand.StepCount, 8, ids, default, cls, default);
            Assert.AreEqual(BitConverter.SingleToInt32Bits(losses[s]), BitConverter.SingleToInt32Bits(byHand.Step(ids, cls)), $"loss of step {s}");
        }
        fit.PullParameters(); byHand.PullParameters();
        CollectionAssert.AreEqual(fit.Parameters.Data, byHand.Parameters.Data, "parameters");
        var b = CudaNetwork.Backend(fit)!;
        var t = fit.Traffic!.Value;
        Assert.AreEqual(steps, t.Steps);
        int first = (int)(t.Launches - (steps - 1));
        Assert.IsGreaterThan(10, first, "the first step launches its kernels itself");
        Assert.AreEqual(1, b.LaunchesPerStep, "every later step replays the capture");
        // the losses in three reads (100, 100, 50) and the step state once (SGD at a constant rate: one row)
        Assert.AreEqual(3 + 1, t.Copies, "copies");
        Assert.AreEqual(steps * 4 + StepState.HeaderBytes + StepState.RowFloats * 4, t.Bytes, "bytes");
        Assert.AreEqual(2, t.SetupCopies, "the set's ids and classes, once");
        Assert.AreEqual(1_000 * (3 + 1) * 4, t.SetupBytes);
        Assert.IsNotNull(b.DrawnGraph);
        Assert.IsNull(b.Graph, "no step uploaded its minibatch");
        // twelve nodes: step_begin draws the minibatch and gathers its embedding rows; the first linear's bias goes into the
        // batch norm's forward, the last one's into the loss; the step's kernels otherwise as TheMakemoreStepIs… lists them
        if (b.DrawnGraph is EmulatedGraph eg)
            CollectionAssert.AreEqual(new[]
            {
                "kernel:step_begin", "gemm", "kernel:batchnorm_forward", "gemm", "kernel:cross_entropy_bias_loss", "gemm", "gemm",
                "kernel:batchnorm_backward", "gemm", "gemm", "kernel:embedding_backward_dense", "kernel:sgd_update",
            }, eg.Describe().ToArray(), string.Join(", ", eg.Describe()));
        // Fit again on the same values (a run in chunks): nothing goes up again, the capture is kept; a changed value goes up
        var graph = b.DrawnGraph;
        fit.Fit(set, 3, seed: 11);
        Assert.AreEqual(1_000 * (3 + 1) * 4, fit.Traffic!.Value.SetupBytes, "the same values are not uploaded again");
        Assert.AreSame(graph, b.DrawnGraph, "the same capture");
        set.Classes![17] = (set.Classes[17] + 1) % 27;
        fit.Fit(set, 3, seed: 11);
        Assert.AreEqual(2 * 1_000 * (3 + 1) * 4, fit.Traffic!.Value.SetupBytes, "a changed set is uploaded again");
        Assert.AreSame(graph, b.DrawnGraph, "of the same shape: the same buffers and capture");
    }

    /// <summary>
    /// Epochs (the host's minibatches) queue their steps: each minibatch goes into one of two pinned staging buffers in turn,
    /// after waiting for the event of the step that last copied from it, the step's copies are nodes of that buffer's
    /// capture, and no loss is read per step (the ring, every 100 steps). The losses and parameters are bitwise those of
    /// <c>Step</c> on the same rows; only the minibatches, the step state's one upload and the ring's reads cross.
    /// </summary>
    [TestMethod]
    public void EpochsQueueTheirStepsThroughTwoStagingBuffersWithoutALossReadEach()
    {
        var stack = Sequential.Parse("embedding:27x4,flatten,linear:12x16,batchnorm:16,tanh,linear:16x27");
        var options = new NetworkOptions { BatchSize = 8, Optimizer = new Sgd { LearningRate = 0.2f } };
        var set = WordLikeSet(4, rows: 120);
        const int steps = 150;
        using var fit = Gpu(stack, options);
        fit.Initialize(3);
        var history = fit.Fit(set, new FitOptions { Steps = steps, Order = BatchOrder.Epochs, Seed = 6 });
        using var byHand = Gpu(stack, options);
        byHand.Initialize(3);
        var order = new EpochOrder(set.Count, 8, new Model.NormalRng(6));
        var ids = new int[8 * 3];
        var cls = new int[8];
        for (int s = 0; s < steps; s++)
        {
            set.CopyRows(order.Next(), ids, default, cls, default);
            Assert.AreEqual(BitConverter.SingleToInt32Bits(byHand.Step(ids, cls)), BitConverter.SingleToInt32Bits(history.Losses[s]), $"loss of step {s}");
        }
        fit.PullParameters(); byHand.PullParameters();
        CollectionAssert.AreEqual(byHand.Parameters.Data, fit.Parameters.Data, "parameters");
        var b = CudaNetwork.Backend(fit)!;
        var t = fit.Traffic!.Value;
        Assert.AreEqual(steps, t.Steps);
        Assert.AreEqual(1, b.LaunchesPerStep, "the later steps replay a capture");
        Assert.IsNotNull(b.StagedGraph(0), "buffer 0's capture");
        Assert.IsNotNull(b.StagedGraph(1), "buffer 1's capture");
        Assert.AreNotSame(b.StagedGraph(0), b.StagedGraph(1));
        Assert.IsNull(b.DrawnGraph, "epochs are the host's minibatches");
        // per step the ids and the classes (nodes of the capture); the step state once (a constant rate); the ring at 100 and 150
        Assert.AreEqual(2 * steps + 1 + 2, t.Copies, "copies");
        Assert.AreEqual(steps * (8 * 3 * 4 + 8 * 4) + StepState.HeaderBytes + StepState.RowFloats * 4 + steps * 4, t.Bytes, "bytes");
        if (b.Runtime is EmulatorRuntime emu)
            Assert.AreEqual((steps, steps), emu.EventCalls, "one record after each step, one wait before each staging");
    }

    /// <summary>A set that carries targets its loss does not take (class ids under <c>mean</c>) is kept on the device without them: the steps are the CPU's.</summary>
    [TestMethod]
    public void ASetsTargetsThatTheLossDoesNotTakeStayOnTheHost()
    {
        var stack = Sequential.Parse("linear:6x4,tanh,linear:4x1");
        var options = new NetworkOptions { BatchSize = 8, Loss = LossKind.Mean, Optimizer = new Sgd { LearningRate = 0.05f } };
        var rng = new Random(5);
        var set = ExampleSet.FromFeatures(Enumerable.Range(0, 300 * 6).Select(_ => (float)rng.NextDouble()).ToArray(), 6, Enumerable.Range(0, 300).Select(_ => rng.Next(3)).ToArray());
        using var cpu = Network.Create(stack, options);
        using var gpu = Gpu(stack, options);
        cpu.Initialize(1); gpu.Initialize(1);
        float[] a = cpu.Fit(set, 20, seed: 2), b = gpu.Fit(set, 20, seed: 2);
        Assert.AreEqual(300 * 6 * 4, gpu.Traffic!.Value.SetupBytes, "only the features went up");
        for (int s = 0; s < 20; s++) Assert.AreEqual(a[s], b[s], 1e-5 * Math.Max(1, Math.Abs(a[s])), $"step {s}");
    }

    /// <summary>A loss that is not finite is reported at its own step although the losses are read 100 steps at a time: the step the CPU reports.</summary>
    [TestMethod]
    public void ADivergenceIsReportedAtItsStepBetweenTwoReads()
    {
        var stack = Sequential.Parse("embedding:27x4,flatten,linear:12x16,batchnorm:16,tanh,linear:16x27");
        var options = new NetworkOptions { BatchSize = 8, Optimizer = new Sgd { LearningRate = 0.2f }, Schedule = new StepSchedule(150, 1e30f) };
        var set = WordLikeSet(2);
        int Diverge(Network net)
        {
            net.Initialize(3);
            return Assert.ThrowsExactly<Training.TrainingDivergedException>(() => net.Fit(set, 300, seed: 4)).Step;
        }
        using var cpu = Network.Create(stack, options);
        using var gpu = Gpu(stack, options);
        int want = Diverge(cpu);
        Assert.IsTrue(want > 150 && want % 100 != 0, $"the CPU diverges at step {want}, between two reads");
        Assert.AreEqual(want, Diverge(gpu));
    }

    /// <summary>
    /// Fit's loop allocates nothing per step: with the set on the device (the device draws, the losses read 100 at a time)
    /// and on the CPU (the host draws, uniformly or in epochs), a call of 300 steps allocates what a call of 100 does, and
    /// a <see cref="FitOptions"/> call of 250 steps in epochs (on the CPU, and queued on the device) only its history's
    /// 800 bytes more than one of 50.
    /// </summary>
    [TestMethod]
    public void FitsLoopAllocatesNothingPerStepOnTheDeviceAndOnTheCpu()
    {
        var stack = Sequential.Parse("embedding:27x4,flatten,linear:12x8,batchnorm:8,tanh,linear:8x27");
        var options = new NetworkOptions { BatchSize = 8, Optimizer = new Sgd { LearningRate = 0.1f } };
        var set = WordLikeSet(4, rows: 200);
        using var gpu = Gpu(stack, options);
        using var cpu = Network.Create(stack, options);
        foreach (var net in new[] { gpu, cpu })
        {
            net.Initialize(1);
            var run = new TrainingRun(6, 5 + 100 + 300);
            net.Fit(set, run, untilStep: 5); // warm up (JIT, kernel handles, the set's upload, the capture)
            long Allocated(int until)
            {
                long before = GC.GetAllocatedBytesForCurrentThread();
                int done = net.Fit(set, run, untilStep: until);
                long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
                Assert.AreEqual(until, run.Completed, $"{net.Device}: steps done");
                Assert.IsGreaterThan(0, done);
                return bytes;
            }
            long shorter = Allocated(5 + 100), longer = Allocated(5 + 100 + 300);
            Assert.AreEqual(shorter, longer, $"{net.Device}: a run of 300 steps allocates {longer:N0} bytes, one of 100 {shorter:N0}");
        }
        Assert.IsNotNull(CudaNetwork.Backend(gpu)!.DrawnGraph, "the device drew the minibatches");
        Assert.IsNull(CudaNetwork.Backend(gpu)!.Graph, "no step uploaded its minibatch");
        // the host's epochs (through the FitOptions overload), on the CPU and queued on the device through its two staging
        // buffers: the history's floats and nothing else grow with the steps
        var fit = new FitOptions { Steps = 50, Seed = 3, Order = BatchOrder.Epochs };
        foreach (var net in new[] { gpu, cpu })
        {
            net.Fit(set, fit); // warm up (the two staged captures)
            long FitAllocated(int steps)
            {
                long before = GC.GetAllocatedBytesForCurrentThread();
                var h = net.Fit(set, fit with { Steps = steps });
                long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
                Assert.AreEqual(steps, h.Losses.Length);
                return bytes;
            }
            long fifty = FitAllocated(50), twoHundredFifty = FitAllocated(250);
            Assert.AreEqual(4L * (250 - 50), twoHundredFifty - fifty, $"{net.Device} epochs: 250 steps allocate {twoHundredFifty:N0} bytes, 50 {fifty:N0}");
        }
        Assert.IsNotNull(CudaNetwork.Backend(gpu)!.Graph, "the epochs were queued as staged steps");
    }

    /// <summary>A run stopped at step 25 and continued (the set kept on the device again, a new capture) is bitwise the run never stopped.</summary>
    [TestMethod]
    public void ARunContinuedOnTheDeviceIsBitwiseTheRunNeverStopped()
    {
        var stack = Sequential.Parse("embedding:27x4,flatten,linear:12x16,batchnorm:16,tanh,linear:16x27");
        var options = new NetworkOptions { BatchSize = 8, Optimizer = new AdamW { LearningRate = 0.01f }, Schedule = new StepSchedule(40, 0.1f) };
        var set = WordLikeSet(3);
        (float[] Losses, float[] Params) Run(params int[] untils)
        {
            using var net = Gpu(stack, options);
            net.Initialize(9);
            var run = new TrainingRun(21, 60);
            foreach (int u in untils) net.Fit(set, run, untilStep: u);
            net.PullParameters();
            return (run.Losses, net.Parameters.Data.ToArray());
        }
        var whole = Run(60);
        var cut = Run(25, 60);
        CollectionAssert.AreEqual(whole.Losses, cut.Losses, "losses");
        CollectionAssert.AreEqual(whole.Params, cut.Params, "parameters");
    }

    [TestMethod]
    public void TheStepStateGoesUpOnlyWhenItsRowsRunOut()
    {
        var stack = Sequential.Parse("linear:6x4,tanh,linear:4x3");
        foreach (var (optimizer, uploads) in new[] { ("sgd", 1), ("adamw-constant", 3) })
        {
            var options = GraphOptions(optimizer == "sgd" ? "sgd" : "adamw", "mse", 0) with { Schedule = Schedule.Constant, L2 = 0 };
            using var net = Gpu(stack, options);
            net.Initialize(2);
            Train(net, 250, 1);
            var state = CudaNetwork.Backend(net)!.State;
            Assert.AreEqual(uploads, state.Uploads, optimizer);
            net.StepCount = 17;
            Train(net, 1, 2);
            Assert.AreEqual(uploads + 1, state.Uploads, $"{optimizer}: a step count set by the caller");
            Assert.AreEqual(0u, state.ReadFault(), optimizer);
        }
    }

    /// <summary>What a capture may not hold (synchronisation, allocation, a copy to the host, a synchronous copy) throws naming the call, and the capture ends in an error naming it too.</summary>
    [TestMethod]
    public unsafe void ACallThatCaptureCannotHoldIsRefusedNamingIt()
    {
        using var rt = Devices.Open(OnDriver);
        using var mem = rt.Allocate(64);
        using var pinned = rt.AllocatePinned(64);
        var host = new float[16];
        var forbidden = new List<(string Name, Action Call)>
        {
            ("Synchronize", rt.Synchronize),
            ("Allocate", () => rt.Allocate(16).Dispose()),
            ("AllocatePinned", () => rt.AllocatePinned(16).Dispose()),
            ("CopyToHost", () => { fixed (float* p = host) rt.CopyToHost(p, mem.Pointer, 64); }),
            ("CopyToDevice", () => { fixed (float* p = host) rt.CopyToDevice(mem.Pointer, p, 64); }),
        };
        if (!OnDriver) forbidden.Add(("not pinned", () => { fixed (float* p = host) rt.CopyToDeviceAsync(mem.Pointer, p, 64); }));
        foreach (var (name, call) in forbidden)
        {
            rt.BeginCapture();
            Assert.IsTrue(rt.IsCapturing);
            var e = Assert.ThrowsExactly<InvalidOperationException>(call, name);
            StringAssert.Contains(e.Message, name);
            StringAssert.Contains(e.Message, "captured");
            rt.Zero(mem.Pointer, 64); // allowed: it is captured, not run
            var end = Assert.ThrowsExactly<InvalidOperationException>(() => rt.EndCapture(), name);
            StringAssert.Contains(end.Message, name);
            Assert.IsFalse(rt.IsCapturing);
        }
        // and a capture without them works afterwards
        rt.BeginCapture();
        rt.CopyToDeviceAsync(mem.Pointer, pinned.Pointer, 64);
        using var graph = rt.EndCapture();
        rt.Launch(graph);
        rt.Synchronize();
    }

    /// <summary>
    /// A replay reads the pinned source and the device memory as they are at the replay, and the kernel arguments as they
    /// were at the capture; nothing runs at capture time.
    /// </summary>
    [TestMethod]
    public unsafe void AReplayReadsPinnedMemoryThenAndArgumentsAsCaptured()
    {
        using var rt = Devices.Open(OnDriver);
        using var x = rt.Allocate(16);
        using var y = rt.Allocate(16);
        using var pinned = rt.AllocatePinned(16);
        var src = new Span<float>(pinned.Pointer, 4);
        var axpy = rt.GetKernel("axpy");
        float[] zeros = new float[4], got = new float[4];
        fixed (float* z = zeros) rt.CopyToDevice(y.Pointer, z, 16);
        src.Fill(-100f);
        rt.BeginCapture();
        rt.CopyToDeviceAsync(x.Pointer, pinned.Pointer, 16);
        ulong a0 = y.Pointer, a1 = x.Pointer; float a2 = 2f; int a3 = 4;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3 };
        rt.Launch(axpy, new Dim3(1), new Dim3(32), 0, args);
        using var graph = rt.EndCapture();
        a2 = 1000f; // the captured value is 2
        if (!OnDriver) Assert.AreEqual(2, graph.NodeCount);
        fixed (float* g = got) rt.CopyToHost(g, y.Pointer, 16);
        CollectionAssert.AreEqual(zeros, got, "nothing ran during the capture");
        src[0] = 1; src[1] = 2; src[2] = 3; src[3] = 4;
        rt.Launch(graph);
        rt.Synchronize();
        fixed (float* g = got) rt.CopyToHost(g, y.Pointer, 16);
        CollectionAssert.AreEqual(new[] { 2f, 4f, 6f, 8f }, got, "the first replay: the pinned values of its time, times the captured 2");
        src[0] = 10; src[1] = 20; src[2] = 30; src[3] = 40;
        rt.Launch(graph);
        rt.Synchronize();
        fixed (float* g = got) rt.CopyToHost(g, y.Pointer, 16);
        CollectionAssert.AreEqual(new[] { 22f, 44f, 66f, 88f }, got, "the second replay read the new pinned values and y as the first left it");
    }
}
