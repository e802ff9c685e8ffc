using System.CommandLine;
using System.Globalization;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Networks;
using HpBackprop.Reference;

namespace HpBackprop.Cli;

/// <summary>
/// <c>hpbackprop check</c>: the exercise-1 table. Against an oracle bundle (<c>--bundle</c>) it
/// compares the reference chain (in the bundle's precision) and, for float32 bundles, the fused
/// backend with PyTorch's tensors. Without one, it compares the fused backend with the reference
/// chain on one minibatch of a corpus and prints a finite-difference line per parameter.
/// With <c>--layers</c> it does the same for any layer stack: the fast path (<see cref="Network"/>, float) against
/// the double reference on one random minibatch, then finite differences of the double reference; on a layer stack (docs/stacks.md)
/// bundle, the reference (bundle precision) and for f32 the fast path against PyTorch's gradients. Every table states
/// its tolerance, derived as in the tests.
/// </summary>
internal static class CheckCommand
{
    private static readonly string[] FusedNames = ["dlogits", "dhprebn", "dC", "dW1", "db1", "dW2", "db2", "dbngain", "dbnbias"];

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var data = new Option<string?>("--data") { Description = "Corpus file (default: the built-in corpus)" };
        var batch = new Option<int>("--batch") { Description = "Minibatch size n", DefaultValueFactory = _ => 32 };
        var hidden = new Option<int>("--hidden") { Description = "Hidden width H", DefaultValueFactory = _ => 64 };
        var embd = new Option<int>("--embd") { Description = "Embedding width E", DefaultValueFactory = _ => 10 };
        var block = new Option<int>("--block") { Description = "Context length B", DefaultValueFactory = _ => 3 };
        var seed = new Option<int>("--seed") { Description = "Seed of parameters and minibatch", DefaultValueFactory = _ => 42 };
        var bundle = new Option<string?>("--bundle") { Description = "Compare with a PyTorch oracle bundle (tests/reference/bundles/*.safetensors, or a stack bundle tests/reference/stacks/*.safetensors) instead" };
        var layers = new Option<string?>("--layers") { Description = "A layer stack (the text form of docs/stacks.md, e.g. linear:4x16,relu,linear:16x1): check the fast path against the double reference on it" };
        var loss = new Option<string>("--loss") { Description = "With --layers: cross_entropy, mse, bce_with_logits or mean", DefaultValueFactory = _ => "cross_entropy" };
        var l2 = new Option<float>("--l2") { Description = "With --layers: the L2 penalty on linear weights", DefaultValueFactory = _ => 0f };
        var device = Backends.DeviceOption();
        var cmd = new Command("check", "Print the gradient table (name | exact | approx | maxdiff): the makemore MLP, a --layers stack, or against a --bundle.") { data, batch, hidden, embd, block, seed, bundle, layers, loss, l2, device };
        cmd.SetAction(pr =>
        {
            string dev = pr.GetValue(device)!;
            void Say(string m) => stderr.WriteLine(m);
            // options that conflict: an error naming both, never one ignored in silence
            Inputs.Exclusive(pr, bundle, "a bundle carries its own stack, batch, parameters and inputs; give one of them.", layers, data, batch, hidden, embd, block, seed, loss, l2);
            Inputs.Exclusive(pr, layers, "the stack gives its own widths; drop the option.", hidden, embd);
            if (!Inputs.Given(pr, layers) && !Inputs.Given(pr, bundle))
                foreach (var o in new Option[] { loss, l2 })
                    if (Inputs.Given(pr, o)) throw new UserErrorException($"{o.Name} needs --layers: the makemore check has its own loss (cross_entropy) and no penalty.");
            foreach (var o in new[] { batch, hidden, embd, block })
                if (pr.GetValue(o) < 1) throw new UserErrorException($"{o.Name} {pr.GetValue(o)}: must be at least 1.");
            string? b = pr.GetValue(bundle);
            if (b != null)
            {
                if (pr.GetValue(layers) != null) throw new UserErrorException("--bundle and --layers: a bundle carries its own stack (metadata layers); give one of them.");
                var file = SafeTensorsFile.Read(b);
                return file.Metadata.ContainsKey("layers") ? StackAgainstBundle(StackBundle.From(file, Path.GetFileName(b)), b, stdout, dev, Say) : AgainstBundle(b, stdout, dev, Say);
            }
            if (pr.GetValue(layers) is { } text)
                return StackAgainstReference(text, pr.GetValue(loss)!, pr.GetValue(l2), pr.GetValue(batch), pr.GetValue(seed), pr.GetValue(data), pr.GetValue(block), stdout, dev, Say);
            int nb = pr.GetValue(batch), B = pr.GetValue(block), E = pr.GetValue(embd), H = pr.GetValue(hidden);
            if (nb < 2) throw new UserErrorException($"--batch {nb}: the makemore network's batch norm needs at least 2 rows: a batch of 1 has no variance.");
            if ((long)B * E > int.MaxValue) throw new UserErrorException($"--block {B} and --embd {E}: the first linear layer takes B·E = {(long)B * E:N0} inputs, more than {int.MaxValue:N0}.");
            var corpus = Program.LoadCorpus(pr.GetValue(data));
            int V = Vocabulary.FromCorpus(corpus).Size;
            // everything the check allocates, counted before any of it is: the examples, the network, the parameter sets and the double chain
            long examples = Dataset.CountExamples(corpus.Words);
            if (examples * B > Array.MaxLength)
                throw new UserErrorException($"--block {B}: the {examples:N0} examples of {Inputs.Clip(corpus.Source)} need {examples * B:N0} context ids, more than .NET's array limit of {Array.MaxLength:N0}.");
            var stack = Sequential.Makemore(V, B, E, H);
            var options = new NetworkOptions { BatchSize = nb };
            TensorShape[] shapes;
            try { shapes = Network.Check(stack, options); }
            catch (ArgumentException e) { throw new UserErrorException(TrainCommand.OptionNames(e.Message)); }
            long P = stack.Parameters().Sum(p => p.Length), K = (long)B * E;
            long chain = 8 * (2 * P + 4 * nb * K + 16L * nb * H + 14L * nb * V);
            Inputs.Budget("this check", "Lower --block, --embd, --hidden or --batch.",
                ("the examples of --block " + B, Dataset.Bytes(examples, B)), ("the network", Network.RequiredBytes(stack, options, shapes, B)),
                ("the parameters in float and double", 16 * P), ("the double reference chain and its finite differences", 2 * chain));
            var split = DataSplit.Create(corpus, B, pr.GetValue(seed));
            var config = new ModelConfig(V, B, E, H, nb).Validate();
            return AgainstChain(config, split.Train, pr.GetValue(seed), stdout, dev, Say);
        });
        return cmd;
    }

    /// <summary>A makemore bundle, or exit 2 naming the option, the file and what is wrong with it (a file that is neither kind of bundle says so).</summary>
    internal static BatchBundle LoadBundle(string path, string option)
    {
        try { return BatchBundle.Load(path); }
        catch (HpBackprop.Model.ShapeException e)
        {
            throw new UserErrorException($"{option} {path}: not a grads bundle: a makemore bundle holds Xb, Yb and the seven parameters, a stack bundle has 'layers' in its metadata; {e.Message}");
        }
    }

    private static int AgainstBundle(string path, TextWriter stdout, string device, Action<string> say)
    {
        var bundle = LoadBundle(path, "--bundle");
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
            using var net = Backends.Makemore(device, p, say);
            Backends.MakemoreForwardBackward(net, p, bundle.Xb, bundle.Yb);
            stdout.WriteLine();
            stdout.Write(ParityTable.Format($"fused network on {net.Device} (float) vs PyTorch autograd (float32):",
                FusedNames.Select(g => ParityTable.Compare(g, f[g].ToDouble(), ToDouble(Fused(net, p, g)), Scale(g)))));
        }
        return Program.Ok;
    }

    private static int AgainstChain(ModelConfig config, Dataset train, int seed, TextWriter stdout, string device, Action<string> say)
    {
        var p = new ParameterSet(config);
        p.Initialize(seed);
        var rng = new NormalRng(seed + 1);
        int n = config.BatchSize, b = config.BlockSize;
        var xb = new int[n * b];
        var yb = new int[n];
        train.DrawBatch(rng, xb, yb);
        using var cpu = Backends.Makemore(device, p, say);
        Backends.MakemoreForwardBackward(cpu, p, xb, yb);
        var parameters = ParameterSet.Names.ToDictionary(k => k, k => ToDouble(p.Value(k).ToArray()));
        var chain = new ReferenceChain<double>(config, parameters, xb, yb);
        stdout.WriteLine($"one minibatch: n={n} B={b} E={config.EmbeddingSize} H={config.HiddenSize} V={config.VocabSize}, seed {seed}");
        stdout.Write(ParityTable.Format($"fused network on {cpu.Device} (float) vs reference chain (double):",
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

    private const string Float32Rule = "tol = 8·max(err_f32, 32·2⁻²⁴)";

    private static string ScaleNote(Sequential stack)
    {
        var nz = StackGrads.NearZero(stack);
        return "relerr = maxdiff / max|double reference|" + (nz.Count == 0 ? "" : $" (near-zero {string.Join(", ", nz)}: / max_c Σ_r |dy[r,c]| of its layer's output gradient)");
    }

    private static int StackAgainstReference(string text, string lossText, float l2, int n, int seed, string? dataPath, int block, TextWriter stdout, string device, Action<string> say)
    {
        Sequential stack;
        try { stack = Sequential.Parse(text); }
        catch (FormatException e) { throw new UserErrorException("--layers: " + e.Message); }
        LossKind loss;
        try { loss = Losses.Parse(lossText); }
        catch (FormatException e) { throw new UserErrorException("--loss: " + e.Message); }
        if (n < 1) throw new UserErrorException($"--batch {n}: must be at least 1.");
        foreach (int i in stack.BatchNormLayers())
            if (n < 2) throw new UserErrorException($"--batch {n}: layer {i} ({stack.Layers[i]}) needs a batch of at least 2 rows: a batch of 1 has no variance.");
        if (!stack.TakesIds && dataPath != null) throw new UserErrorException($"--data: the stack starts with {stack.Layers[0]}, which takes float features (drawn at random); a corpus gives ids for a stack that starts with an embedding.");
        int width = stack.ImpliedInputWidth() ?? block;
        var options = new NetworkOptions { BatchSize = n, Loss = loss, L2 = l2, InputWidth = width, InputGradients = true };
        TensorShape[] shapes;
        try { shapes = Network.Check(stack, options); }
        catch (StackException e) { throw new UserErrorException("--layers: " + e.Message); }
        catch (ArgumentException e) { throw new UserErrorException(e.Message.Replace("NetworkOptions.BatchSize", "--batch").Replace("NetworkOptions.L2", "--l2").Replace(" (Parameter 'o')", "")); }
        int k = shapes[^1].Width;
        {
            // everything the check allocates, counted before any of it is: the network, the inputs and the copies of the
            // parameters, inputs and activations that the float and double references and the table make (about 64 bytes
            // per parameter, 64 per input and 40 per activation, counted from the code)
            long P = stack.Parameters().Sum(p => p.Length), X = stack.TakesIds ? 0 : (long)n * width, A = shapes.Sum(s => (long)n * s.PerRow);
            Inputs.Budget("this check", "Lower the widths of --layers or --batch.",
                ("the network", Network.RequiredBytes(stack, options, shapes, width)), ("the float and double references and their copies", 64 * P + 64 * X + 40 * A));
        }

        // one minibatch: ids (and next characters) from a corpus for a stack on ids, random features otherwise; targets as the loss takes them
        var rng = new NormalRng(seed + 1);
        int[]? ids = null, classes = null;
        float[]? features = null, targets = null;
        string what;
        if (stack.TakesIds)
        {
            var corpus = Program.LoadCorpus(dataPath);
            var split = DataSplit.Create(corpus, width, seed);
            int V = split.Vocabulary.Size;
            if (stack.Layers[0].In != V)
                throw new UserErrorException($"--layers: layer 0 ({stack.Layers[0]}) has {stack.Layers[0].In} ids but the corpus has a vocabulary of {V} ({split.Vocabulary.Characters}).");
            if (loss == LossKind.CrossEntropy && k != V)
                throw new UserErrorException($"--layers: the last layer ({stack.Layers[^1]}) gives {k} outputs but cross_entropy on the corpus predicts one of its {V} characters.");
            ids = new int[n * width];
            var next = new int[n];
            split.Train.DrawBatch(rng, ids, next);
            if (loss == LossKind.CrossEntropy) classes = next;
            what = $"ids [n,{width}] from {corpus.Source}";
        }
        else
        {
            features = new float[n * width];
            for (int i = 0; i < features.Length; i++) features[i] = (float)rng.Next();
            what = $"random features [n,{width}] ~ N(0,1)";
        }
        switch (loss)
        {
            case LossKind.CrossEntropy when classes == null:
                classes = new int[n];
                for (int i = 0; i < n; i++) classes[i] = rng.NextInt(k);
                what += $", random classes in [0,{k})";
                break;
            case LossKind.Mse:
                targets = new float[n * k];
                for (int i = 0; i < targets.Length; i++) targets[i] = (float)rng.Next();
                what += ", targets ~ N(0,1)";
                break;
            case LossKind.BceWithLogits:
                targets = new float[n * k];
                for (int i = 0; i < targets.Length; i++) targets[i] = (float)rng.NextDouble();
                what += ", targets ~ U[0,1)";
                break;
        }

        using var net = Backends.Create(device, stack, options, say);
        net.Initialize(seed);
        var fast = StackGrads.ForwardBackward(net, ids, features, classes, targets);
        var p32 = net.Parameters.Parameters.ToDictionary(s => s.Name, s => net.Parameters.Value(s.Name).ToArray(), StringComparer.Ordinal);
        var p64 = p32.ToDictionary(kv => kv.Key, kv => ToDouble(kv.Value), StringComparer.Ordinal);
        var ref64 = new StackReference<double>(stack, loss, width) { L2 = l2 };
        var in64 = new StackInput<double>(n, ids, features is null ? null : ToDouble(features), classes, targets is null ? null : ToDouble(targets));
        var r64 = ref64.Run(in64, p64);
        var r32 = new StackReference<float>(stack, loss, width) { L2 = l2 }.Run(new StackInput<float>(n, ids, features, classes, targets), p32);

        var truth = StackGrads.Tensors(stack, r64);
        var scales = StackGrads.Scales(stack, r64);
        var errF32 = StackGrads.Errors(StackGrads.Tensors(stack, r32), truth, scales);
        var tol = StackGrads.Float32Tolerances(stack, errF32, againstIndependent: false);
        stdout.WriteLine($"one minibatch: {stack} with {loss.ToText()}{(l2 != 0 ? $", l2 {l2.ToString(CultureInfo.InvariantCulture)}" : "")}, n={n}, {what}; parameters Network.Initialize({seed})");
        stdout.Write(StackGrads.Format(
            $"fast path on {net.Device} (float) vs reference (double), the loss and the gradient of every parameter (state-dict names){(features != null ? ", x" : "")}{(targets != null ? ", y" : "")}:\n"
            + $"  {ScaleNote(stack)}; approx: relerr ≤ {Float32Rule}, err_f32 = the plain-loop float reference's relerr on the same tensor\n"
            + "  (the tests' rule, with the float reference in place of PyTorch float32; a near-zero bias takes the larger of its own and its weight's)",
            StackGrads.Rows(truth, StackGrads.Tensors(stack, fast), scales, tol)));

        stdout.WriteLine();
        stdout.WriteLine("finite differences of the double reference's loss (central, step h = 1e-6·max(1,|p|), up to 8 elements per parameter):");
        double Loss() => double.CreateChecked(ref64.Run(in64, p64).Loss);
        foreach (var spec in stack.Parameters())
        {
            double[] grad = r64.Gradients[spec.Name], p = p64[spec.Name];
            double scale = Math.Max(scales[spec.Name], 1e-300), worst = 0;
            var pick = new NormalRng(seed + spec.Layer * 31 + spec.Name.Length);
            var elements = grad.Length <= 8 ? Enumerable.Range(0, grad.Length).ToArray() : Enumerable.Range(0, 8).Select(_ => pick.NextInt(grad.Length)).Distinct().ToArray();
            foreach (int i in elements)
            {
                double x0 = p[i], h = 1e-6 * Math.Max(1, Math.Abs(x0));
                p[i] = x0 + h;
                double up = Loss();
                p[i] = x0 - h;
                double down = Loss();
                p[i] = x0;
                worst = Math.Max(worst, Math.Abs((up - down) / (2 * h) - grad[i]) / scale);
            }
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {spec.Name,-14} relative error max |fd - analytic| / {(StackGrads.NearZero(stack).Contains(spec.Name) ? "near-zero scale" : "max|grad|")} = {worst:0.00E+00} ({elements.Length} elements)"));
        }
        return Program.Ok;
    }

    private static int StackAgainstBundle(StackBundle b, string path, TextWriter stdout, string device, Action<string> say)
    {
        StackGrads.CheckRows(b);
        var e = b.ReadExpected();
        var stack = b.Stack;
        var r64 = b.ReferenceAs<double>().Run(b.InputAs<double>(), b.ParametersAs<double>(), b.BuffersAs<double>());
        var truth = StackGrads.Tensors(stack, r64);
        var scales = StackGrads.Scales(stack, r64);
        var torch = StackGrads.Tensors(stack, e.Loss, e.Gradients, e.InputGradient, e.TargetGradient);
        stdout.WriteLine($"stack bundle {path}: {stack} with {b.Loss.ToText()}, n={b.N}, {b.Precision}");
        if (b.Precision == DType.F64)
        {
            var tol = truth.ToDictionary(t => t.Name, _ => StackGrads.Float64Tolerance, StringComparer.Ordinal);
            stdout.Write(StackGrads.Format(
                "reference (double) vs PyTorch autograd (float64):\n"
                + $"  {ScaleNote(stack)}; approx: relerr ≤ 1e-10 (double vs double: different summation orders and library functions; the tests' rule)",
                StackGrads.Rows(torch, truth, scales, tol)));
            return Program.Ok;
        }
        // PyTorch float32's own error against the double reference on the same inputs (the truth to 1e-10)
        var errTorch = StackGrads.Errors(torch, truth, scales);
        var tol32 = StackGrads.Float32Tolerances(stack, errTorch, againstIndependent: true);
        string rule = $"  {ScaleNote(stack)}; approx: relerr ≤ {Float32Rule} + err_f32, err_f32 = PyTorch float32's relerr against the double reference\n"
            + "  (the tests' rule err_ours ≤ 8·max(err_f32, 32·2⁻²⁴) against the truth, plus PyTorch's own error since the rows compare with PyTorch)";
        var r32 = b.ReferenceAs<float>().Run(b.InputAs<float>(), b.ParametersAs<float>(), b.BuffersAs<float>());
        stdout.Write(StackGrads.Format("reference (float) vs PyTorch autograd (float32):\n" + rule, StackGrads.Rows(torch, StackGrads.Tensors(stack, r32), scales, tol32)));
        stdout.WriteLine();
        var fast = StackGrads.RunFast(b, (stack, options) => Backends.Create(device, stack, options, say));
        stdout.Write(StackGrads.Format($"fast path on {device} (float) vs PyTorch autograd (float32):\n" + rule, StackGrads.Rows(torch, StackGrads.Tensors(stack, fast), scales, tol32)));
        return Program.Ok;
    }

    private static float[] Fused(Network net, ParameterSet p, string g) => g is "dlogits" or "dhprebn" ? MakemoreView.Intermediate(net, g) : p.Gradient(g[1..]).ToArray();

    private static double[] ToDouble(float[] a) => Array.ConvertAll(a, x => (double)x);

    private static double MaxAbs(double[] a) => a.Length == 0 ? 0 : a.Max(Math.Abs);
}
