using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;
using HpBackprop.Cli;
using HpBackprop.Training;

namespace HpBackprop.Tests;

/// <summary>
/// The libraries' messages speak the library's language (its types, parameters and properties),
/// never the command line's options; the CLI translates them (<c>TrainCommand.OptionNames</c>).
/// </summary>
[TestClass]
public sealed partial class LibraryMessageTests
{
    [TestMethod]
    public void NoLibraryStringNamesACommandLineOption()
    {
        string root = Path.Combine(Path.GetDirectoryName(SourceFile())!, "..", "..", "src");
        var offenders = new List<string>();
        foreach (string dir in new[] { Path.Combine(root, "Managed", "HpBackprop"), Path.Combine(root, "Cuda", "HpBackprop.Cuda") })
            foreach (string file in Directory.EnumerateFiles(dir, "*.cs", SearchOption.AllDirectories).Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}")))
                foreach (var (line, i) in File.ReadLines(file).Select((l, i) => (l, i)))
                    if (!line.TrimStart().StartsWith("//", StringComparison.Ordinal) && OptionInString().IsMatch(line))
                        offenders.Add($"{Path.GetFileName(file)}:{i + 1}: {line.Trim()}");
        Assert.AreEqual(0, offenders.Count, "library strings that name CLI options:\n" + string.Join("\n", offenders));
    }

    [TestMethod]
    public void TheCommandLineTranslatesTheRemediesIntoItsOptions()
    {
        string diverged = new TrainingDivergedException(3, 0.5f, float.NaN).Message;
        StringAssert.Contains(diverged, "LearningRate");
        StringAssert.Contains(TrainCommand.OptionNames(diverged), "--lr");
        string noGpu = HpBackprop.Cuda.CudaProbe.WhyUnavailable("libcuda-that-is-not-installed.so.1")!;
        StringAssert.Contains(noGpu, "Network.Create");
        StringAssert.Contains(TrainCommand.OptionNames(noGpu), "use --device cpu");
    }

    // a string literal (plain or interpolated) holding "--" and a letter: an option name
    [GeneratedRegex("\"[^\"]*--[a-z][^\"]*\"")]
    private static partial Regex OptionInString();

    private static string SourceFile([CallerFilePath] string path = "") => path;
}
