using System.Buffers.Binary;
using System.Text;
using HpBackprop.IO;

namespace HpBackprop.Tests;

/// <summary>The safetensors reader/writer and the atomic file write.</summary>
[TestClass]
public sealed class SafeTensorsTests
{
    private static SafeTensorsFile Sample()
    {
        var f = new SafeTensorsFile();
        f.Metadata["case"] = "round-trip";
        f.Metadata["note"] = "quotes \" and \\ and unicode é ✓";
        f.Add("f32", new[] { 1.5f, -0f, float.Epsilon, float.MaxValue, float.NegativeInfinity, BitConverter.Int32BitsToSingle(0x7FC00123), -3.25e-30f }, 7);
        f.Add("f64", new[] { Math.PI, -0.0, double.Epsilon, double.PositiveInfinity, BitConverter.Int64BitsToDouble(0x7FF8_0000_0000_0042), 1e300 }, 2, 3);
        f.Add("i32", new[] { int.MinValue, -1, 0, 1, int.MaxValue, 42 }, 3, 1, 2);
        f.Add("i64", new[] { long.MinValue, -1L, 0L, long.MaxValue }, 4);
        f.Add("scalar", new[] { 2.5 });                  // shape [] (a scalar, like the oracle's loss)
        f.Add("empty", ReadOnlySpan<float>.Empty, 0, 3); // zero elements
        return f;
    }

    private static void AssertSameTensors(SafeTensorsFile expected, SafeTensorsFile actual)
    {
        CollectionAssert.AreEquivalent(expected.Tensors.Keys.ToList(), actual.Tensors.Keys.ToList(), "tensor names");
        foreach (var (name, t) in expected.Tensors)
        {
            var u = actual[name];
            Assert.AreEqual(t.DType, u.DType, name);
            CollectionAssert.AreEqual(t.Shape, u.Shape, name);
            CollectionAssert.AreEqual(t.Data, u.Data, $"{name}: bytes differ");
        }
        CollectionAssert.AreEquivalent(expected.Metadata.ToList(), actual.Metadata.ToList(), "metadata");
    }

    [TestMethod]
    public void RoundTripIsBitwiseForEveryDType()
    {
        var f = Sample();
        byte[] bytes = f.ToBytes();
        var g = SafeTensorsFile.Parse(bytes, "memory");
        AssertSameTensors(f, g);
        Assert.IsEmpty(g["scalar"].Shape);
        Assert.AreEqual(1, g["scalar"].Length);
        Assert.AreEqual(2.5, g["scalar"].ToDouble()[0]);
        Assert.AreEqual(0x7FC00123, BitConverter.SingleToInt32Bits(g["f32"].ToSingle()[5]), "NaN payload");
        Assert.AreEqual(0x8000_0000_0000_0000UL, (ulong)BitConverter.DoubleToInt64Bits(g["f64"].ToDouble()[1]), "negative zero");
        CollectionAssert.AreEqual(new[] { long.MinValue, -1L, 0L, long.MaxValue }, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(g["i64"].Data).ToArray());
        CollectionAssert.AreEqual(new[] { int.MinValue, -1, 0, 1, int.MaxValue, 42 }, g["i32"].ToInt32());
        Assert.AreEqual("quotes \" and \\ and unicode é ✓", g.Metadata["note"]);
        // Writing is deterministic and a re-write of what was read is the same file.
        CollectionAssert.AreEqual(bytes, g.ToBytes());
    }

    [TestMethod]
    public void LayoutFollowsTheFormat()
    {
        byte[] bytes = Sample().ToBytes();
        ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.AreEqual(0UL, headerLen % 8, "header padded to a multiple of 8");
        string header = Encoding.UTF8.GetString(bytes, 8, (int)headerLen);
        Assert.StartsWith("{", header);
        Assert.EndsWith("}", header.TrimEnd(' '));
        Assert.Contains("\"__metadata__\"", header);
        Assert.Contains("\"dtype\":\"F64\"", header.Replace(" ", ""));
        // data section: the tensors in name order, back to back
        int expectedData = 7 * 4 + 6 * 8 + 6 * 4 + 4 * 8 + 8 + 0;
        Assert.AreEqual(8 + (int)headerLen + expectedData, bytes.Length);
    }

    [TestMethod]
    public void SaveAndReadThroughADirectory()
    {
        string dir = Path.Combine(Path.GetTempPath(), "hpbackprop-st-" + Guid.NewGuid().ToString("N"));
        try
        {
            string path = Path.Combine(dir, "sub", "x.safetensors"); // Save creates the directory
            var f = Sample();
            f.Save(path);
            AssertSameTensors(f, SafeTensorsFile.Read(path));
            Assert.HasCount(1, Directory.GetFiles(Path.GetDirectoryName(path)!), "a temporary file was left behind");
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void CommittedOracleBundleParses()
    {
        string path = Oracle.BundlePath("seed", "f32");
        var f = SafeTensorsFile.Read(path);
        Assert.HasCount(55, f.Tensors); // inputs, parameters, 19 intermediates + loss, 26 gradients (tests/reference/README.md)
        Assert.AreEqual("seed", f.Metadata["case"]);
        Assert.AreEqual("float32", f.Metadata["dtype"]);
        Assert.AreEqual(DType.I64, f["Xb"].DType);
        CollectionAssert.AreEqual(new[] { 32, 3 }, f["Xb"].Shape);
        CollectionAssert.AreEqual(new[] { 27, 10 }, f["C"].Shape);
        Assert.IsEmpty(f["loss"].Shape);
        Assert.AreEqual(DType.F32, f["dC"].DType);
        // The loss of a 27-way classifier at initialisation is near ln 27 ≈ 3.3.
        Assert.AreEqual(Math.Log(27), f["loss"].ToDouble()[0], 0.5);
        AssertSameTensors(f, SafeTensorsFile.Parse(f.ToBytes(), "rewritten"));
        var f64 = SafeTensorsFile.Read(Oracle.BundlePath("seed", "f64"));
        Assert.AreEqual(DType.F64, f64["dC"].DType);
        CollectionAssert.AreEqual(f["Xb"].Data, f64["Xb"].Data, "the f32 and f64 bundles share their minibatch");
    }

    [TestMethod]
    public void TruncationAtEveryLengthIsAFormatError()
    {
        var f = new SafeTensorsFile();
        f.Metadata["k"] = "v";
        f.Add("a", new[] { 1f, 2f, 3f }, 3);
        f.Add("b", new long[] { 7, 8 }, 2, 1);
        f.Add("s", new[] { 0.5 });
        byte[] bytes = f.ToBytes();
        Assert.IsGreaterThan(100, bytes.Length);
        for (int len = 0; len < bytes.Length; len++)
        {
            byte[] cut = bytes[..len];
            try
            {
                SafeTensorsFile.Parse(cut, "cut");
                Assert.Fail($"a file truncated to {len} of {bytes.Length} bytes parsed without error");
            }
            catch (SafeTensorsFormatException e)
            {
                Assert.Contains("cut", e.Message);
            }
            // any other exception type escapes and fails the test, naming its type
        }
        AssertSameTensors(f, SafeTensorsFile.Parse(bytes, "whole"));
    }

    [TestMethod]
    public void TruncatedFileOnDiskIsAFormatErrorNamingThePath()
    {
        string path = Path.Combine(Path.GetTempPath(), "hpbackprop-trunc-" + Guid.NewGuid().ToString("N") + ".safetensors");
        try
        {
            byte[] bytes = Sample().ToBytes();
            File.WriteAllBytes(path, bytes[..(bytes.Length - 5)]);
            var e = Assert.ThrowsExactly<SafeTensorsFormatException>(() => SafeTensorsFile.Read(path));
            Assert.Contains(path, e.Message);
            Assert.Contains("truncated", e.Message);
        }
        finally { File.Delete(path); }
        Assert.ThrowsExactly<FileNotFoundException>(() => SafeTensorsFile.Read(path));
    }

    /// <summary>A file with a hand-written header and data section.</summary>
    private static byte[] Raw(string header, int dataBytes, ulong? headerLength = null)
    {
        byte[] h = Encoding.UTF8.GetBytes(header);
        var o = new byte[8 + h.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(o, headerLength ?? (ulong)h.Length);
        h.CopyTo(o, 8);
        return o;
    }

    public static IEnumerable<object[]> Malformed =>
    [
        ["bad JSON", Raw("{\"a\": {\"dtype\": \"F32\", ", 0), "JSON"],
        ["not an object", Raw("[1, 2]", 0), "not a JSON object"],
        ["unknown dtype", Raw("{\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4), "BF16"],
        ["dtype not a string", Raw("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "malformed"],
        ["entry not an object", Raw("{\"a\":5}", 0), "malformed"],
        ["missing shape", Raw("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4), "malformed"],
        ["fractional offset", Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.5]}}", 4), "malformed"],
        ["three offsets", Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8), "two data_offsets"],
        ["negative dimension", Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4), "negative"],
        // 2^30·2^30·2^30·4 bytes wraps to 0 in 64-bit arithmetic: must not pass as an empty tensor
        ["element count overflows", Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1073741824,1073741824,1073741824],\"data_offsets\":[0,0]}}", 0), "too large"],
        ["duplicate tensor name", Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8), "twice"],
        ["size does not match shape", Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8), "needs 12"],
        ["overlapping offsets", Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12), "overlap"],
        ["gap between tensors", Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12), "gap"],
        ["trailing bytes", Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8), "trailing"],
        ["offsets past the end", Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8), "truncated"],
        ["reversed offsets", Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4), "claims bytes"],
        ["metadata value not a string", Raw("{\"__metadata__\":{\"k\":1}}", 0), "not a string"],
        ["metadata not an object", Raw("{\"__metadata__\":[]}", 0), "not an object"],
        ["implausible header length", Raw("{}", 0, headerLength: ulong.MaxValue), "implausible"],
        ["header past the end", Raw("{}", 0, headerLength: 3), "runs past"],
    ];

    [TestMethod]
    [DynamicData(nameof(Malformed))]
    public void MalformedHeaderIsRejected(string what, byte[] bytes, string mentions)
    {
        var e = Assert.ThrowsExactly<SafeTensorsFormatException>(() => SafeTensorsFile.Parse(bytes, "bad.safetensors"), what);
        Assert.Contains("bad.safetensors", e.Message, what);
        Assert.Contains(mentions, e.Message, what);
    }

    [TestMethod]
    public void WellFormedHandWrittenHeaderIsAccepted()
    {
        // The control for the malformed cases: the same construction with a valid header parses.
        byte[] bytes = Raw("{\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[4,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}   ", 8);
        var f = SafeTensorsFile.Parse(bytes, "ok");
        Assert.HasCount(2, f.Tensors);
        Assert.AreEqual(DType.I32, f["b"].DType);
    }

    [TestMethod]
    public void AddRejectsDataThatDoesNotMatchTheShape()
    {
        var f = new SafeTensorsFile();
        Assert.ThrowsExactly<ArgumentException>(() => f.Add("x", new float[5], 2, 3));
        Assert.ThrowsExactly<ArgumentException>(() => f.Add("__metadata__", new float[1], 1));
        Assert.ThrowsExactly<KeyNotFoundException>(() => _ = f["x"]);
    }

    // ---------------------------------------------------------------- atomic writes

    [TestMethod]
    public void InterruptedWriteLeavesThePreviousFileIntactAndNoTemporaryFile()
    {
        string dir = Path.Combine(Path.GetTempPath(), "hpbackprop-atomic-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, "ckpt.safetensors");
        byte[] before = Encoding.ASCII.GetBytes("previous contents");
        File.WriteAllBytes(path, before);
        string? seenTemp = null;
        try
        {
            AtomicFile.BeforeRename = tmp =>
            {
                seenTemp = tmp;
                // the new bytes are complete in the temporary file before the rename
                CollectionAssert.AreEqual(Sample().ToBytes(), File.ReadAllBytes(tmp));
                throw new IOException("simulated crash before rename");
            };
            var e = Assert.ThrowsExactly<IOException>(() => Sample().Save(path));
            Assert.AreEqual("simulated crash before rename", e.Message);
        }
        finally { AtomicFile.BeforeRename = null; }
        try
        {
            Assert.IsNotNull(seenTemp, "the hook was not called");
            Assert.AreEqual(dir, Path.GetDirectoryName(seenTemp), "the temporary file must be beside the target (same file system)");
            CollectionAssert.AreEqual(before, File.ReadAllBytes(path), "the previous file was damaged");
            CollectionAssert.AreEqual(new[] { path }, Directory.GetFiles(dir), "a temporary file was left behind");
            // and without the hook the same write goes through
            Sample().Save(path);
            AssertSameTensors(Sample(), SafeTensorsFile.Read(path));
            CollectionAssert.AreEqual(new[] { path }, Directory.GetFiles(dir));
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void InterruptedFirstWriteLeavesNoFile()
    {
        string dir = Path.Combine(Path.GetTempPath(), "hpbackprop-atomic-" + Guid.NewGuid().ToString("N"));
        string path = Path.Combine(dir, "new.bin");
        try
        {
            AtomicFile.BeforeRename = _ => throw new IOException("crash");
            Assert.ThrowsExactly<IOException>(() => AtomicFile.Write(path, [1, 2, 3]));
            AtomicFile.BeforeRename = null;
            Assert.IsFalse(File.Exists(path), "a half-written target exists");
            Assert.IsEmpty(Directory.GetFiles(dir), "a temporary file was left behind");
        }
        finally
        {
            AtomicFile.BeforeRename = null;
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }
}
