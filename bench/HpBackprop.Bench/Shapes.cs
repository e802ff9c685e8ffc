using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Networks;

namespace HpBackprop.Bench;

/// <summary>The three step shapes of the issue (B = 3, V = 27).</summary>
internal static class Shapes
{
    public static readonly (string Name, ModelConfig Config)[] All =
    [
        ("S", new ModelConfig(27, 3, 10, 200, 32)),
        ("M", new ModelConfig(27, 3, 24, 512, 256)),
        ("L", new ModelConfig(27, 3, 32, 1024, 4096)),
    ];

    public static ModelConfig Get(string name) => All.First(s => s.Name == name).Config;

    /// <summary>
    /// The makemore stack compiled as the CPU network (plain SGD at lr 0.01, fused into the weight-gradient products;
    /// the row-block pipeline from n = 256 on AVX-512) with makemore-initialised (§2) parameters, and one fixed random minibatch.
    /// </summary>
    public static (Network Net, int[] Xb, int[] Yb) Make(ModelConfig cfg, int threads, int seed = 42)
    {
        var p = new ParameterSet(cfg);
        p.Initialize(seed);
        var r = new Random(seed);
        var x = new int[cfg.BatchSize * cfg.BlockSize];
        var y = new int[cfg.BatchSize];
        for (int i = 0; i < x.Length; i++) x[i] = r.Next(cfg.VocabSize);
        for (int i = 0; i < y.Length; i++) y[i] = r.Next(cfg.VocabSize);
        var options = new NetworkOptions { BatchSize = cfg.BatchSize, Threads = threads, Optimizer = new Sgd { LearningRate = 0.01f } };
        return (StackCheckpoint.FromParameterSet(p, options), x, y);
    }
}
