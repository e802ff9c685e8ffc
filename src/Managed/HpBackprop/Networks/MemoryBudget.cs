namespace HpBackprop.Networks;

/// <summary>
/// The memory this process can use, which every size check compares its 64-bit byte count with before anything is
/// allocated: the GC's limit (physical memory, a container's limit or <c>DOTNET_GCHeapHardLimit</c>), and on Linux no
/// more than the memory the kernel reports available now plus what this process already holds.
/// </summary>
internal static class MemoryBudget
{
    private static readonly AsyncLocal<long?> s_limit = new();

    /// <summary>The bytes this process can use now (or the limit set by <see cref="Limit"/> on this flow, for tests).</summary>
    public static long Available
    {
        get
        {
            if (s_limit.Value is long set) return set;
            long total = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
            long now = AvailableNow();
            return now > 0 ? Math.Min(total, now + Environment.WorkingSet) : total;
        }
    }

    /// <summary>Sets the budget for the calling flow (async-local, so tests running in parallel do not see it) until disposed.</summary>
    internal static IDisposable Limit(long bytes)
    {
        var before = s_limit.Value;
        s_limit.Value = bytes;
        return new Restore(before);
    }

    private sealed class Restore(long? before) : IDisposable
    {
        public void Dispose() => s_limit.Value = before;
    }

    /// <summary>MemAvailable of /proc/meminfo in bytes, or 0 where there is none.</summary>
    private static long AvailableNow()
    {
        if (!OperatingSystem.IsLinux()) return 0;
        try
        {
            foreach (string line in File.ReadLines("/proc/meminfo"))
            {
                if (!line.StartsWith("MemAvailable:", StringComparison.Ordinal)) continue;
                var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return parts.Length >= 2 && long.TryParse(parts[1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long kb) ? kb * 1024 : 0;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return 0;
    }
}
