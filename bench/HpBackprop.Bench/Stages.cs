using HpBackprop.Cpu;
using HpBackprop.IO;
using HpBackprop.Model;

namespace HpBackprop.Bench;

/// <summary>
/// <c>stages --shape S</c>: µs of the makemore network's step, and of each whole-matrix kernel of the step in the makemore layout
/// (W1 [K,H], W2 [H,V]) on the step's own buffers, to see where the time goes (<c>stack-stages</c> times the network's ops).
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
                              " whole-matrix functions the pipeline replaces, timed alone, so they do not add up to the step.)\n");
        Console.WriteLine("| piece | µs | GFLOP/s |\n|---|---|---|");
        foreach (var (name, us, gf) in rows) Console.WriteLine($"| {name} | {us:F2} | {(gf > 0 ? gf.ToString("F1") : "")} |");
        return 0;
    }

    private static float[] Pinned(int n) => GC.AllocateArray<float>(n, pinned: true);
}
