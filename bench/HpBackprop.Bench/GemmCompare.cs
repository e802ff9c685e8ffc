namespace HpBackprop.Bench;

/// <summary><c>gemm [--shapes S,M,L] [--threads 1,2] [--seconds 0.5]</c>: each product of a step, ours vs OpenBLAS, same run.</summary>
public static class GemmCompare
{
    public static int Run(string[] args)
    {
        var shapes = Program.Opt(args, "--shapes", "S,M,L").Split(',');
        var threads = Program.Opt(args, "--threads", "1").Split(',').Select(int.Parse).ToArray();
        double sec = double.Parse(Program.Opt(args, "--seconds", "0.5"), System.Globalization.CultureInfo.InvariantCulture);
        if (!OpenBlas.Available) Console.WriteLine("(libopenblas.so.0 not found: OpenBLAS columns empty; apt-get install libopenblas0-openmp)");
        else Console.WriteLine($"OpenBLAS kernels: {OpenBlas.CoreName}\n");
        Console.WriteLine("| shape | threads | product | M×N×K | ours µs | ours GFLOP/s | OpenBLAS µs | OpenBLAS GFLOP/s | ours / OpenBLAS speed |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var s in shapes)
            foreach (int t in threads)
            {
                using var prods = new Products(Shapes.Get(s), t);
                if (OpenBlas.Available) OpenBlas.SetNumThreads(t);
                foreach (var p in prods.All)
                {
                    // alternate the two sides over five rounds and keep each side's fastest window, so a slow
                    // spell of the shared machine does not land on one side only
                    double ours = double.MaxValue, blas = OpenBlas.Available ? double.MaxValue : double.NaN;
                    for (int round = 0; round < 5; round++)
                    {
                        ours = Math.Min(ours, Program.Time(() => prods.Ours(p), sec / 5).Min);
                        if (OpenBlas.Available) blas = Math.Min(blas, Program.Time(() => prods.Blas(p), sec / 5).Min);
                    }
                    string f = ours < 100 ? "F2" : "F1";
                    Console.WriteLine($"| {s} | {t} | {p.Name} | {p.M}×{p.N}×{p.K} | {ours.ToString(f)} | {p.Flops / ours / 1e3:F1} | {blas.ToString(f)} | {p.Flops / blas / 1e3:F1} | {blas / ours:F2} |");
                }
            }
        return 0;
    }
}
