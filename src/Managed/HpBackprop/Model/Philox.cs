using System.Runtime.CompilerServices;

namespace HpBackprop.Model;

/// <summary>
/// Philox4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw ("Parallel random numbers: as easy as
/// 1, 2, 3", SC'11): a pure function of a 128-bit counter and a 64-bit key, ten rounds of two 32×32→64-bit
/// multiplications whose halves are mixed with the other words and the key (the key bumped by the Weyl constants
/// between rounds). Being a function, not a stream, it gives the same numbers on every thread, every device and in
/// every order, which is what the dropout masks need. The CUDA kernels compute the same function (native/kernels/philox.cuh).
/// </summary>
internal static class Philox
{
    private const uint M0 = 0xD2511F53, M1 = 0xCD9E8D57, W0 = 0x9E3779B9, W1 = 0xBB67AE85;

    /// <summary>The four 32-bit outputs for counter (c0..c3) and key (k0, k1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (uint, uint, uint, uint) Block(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1)
    {
        for (int round = 0; round < 10; round++)
        {
            if (round > 0) { k0 += W0; k1 += W1; }
            ulong p0 = (ulong)M0 * c0, p1 = (ulong)M1 * c2;
            uint hi0 = (uint)(p0 >> 32), lo0 = (uint)p0, hi1 = (uint)(p1 >> 32), lo1 = (uint)p1;
            (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);
        }
        return (c0, c1, c2, c3);
    }
}

/// <summary>
/// The mask of a <c>dropout:P</c> layer (docs/stacks.md): element <c>i</c> (flat index into the layer's <c>[n, width]</c>
/// output) of layer <c>layer</c> at optimiser step <c>step</c> under seed <c>seed</c> is kept when word <c>i mod 4</c> of
/// <c>Philox4x32-10(counter = (i/4, 0, step_lo, step_hi), key = (seed, layer))</c> is at least
/// <see cref="Threshold"/>(P) (so P(dropped) = P to 2⁻³²); kept elements are scaled by <see cref="Scale"/>(P) = 1/(1−P).
/// The CPU, the GPU and the PyTorch oracle draw the same mask for the same key.
/// </summary>
internal static class DropoutMask
{
    /// <summary><c>round(P·2³²)</c>, at most 2³²−1: an element is kept when its word is at least this.</summary>
    public static uint Threshold(float p) => (uint)Math.Min(uint.MaxValue, Math.Round((double)p * 4294967296.0));

    /// <summary><c>1/(1−P)</c> in float, the factor of the kept elements.</summary>
    public static float Scale(float p) => (float)(1.0 / (1.0 - p));

    /// <summary>Writes the mask of elements <c>[0, keep.Length)</c> (1 kept, 0 dropped).</summary>
    public static void Fill(Span<byte> keep, uint seed, int layer, long step, float p)
    {
        uint threshold = Threshold(p), lo = (uint)step, hi = (uint)((ulong)step >> 32);
        for (int g = 0; g * 4 < keep.Length; g++)
        {
            var (a, b, c, d) = Philox.Block((uint)g, 0, lo, hi, seed, (uint)layer);
            int i = g * 4;
            keep[i] = a >= threshold ? (byte)1 : (byte)0;
            if (i + 1 < keep.Length) keep[i + 1] = b >= threshold ? (byte)1 : (byte)0;
            if (i + 2 < keep.Length) keep[i + 2] = c >= threshold ? (byte)1 : (byte)0;
            if (i + 3 < keep.Length) keep[i + 3] = d >= threshold ? (byte)1 : (byte)0;
        }
    }
}

/// <summary>
/// The minibatch of a training step, drawn uniformly with replacement as a function of (seed, step, row): row <c>r</c> of the
/// minibatch of optimiser step <c>t</c> is example <c>⌊w·count / 2³²⌋</c> of the set, where <c>w</c> is word <c>r mod 4</c> of
/// <c>Philox4x32-10(counter = (r/4, 1, t_lo, t_hi), key = (seed, 0xFFFFFFFF))</c> (the counter's second word and the key's
/// second word keep it apart from every dropout mask). Being a function, not a stream, it gives the CPU and the GPU (the
/// step_begin kernel, native/kernels/optimizer.cu) the same rows, and a resumed run the rows it would have drawn. The bias of
/// the multiply-shift is below <c>count / 2³²</c> per example.
/// </summary>
internal static class MinibatchDraw
{
    /// <summary>The key's second word.</summary>
    public const uint KeyHigh = 0xFFFFFFFF;

    /// <summary>The example of word <paramref name="w"/> among <paramref name="count"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Pick(uint w, int count) => (int)(((ulong)w * (uint)count) >> 32);

    /// <summary>Calls <paramref name="take"/>(r, example) for each row r in [0, <paramref name="rows"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Rows<T>(ref T take, int rows, uint seed, long step, int count) where T : struct, IRowSink, allows ref struct
    {
        uint lo = (uint)step, hi = (uint)((ulong)step >> 32);
        for (int g = 0; g * 4 < rows; g++)
        {
            var (a, b, c, d) = Philox.Block((uint)g, 1, lo, hi, seed, KeyHigh);
            int r = g * 4;
            take.Take(r, Pick(a, count));
            if (r + 1 < rows) take.Take(r + 1, Pick(b, count));
            if (r + 2 < rows) take.Take(r + 2, Pick(c, count));
            if (r + 3 < rows) take.Take(r + 3, Pick(d, count));
        }
    }

    /// <summary>What a draw does with each row.</summary>
    public interface IRowSink
    {
        /// <summary>Minibatch row <paramref name="r"/> is example <paramref name="example"/>.</summary>
        void Take(int r, int example);
    }
}
