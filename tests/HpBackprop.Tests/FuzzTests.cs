using System.Buffers.Binary;
using System.Text;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Networks;

namespace HpBackprop.Tests;

/// <summary>
/// Seeded fuzzing of the readers of untrusted files: the safetensors parser, the checkpoint loader and the corpus
/// loader are fed truncations, byte flips, spliced garbage and hand-made malformed headers. Every case must either
/// succeed or end in the exception the reader documents (<see cref="SafeTensorsFormatException"/>,
/// <see cref="CorpusException"/>) — never an IndexOutOfRange, an overflow, an out-of-memory or any other type.
/// The seed and the case number are in every failure message, so a failure replays exactly.
/// </summary>
[TestClass]
public sealed class FuzzTests
{
    private const int Seed = 20261128;

    /// <summary>A small valid checkpoint of a stack with every kind of tensor the loader reads (and its bytes).</summary>
    private static byte[] ValidCheckpoint(string dir)
    {
        var stack = Sequential.Parse("embedding:5x3,flatten,linear:6x4,batchnorm:4,tanh,linear:4x5");
        using var net = Network.Create(stack, new NetworkOptions { BatchSize = 4 });
        net.Initialize(1);
        string path = Path.Combine(dir, "valid.safetensors");
        StackCheckpoint.Save(path, net, Vocabulary.FromCharacters(".abcd"));
        return File.ReadAllBytes(path);
    }

    /// <summary>One mutation of <paramref name="valid"/>: a truncation, 1–8 byte flips, a spliced run of random bytes, or a changed header length.</summary>
    private static byte[] Mutate(byte[] valid, Random r)
    {
        var b = (byte[])valid.Clone();
        switch (r.Next(5))
        {
            case 0: return b[..r.Next(b.Length)];
            case 1:
                for (int k = r.Next(1, 9); k > 0; k--) b[r.Next(b.Length)] ^= (byte)(1 << r.Next(8));
                return b;
            case 2:
                {
                    // flips inside the JSON header, where the parser's decisions are
                    int header = (int)Math.Min(BinaryPrimitives.ReadUInt64LittleEndian(b), (ulong)(b.Length - 8));
                    for (int k = r.Next(1, 4); k > 0; k--) b[8 + r.Next(Math.Max(1, header))] = (byte)r.Next(256);
                    return b;
                }
            case 3:
                {
                    int at = r.Next(b.Length), len = r.Next(1, 64);
                    var junk = new byte[len];
                    r.NextBytes(junk);
                    return [.. b[..at], .. junk, .. b[at..]];
                }
            default:
                BinaryPrimitives.WriteUInt64LittleEndian(b, r.Next(4) switch
                {
                    0 => 0UL,
                    1 => ulong.MaxValue,
                    2 => (ulong)r.Next(b.Length * 2),
                    _ => BinaryPrimitives.ReadUInt64LittleEndian(b) + (ulong)r.Next(-8, 9),
                });
                return b;
        }
    }

    /// <summary>Headers written by hand: wrong JSON types, offsets out of range or overlapping, shapes that overflow, unknown dtypes.</summary>
    public static IEnumerable<object[]> MalformedHeaders() =>
    [
        ["""{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"""],
        ["""{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"""],
        ["""{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,99999999999]}}"""],
        ["""{"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"""],
        ["""{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"""],
        ["""{"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"""],
        ["""{"x":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}}"""],
        ["""{"x":{"dtype":"F32","shape":"1","data_offsets":[0,4]}}"""],
        ["""{"x":{"dtype":"F32","shape":[1]}}"""],
        ["""{"x":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"""],
        ["""{"x":[1,2,3]}"""],
        ["""{"__metadata__":{"a":1}}"""],
        ["""{"__metadata__":"x"}"""],
        ["""[1,2]"""],
        ["""{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"""],
        ["""{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"""],
        ["""{"x":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"""],
        ["{"],
        [""],
    ];

    [TestMethod]
    [DynamicData(nameof(MalformedHeaders))]
    public void AHandMadeMalformedHeaderIsAFormatError(string header)
    {
        var json = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + json.Length + 8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)json.Length);
        json.CopyTo(bytes, 8);
        try
        {
            var f = SafeTensorsFile.Parse(bytes, "hand-made");
            // a header the parser accepts must describe tensors that lie inside the data
            foreach (var (name, t) in f.Tensors) Assert.IsTrue(t.Data.Length <= 8, $"{header}: tensor {name} claims {t.Data.Length} bytes of 8");
        }
        catch (SafeTensorsFormatException e)
        {
            StringAssert.Contains(e.Message, "hand-made");
        }
    }

    [TestMethod]
    public void TwoThousandMutatedFilesEndInAFormatErrorOrLoad()
    {
        using var dir = new TempDir();
        byte[] valid = ValidCheckpoint(dir.Path);
        var r = new Random(Seed);
        int parsed = 0, refused = 0, loaded = 0;
        string path = Path.Combine(dir.Path, "case.safetensors");
        for (int i = 0; i < 2000; i++)
        {
            byte[] bytes = Mutate(valid, r);
            try
            {
                SafeTensorsFile.Parse(bytes, "case");
                parsed++;
            }
            catch (SafeTensorsFormatException) { refused++; }
            catch (Exception e) { Assert.Fail($"seed {Seed}, case {i}: SafeTensorsFile.Parse threw {e.GetType().Name}: {e.Message}"); }
            if (i % 4 != 0) continue; // the full load (compiles a network) for every fourth case
            File.WriteAllBytes(path, bytes);
            try
            {
                using var m = StackCheckpoint.Load(path).Network;
                loaded++;
            }
            catch (SafeTensorsFormatException) { }
            catch (Exception e) { Assert.Fail($"seed {Seed}, case {i}: StackCheckpoint.Load threw {e.GetType().Name}: {e.Message}"); }
        }
        // the mutations must reach both outcomes, or the test proves nothing
        Assert.IsTrue(refused > 500 && parsed > 50, $"parsed {parsed}, refused {refused}");
        Assert.IsTrue(loaded > 0, "no mutated checkpoint loaded (the flips never hit tensor data)");
    }

    [TestMethod]
    public void TwoThousandMutatedCorporaEndInACorpusErrorOrLoad()
    {
        using var dir = new TempDir();
        var valid = Encoding.UTF8.GetBytes("anna\nbob\ncarol\ndaniel\nemma\nfrancisco\nzoë\n🙂smile\n");
        var r = new Random(Seed);
        int ok = 0, refused = 0;
        string path = Path.Combine(dir.Path, "words.txt");
        for (int i = 0; i < 2000; i++)
        {
            File.WriteAllBytes(path, Mutate(valid, r));
            try
            {
                var c = Corpus.Load(path);
                Assert.IsTrue(c.Words.Count > 0, $"case {i}: a corpus without words loaded");
                ok++;
            }
            catch (CorpusException) { refused++; }
            catch (Exception e) { Assert.Fail($"seed {Seed}, case {i}: Corpus.Load threw {e.GetType().Name}: {e.Message}"); }
        }
        Assert.IsTrue(ok > 100 && refused > 100, $"loaded {ok}, refused {refused}");
    }

    /// <summary>A valid examples file: ids <c>x [20,3]</c> and class ids <c>y [20]</c> (I64), or features <c>x [20,3]</c> and BCE targets <c>y [20,2]</c> (F32).</summary>
    private static byte[] ValidExamples(bool ids)
    {
        var r = new Random(Seed);
        var f = new SafeTensorsFile();
        if (ids)
        {
            f.Add("x", Enumerable.Range(0, 60).Select(_ => (long)r.Next(5)).ToArray().AsSpan(), 20, 3);
            f.Add("y", Enumerable.Range(0, 20).Select(_ => (long)r.Next(5)).ToArray().AsSpan(), 20);
        }
        else
        {
            f.Add("x", Enumerable.Range(0, 60).Select(_ => r.NextSingle() * 2 - 1).ToArray().AsSpan(), 20, 3);
            f.Add("y", Enumerable.Range(0, 40).Select(_ => r.NextSingle()).ToArray().AsSpan(), 20, 2);
        }
        return f.ToBytes();
    }

    private static byte[] FlipData(byte[] valid, Random r)
    {
        var b = (byte[])valid.Clone();
        int start = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(b);
        for (int k = r.Next(1, 5); k > 0; k--) b[start + r.Next(b.Length - start)] ^= (byte)(1 << r.Next(8));
        return b;
    }

    [TestMethod]
    public void TwoThousandMutatedExampleFilesEndInAFormatErrorARefusalOrAFiniteLoss()
    {
        // the examples 'eval --data FILE.safetensors' reads: a flipped byte in x used to become an id outside the embedding table
        // (a read of arbitrary memory, or an access violation), or a NaN feature or a target outside [0, 1] (a NaN or negative loss)
        using var dir = new TempDir();
        string wordModel = Path.Combine(dir.Path, "words.safetensors"), bceModel = Path.Combine(dir.Path, "bce.safetensors");
        using (var w = Network.Create(Sequential.Parse("embedding:5x3,flatten,linear:9x4,batchnorm:4,tanh,linear:4x5"), new NetworkOptions { BatchSize = 4 }))
        {
            w.Initialize(1);
            StackCheckpoint.Save(wordModel, w, Vocabulary.FromCharacters(".abcd"));
        }
        using (var b = Network.Create(Sequential.Parse("linear:3x4,relu,linear:4x2"), new NetworkOptions { BatchSize = 4, Loss = LossKind.BceWithLogits }))
        {
            b.Initialize(1);
            StackCheckpoint.Save(bceModel, b, null);
        }
        using var words = StackCheckpoint.Load(wordModel).Network;
        using var bce = StackCheckpoint.Load(bceModel).Network;
        byte[][] valid = [ValidExamples(true), ValidExamples(false)];
        var r = new Random(Seed);
        int badFile = 0, refused = 0, evaluated = 0, cli = 0;
        string path = Path.Combine(dir.Path, "case.safetensors");
        for (int i = 0; i < 2000; i++)
        {
            bool ids = i % 2 == 0;
            // half the cases the general mutations, half flips in the data section (ids, features, targets), past the header
            byte[] bytes = r.Next(2) == 0 ? Mutate(valid[ids ? 0 : 1], r) : FlipData(valid[ids ? 0 : 1], r);
            var net = ids ? words : bce;
            try
            {
                var set = ExampleFile.Read(SafeTensorsFile.Parse(bytes, "case"), "case");
                float loss = net.Evaluate(set);
                // finite inputs may still overflow float in the outputs (a flipped exponent bit gives 1e38): then, and only then, a non-finite loss
                bool huge = set.Features != null && set.Features.Any(v => Math.Abs(v) > 1e18f);
                Assert.IsTrue(float.IsFinite(loss) && loss >= 0 || huge, $"seed {Seed}, case {i}: the loss is {loss}");
                evaluated++;
            }
            catch (SafeTensorsFormatException) { badFile++; }
            catch (ArgumentException) { refused++; }
            catch (Exception e) when (e is not AssertFailedException) { Assert.Fail($"seed {Seed}, case {i}: threw {e.GetType().Name}: {e.Message}"); }
            if (i % 40 != 0) continue;
            // every 40th case through the command too: exit 0 with a loss, 2 naming the file, or 1 for outputs that overflow float
            File.WriteAllBytes(path, bytes);
            var (code, stdout, stderr) = CliRunner.Run("eval", "--model", ids ? wordModel : bceModel, "--data", path);
            Assert.IsTrue(code == 0 && stdout.StartsWith("loss ", StringComparison.Ordinal) || code == 2 && stderr.Contains(path, StringComparison.Ordinal)
                || code == 1 && stderr.Contains("overflow", StringComparison.Ordinal),
                $"seed {Seed}, case {i}: eval exited {code}: {stdout}{stderr}");
            cli++;
        }
        Console.WriteLine($"seed {Seed}: 2000 example files, {badFile} not valid safetensors, {refused} refused by the network, {evaluated} evaluated, {cli} through the command");
        Assert.IsTrue(badFile > 200 && refused > 100 && evaluated > 100, $"{badFile} bad files, {refused} refused, {evaluated} evaluated");
    }
}
