using HpBackprop.Cli;

namespace HpBackprop.Tests;

/// <summary>Runs the <c>hpbackprop</c> command in process, capturing its exit code, standard output and standard error.</summary>
internal static class CliRunner
{
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Program.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }
}
