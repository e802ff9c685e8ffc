using System.Text;
using HpBackprop.Cli;
using HpBackprop.Data;

namespace HpBackprop.Tests;

/// <summary>Issue #13: the vocabulary is built over Unicode scalar values, so any valid text trains, saves, loads and samples.</summary>
[TestClass]
public sealed class UnicodeTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => CliRunner.Run(args);

    [TestMethod]
    public void ACorpusWithEmojiTrainsSavesLoadsAndSamplesWholeCharacters()
    {
        using var dir = new TempDir();
        string data = dir.File("emoji.txt");
        string[] extra = ["😀", "🎉", "𝔸", "é"];
        File.WriteAllLines(data, TempDir.SyntheticWords(200, 3).Select((w, i) => w + extra[i % extra.Length]), new UTF8Encoding(false));
        var (c1, o1, e1) = Run("train", "--data", data, "--steps", "200", "--hidden", "16", "--samples", "0", "--out", dir.File("m.safetensors"));
        Assert.AreEqual(0, c1, e1);
        StringAssert.Contains(o1, "😀");
        var (c2, words, e2) = Run("sample", "--model", dir.File("m.safetensors"), "-n", "200", "--seed", "1", "--temperature", "3");
        Assert.AreEqual(0, c2, e2);
        Assert.IsFalse(words.Contains('\uFFFD'), "no replacement character");
        Assert.IsTrue(words.EnumerateRunes().All(r => r.Value != 0xFFFD), words);
        Assert.IsTrue(words.Contains("😀") || words.Contains("🎉") || words.Contains("𝔸"), "the emoji are sampled whole: " + words);
    }

    [TestMethod]
    public void TheVocabularyCountsScalarValuesAndRejectsLoneSurrogates()
    {
        var v = Vocabulary.FromCorpus(Corpus.FromLines(["a😀", "b😀a"], "t"));
        Assert.AreEqual(4, v.Size);
        Assert.AreEqual(".ab😀", v.Characters);
        Assert.AreEqual(".ab😀", Vocabulary.FromCharacters(v.Characters).Characters);
        var e = Assert.ThrowsExactly<ArgumentException>(() => Vocabulary.FromCharacters(".a\uD83D"));
        StringAssert.Contains(e.Message, "lone surrogate");
        var c = Assert.ThrowsExactly<CorpusException>(() => Corpus.FromLines(["ab", "a\uDE00b"], "t"));
        StringAssert.Contains(c.Message, "t:2:");
    }

    [TestMethod]
    public void InvalidUtf8InACorpusIsAnErrorNamingTheLine()
    {
        using var dir = new TempDir();
        string data = dir.File("bad.txt");
        var bytes = new List<byte>();
        for (int i = 0; i < 5000; i++) bytes.AddRange("word\n"u8.ToArray());
        bytes.AddRange([(byte)'a', 0xC3, 0x28, (byte)'\n']);
        File.WriteAllBytes(data, bytes.ToArray());
        var e = Assert.ThrowsExactly<CorpusException>(() => Corpus.Load(data));
        Assert.AreEqual(5001, e.Line, e.Message);
        StringAssert.Contains(e.Message, "UTF-8");
        var (code, _, err) = Run("train", "--data", data, "--steps", "5");
        Assert.AreEqual(2, code, err);
        StringAssert.Contains(err, data + ":5001:");
    }
}
