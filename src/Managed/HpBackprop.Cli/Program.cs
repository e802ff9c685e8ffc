using System.CommandLine;
using System.Runtime.InteropServices;
using HpBackprop.Cuda;
using HpBackprop.Data;
using HpBackprop.IO;
using HpBackprop.Model;
using HpBackprop.Training;

namespace HpBackprop.Cli;

/// <summary>The <c>hpbackprop</c> command: train, sample, eval, check, grads, export.</summary>
public static class Program
{
    /// <summary>Exit code for success.</summary>
    public const int Ok = 0;
    /// <summary>Exit code for a failure that is not the user's input.</summary>
    public const int Failure = 1;
    /// <summary>Exit code for bad arguments or input.</summary>
    public const int BadInput = 2;

    /// <summary>Exit code after an interrupt (Ctrl-C, SIGINT): 128 + 2.</summary>
    public const int Interrupted = 130;
    /// <summary>Exit code after SIGTERM: 128 + 15.</summary>
    public const int Terminated = 143;

    /// <summary>Entry point. Ctrl-C or SIGTERM during training stops it at the end of the step and saves the run (with --out); a second one ends the process.</summary>
    public static int Main(string[] args)
    {
        using var cts = new CancellationTokenSource();
        var stop = new StopRequest(cts.Token);
        void Handle(PosixSignalContext c, int code)
        {
            if (!stop.Honoured || cts.IsCancellationRequested) return;   // nothing to stop cleanly, or a second signal: the default (end now)
            c.Cancel = true;
            stop.ExitCode = code;
            cts.Cancel();
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => Handle(c, Interrupted));
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => Handle(c, Terminated));
        return Run(args, Console.Out, Console.Error, stop);
    }

    /// <summary>Runs the command with the given streams (for tests).</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr) => Run(args, stdout, stderr, CancellationToken.None);

    /// <summary>
    /// Runs the command with the given streams; cancelling <paramref name="cancellationToken"/> acts as Ctrl-C does
    /// (training stops at the end of the step, saves the run when --out is given, and the exit code is 130).
    /// </summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken) =>
        Run(args, stdout, stderr, new StopRequest(cancellationToken));

    private static int Run(string[] args, TextWriter stdout, TextWriter stderr, StopRequest stop)
    {
        var root = new RootCommand("HpBackprop: small neural networks (the makemore MLP, any layer stack) trained with hand-derived, fused backward passes on word lists and tables.");
        root.Subcommands.Add(TrainCommand.Create(stdout, stderr, stop));
        root.Subcommands.Add(SampleCommand.Create(stdout, stderr));
        root.Subcommands.Add(CheckCommand.Create(stdout, stderr));
        root.Subcommands.Add(GradsCommand.Create(stdout, stderr));
        root.Subcommands.Add(EvalCommand.Create(stdout, stderr));
        root.Subcommands.Add(ExportCommand.Create(stdout, stderr));
        root.Subcommands.Add(PredictCommand.Create(stdout, stderr));
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

    private static bool IsUserError(Exception e) => e is UserErrorException or CorpusException or TableException or FileNotFoundException or DirectoryNotFoundException
        or SafeTensorsFormatException or ShapeException or CudaUnavailableException or ArgumentException or UnauthorizedAccessException;

    internal static Corpus LoadCorpus(string? path) => path is null ? DefaultCorpus.Load() : Corpus.Load(path);
}

/// <summary>A request to stop at the end of the current step, and the exit code to report (130 for SIGINT, 143 for SIGTERM).</summary>
internal sealed class StopRequest(CancellationToken token)
{
    public CancellationToken Token { get; } = token;
    public volatile int ExitCode = Program.Interrupted;
    /// <summary>Whether a command that stops cleanly is running (otherwise a signal ends the process as usual).</summary>
    public volatile bool Honoured;
}
