using System.CommandLine;
using HpBackprop.Cuda;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Training;

namespace HpBackprop.Cli;

/// <summary>The <c>hpbackprop</c> command: train, sample, check, grads.</summary>
public static class Program
{
    /// <summary>Exit code for success.</summary>
    public const int Ok = 0;
    /// <summary>Exit code for a failure that is not the user's input.</summary>
    public const int Failure = 1;
    /// <summary>Exit code for bad arguments or input.</summary>
    public const int BadInput = 2;

    /// <summary>Entry point.</summary>
    public static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    /// <summary>Runs the command with the given streams (for tests).</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var root = new RootCommand("HpBackprop: the makemore MLP trained with hand-derived, fused backward passes.");
        root.Subcommands.Add(TrainCommand.Create(stdout, stderr));
        root.Subcommands.Add(SampleCommand.Create(stdout));
        root.Subcommands.Add(CheckCommand.Create(stdout));
        root.Subcommands.Add(GradsCommand.Create(stdout, stderr));
        root.Subcommands.Add(EvalCommand.Create(stdout));
        ParseResult parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (var e in parsed.Errors) stderr.WriteLine("error: " + e.Message);
            stderr.WriteLine("Run 'hpbackprop --help' (or '<command> --help') for usage.");
            return BadInput;
        }
        try
        {
            return parsed.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false });
        }
        catch (Exception e) when (IsUserError(e))
        {
            stderr.WriteLine("error: " + TrainCommand.OptionNames(e.Message));
            return BadInput;
        }
        catch (TrainingDivergedException e)
        {
            stderr.WriteLine("error: " + TrainCommand.OptionNames(e.Message));
            return Failure;
        }
        catch (Exception e)
        {
            stderr.WriteLine("error: " + TrainCommand.OptionNames(e.Message));
            if (Environment.GetEnvironmentVariable("HPBACKPROP_DEBUG") == "1") stderr.WriteLine(e);
            return Failure;
        }
    }

    private static bool IsUserError(Exception e) => e is UserErrorException or CorpusException or FileNotFoundException or DirectoryNotFoundException
        or SafeTensorsFormatException or ShapeException or CudaUnavailableException or ArgumentException or UnauthorizedAccessException;

    internal static Corpus LoadCorpus(string? path) => path is null ? DefaultCorpus.Load() : Corpus.Load(path);
}
