using System.Runtime.InteropServices;

namespace HpBackprop.IO;

/// <summary>
/// Which file a path names, after every symbolic link on the way is resolved: its device and inode (Linux, through
/// <c>statx</c>), so that two names of one file — a link, a linked directory, a hard link, <c>..</c> — compare equal;
/// for a path that does not exist yet, or where <c>statx</c> is not available, the fully resolved path. Also says what
/// kind of file an existing path is, so that an output never replaces a device, a FIFO or a socket.
/// </summary>
internal static partial class FileIdentity
{
    /// <summary>A file's identity: device and inode when it exists, else its resolved path.</summary>
    public readonly record struct Key(ulong Device, ulong Inode, string? Path);

    /// <summary>The identity of <paramref name="path"/>.</summary>
    public static Key Of(string path)
    {
        string resolved = Resolve(path);
        return Stat(resolved) is { } s ? new Key(s.Device, s.Inode, null) : new Key(0, 0, resolved);
    }

    /// <summary>Whether two paths name the same file.</summary>
    public static bool Same(string a, string b)
    {
        try { return Of(a) == Of(b); }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException or NotSupportedException) { return false; }
    }

    /// <summary>What an existing path that is not a regular file or a directory is ("a FIFO", "a character device", …), or null.</summary>
    public static string? SpecialKind(string path)
    {
        if (Stat(Resolve(path)) is not { } s) return null;
        return (s.Mode & 0xF000) switch
        {
            0x1000 => "a FIFO (named pipe)",
            0x2000 => "a character device",
            0x6000 => "a block device",
            0xC000 => "a socket",
            _ => null,   // a regular file (0x8000) or a directory (0x4000)
        };
    }

    /// <summary>
    /// The absolute path with every symbolic link resolved, component by component (links in the folders too); the part
    /// that does not exist is kept as it is. At most 40 links, as the kernel allows.
    /// </summary>
    public static string Resolve(string path)
    {
        string full = System.IO.Path.GetFullPath(path);
        string root = System.IO.Path.GetPathRoot(full) ?? "/";
        var rest = new Queue<string>(full[root.Length..].Split(System.IO.Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries));
        string current = root;
        int hops = 0;
        while (rest.Count > 0)
        {
            string part = rest.Dequeue();
            if (part == ".") continue;
            if (part == "..") { current = System.IO.Path.GetDirectoryName(current) ?? root; continue; }
            string next = System.IO.Path.Combine(current, part);
            FileSystemInfo info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            string? target = info.Exists || info.LinkTarget != null ? info.LinkTarget : null;
            if (target == null) { current = next; continue; }
            if (++hops > 40) throw new IOException($"'{path}': too many levels of symbolic links.");
            string absolute = System.IO.Path.IsPathRooted(target) ? target : System.IO.Path.Combine(current, target);
            string aroot = System.IO.Path.GetPathRoot(absolute) ?? root;
            var parts = new Queue<string>(absolute[aroot.Length..].Split(System.IO.Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries));
            foreach (var p in rest) parts.Enqueue(p);
            rest = parts;
            current = aroot;
        }
        return current;
    }

    private readonly record struct Status(ulong Device, ulong Inode, uint Mode);

    private static bool s_noStatx;

    /// <summary>statx(2) of an existing path (following links), or null where it does not exist or statx is not available.</summary>
    private static unsafe Status? Stat(string path)
    {
        if (!OperatingSystem.IsLinux() || s_noStatx) return null;
        byte* buf = stackalloc byte[256];
        try
        {
            if (statx(-100 /* AT_FDCWD */, path, 0, 0x101 /* STATX_TYPE | STATX_INO */, buf) != 0) return null;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            s_noStatx = true;
            return null;
        }
        uint mode = *(ushort*)(buf + 28);
        ulong ino = *(ulong*)(buf + 32);
        ulong dev = ((ulong)*(uint*)(buf + 136) << 32) | *(uint*)(buf + 140);
        return new Status(dev, ino, mode);
    }

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int statx(int dirfd, string pathname, int flags, uint mask, byte* statxbuf);
}
