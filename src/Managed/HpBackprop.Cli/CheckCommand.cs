using System.CommandLine;
using HpBackprop.Cpu;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Reference;

namespace HpBackprop.Cli;

/// <summary>
/// <c>hpbackprop check</c>: the exercise-1 table. Against an oracle bundle (<c>--bundle</c>) it
/// compares the reference chain (in the bundle's precision) and, for float32 bundles, the fused
/// backend with PyTorch's tensors. Without one, it compares the fused backend with the reference
/// chain on one minibatch of a corpus and prints a finite-difference line per parameter.
/// </summary>
internal static class CheckCommand
{
    private static readonly string[] FusedNames = ["dlogits", "dhprebn", "dC", "dW1", "db1", "dW2", "db2", "dbngain", "dbnbias"];

    public static Command Create(TextWriter stdout)
    {
        var data = new Option<string?>("--data") { Description = "Corpus file (default: the built-in corpus)" };
        var batch = new Option<int>("--batch") { Description = "Minibatch size n", DefaultValueFactory = _ => 32 };
        var hidden = new Option<int>("--hidden") { Description = "Hidden width H", DefaultValueFactory = _ => 64 };
        var embd = new Option<int>("--embd") { Description = "Embedding width E", DefaultValueFactory = _ => 10 };
        var block = new Option<int>("--block") { Description = "Context length B", DefaultValueFactory = _ => 3 };
        var seed = new Option<int>("--seed") { Description = "Seed of parameters and minibatch", DefaultValueFactory = _ => 42 };
        var bundle = new Option<string?>("--bundle") { Description = "Compare with a PyTorch oracle bundle (tests/reference/bundles/*.safetensors) instead" };
        var cmd = new Command("check", "Print the exercise-1 gradient table (name | exact | approx | maxdiff).") { data, batch, hidden, embd, block, seed, bundle };
        cmd.SetAction(pr =>
        {
            string? b = pr.GetValue(bundle);
            if (b != null) return AgainstBundle(b, stdout);
            var corpus = Program.LoadCorpus(pr.GetValue(data));
            var split = DataSplit.Create(corpus, pr.GetValue(block), pr.GetValue(seed));
            var config = new ModelConfig(split.Vocabulary.Size, pr.GetValue(block), pr.GetValue(embd), pr.GetValue(hidden), pr.GetValue(batch)).Validate();
            return AgainstChain(config, split.Train, pr.GetValue(seed), stdout);
        });
        return cmd;
    }

    private static int AgainstBundle(string path, TextWriter stdout)
    {
        var bundle = BatchBundle.Load(path);
        var f = bundle.File;
        double Scale(string g) => MaxAbs(f[ParityTable.ScaleTensorOf(g)].ToDouble());
        IEnumerable<string> names = ReferenceChain<double>.GradientNames;
        var c = bundle.Config;
        stdout.WriteLine($"oracle bundle {path}: n={c.BatchSize} B={c.BlockSize} E={c.EmbeddingSize} H={c.HiddenSize} V={c.VocabSize}, {bundle.FloatType}");
        if (bundle.FloatType == DType.F64)
        {
            var chain = new ReferenceChain<double>(c, bundle.ParametersAs<double>(), bundle.Xb, bundle.Yb);
            stdout.Write(ParityTable.Format("reference chain (double) vs PyTorch autograd (float64):",
                names.Where(f.Contains).Select(g => ParityTable.Compare(g, f[g].ToDouble(), chain[g], Scale(g)))));
        }
        else
        {
            var chain = new ReferenceChain<float>(c, bundle.ParametersAs<float>(), bundle.Xb, bundle.Yb);
            stdout.Write(ParityTable.Format("reference chain (float) vs PyTorch autograd (float32):",
                names.Where(f.Contains).Select(g => ParityTable.Compare(g, f[g].ToDouble(), ToDouble(chain[g]), Scale(g)))));
            var p = new ParameterSet(c);
            bundle.CopyTo(p);
            using var cpu = new CpuBackend(p);
            cpu.ForwardBackward(bundle.Xb, bundle.Yb);
            stdout.WriteLine();
            stdout.Write(ParityTable.Format("fused CPU backend (float) vs PyTorch autograd (float32):",
                FusedNames.Select(g => ParityTable.Compare(g, f[g].ToDouble(), ToDouble(Fused(cpu, p, g)), Scale(g)))));
        }
        return Program.Ok;
    }

    private static int AgainstChain(ModelConfig config, Dataset train, int seed, TextWriter stdout)
    {
        var p = new ParameterSet(config);
        p.Initialize(seed);
        var rng = new NormalRng(seed + 1);
        int n = config.BatchSize, b = config.BlockSize;
        var xb = new int[n * b];
        var yb = new int[n];
        train.DrawBatch(rng, xb, yb);
        using var cpu = new CpuBackend(p);
        cpu.ForwardBackward(xb, yb);
        var parameters = ParameterSet.Names.ToDictionary(k => k, k => ToDouble(p.Value(k).ToArray()));
        var chain = new ReferenceChain<double>(config, parameters, xb, yb);
        stdout.WriteLine($"one minibatch: n={n} B={b} E={config.EmbeddingSize} H={config.HiddenSize} V={config.VocabSize}, seed {seed}");
        stdout.Write(ParityTable.Format("fused CPU backend (float) vs reference chain (double):",
            FusedNames.Select(g => ParityTable.Compare(g, chain[g], ToDouble(Fused(cpu, p, g)), MaxAbs(chain[ParityTable.ScaleTensorOf(g)])))));
        stdout.WriteLine();
        stdout.WriteLine("finite differences (double reference chain, central, step 1e-6, 8 elements per parameter):");
        foreach (string name in ParameterSet.Names)
        {
            double worst = 0;
            double[] grad = chain["d" + name];
            double gscale = Math.Max(MaxAbs(grad), 1e-12);
            var pick = new NormalRng(seed + name.Length);
            for (int t = 0; t < 8; t++)
            {
                int i = pick.NextInt(grad.Length);
                double x0 = parameters[name][i], hstep = 1e-6 * Math.Max(1, Math.Abs(x0));
                parameters[name][i] = x0 + hstep;
                double up = new ReferenceChain<double>(config, parameters, xb, yb).Loss;
                parameters[name][i] = x0 - hstep;
                double down = new ReferenceChain<double>(config, parameters, xb, yb).Loss;
                parameters[name][i] = x0;
                worst = Math.Max(worst, Math.Abs((up - down) / (2 * hstep) - grad[i]) / gscale);
            }
            stdout.WriteLine($"  d{name,-7} max |fd - analytic| / max|d{name}| = {worst:0.00E+00}");
        }
        return Program.Ok;
    }

    private static float[] Fused(CpuBackend cpu, ParameterSet p, string g) => g is "dlogits" or "dhprebn" ? cpu.Intermediate(g).ToArray() : p.Gradient(g[1..]).ToArray();

    private static double[] ToDouble(float[] a) => Array.ConvertAll(a, x => (double)x);

    private static double MaxAbs(double[] a) => a.Length == 0 ? 0 : a.Max(Math.Abs);
}
