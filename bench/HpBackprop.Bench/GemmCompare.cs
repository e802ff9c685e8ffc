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
                    var ours = Program.Time(() => prods.Ours(p), sec).Min;
                    double blas = OpenBlas.Available ? Program.Time(() => prods.Blas(p), sec).Min : double.NaN;
                    Console.WriteLine($"| {s} | {t} | {p.Name} | {p.M}×{p.N}×{p.K} | {ours:F1} | {p.Flops / ours / 1e3:F1} | {blas:F1} | {p.Flops / blas / 1e3:F1} | {blas / ours:F2} |");
                }
            }
        return 0;
    }
}
