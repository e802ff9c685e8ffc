using HpBackprop.Cpu;
using HpBackprop.IO;
using HpBackprop.Model;

namespace HpBackprop.Bench;

/// <summary>
/// <c>stages --shape S</c>: µs of the makemore network's step, and of each whole-matrix kernel of the step in the makemore layout
/// (W1 [K,H], W2 [H,V]) on the step's own buffers, to see where the time goes (<c>stack-stages</c> times the network's ops);
/// where the batch takes the row-block pipeline, also the pipelined step split part by part.
/// </summary>
public static unsafe class Stages
{
    public static int Run(string[] args)
    {
        var cfg = Shapes.Get(Program.Opt(args, "--shape", "S"));
        double sec = double.Parse(Program.Opt(args, "--seconds", "0.5"), System.Globalization.CultureInfo.InvariantCulture);
        int n = cfg.BatchSize, K = cfg.ContextWidth, H = cfg.HiddenSize, V = cfg.VocabSize;
        var (net, x, y) = Shapes.Make(cfg, 1);
        using var _ = net;
        var p = new ParameterSet(cfg);
        float[] embcat = Pinned(n * K), hprebn = Pinned(n * H), h = Pinned(n * H), raw = Pinned(n * H), logits = Pinned(n * V), dlogits = Pinned(n * V);
        float[] dh = Pinned(n * H), dhprebn = Pinned(n * H), dembcat = Pinned(n * K), st = Pinned(4 * H);
        net.ForwardBackward(x, y);
        StackCheckpoint.ToParameterSet(net, p);
        foreach (var (name, buffer) in new[] { ("h", h), ("bnraw", raw), ("dlogits", dlogits), ("embcat", embcat), ("dhprebn", dhprebn) })
            Networks.MakemoreView.Intermediate(net, name).CopyTo(buffer, 0);
        var W1 = p.W1.ToArray(); var W2 = p.W2.ToArray(); var b1 = p.b1.ToArray(); var b2 = p.b2.ToArray();
        var dW1 = new float[W1.Length]; var dW2 = new float[W2.Length];
        var rows = new List<(string, double, double)>();
        void T(string name, double flops, Action a) { double us = Program.TimeUs(a, sec); rows.Add((name, us, flops / us / 1e3)); }
        T("step", cfg.GemmFlopsPerStep, () => net.Step(x, y));
        T("forward+backward", cfg.GemmFlopsPerStep, () => net.ForwardBackward(x, y));
        T("embedding fwd", 0, () => Embedding.Forward(p.C, x, embcat, n, cfg.BlockSize, cfg.EmbeddingSize));
        T("hprebn = embcat·W1+b1", 2.0 * n * K * H, () => Linear.Forward(embcat, W1, b1, hprebn, n, K, H));
        T("bn+tanh fwd", 0, () => BatchNorm.ForwardTanh(hprebn, p.bngain, p.bnbias, st.AsSpan(0, H), st.AsSpan(H, H), st.AsSpan(2 * H, H), raw, h, n, H, 1e-5f));
        T("logits = h·W2+b2", 2.0 * n * H * V, () => Linear.Forward(h, W2, b2, logits, n, H, V));
        T("cross-entropy", 0, () => CrossEntropy.ForwardBackward(logits, y, dlogits, n, V));
        T("dh = dlogits·W2ᵀ", 2.0 * n * H * V, () => Gemm.NT(dlogits, W2, dh, n, V, H));
        T("dW2 = hᵀ·dlogits", 2.0 * n * H * V, () => Gemm.TN(h, dlogits, dW2, n, H, V));
        var dW2t = new float[W2.Length];
        T("dW2ᵀ = dlogitsᵀ·h (the step's form)", 2.0 * n * H * V, () => Gemm.TN(dlogits, h, dW2t, n, V, H));
        T("bn backward", 0, () => BatchNorm.Backward(dh, h, raw, p.bngain, st.AsSpan(2 * H, H), dhprebn, st.AsSpan(0, H), st.AsSpan(H, H), st.AsSpan(3 * H, H), n, H));
        T("dembcat = dhprebn·W1ᵀ", 2.0 * n * H * K, () => Gemm.NT(dhprebn, W1, dembcat, n, H, K));
        T("dW1 = embcatᵀ·dhprebn", 2.0 * n * H * K, () => Gemm.TN(embcat, dhprebn, dW1, n, K, H));
        T("embedding bwd", 0, () => Embedding.Backward(dembcat, x, p.dC, n, cfg.BlockSize, cfg.EmbeddingSize));
        T("sgd", 0, () => Sgd.Update(p.Data, p.Grad, 0f));
        if (net.Pipelined)
            Console.WriteLine($"(n = {n} takes the row-block pipeline: 'step' and 'forward+backward' time it; the pieces below are the\n" +
                              " whole-matrix functions the pipeline replaces, timed alone, so they do not add up to the step; the\n" +
                              " second table splits the pipelined step itself.)\n");
        Console.WriteLine("| piece | µs | GFLOP/s |\n|---|---|---|");
        foreach (var (name, us, gf) in rows) Console.WriteLine($"| {name} | {us:F2} | {(gf > 0 ? gf.ToString("F1") : "")} |");
        if (net.Pipelined) PipelineParts(net, x, y, sec, n, K, H, V);
        return 0;
    }

    /// <summary>The pipelined step split into its stages, each block stage into its products and its elementwise sweeps.</summary>
    private static void PipelineParts(HpBackprop.Networks.Network net, int[] x, int[] y, double sec, int n, int K, int H, int V)
    {
        var p = new long[(int)RowBlockPipeline.Part.Steps + 1];
        RowBlockPipeline.Profile = p;
        try
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            while (sw.Elapsed.TotalSeconds < Math.Max(sec, 0.3)) net.Step(x, y);
        }
        finally { RowBlockPipeline.Profile = null; }
        double steps = p[(int)RowBlockPipeline.Part.Steps];
        double Us(RowBlockPipeline.Part part) => p[(int)part] * 1e6 / System.Diagnostics.Stopwatch.Frequency / steps;
        double total = 0;
        for (int i = 0; i < (int)RowBlockPipeline.Part.GemmHprebn; i++) total += Us((RowBlockPipeline.Part)i);
        double kh = 2.0 * n * K * H, hv = 2.0 * n * H * V;
        var rows = new List<(string, double, double)>
        {
            ("pack the weights", Us(RowBlockPipeline.Part.Pack), 0),
            ("forward 1: hprebn = embcat·W1ᵀ + b1 (product)", Us(RowBlockPipeline.Part.GemmHprebn), kh),
            ("forward 1: gather embcat, block statistics (sweeps)", Us(RowBlockPipeline.Part.Forward1) - Us(RowBlockPipeline.Part.GemmHprebn), 0),
            ("combine the statistics", Us(RowBlockPipeline.Part.Combine), 0),
            ("forward 2: logits = h·W2ᵀ + b2 (product)", Us(RowBlockPipeline.Part.GemmLogits), hv),
            ("forward 2: cross-entropy", Us(RowBlockPipeline.Part.CrossEntropy), 0),
            ("forward 2: normalise + activation (sweep), running statistics", Us(RowBlockPipeline.Part.Forward2) - Us(RowBlockPipeline.Part.GemmLogits) - Us(RowBlockPipeline.Part.CrossEntropy), 0),
            ("backward 1: dh = dlogits·W2 (product)", Us(RowBlockPipeline.Part.GemmDh), hv),
            ("backward 1: dW2 partials = dlogitsᵀ·h (product)", Us(RowBlockPipeline.Part.GemmDW2), hv),
            ("backward 1: dhpreact and its sums (sweep)", Us(RowBlockPipeline.Part.Backward1) - Us(RowBlockPipeline.Part.GemmDh) - Us(RowBlockPipeline.Part.GemmDW2), 0),
            ("block sums, coefficients", Us(RowBlockPipeline.Part.Sums), 0),
            ("dW2 from the partials, SGD on W2, db2", Us(RowBlockPipeline.Part.FinishW2), 0),
            ("backward 2: dembcat = dhprebn·W1 (product)", Us(RowBlockPipeline.Part.GemmDembcat), kh),
            ("backward 2: dW1 partials (product)", Us(RowBlockPipeline.Part.GemmDW1), kh),
            ("backward 2: dhprebn and its sum (sweep)", Us(RowBlockPipeline.Part.Backward2) - Us(RowBlockPipeline.Part.GemmDembcat) - Us(RowBlockPipeline.Part.GemmDW1), 0),
            ("dW1 from the partials, SGD on W1, db1", Us(RowBlockPipeline.Part.FinishW1), 0),
            ("embedding backward", Us(RowBlockPipeline.Part.EmbeddingBackward), 0),
        };
        Console.WriteLine($"\nThe pipelined step, {steps:F0} steps timed part by part ({total:F1} µs per step with the timers on):\n");
        Console.WriteLine("| part | µs | share | GFLOP/s |\n|---|---|---|---|");
        foreach (var (name, us, flops) in rows)
            Console.WriteLine($"| {name} | {us:F1} | {100 * us / total:F0}% | {(flops > 0 ? (flops / us / 1e3).ToString("F1") : "")} |");
    }

    private static float[] Pinned(int n) => GC.AllocateArray<float>(n, pinned: true);
}
