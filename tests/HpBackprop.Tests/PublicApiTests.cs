using System.Reflection;
using System.Runtime.CompilerServices;
using PublicApiGenerator;

namespace HpBackprop.Tests;

/// <summary>
/// The public API of each library package, as C# declarations, is recorded in
/// <c>tests/HpBackprop.Tests/PublicApi/&lt;assembly&gt;.txt</c>: a change to it shows up in review as a
/// change to that file. When the surface changes on purpose, regenerate the files with
/// <c>HPB_ACCEPT_API=1 tests/HpBackprop.Tests/bin/Release/net10.0/HpBackprop.Tests --filter
/// FullyQualifiedName~PublicApiTests</c> after a build, and commit them.
/// </summary>
[TestClass]
public sealed class PublicApiTests
{
    [TestMethod]
    [DataRow("HpBackprop")]
    [DataRow("HpBackprop.Cuda")]
    [DataRow("HpBackprop.Onnx")]
    public void ThePublicApiIsTheRecordedOne(string assembly)
    {
        var asm = assembly switch
        {
            "HpBackprop" => typeof(HpBackprop.Networks.Network).Assembly,
            "HpBackprop.Cuda" => typeof(HpBackprop.Cuda.CudaNetwork).Assembly,
            _ => typeof(HpBackprop.Onnx.OnnxExport).Assembly,
        };
        string api = asm.GeneratePublicApi(new ApiGeneratorOptions { IncludeAssemblyAttributes = false }).ReplaceLineEndings("\n");
        string file = Path.Combine(Path.GetDirectoryName(SourceFile())!, "PublicApi", assembly + ".txt");
        if (Environment.GetEnvironmentVariable("HPB_ACCEPT_API") == "1")
        {
            File.WriteAllText(file, api);
            return;
        }
        Assert.IsTrue(File.Exists(file), $"{file} is missing: run the test with HPB_ACCEPT_API=1 to write it");
        string recorded = File.ReadAllText(file).ReplaceLineEndings("\n");
        if (recorded == api) return;
        string received = Path.ChangeExtension(file, ".received.txt");
        File.WriteAllText(received, api);
        var a = recorded.Split('\n');
        var b = api.Split('\n');
        int i = 0;
        while (i < a.Length && i < b.Length && a[i] == b[i]) i++;
        Assert.Fail($"the public API of {assembly} differs from {file} from line {i + 1}: recorded '{(i < a.Length ? a[i].Trim() : "<end>")}', now '{(i < b.Length ? b[i].Trim() : "<end>")}'. "
            + $"The whole new listing is in {received}; if the change is meant, run the test with HPB_ACCEPT_API=1 and commit the file.");
    }

    private static string SourceFile([CallerFilePath] string path = "") => path;
}
