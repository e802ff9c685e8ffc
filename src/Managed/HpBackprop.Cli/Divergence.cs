using System.Globalization;
using HpBackprop.Networks;

namespace HpBackprop.Cli;

/// <summary>
/// The rule that calls a finite loss diverged (a NaN or infinite one stops training at once): the loss above
/// <see cref="Factor"/> times its first value at every one of the last <see cref="Window"/> steps (all steps but the first
/// in a shorter run). A cross-entropy run starts near ln V and never stays ten times above it while it learns; at
/// <c>--lr 1e6</c> it sits in the millions. Checked at least every thousand steps, before every checkpoint and at the end,
/// so a diverged run exits 1 and writes nothing over an earlier model.
/// </summary>
internal static class Divergence
{
    /// <summary>How many times the first step's loss counts as exploded.</summary>
    public const float Factor = 10f;

    /// <summary>The steps that must all be above it.</summary>
    public const int Window = 100;

    /// <summary>Throws <see cref="DivergedException"/> when the last steps of <paramref name="run"/> meet the rule.</summary>
    public static void Check(TrainingRun run, float learningRate, string? outPath)
    {
        int done = run.Completed;
        if (done < 2) return;
        float first = run.Losses[0];
        if (!(first > 0) || !float.IsFinite(first)) return;
        int k = Math.Min(Window, done - 1);
        for (int s = done - k; s < done; s++)
            if (!(run.Losses[s] > Factor * first)) return;
        throw new DivergedException(string.Create(CultureInfo.InvariantCulture,
            $"training diverged: the loss stayed above ten times its first value ({first:G5} at step 1) for the last {k:N0} steps, up to step {done:N0} (loss {run.Losses[done - 1]:G5}, learning rate {learningRate:G5}); lower --lr and start again. {(outPath != null ? $"Nothing was written to {outPath}." : "Nothing was saved.")}"));
    }
}

/// <summary>A finite loss exploded (see <see cref="Divergence"/>): exit code 1, nothing saved.</summary>
internal sealed class DivergedException(string message) : Exception(message);
