using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace HpBackprop.Cpu;

/// <summary>
/// Softmax cross-entropy straight from logits (exercise 2): one pass per row computes the
/// row's loss and <c>dlogits = (softmax(logits) − onehot(Yb))/n</c>. With AVX-512 a row of
/// 16 ≤ V ≤ 64 logits is held in up to four 16-wide vectors, the last one overlapping the one before
/// (so no row needs a scalar tail); the overlap is masked out of the sum. Other rows of V ≥ W take the same
/// scheme at the machine's vector width W; only rows narrower than one vector are scalar.
/// </summary>
public static unsafe class CrossEntropy
{
    /// <summary>
    /// Returns the mean loss over the <paramref name="n"/> rows and writes <paramref name="dlogits"/>
    /// (which may alias <paramref name="logits"/>; pass an empty span for the loss alone).
    /// </summary>
    public static float ForwardBackward(ReadOnlySpan<float> logits, ReadOnlySpan<int> Yb, Span<float> dlogits, int n, int V)
    {
        KernelArgs.Positive(n, nameof(n)); KernelArgs.Positive(V, nameof(V));
        KernelArgs.Need(logits.Length, (long)n * V, nameof(logits));
        KernelArgs.Need(Yb.Length, n, nameof(Yb));
        if (!dlogits.IsEmpty) KernelArgs.Need(dlogits.Length, (long)n * V, nameof(dlogits));
        for (int i = 0; i < n; i++)
            if ((uint)Yb[i] >= (uint)V) throw new ArgumentOutOfRangeException(nameof(Yb), Yb[i], $"target id at row {i} is outside [0, {V}).");
        double total;
        fixed (float* pl = logits, pd = dlogits)
        fixed (int* py = Yb)
            total = Rows(pl, py, pd, n, V, 1f / n);
        return (float)(total / n);
    }

    /// <summary>
    /// The sum of the losses of <paramref name="rows"/> rows (ids already checked), with <c>d = (softmax − onehot)·invN</c>
    /// when <paramref name="d"/> is not null: the loop a batch's rows, or one block of them, go through.
    /// </summary>
    internal static double Rows(float* logits, int* y, float* d, int rows, int V, float invN)
    {
        double total = 0;
        if (Avx512F.IsSupported && !Gemm.ForceVector256 && V >= 16 && V <= 64)
        {
            for (int i = 0; i < rows; i++) total += Row512(logits + (nint)i * V, d == null ? null : d + (nint)i * V, y[i], V, invN);
        }
        else if (System.Numerics.Vector.IsHardwareAccelerated && V >= System.Numerics.Vector<float>.Count)
        {
            for (int i = 0; i < rows; i++) total += RowVector(logits + (nint)i * V, d == null ? null : d + (nint)i * V, y[i], V, invN);
        }
        else
        {
            for (int i = 0; i < rows; i++) total += RowScalar(logits + (nint)i * V, d == null ? null : d + (nint)i * V, y[i], V, invN);
        }
        return total;
    }

    private static float RowScalar(float* row, float* d, int y, int V, float invN)
    {
        float m = float.NegativeInfinity;
        for (int j = 0; j < V; j++) m = MathF.Max(m, row[j]);
        float target = row[y];
        float sum = 0;
        if (d == null)
        {
            for (int j = 0; j < V; j++) sum += MathF.Exp(row[j] - m);
        }
        else
        {
            for (int j = 0; j < V; j++) { float c = MathF.Exp(row[j] - m); d[j] = c; sum += c; }
            float s = invN / sum;
            for (int j = 0; j < V; j++) d[j] *= s;
            d[y] -= invN;
        }
        return MathF.Log(sum) + m - target;
    }

    /// <summary>
    /// One row of V ≥ W logits at the machine's vector width W (any V: 256-bit with AVX2 or for V &gt; 64 with AVX-512, 128-bit
    /// with SSE or NEON): a max pass, an exp pass that stores <c>exp(x − max)</c> and sums it, and a scaling pass; the last
    /// vector starts at V − W and its lanes already covered are masked out of the sum.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static float RowVector(float* row, float* d, int y, int V, float invN)
    {
        int w = System.Numerics.Vector<float>.Count, last = V - w;
        var vmax = Load(row + last);
        for (int j = 0; j < last; j += w) vmax = System.Numerics.Vector.Max(vmax, Load(row + j));
        float m = float.NegativeInfinity;
        for (int l = 0; l < w; l++) m = MathF.Max(m, vmax[l]);
        float target = row[y];
        var vm = new System.Numerics.Vector<float>(m);
        var tot = System.Numerics.Vector<float>.Zero;
        int j0 = 0;
        for (; j0 < last; j0 += w)
        {
            var e = FastMath.Exp(Load(row + j0) - vm);
            if (d != null) Store(d + j0, e);
            tot += e;
        }
        // the last vector: lanes below j0 − last were summed already
        var el = FastMath.Exp(Load(row + last) - vm);
        var fresh = System.Numerics.Vector.GreaterThanOrEqual(System.Numerics.Vector<int>.Indices, new System.Numerics.Vector<int>(j0 - last));
        tot += System.Numerics.Vector.ConditionalSelect(fresh, el, System.Numerics.Vector<float>.Zero);
        float sum = System.Numerics.Vector.Sum(tot);
        if (d != null)
        {
            var s = new System.Numerics.Vector<float>(invN / sum);
            for (int j = 0; j < j0; j += w) Store(d + j, Load(d + j) * s);
            Store(d + last, el * s);
            d[y] -= invN;
        }
        return MathF.Log(sum) + m - target;
    }

    private static System.Numerics.Vector<float> Load(float* p) => System.Runtime.CompilerServices.Unsafe.ReadUnaligned<System.Numerics.Vector<float>>(p);

    private static void Store(float* p, System.Numerics.Vector<float> v) => System.Runtime.CompilerServices.Unsafe.WriteUnaligned(p, v);

    /// <summary>One row, 16 ≤ V ≤ 64: up to four vectors, the last at V−16.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static float Row512(float* row, float* d, int y, int V, float invN)
    {
        int chunks = (V + 15) / 16;           // 1..4
        int lastStart = V - 16;
        // lanes of the last vector already covered by the previous full vectors
        int covered = (chunks - 1) * 16 - lastStart;
        var lastMask = Vector512.GreaterThanOrEqual(Vector512<int>.Indices, Vector512.Create(covered)).AsSingle();
        var v0 = Vector512.Load(row);
        var v1 = chunks > 2 ? Vector512.Load(row + 16) : v0;
        var v2 = chunks > 3 ? Vector512.Load(row + 32) : v0;
        var vl = Vector512.Load(row + lastStart);
        float target = row[y];
        float m = HMax(Vector512.Max(Vector512.Max(v0, v1), Vector512.Max(v2, vl)));
        var vm = Vector512.Create(m);
        var e0 = FastMath.Exp(v0 - vm);
        var e1 = chunks > 2 ? FastMath.Exp(v1 - vm) : Vector512<float>.Zero;
        var e2 = chunks > 3 ? FastMath.Exp(v2 - vm) : Vector512<float>.Zero;
        var el = FastMath.Exp(vl - vm);
        var tot = (chunks > 1 ? e0 : Vector512<float>.Zero) + e1 + e2 + (el & lastMask);
        float sum = Vector512.Sum(tot);
        if (d != null)
        {
            var s = Vector512.Create(invN / sum);
            (el * s).Store(d + lastStart);
            if (chunks > 1) (e0 * s).Store(d);
            if (chunks > 2) (e1 * s).Store(d + 16);
            if (chunks > 3) (e2 * s).Store(d + 32);
            d[y] -= invN;
        }
        return MathF.Log(sum) + m - target;
    }

    private static float HMax(Vector512<float> v)
    {
        var a = Vector256.Max(v.GetLower(), v.GetUpper());
        var b = Vector128.Max(a.GetLower(), a.GetUpper());
        b = Vector128.Max(b, Vector128.Shuffle(b, Vector128.Create(2, 3, 0, 1)));
        b = Vector128.Max(b, Vector128.Shuffle(b, Vector128.Create(1, 0, 3, 2)));
        return b.ToScalar();
    }
}
