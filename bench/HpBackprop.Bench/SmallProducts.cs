using System.Runtime.Intrinsics;
using System.Globalization;
using HpBackprop.Cpu;

namespace HpBackprop.Bench;

/// <summary>
/// <c>small-gemm [--n 32] [--seconds 1] [--variants] [--bn]</c>: the three products of a linear layer (<c>y = x·Wᵀ</c>,
/// <c>dx = dy·W</c>, <c>dW = dyᵀ·x</c> with the SGD epilogue) as <see cref="LinearOp"/> issues them, at the deep stack's
/// small batch, through the general kernel and the small-batch ones (<c>Gemm.SmallN</c> off and on, alternated in one
/// process), in µs (best window) and GFLOP/s. <c>--variants</c> adds the weight gradient without SGD and without its
/// right edge; <c>--bn</c> times the batch norm + tanh sweeps at the same n.
/// </summary>
public static unsafe class SmallProducts
{
    public static int Run(string[] args)
    {
        int n = int.Parse(Program.Opt(args, "--n", "32"), CultureInfo.InvariantCulture);
        double seconds = double.Parse(Program.Opt(args, "--seconds", "1"), CultureInfo.InvariantCulture);
        Console.WriteLine("| in→out | product | µs (best): general → small-batch | GFLOP/s |");
        Console.WriteLine("|---|---|---|---|");
        foreach (var (inF, outF) in new[] { (100, 100), (30, 100), (100, 27) })
        {
            var r = new Random(1);
            float[] R(int len) { var a = GC.AllocateArray<float>(len, pinned: true); for (int i = 0; i < len; i++) a[i] = (float)(r.NextDouble() - 0.5) * 0.01f; return a; }
            float[] x = R(n * inF), w = R(outF * inF), y = R(n * outF), dy = R(n * outF), dx = R(n * inF), dw = R(outF * inF);
            fixed (float* px = x, pw = w, py = y, pdy = dy, pdx = dx, pdw = dw)
            {
                float* X = px, W = pw, Y = py, DY = pdy, DX = pdx, DW = pdw;
                double flops = 2.0 * n * inF * outF;
                void Row(string name, Action a)
                {
                    // the general kernel and the small-batch one alternated, three times each
                    var old = new List<double>(); var neu = new List<double>();
                    for (int k = 0; k < 3; k++)
                    {
                        Gemm.SmallN = false; old.Add(Program.TimeUs(a, seconds / 6));
                        Gemm.SmallN = true; neu.Add(Program.TimeUs(a, seconds / 6));
                    }
                    double o = old.Min(), u = neu.Min();
                    Console.WriteLine($"| {inF}→{outF} | {name} | {o:F2} → {u:F2} ({o / u:F2}x) | {flops / o / 1e3:F1} → {flops / u / 1e3:F1} |");
                }
                Row("y = x·Wᵀ", () => Gemm.Run(new Gemm.Args(n, outF, inF, X, inF, 1, W, 1, inF, Y, outF, null, false), null));
                Row("dx = dy·W", () => Gemm.Run(new Gemm.Args(n, inF, outF, DY, outF, 1, W, inF, 1, DX, inF, null, false), null));
                Row("dW = dyᵀ·x (+SGD)", () => Gemm.Run(new Gemm.Args(outF, inF, n, DY, 1, outF, X, inF, 1, DW, inF, null, false, W, 1e-9f), null));
                if (args.Contains("--variants"))
                {
                    Row("dW = dyᵀ·x (no SGD)", () => Gemm.Run(new Gemm.Args(outF, inF, n, DY, 1, outF, X, inF, 1, DW, inF, null, false), null));
                    int n96 = inF / 32 * 32;
                    if (n96 > 0) Row($"dW[:, :{n96}] (+SGD)", () => Gemm.Run(new Gemm.Args(outF, n96, n, DY, 1, outF, X, inF, 1, DW, inF, null, false, W, 1e-9f), null));
                    int m96 = outF / 8 * 8;
                    if (m96 > 0) Row($"dW[:{m96}, :] (+SGD)", () => Gemm.Run(new Gemm.Args(m96, inF, n, DY, 1, outF, X, inF, 1, DW, inF, null, false, W, 1e-9f), null));
                }
            }
        }
        if (args.Contains("--bn"))
            foreach (int F in new[] { 96, 100, 112 })
            {
                var r = new Random(1);
                float[] R(int len) { var a = GC.AllocateArray<float>(len, pinned: true); for (int i = 0; i < len; i++) a[i] = (float)(r.NextDouble() - 0.5); return a; }
                float[] x = R(n * F), g = R(F), b = R(F), mean = R(F), v = R(F), vi = R(F), raw = R(n * F), h = R(n * F), d = R(n * F), dg = R(F), db = R(F);
                fixed (float* px = x, pg = g, pb = b, pm = mean, pv = v, pvi = vi, praw = raw, ph = h, pd = d, pdg = dg, pdb = db)
                {
                    float* X = px, G = pg, B = pb, M = pm, V = pv, VI = pvi, RAW = praw, H = ph, D = pd, DG = pdg, DB = pdb;
                    double f = Program.TimeUs(() => BatchNorm.Forward512<TanhAct, BatchNorm.Bessel>(X, G, B, M, V, VI, RAW, H, n, F, 1e-5f, 0, F), seconds / 2);
                    double bw = Program.TimeUs(() => BatchNorm.Backward512<TanhAct, BatchNorm.Bessel>(D, H, RAW, G, VI, D, DG, DB, n, F, 0, F), seconds / 2);
                    Console.WriteLine($"| batchnorm+tanh F={F} | forward {f:F2} µs, backward {bw:F2} µs |");
                }
            }
        return 0;
    }
}
