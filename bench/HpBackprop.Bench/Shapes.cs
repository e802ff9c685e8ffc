using HpBackprop.Cpu;
using HpBackprop.Model;

namespace HpBackprop.Bench;

/// <summary>The three step shapes of the issue (B = 3, V = 27).</summary>
public static class Shapes
{
    public static readonly (string Name, ModelConfig Config)[] All =
    [
        ("S", new ModelConfig(27, 3, 10, 200, 32)),
        ("M", new ModelConfig(27, 3, 24, 512, 256)),
        ("L", new ModelConfig(27, 3, 32, 1024, 4096)),
    ];

    public static ModelConfig Get(string name) => All.First(s => s.Name == name).Config;

    /// <summary>A backend with initialised parameters and one fixed random minibatch.</summary>
    public static (CpuBackend Backend, int[] Xb, int[] Yb) Make(ModelConfig cfg, int threads, int seed = 42)
    {
        var p = new ParameterSet(cfg);
        p.Initialize(seed);
        var r = new Random(seed);
        var x = new int[cfg.BatchSize * cfg.BlockSize];
        var y = new int[cfg.BatchSize];
        for (int i = 0; i < x.Length; i++) x[i] = r.Next(cfg.VocabSize);
        for (int i = 0; i < y.Length; i++) y[i] = r.Next(cfg.VocabSize);
        return (new CpuBackend(p, threads), x, y);
    }
}
