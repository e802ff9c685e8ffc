namespace HpBackprop.Tests;

/// <summary>A fresh directory removed on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir() => Directory.CreateDirectory(Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "hpb-" + Guid.NewGuid().ToString("N")[..10]));

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }

    /// <summary>A small corpus of made-up names (no data file needed).</summary>
    public static IEnumerable<string> SyntheticWords(int count, int seed)
    {
        var rng = new Random(seed);
        const string cons = "bcdfghjklmnprstvz", vow = "aeiouy";
        for (int i = 0; i < count; i++)
        {
            int syl = 1 + rng.Next(3);
            var w = new System.Text.StringBuilder();
            for (int s = 0; s < syl; s++) { w.Append(cons[rng.Next(cons.Length)]); w.Append(vow[rng.Next(vow.Length)]); }
            if (rng.Next(2) == 0) w.Append(cons[rng.Next(cons.Length)]);
            yield return w.ToString();
        }
    }
}
