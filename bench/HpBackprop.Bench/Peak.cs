using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace HpBackprop.Bench;

/// <summary>
/// <c>peak [--seconds 4]</c>: one core's single-precision FMA throughput, the roof the GFLOP/s figures are read
/// against. Twelve independent chains of fused multiply-adds per loop iteration (more than FMA latency × ports,
/// so the units never wait; the JIT keeps all twelve in registers), best of up to 20 runs, for 512- and 256-bit
/// vectors. The host's turbo clock varies, so short bursts elsewhere can run somewhat above this figure.
/// </summary>
public static class Peak
{
    private const long Iterations = 20_000_000;

    public static int Run(string[] args)
    {
        double seconds = double.Parse(Program.Opt(args, "--seconds", "4"), System.Globalization.CultureInfo.InvariantCulture);
        Console.WriteLine($"one core, 512-bit FMA: {Best(Fma512, 16, seconds):F1} GFLOP/s");
        Console.WriteLine($"one core, 256-bit FMA: {Best(Fma256, 8, seconds):F1} GFLOP/s");
        return 0;
    }

    private static double Best(Func<long, float> kernel, int lanes, double seconds)
    {
        float sink = kernel(Iterations / 10);
        double best = 0;
        var total = Stopwatch.StartNew();
        for (int r = 0; r < 20 && total.Elapsed.TotalSeconds < seconds; r++)
        {
            var sw = Stopwatch.StartNew();
            sink += kernel(Iterations);
            best = Math.Max(best, Iterations * 12.0 * 2 * lanes / sw.Elapsed.TotalSeconds / 1e9);
        }
        GC.KeepAlive(sink);
        return best;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Fma512(long n)
    {
        var x = Vector512.Create(0.999f); var y = Vector512.Create(0.001f);
        Vector512<float> a0 = Vector512.Create(0f), a1 = Vector512.Create(1f), a2 = Vector512.Create(2f), a3 = Vector512.Create(3f),
            a4 = Vector512.Create(4f), a5 = Vector512.Create(5f), a6 = Vector512.Create(6f), a7 = Vector512.Create(7f),
            a8 = Vector512.Create(8f), a9 = Vector512.Create(9f), a10 = Vector512.Create(10f), a11 = Vector512.Create(11f);
        for (long i = 0; i < n; i++)
        {
            a0 = Vector512.FusedMultiplyAdd(a0, x, y); a1 = Vector512.FusedMultiplyAdd(a1, x, y); a2 = Vector512.FusedMultiplyAdd(a2, x, y);
            a3 = Vector512.FusedMultiplyAdd(a3, x, y); a4 = Vector512.FusedMultiplyAdd(a4, x, y); a5 = Vector512.FusedMultiplyAdd(a5, x, y);
            a6 = Vector512.FusedMultiplyAdd(a6, x, y); a7 = Vector512.FusedMultiplyAdd(a7, x, y); a8 = Vector512.FusedMultiplyAdd(a8, x, y);
            a9 = Vector512.FusedMultiplyAdd(a9, x, y); a10 = Vector512.FusedMultiplyAdd(a10, x, y); a11 = Vector512.FusedMultiplyAdd(a11, x, y);
        }
        return Vector512.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Fma256(long n)
    {
        var x = Vector256.Create(0.999f); var y = Vector256.Create(0.001f);
        Vector256<float> a0 = Vector256.Create(0f), a1 = Vector256.Create(1f), a2 = Vector256.Create(2f), a3 = Vector256.Create(3f),
            a4 = Vector256.Create(4f), a5 = Vector256.Create(5f), a6 = Vector256.Create(6f), a7 = Vector256.Create(7f),
            a8 = Vector256.Create(8f), a9 = Vector256.Create(9f), a10 = Vector256.Create(10f), a11 = Vector256.Create(11f);
        for (long i = 0; i < n; i++)
        {
            a0 = Vector256.FusedMultiplyAdd(a0, x, y); a1 = Vector256.FusedMultiplyAdd(a1, x, y); a2 = Vector256.FusedMultiplyAdd(a2, x, y);
            a3 = Vector256.FusedMultiplyAdd(a3, x, y); a4 = Vector256.FusedMultiplyAdd(a4, x, y); a5 = Vector256.FusedMultiplyAdd(a5, x, y);
            a6 = Vector256.FusedMultiplyAdd(a6, x, y); a7 = Vector256.FusedMultiplyAdd(a7, x, y); a8 = Vector256.FusedMultiplyAdd(a8, x, y);
            a9 = Vector256.FusedMultiplyAdd(a9, x, y); a10 = Vector256.FusedMultiplyAdd(a10, x, y); a11 = Vector256.FusedMultiplyAdd(a11, x, y);
        }
        return Vector256.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }
}
