using System.Runtime.InteropServices;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Model;

namespace HpBackprop.Tests;

/// <summary>docs/makemore.md §1 (corpus, vocabulary, examples, split) and the input errors of the data and bundle readers.</summary>
[TestClass]
public sealed class DataTests
{
    private static string TempFile(string contents)
    {
        string path = Path.Combine(Path.GetTempPath(), "hpbackprop-tests-" + Guid.NewGuid().ToString("N") + ".txt");
        File.WriteAllText(path, contents);
        return path;
    }

    // ---------------------------------------------------------------- corpus

    [TestMethod]
    public void CorpusTrimsWordsAndSkipsBlankLines()
    {
        var c = Corpus.FromLines(["  anna ", "", "bob", "   ", "\tcy"], "mem");
        CollectionAssert.AreEqual(new[] { "anna", "bob", "cy" }, c.Words.ToArray());
        CollectionAssert.AreEqual(new[] { 1, 3, 5 }, c.LineNumbers.ToArray());
        Assert.AreEqual("mem", c.Source);
    }

    [TestMethod]
    public void CorpusLoadReadsOneWordPerLineWithAnyLineEnding()
    {
        string path = TempFile("emma\r\nolivia\n\nava\r\n");
        try
        {
            var c = Corpus.Load(path);
            CollectionAssert.AreEqual(new[] { "emma", "olivia", "ava" }, c.Words.ToArray());
            Assert.AreEqual(path, c.Source);
        }
        finally { File.Delete(path); }
    }

    [TestMethod]
    public void EmptyCorpusIsRejected()
    {
        var e = Assert.ThrowsExactly<CorpusException>(() => Corpus.FromLines([], "empty-source"));
        Assert.Contains("empty-source", e.Message);
        Assert.Contains("empty", e.Message);
        Assert.AreEqual(0, e.Line);
    }

    [TestMethod]
    public void FileOfBlankLinesIsRejected()
    {
        string path = TempFile("\n   \n\t\n\r\n");
        try
        {
            var e = Assert.ThrowsExactly<CorpusException>(() => Corpus.Load(path));
            Assert.Contains(path, e.Message);
            Assert.Contains("empty", e.Message);
        }
        finally { File.Delete(path); }
    }

    [TestMethod]
    public void MissingCorpusFileIsRejectedWithItsPath()
    {
        string path = Path.Combine(Path.GetTempPath(), "no-such-dir-" + Guid.NewGuid().ToString("N"), "names.txt");
        var e = Assert.ThrowsExactly<FileNotFoundException>(() => Corpus.Load(path));
        Assert.Contains(path, e.Message);
        Assert.AreEqual(path, e.FileName);
    }

    [TestMethod]
    public void WordWithBoundaryTokenIsRejectedWithItsLine()
    {
        var e = Assert.ThrowsExactly<CorpusException>(() => Corpus.FromLines(["anna", "", "jo.hn"], "names.txt"));
        Assert.AreEqual(3, e.Line);
        Assert.AreEqual("names.txt", e.Source);
        Assert.StartsWith("names.txt:3: ", e.Message);
        Assert.Contains("jo.hn", e.Message);
        Assert.Contains("'.'", e.Message);
    }

    [TestMethod]
    public void WordWithInnerWhiteSpaceIsRejected()
    {
        var e = Assert.ThrowsExactly<CorpusException>(() => Corpus.FromLines(["anna", "mary ann"], "names.txt"));
        Assert.AreEqual(2, e.Line);
        Assert.Contains("one word per line", e.Message);
    }

    // ---------------------------------------------------------------- vocabulary

    [TestMethod]
    public void VocabularyIsBoundaryThenSortedCharacters()
    {
        var v = Vocabulary.FromCorpus(Corpus.FromLines(["zoe", "Bea", "abe"], "mem"));
        Assert.AreEqual(".Babeoz", v.Characters);      // ordinal order: 'B' (66) before 'a' (97)
        Assert.AreEqual(7, v.Size);
        Assert.AreEqual(0, v.Encode('.'));
        Assert.AreEqual(new System.Text.Rune('.'), v.Decode(0));
        for (int id = 0; id < v.Size; id++) Assert.AreEqual(id, v.Encode(v.Decode(id)));
        Assert.AreEqual(1, v.Encode('B'));
        Assert.AreEqual(6, v.Encode('z'));
        Assert.IsFalse(v.Contains('q'));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => v.Decode(7));
    }

    [TestMethod]
    public void VocabularyOfNamesHas27Ids()
    {
        var v = Vocabulary.FromCorpus(Corpus.FromLines(["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog"], "pangram"));
        Assert.AreEqual(".abcdefghijklmnopqrstuvwxyz", v.Characters);
        Assert.AreEqual(27, v.Size);
    }

    [TestMethod]
    public void VocabularyFromCharactersRoundTripsAndValidates()
    {
        var v = Vocabulary.FromCharacters(".abc");
        Assert.AreEqual(".abc", v.Characters);
        Assert.Contains("boundary", Assert.ThrowsExactly<ArgumentException>(() => Vocabulary.FromCharacters("abc")).Message);
        Assert.Contains("repeat", Assert.ThrowsExactly<ArgumentException>(() => Vocabulary.FromCharacters(".abca")).Message);
    }

    // ---------------------------------------------------------------- examples

    [TestMethod]
    public void EmmaWithBlockSize3GivesTheSpecExamples()
    {
        var corpus = Corpus.FromLines(["emma", "olivia", "ava"], "mem");
        var vocab = Vocabulary.FromCorpus(corpus);
        Assert.AreEqual(".aeilmov", vocab.Characters);
        var d = Dataset.Build(["emma"], vocab, 3);
        //  ... ---> e     ..e ---> m     .em ---> m     emm ---> a     mma ---> .
        int e = 2, m = 5, a = 1;
        Assert.AreEqual(3, d.BlockSize);
        Assert.AreEqual(5, d.Count);
        CollectionAssert.AreEqual(new[] { 0, 0, 0, 0, 0, e, 0, e, m, e, m, m, m, m, a }, d.X);
        CollectionAssert.AreEqual(new[] { e, m, m, a, 0 }, d.Y);
    }

    [TestMethod]
    public void ContextResetsForEachWordAndBlockSize1IsTheBigram()
    {
        var vocab = Vocabulary.FromCharacters(".ab");
        var d = Dataset.Build(["ab", "b"], vocab, 1);
        // "ab": . -> a, a -> b, b -> .   then "b": . -> b, b -> .
        CollectionAssert.AreEqual(new[] { 0, 1, 2, 0, 2 }, d.X);
        CollectionAssert.AreEqual(new[] { 1, 2, 0, 2, 0 }, d.Y);
        var d5 = Dataset.Build(["ab", "b"], vocab, 5);
        CollectionAssert.AreEqual(new[] { 0, 0, 0, 0, 0, /**/ 0, 0, 0, 0, 1, /**/ 0, 0, 0, 1, 2, /**/ 0, 0, 0, 0, 0, /**/ 0, 0, 0, 0, 2 }, d5.X);
    }

    [TestMethod]
    [DataRow(0)]
    [DataRow(-1)]
    public void BlockSizeBelowOneIsRejected(int blockSize)
    {
        var corpus = DeterminismTests.SyntheticCorpus(20, 1);
        var vocab = Vocabulary.FromCorpus(corpus);
        var e1 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Dataset.Build(corpus.Words, vocab, blockSize));
        Assert.AreEqual("blockSize", e1.ParamName);
        Assert.Contains("at least 1", e1.Message);
        var e2 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => DataSplit.Create(corpus, blockSize));
        Assert.AreEqual("blockSize", e2.ParamName);
    }

    [TestMethod]
    public void OutOfVocabularyCharacterAtEvalTimeNamesSourceAndLine()
    {
        var vocab = Vocabulary.FromCorpus(Corpus.FromLines(["abc", "cab"], "train.txt"));
        var e = Assert.ThrowsExactly<CorpusException>(() => Dataset.Build(["abc", "bca", "abz"], vocab, 3, "dev.txt"));
        Assert.AreEqual("dev.txt", e.Source);
        Assert.AreEqual(3, e.Line);
        Assert.StartsWith("dev.txt:3: ", e.Message);
        Assert.Contains("'z'", e.Message);
        Assert.Contains(".abc", e.Message); // names the vocabulary it is not in
    }

    [TestMethod]
    public void OutOfVocabularyCharacterInAFileNamesTheFileLine()
    {
        // Blank lines are skipped by the corpus, but the error must point at the line of the file.
        string path = TempFile("abc\n\n\ncab\nabz\n");
        try
        {
            var vocab = Vocabulary.FromCorpus(Corpus.FromLines(["abc"], "train"));
            var dev = Corpus.Load(path);
            var e = Assert.ThrowsExactly<CorpusException>(() => Dataset.Build(dev, vocab, 3));
            Assert.AreEqual(5, e.Line);
            Assert.StartsWith(path + ":5: ", e.Message);
        }
        finally { File.Delete(path); }
    }

    // ---------------------------------------------------------------- split

    /// <summary>The words of a data set, read back from its examples (each word ends at target 0).</summary>
    private static List<string> Words(Dataset d, Vocabulary v)
    {
        var words = new List<string>();
        var cur = new System.Text.StringBuilder();
        for (int i = 0; i < d.Count; i++)
        {
            if (cur.Length == 0)
                Assert.IsTrue(d.X.AsSpan(i * d.BlockSize, d.BlockSize).IndexOfAnyExcept(0) < 0, $"example {i} starts a word but its context is not all boundary ids");
            if (d.Y[i] == 0) { words.Add(cur.ToString()); cur.Clear(); }
            else cur.Append(v.Decode(d.Y[i]));
        }
        Assert.AreEqual(0, cur.Length, "the last word has no end token");
        return words;
    }

    [TestMethod]
    [DataRow(10, 8, 1, 1)]
    [DataRow(6, 4, 1, 1)]
    [DataRow(100, 80, 10, 10)]
    [DataRow(1001, 800, 100, 101)]
    [DataRow(32033, 25626, 3203, 3204)] // names.txt's size
    public void SplitIs80_10_10OfTheShuffledWords(int count, int train, int dev, int test)
    {
        var corpus = Corpus.FromLines(Enumerable.Range(0, count).Select(Word), "mem");
        var split = DataSplit.Create(corpus, 3, seed: 42);
        var vocab = split.Vocabulary;
        List<string> tr = Words(split.Train, vocab), de = Words(split.Dev, vocab), te = Words(split.Test, vocab);
        Assert.HasCount(train, tr);
        Assert.HasCount(dev, de);
        Assert.HasCount(test, te);
        // a permutation of the corpus: every word exactly once
        CollectionAssert.AreEquivalent(corpus.Words.ToList(), tr.Concat(de).Concat(te).ToList());
        if (count >= 100) CollectionAssert.AreNotEqual(corpus.Words.Take(train).ToList(), tr, "the words were not shuffled");
        // examples per split = characters + one end token per word
        Assert.AreEqual(tr.Sum(w => w.Length + 1), split.Train.Count);
        Assert.AreEqual(3, split.Train.BlockSize);
    }

    /// <summary>A distinct word for each integer (base-26 letters).</summary>
    private static string Word(int i)
    {
        var s = new System.Text.StringBuilder();
        do { s.Insert(0, (char)('a' + i % 26)); i /= 26; } while (i > 0);
        return s.ToString();
    }

    [TestMethod]
    public void SplitIsDeterministicForASeedAndDependsOnIt()
    {
        var corpus = DeterminismTests.SyntheticCorpus(200, 3);
        var a = DataSplit.Create(corpus, 3, seed: 5);
        var b = DataSplit.Create(corpus, 3, seed: 5);
        var c = DataSplit.Create(corpus, 3, seed: 6);
        foreach (var (x, y) in new[] { (a.Train, b.Train), (a.Dev, b.Dev), (a.Test, b.Test) })
        {
            CollectionAssert.AreEqual(x.X, y.X);
            CollectionAssert.AreEqual(x.Y, y.Y);
        }
        CollectionAssert.AreNotEqual(a.Train.Y, c.Train.Y, "seeds 5 and 6 gave the same training split");
        Assert.AreEqual(a.Vocabulary.Characters, c.Vocabulary.Characters);
    }

    [TestMethod]
    [DataRow(1)]
    [DataRow(5)]
    public void CorpusTooSmallForTheSplitsIsRejected(int words)
    {
        var corpus = Corpus.FromLines(Enumerable.Range(0, words).Select(Word), "tiny.txt");
        var e = Assert.ThrowsExactly<CorpusException>(() => DataSplit.Create(corpus, 3));
        Assert.StartsWith("tiny.txt: ", e.Message);
        Assert.Contains($"{words} word(s)", e.Message);
        Assert.Contains("empty", e.Message);
    }

    // ---------------------------------------------------------------- model config

    [TestMethod]
    public void BatchOfOneIsRejectedBecauseItHasNoVariance()
    {
        var config = new ModelConfig(27, BatchSize: 1);
        var e = Assert.ThrowsExactly<ArgumentException>(() => config.Validate());
        Assert.Contains("variance", e.Message);
        Assert.Contains("BatchSize", e.Message);
        Assert.ThrowsExactly<ArgumentException>(() => new ParameterSet(config));
        var p = TestModels.Initialized(new ModelConfig(27, BatchSize: 2), 1);
        var chainError = Assert.ThrowsExactly<ArgumentException>(() =>
            new Reference.ReferenceChain<double>(p.Config, TestModels.ParametersAs<double>(p), [1, 2, 3], [4]));
        Assert.Contains("variance", chainError.Message);
    }

    [TestMethod]
    public void ValidConfigPassesAndOtherBadDimensionsAreNamed()
    {
        Assert.AreEqual(30, new ModelConfig(27).Validate().ContextWidth);
        Assert.Contains("VocabSize", Assert.ThrowsExactly<ArgumentException>(() => new ModelConfig(1).Validate()).Message);
        Assert.Contains("HiddenSize", Assert.ThrowsExactly<ArgumentException>(() => new ModelConfig(27, HiddenSize: 0).Validate()).Message);
        Assert.Contains("Eps", Assert.ThrowsExactly<ArgumentException>(() => new ModelConfig(27, Eps: 0).Validate()).Message);
    }

    // ---------------------------------------------------------------- batch bundles

    private static SafeTensorsFile SeedBundle() => SafeTensorsFile.Read(Oracle.BundlePath("seed", "f32"));

    /// <summary>A copy of <paramref name="src"/> without <paramref name="drop"/>, with tensors replaced by <paramref name="replace"/>.</summary>
    private static SafeTensorsFile Copy(SafeTensorsFile src, string? drop = null, Action<SafeTensorsFile>? replace = null)
    {
        var o = new SafeTensorsFile();
        foreach (var (k, v) in src.Metadata) o.Metadata[k] = v;
        foreach (var t in src.Tensors.Values)
        {
            if (t.Name == drop) continue;
            switch (t.DType)
            {
                case DType.F32: o.Add(t.Name, MemoryMarshal.Cast<byte, float>(t.Data), t.Shape); break;
                case DType.F64: o.Add(t.Name, MemoryMarshal.Cast<byte, double>(t.Data), t.Shape); break;
                case DType.I32: o.Add(t.Name, MemoryMarshal.Cast<byte, int>(t.Data), t.Shape); break;
                case DType.I64: o.Add(t.Name, MemoryMarshal.Cast<byte, long>(t.Data), t.Shape); break;
            }
        }
        replace?.Invoke(o);
        // through the bytes, as a file on disk would be
        return SafeTensorsFile.Parse(o.ToBytes(), "edited-bundle");
    }

    [TestMethod]
    public void UneditedCopyOfTheSeedBundleLoads()
    {
        var b = BatchBundle.From(Copy(SeedBundle()));
        Assert.AreEqual(new ModelConfig(27, 3, 10, 64, 32, 1e-5), b.Config);
        Assert.HasCount(96, b.Xb);
        Assert.AreEqual(DType.F32, b.FloatType);
    }

    public static IEnumerable<object[]> RequiredTensors => new[] { "Xb", "Yb" }.Concat(ParameterSet.Names).Select(n => new object[] { n });

    [TestMethod]
    [DynamicData(nameof(RequiredTensors))]
    public void MissingTensorIsNamed(string name)
    {
        var e = Assert.ThrowsExactly<ShapeException>(() => BatchBundle.From(Copy(SeedBundle(), drop: name)));
        Assert.AreEqual(name, e.Tensor);
        Assert.Contains($"'{name}'", e.Message);
        Assert.Contains("missing", e.Message);
    }

    [TestMethod]
    [DataRow("W2", new[] { 64, 28 }, "[64, 27]")]
    [DataRow("b2", new[] { 26 }, "[27]")]
    [DataRow("bngain", new[] { 1, 65 }, "[1, 64]")]
    [DataRow("b1", new[] { 2, 32 }, "[64]")]
    public void WrongParameterShapeNamesBothShapes(string name, int[] shape, string expected)
    {
        var data = new float[shape.Aggregate(1, (a, b) => a * b)];
        var e = Assert.ThrowsExactly<ShapeException>(() => BatchBundle.From(Copy(SeedBundle(), replace: f => f.Add(name, data, shape))));
        Assert.AreEqual(name, e.Tensor);
        Assert.Contains(ShapeException.Format(shape), e.Message);
        Assert.Contains(expected, e.Message);
    }

    [TestMethod]
    public void WrongW1ShapeNamesTheDimensionsItWasDerivedFrom()
    {
        var e = Assert.ThrowsExactly<ShapeException>(() => BatchBundle.From(Copy(SeedBundle(), replace: f => f.Add("W1", new float[31 * 64], 31, 64))));
        Assert.AreEqual("W1", e.Tensor);
        Assert.Contains("[31, 64]", e.Message);
        Assert.Contains("[30, H]", e.Message);
    }

    [TestMethod]
    public void YbOfTheWrongLengthNamesBothShapes()
    {
        var e = Assert.ThrowsExactly<ShapeException>(() => BatchBundle.From(Copy(SeedBundle(), replace: f => f.Add("Yb", new long[31], 31))));
        Assert.AreEqual("Yb", e.Tensor);
        Assert.Contains("[31]", e.Message);
        Assert.Contains("[32]", e.Message);
    }

    [TestMethod]
    public void FloatIdsAreRejected()
    {
        var e = Assert.ThrowsExactly<ShapeException>(() => BatchBundle.From(Copy(SeedBundle(), replace: f => f.Add("Xb", new float[96], 32, 3))));
        Assert.AreEqual("Xb", e.Tensor);
        Assert.Contains("I32 or I64", e.Message);
    }

    [TestMethod]
    [DataRow("Xb", 27L, "27")]
    [DataRow("Xb", -1L, "-1")]
    [DataRow("Yb", 27L, "27")]
    [DataRow("Yb", -3L, "-3")]
    public void IdOutOfRangeIsRejected(string name, long id, string shown)
    {
        var src = SeedBundle();
        long[] ids = MemoryMarshal.Cast<byte, long>(src[name].Data).ToArray();
        ids[^1] = id;
        var e = Assert.ThrowsExactly<ShapeException>(() => BatchBundle.From(Copy(src, replace: f => f.Add(name, ids, src[name].Shape))));
        Assert.AreEqual(name, e.Tensor);
        Assert.Contains($"id {shown}", e.Message);
        Assert.Contains("[0, 27)", e.Message);
    }

    [TestMethod]
    public void SingleRowBundleIsRejected()
    {
        var e = Assert.ThrowsExactly<ShapeException>(() => BatchBundle.From(Copy(SeedBundle(), replace: f =>
        {
            f.Add("Xb", new long[] { 1, 2, 3 }, 1, 3);
            f.Add("Yb", new long[] { 4 }, 1);
        })));
        Assert.Contains("n = 1", e.Message);
        Assert.Contains("variance", e.Message);
    }
}
