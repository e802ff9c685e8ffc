using HpBackprop.Cuda.Runtime;
using HpBackprop.Data;
using HpBackprop.Model;
using HpBackprop.Training;

namespace HpBackprop.Cuda;

/// <summary>How the embedding gradient dC is accumulated on the device.</summary>
public enum ScatterMode
{
    /// <summary>Bitwise reproducible: each dC cell summed by one thread in a fixed order (small V) or sort-and-segment (large V).</summary>
    Deterministic,
    /// <summary><c>atomicAdd</c>: fewer passes, but the order of float additions varies from run to run.</summary>
    Atomic,
}

/// <summary>
/// The whole training step on a CUDA device (or on the kernel emulator): gather, cuBLAS GEMMs
/// (row-major through swapped operands), batch norm + tanh, fused cross-entropy, the fused
/// batch-norm backward, bias gradients, embedding scatter and SGD over device-resident flat
/// buffers laid out like <see cref="ParameterSet.Data"/>. A step uploads the minibatch ids once
/// (one copy) and allocates nothing. The public face is <see cref="CudaNetwork"/>, which keeps one
/// of these over a <see cref="ParameterSet"/> and converts to and from the state-dict layout.
/// </summary>
internal sealed unsafe class CudaBackend : ITrainingBackend
{
    /// <summary>Rows per chunk when evaluating or calibrating.</summary>
    public const int EvalChunk = 1024;

    /// <summary>Largest V handled by the one-warp-per-row cross-entropy kernel; larger V uses a block per row.</summary>
    public const int WarpCrossEntropyMaxV = 2048;

    /// <summary>Largest V for the one-thread-per-cell deterministic scatter; larger V sorts the ids.</summary>
    public const int DenseScatterMaxV = 256;

    private readonly IDeviceRuntime _rt;
    private readonly bool _ownsRuntime;
    private readonly int _n, _b, _e, _h, _v, _k;
    private readonly float _eps;
    private readonly ScatterMode _scatter;
    private readonly List<DeviceMemory> _owned = [];
    // device buffers (makemore names)
    private readonly ulong _params, _grads, _runMean, _runVar, _ids, _evIds;
    private readonly ulong embcat, hprebn, bnmeani, bnvar, bnvar_inv, bnraw, h, logits, dlogits, losses, loss, dh, dhprebn, dembcat;
    private readonly ulong _calSum, _calSq, _center;
    private readonly ulong _sortKeys, _sortVals, _sortKeys2, _sortVals2, _sortHist;
    private readonly int _sortTiles;
    // parameter offsets in floats
    private readonly long _oC, _oW1, _ob1, _oW2, _ob2, _ogain, _obias;
    // kernels
    private readonly Kernel kEmbFwd, kEmbAtomic, kEmbDense, kHist, kScan, kSortScatter, kSegments, kBnFwd, kBnBwd, kBnInfer, kBnCalib,
        kBnRunning, kCeWarp, kCeBlock, kSum, kBias, kColSum, kSgd;
    private readonly int[] _hostIds;
    private readonly double[] _hostCal;
    private readonly float[] _hostCenter;
    private bool _disposed;

    /// <summary>Creates a backend on <paramref name="runtime"/> for minibatches of <see cref="ModelConfig.BatchSize"/> rows and uploads the parameters.</summary>
    /// <param name="parameters">Host parameters (copied to the device now; see <see cref="PullParameters"/>).</param>
    /// <param name="runtime">The device runtime.</param>
    /// <param name="scatter">The dC accumulation.</param>
    /// <param name="ownsRuntime">Dispose the runtime with the backend.</param>
    public CudaBackend(ParameterSet parameters, IDeviceRuntime runtime, ScatterMode scatter = ScatterMode.Deterministic, bool ownsRuntime = false)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(runtime);
        Parameters = parameters;
        Config = parameters.Config;
        _rt = runtime;
        _ownsRuntime = ownsRuntime;
        _scatter = scatter;
        _n = Config.BatchSize; _b = Config.BlockSize; _e = Config.EmbeddingSize; _h = Config.HiddenSize; _v = Config.VocabSize; _k = Config.ContextWidth;
        _eps = (float)Config.Eps;
        int c = EvalChunk, rows = Math.Max(_n, c);
        long total = parameters.Data.Length;
        _params = Alloc(total); _grads = Alloc(total);
        _runMean = Alloc(_h); _runVar = Alloc(_h);
        _ids = Alloc(_n * _b + _n); _evIds = Alloc(c * _b + c);
        embcat = Alloc((long)rows * _k); hprebn = Alloc((long)rows * _h); h = Alloc((long)rows * _h); logits = Alloc((long)rows * _v);
        bnmeani = Alloc(_h); bnvar = Alloc(_h); bnvar_inv = Alloc(_h); bnraw = Alloc((long)_n * _h);
        dlogits = Alloc((long)_n * _v); losses = Alloc(rows); loss = Alloc(1); dh = Alloc((long)_n * _h); dhprebn = Alloc((long)_n * _h); dembcat = Alloc((long)_n * _k);
        _calSum = Alloc(2L * _h); _calSq = Alloc(2L * _h); _center = Alloc(_h);
        int m = _n * _b;
        _sortTiles = (m + 255) / 256;
        _sortKeys = Alloc(m); _sortVals = Alloc(m); _sortKeys2 = Alloc(m); _sortVals2 = Alloc(m); _sortHist = Alloc(256L * _sortTiles);
        _oC = parameters.Info("C").Offset; _oW1 = parameters.Info("W1").Offset; _ob1 = parameters.Info("b1").Offset;
        _oW2 = parameters.Info("W2").Offset; _ob2 = parameters.Info("b2").Offset; _ogain = parameters.Info("bngain").Offset; _obias = parameters.Info("bnbias").Offset;
        kEmbFwd = K("embedding_forward"); kEmbAtomic = K("embedding_backward_atomic"); kEmbDense = K("embedding_backward_dense");
        kHist = K("embedding_sort_histogram"); kScan = K("exclusive_scan_int"); kSortScatter = K("embedding_sort_scatter"); kSegments = K("embedding_backward_segments");
        kBnFwd = K("batchnorm_forward"); kBnBwd = K("batchnorm_backward"); kBnInfer = K("batchnorm_inference"); kBnCalib = K("batchnorm_calib_accumulate");
        kBnRunning = K("batchnorm_running_update");
        kCeWarp = K("cross_entropy_warp"); kCeBlock = K("cross_entropy_block"); kSum = K("sum_reduce");
        kBias = K("bias_add"); kColSum = K("column_sum"); kSgd = K("sgd_update");
        _hostIds = new int[Math.Max(_n * _b + _n, c * _b + c)];
        _hostCal = new double[_h];
        _hostCenter = new float[_h];
        _rt.Zero(_grads, total * 4);
        PushParameters();
    }

    /// <summary>Creates a backend on the first CUDA device, or throws <see cref="CudaUnavailableException"/> saying why there is none.</summary>
    public static CudaBackend OnDevice(ParameterSet parameters, ScatterMode scatter = ScatterMode.Deterministic) =>
        new(parameters, new DriverRuntime(), scatter, ownsRuntime: true);

    /// <summary>Creates a backend on the kernel emulator (no GPU needed).</summary>
    public static CudaBackend OnEmulator(ParameterSet parameters, ScatterMode scatter = ScatterMode.Deterministic) =>
        new(parameters, new EmulatorRuntime(), scatter, ownsRuntime: true);

    /// <inheritdoc />
    public string Name => _rt.Name;

    /// <inheritdoc />
    public ModelConfig Config { get; }

    /// <inheritdoc />
    public ParameterSet Parameters { get; }

    /// <inheritdoc />
    public float RunningMomentum { get; set; } = 0.001f;

    /// <summary>Kernel launches (cuBLAS calls included) of the last <see cref="Step"/>.</summary>
    public int LaunchesPerStep { get; private set; }

    private int _launches;

    private ulong Alloc(long floats)
    {
        var mem = _rt.Allocate(floats * 4);
        _owned.Add(mem);
        return mem.Pointer;
    }

    private Kernel K(string name) => _rt.GetKernel(name);

    private static uint Blocks(long work, int perBlock) => (uint)Math.Clamp((work + perBlock - 1) / perBlock, 1, 65535);

    private void Launch(Kernel k, Dim3 grid, Dim3 block, uint shared, void** args)
    {
        _rt.Launch(k, grid, block, shared, args);
        _launches++;
    }

    private ulong P(long offset) => _params + (ulong)(offset * 4);
    private ulong G(long offset) => _grads + (ulong)(offset * 4);

    // ---- row-major GEMMs through cuBLAS's column-major convention (C^T = B^T A^T)

    /// <summary>c[m,n] = a[m,k] · b[k,n] (row-major).</summary>
    private void GemmNN(ulong a, ulong b, ulong c, int m, int k, int n) { _rt.Sgemm(false, false, n, m, k, 1f, b, n, a, k, 0f, c, n); _launches++; }

    /// <summary>c[m,n] = a[m,k] · b[n,k]ᵀ (row-major).</summary>
    private void GemmNT(ulong a, ulong b, ulong c, int m, int k, int n) { _rt.Sgemm(true, false, n, m, k, 1f, b, k, a, k, 0f, c, n); _launches++; }

    /// <summary>c[k,n] = a[m,k]ᵀ · b[m,n] (row-major).</summary>
    private void GemmTN(ulong a, ulong b, ulong c, int m, int k, int n) { _rt.Sgemm(false, true, n, k, m, 1f, b, n, a, k, 0f, c, n); _launches++; }

    // ---- layers

    private void EmbeddingForward(ulong ids, ulong outEmbcat, int rows)
    {
        ulong a0 = outEmbcat, a1 = P(_oC), a2 = ids; int a3 = rows, a4 = _b, a5 = _e;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5 };
        Launch(kEmbFwd, new(Blocks((long)rows * _k, 256)), new(256), 0, args);
    }

    private void Linear(ulong x, long wOffset, long bOffset, ulong y, int rows, int inDim, int outDim)
    {
        GemmNN(x, P(wOffset), y, rows, inDim, outDim);
        ulong a0 = y, a1 = P(bOffset); int a2 = rows, a3 = outDim;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3 };
        Launch(kBias, new(Blocks((long)rows * outDim, 256)), new(256), 0, args);
    }

    private void ColumnSum(ulong x, ulong o, int rows, int cols)
    {
        ulong a0 = x, a1 = o; int a2 = rows, a3 = cols;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3 };
        Launch(kColSum, new(Blocks(cols, 32)), new(32, 8), 32 * 8 * 4, args);
    }

    private void CrossEntropy(ulong logitsIn, ulong yb, ulong dlogitsOut, int rows)
    {
        ulong a0 = logitsIn, a1 = yb, a2 = dlogitsOut, a3 = losses; int a4 = rows, a5 = _v;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5 };
        if (_v <= WarpCrossEntropyMaxV) Launch(kCeWarp, new(Blocks(rows, 8)), new(256), 0, args);
        else Launch(kCeBlock, new((uint)Math.Min(rows, 65535)), new(_v >= 16384 ? 1024u : 256u), 0, args);
        ulong s0 = losses, s1 = loss; int s2 = rows; float s3 = 1f / rows;
        void** sargs = stackalloc void*[] { &s0, &s1, &s2, &s3 };
        Launch(kSum, new(1), new(rows >= 4096 ? 1024u : 256u), 0, sargs);
    }

    private void Forward(ulong ids, int rows, bool training)
    {
        EmbeddingForward(ids, embcat, rows);
        Linear(embcat, _oW1, _ob1, hprebn, rows, _k, _h);
        if (training)
        {
            ulong a0 = hprebn, a1 = P(_ogain), a2 = P(_obias), a3 = bnmeani, a4 = bnvar, a5 = bnvar_inv, a6 = bnraw, a7 = h;
            int a8 = rows, a9 = _h; float a10 = _eps;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8, &a9, &a10 };
            Launch(kBnFwd, new(Blocks(_h, 32)), new(32, 8), 32 * 8 * 4, args);
        }
        else
        {
            ulong a0 = hprebn, a1 = _runMean, a2 = _runVar, a3 = P(_ogain), a4 = P(_obias), a5 = h;
            int a6 = rows, a7 = _h; float a8 = _eps;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8 };
            Launch(kBnInfer, new(Blocks((long)rows * _h, 256)), new(256), 0, args);
        }
        Linear(h, _oW2, _ob2, logits, rows, _h, _v);
    }

    private void UploadBatch(ReadOnlySpan<int> xb, ReadOnlySpan<int> yb)
    {
        if (yb.Length != _n) throw new ShapeException("Yb", [_n], [yb.Length]);
        if (xb.Length != _n * _b) throw new ShapeException("Xb", [_n, _b], [xb.Length / _b, _b]);
        for (int i = 0; i < xb.Length; i++) if ((uint)xb[i] >= (uint)_v) throw new ShapeException("Xb", $"id {xb[i]} at row {i / _b} is outside [0, {_v}).");
        for (int i = 0; i < yb.Length; i++) if ((uint)yb[i] >= (uint)_v) throw new ShapeException("Yb", $"id {yb[i]} at row {i} is outside [0, {_v}).");
        xb.CopyTo(_hostIds);
        yb.CopyTo(_hostIds.AsSpan(xb.Length));
        fixed (int* p = _hostIds) _rt.CopyToDevice(_ids, p, (xb.Length + yb.Length) * 4L);
    }

    private void ForwardBackwardOnDevice()
    {
        ulong xbDev = _ids, ybDev = _ids + (ulong)(_n * _b * 4);
        Forward(xbDev, _n, training: true);
        CrossEntropy(logits, ybDev, dlogits, _n);
        // backward: linear 2
        GemmNT(dlogits, P(_oW2), dh, _n, _v, _h);
        GemmTN(h, dlogits, G(_oW2), _n, _h, _v);
        ColumnSum(dlogits, G(_ob2), _n, _v);
        // batch norm + tanh
        {
            ulong a0 = dh, a1 = h, a2 = bnraw, a3 = P(_ogain), a4 = bnvar_inv, a5 = dhprebn, a6 = G(_ogain), a7 = G(_obias);
            int a8 = _n, a9 = _h;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6, &a7, &a8, &a9 };
            Launch(kBnBwd, new(Blocks(_h, 32)), new(32, 8), 32 * 8 * 4, args);
        }
        // linear 1
        GemmNT(dhprebn, P(_oW1), dembcat, _n, _h, _k);
        GemmTN(embcat, dhprebn, G(_oW1), _n, _k, _h);
        ColumnSum(dhprebn, G(_ob1), _n, _h);
        EmbeddingBackward(xbDev);
    }

    private void EmbeddingBackward(ulong xbDev)
    {
        int m = _n * _b;
        ulong dC = G(_oC);
        if (_scatter == ScatterMode.Atomic)
        {
            _rt.Zero(dC, (long)_v * _e * 4);
            ulong a0 = dC, a1 = dembcat, a2 = xbDev; int a3 = _n, a4 = _b, a5 = _e;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5 };
            Launch(kEmbAtomic, new(Blocks((long)m * _e, 256)), new(256), 0, args);
            return;
        }
        if (_v <= DenseScatterMaxV)
        {
            ulong a0 = dC, a1 = dembcat, a2 = xbDev; int a3 = _n, a4 = _b, a5 = _e, a6 = _v;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6 };
            Launch(kEmbDense, new(Blocks((long)_v * _e, 256)), new(256), 0, args);
            return;
        }
        // stable LSD radix sort of the occurrences by id (8 bits per pass), then one warp per run of equal ids
        ulong keysIn = xbDev, valsIn = 0, keysOut = _sortKeys, valsOut = _sortVals;
        int passes = _v <= 256 ? 1 : _v <= 65536 ? 2 : 4;
        for (int pass = 0; pass < passes; pass++)
        {
            SortPass(keysIn, valsIn, keysOut, valsOut, m, 8 * pass);
            keysIn = keysOut; valsIn = valsOut;
            (keysOut, valsOut) = keysOut == _sortKeys ? (_sortKeys2, _sortVals2) : (_sortKeys, _sortVals);
        }
        _rt.Zero(dC, (long)_v * _e * 4);
        {
            ulong a0 = dC, a1 = dembcat, a2 = keysIn, a3 = valsIn; int a4 = m, a5 = _e;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5 };
            Launch(kSegments, new(Blocks(m, 8)), new(256), 0, args);
        }
    }

    /// <summary>One stable counting-sort pass over 8 bits of the ids: per-tile histogram, scan, scatter.</summary>
    private void SortPass(ulong keysIn, ulong valsIn, ulong keysOut, ulong valsOut, int m, int shift)
    {
        {
            ulong a0 = _sortHist, a1 = keysIn; int a2 = m, a3 = shift;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3 };
            Launch(kHist, new((uint)_sortTiles), new(256), 0, args);
        }
        {
            ulong a0 = _sortHist; int a1 = 256 * _sortTiles;
            void** args = stackalloc void*[] { &a0, &a1 };
            Launch(kScan, new(1), new(1024), 0, args);
        }
        {
            ulong a0 = keysOut, a1 = valsOut, a2 = keysIn, a3 = valsIn, a4 = _sortHist; int a5 = m, a6 = shift;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5, &a6 };
            Launch(kSortScatter, new((uint)_sortTiles), new(256), 0, args);
        }
    }

    private float ReadLoss()
    {
        float value;
        _rt.CopyToHost(&value, loss, 4);
        return value;
    }

    /// <inheritdoc />
    public float ForwardBackward(ReadOnlySpan<int> xb, ReadOnlySpan<int> yb)
    {
        float l = ForwardBackwardOnly(xb, yb, updateRunning: false);
        PullParameters();
        return l;
    }

    /// <summary>
    /// Forward and backward on one minibatch, leaving the gradients on the device (no copy back).
    /// With <paramref name="updateRunning"/> the batch statistics also enter the running ones, as a
    /// training-mode forward of a <c>torch.nn.BatchNorm1d</c> (and the CPU network) does.
    /// </summary>
    internal float ForwardBackwardOnly(ReadOnlySpan<int> xb, ReadOnlySpan<int> yb, bool updateRunning)
    {
        _launches = 0;
        UploadBatch(xb, yb);
        ForwardBackwardOnDevice();
        if (updateRunning) UpdateRunning();
        LaunchesPerStep = _launches;
        return ReadLoss();
    }

    /// <summary>Sets every gradient on the device to zero.</summary>
    internal void ClearGradients() => _rt.Zero(_grads, Parameters.Grad.Length * 4L);

    private void UpdateRunning()
    {
        ulong a0 = _runMean, a1 = _runVar, a2 = bnmeani, a3 = bnvar; float a4 = RunningMomentum; int a5 = _h;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5 };
        Launch(kBnRunning, new(Blocks(_h, 256)), new(256), 0, args);
    }

    /// <inheritdoc />
    public float Step(ReadOnlySpan<int> xb, ReadOnlySpan<int> yb, float lr) => StepAndMaybeReadLoss(xb, yb, lr, readLoss: true);

    /// <summary>One training step that leaves the loss on the device (no synchronisation); <see cref="LastLoss"/> reads it.</summary>
    public void StepWithoutLoss(ReadOnlySpan<int> xb, ReadOnlySpan<int> yb, float lr) => StepAndMaybeReadLoss(xb, yb, lr, readLoss: false);

    /// <summary>The loss of the last step, copied from the device.</summary>
    public float LastLoss() => ReadLoss();

    private float StepAndMaybeReadLoss(ReadOnlySpan<int> xb, ReadOnlySpan<int> yb, float lr, bool readLoss)
    {
        _launches = 0;
        UploadBatch(xb, yb);
        ForwardBackwardOnDevice();
        {
            ulong a0 = _params, a1 = _grads; float a2 = lr; int a3 = Parameters.Data.Length;
            void** args = stackalloc void*[] { &a0, &a1, &a2, &a3 };
            Launch(kSgd, new(Blocks(a3, 256)), new(256), 0, args);
        }
        UpdateRunning();
        Parameters.IsCalibrated = false;
        LaunchesPerStep = _launches;
        return readLoss ? ReadLoss() : float.NaN;
    }

    private void UploadEvalRows(ReadOnlySpan<int> x, ReadOnlySpan<int> y, int start, int rows, bool withTargets)
    {
        x.Slice(start * _b, rows * _b).CopyTo(_hostIds);
        if (withTargets) y.Slice(start, rows).CopyTo(_hostIds.AsSpan(rows * _b));
        fixed (int* p = _hostIds) _rt.CopyToDevice(_evIds, p, (rows * _b + (withTargets ? rows : 0)) * 4L);
    }

    /// <inheritdoc />
    public float Evaluate(Dataset data)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.BlockSize != _b) throw new ArgumentException($"the data set has block size {data.BlockSize} but the model has {_b}.", nameof(data));
        if (data.Count == 0) throw new ArgumentException("cannot evaluate an empty data set.", nameof(data));
        return Evaluate(data.X, data.Y, data.Count);
    }

    /// <summary>The mean loss over <paramref name="count"/> examples, contexts <c>[count,B]</c> and targets <c>[count]</c> (ids in range: the caller checks), forward only with the inference statistics.</summary>
    internal float Evaluate(ReadOnlySpan<int> x, ReadOnlySpan<int> y, int count)
    {
        double total = 0;
        for (int start = 0; start < count; start += EvalChunk)
        {
            int rows = Math.Min(EvalChunk, count - start);
            UploadEvalRows(x, y, start, rows, withTargets: true);
            Forward(_evIds, rows, training: false);
            CrossEntropy(logits, _evIds + (ulong)(rows * _b * 4), 0, rows);
            total += (double)ReadLoss() * rows;
        }
        return (float)(total / count);
    }

    /// <inheritdoc />
    public void Calibrate(Dataset train)
    {
        ArgumentNullException.ThrowIfNull(train);
        if (train.BlockSize != _b) throw new ArgumentException($"the data set has block size {train.BlockSize} but the model has {_b}.", nameof(train));
        if (train.Count < 2) throw new ArgumentException("calibration needs at least 2 examples.", nameof(train));
        Calibrate(train.X, train.Count);
    }

    /// <summary>Replaces the inference statistics with the mean and Bessel variance of <c>hprebn</c> over <paramref name="count"/> contexts <c>[count,B]</c> (ids in range: the caller checks), on the device and in <see cref="Parameters"/>.</summary>
    internal void Calibrate(ReadOnlySpan<int> x, int count)
    {
        for (int pass = 0; pass < 2; pass++)
        {
            _rt.Zero(_calSum, _h * 8L);
            _rt.Zero(_calSq, _h * 8L);
            for (int start = 0; start < count; start += EvalChunk)
            {
                int rows = Math.Min(EvalChunk, count - start);
                CalibrationChunk(x, start, rows, pass == 0 ? 0 : _center);
            }
            fixed (double* s = _hostCal) _rt.CopyToHost(s, _calSum, _h * 8L);
            if (pass == 0)
            {
                for (int c = 0; c < _h; c++) _hostCenter[c] = (float)(_hostCal[c] / count);
                fixed (float* p = _hostCenter) _rt.CopyToDevice(_center, p, _h * 4L);
            }
            else
            {
                var sum = (double[])_hostCal.Clone();
                fixed (double* q = _hostCal) _rt.CopyToHost(q, _calSq, _h * 8L);
                for (int c = 0; c < _h; c++)
                {
                    Parameters.RunningMean[c] = (float)(_hostCenter[c] + sum[c] / count);
                    Parameters.RunningVar[c] = (float)((_hostCal[c] - sum[c] * sum[c] / count) / (count - 1));
                }
            }
        }
        fixed (float* m = Parameters.RunningMean) _rt.CopyToDevice(_runMean, m, _h * 4L);
        fixed (float* v = Parameters.RunningVar) _rt.CopyToDevice(_runVar, v, _h * 4L);
        Parameters.IsCalibrated = true;
    }

    private void CalibrationChunk(ReadOnlySpan<int> x, int start, int rows, ulong center)
    {
        UploadEvalRows(x, default, start, rows, withTargets: false);
        EmbeddingForward(_evIds, embcat, rows);
        Linear(embcat, _oW1, _ob1, hprebn, rows, _k, _h);
        ulong a0 = hprebn; int a1 = rows, a2 = _h; ulong a3 = center, a4 = _calSum, a5 = _calSq;
        void** args = stackalloc void*[] { &a0, &a1, &a2, &a3, &a4, &a5 };
        Launch(kBnCalib, new(Blocks(_h, 32)), new(32, 32), 32 * 32 * 8, args);
    }

    /// <inheritdoc />
    public void InferLogits(ReadOnlySpan<int> contexts, int rows, Span<float> output)
    {
        if (rows < 1 || rows > EvalChunk) throw new ArgumentOutOfRangeException(nameof(rows), rows, $"rows must be in [1, {EvalChunk}].");
        if (contexts.Length != rows * _b) throw new ShapeException("contexts", [rows, _b], [contexts.Length]);
        if (output.Length < rows * _v) throw new ShapeException("logits", [rows, _v], [output.Length]);
        foreach (int id in contexts) if ((uint)id >= (uint)_v) throw new ArgumentOutOfRangeException(nameof(contexts), id, $"context id is outside [0, {_v}).");
        contexts.CopyTo(_hostIds);
        fixed (int* p = _hostIds) _rt.CopyToDevice(_evIds, p, rows * _b * 4L);
        Forward(_evIds, rows, training: false);
        fixed (float* o = output) _rt.CopyToHost(o, logits, (long)rows * _v * 4);
    }

    /// <inheritdoc />
    public void PullParameters()
    {
        fixed (float* d = Parameters.Data) _rt.CopyToHost(d, _params, Parameters.Data.Length * 4L);
        fixed (float* g = Parameters.Grad) _rt.CopyToHost(g, _grads, Parameters.Grad.Length * 4L);
        fixed (float* m = Parameters.RunningMean) _rt.CopyToHost(m, _runMean, _h * 4L);
        fixed (float* v = Parameters.RunningVar) _rt.CopyToHost(v, _runVar, _h * 4L);
    }

    /// <inheritdoc />
    public void PushParameters()
    {
        fixed (float* d = Parameters.Data) _rt.CopyToDevice(_params, d, Parameters.Data.Length * 4L);
        fixed (float* m = Parameters.RunningMean) _rt.CopyToDevice(_runMean, m, _h * 4L);
        fixed (float* v = Parameters.RunningVar) _rt.CopyToDevice(_runVar, v, _h * 4L);
    }

    /// <summary>Copies a device buffer of the last step to the host by makemore name (hprebn, bnraw, h, logits, dlogits, dh, dhprebn, dembcat, bnmeani, bnvar, bnvar_inv).</summary>
    public float[] Download(string name)
    {
        (ulong ptr, long count) = name switch
        {
            "embcat" => (embcat, (long)_n * _k), "hprebn" => (hprebn, (long)_n * _h), "bnmeani" => (bnmeani, _h), "bnvar" => (bnvar, _h),
            "bnvar_inv" => (bnvar_inv, _h), "bnraw" => (bnraw, (long)_n * _h), "h" => (h, (long)_n * _h), "logits" => (logits, (long)_n * _v),
            "dlogits" => (dlogits, (long)_n * _v), "dh" => (dh, (long)_n * _h), "dhprebn" => (dhprebn, (long)_n * _h), "dembcat" => (dembcat, (long)_n * _k),
            _ => throw new ArgumentException($"the CUDA backend keeps no buffer named '{name}'.", nameof(name)),
        };
        var o = new float[count];
        fixed (float* p = o) _rt.CopyToHost(p, ptr, count * 4);
        return o;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var m in _owned) m.Dispose();
        _owned.Clear();
        if (_ownsRuntime) _rt.Dispose();
    }
}
