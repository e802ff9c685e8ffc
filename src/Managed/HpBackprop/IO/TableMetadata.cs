using System.Globalization;
using System.Text;
using System.Text.Json;
using HpBackprop.Data;

namespace HpBackprop.IO;

/// <summary>
/// A <see cref="TableSchema"/> in a checkpoint's metadata (strings, so the file stays a state dict that PyTorch loads as it
/// is): names and labels as JSON arrays of strings, the scaler as JSON arrays of numbers (float32 round-trip text).
/// Written and read with <see cref="Utf8JsonWriter"/> and <see cref="Utf8JsonReader"/> (no reflection).
/// </summary>
internal static class TableMetadata
{
    public const string FeaturesKey = "table_features", TargetKey = "table_target", KindKey = "table_target_kind", ClassesKey = "table_classes",
        MeanKey = "input_mean", ScaleKey = "input_scale";

    public static void Write(TableSchema t, IDictionary<string, string> meta)
    {
        meta[FeaturesKey] = Strings(t.Features);
        meta[TargetKey] = t.Target;
        meta[KindKey] = Kind(t.TargetKind);
        if (t.Classes != null) meta[ClassesKey] = Strings(t.Classes);
        if (t.Scaler != null)
        {
            meta[MeanKey] = Numbers(t.Scaler.Mean);
            meta[ScaleKey] = Numbers(t.Scaler.Scale);
        }
    }

    /// <exception cref="SafeTensorsFormatException">A key is missing or malformed; the message names the file and the key.</exception>
    public static TableSchema Read(IReadOnlyDictionary<string, string> meta, string path)
    {
        string Get(string key) => meta.TryGetValue(key, out var v) ? v : throw new SafeTensorsFormatException(path, $"metadata '{key}' is missing (a table model has {FeaturesKey}, {TargetKey} and {KindKey}).");
        var features = ReadStrings(Get(FeaturesKey), FeaturesKey, path);
        if (features.Length == 0) throw new SafeTensorsFormatException(path, $"metadata '{FeaturesKey}' names no column.");
        var kind = Get(KindKey) switch
        {
            "classes" => TableTarget.Classes,
            "binary" => TableTarget.Binary,
            "values" => TableTarget.Values,
            var k => throw new SafeTensorsFormatException(path, $"metadata '{KindKey}' = '{Data.Table.Clip(k)}' is not classes, binary or values."),
        };
        string[]? classes = meta.TryGetValue(ClassesKey, out var c) ? ReadStrings(c, ClassesKey, path) : null;
        if (kind != TableTarget.Values && classes == null) throw new SafeTensorsFormatException(path, $"metadata '{ClassesKey}' is missing: a target of {Kind(kind)} has labels.");
        if (classes != null && classes.Distinct(StringComparer.Ordinal).Count() != classes.Length) throw new SafeTensorsFormatException(path, $"metadata '{ClassesKey}' names a label twice.");
        Standardizer? scaler = null;
        bool hasMean = meta.TryGetValue(MeanKey, out var mean), hasScale = meta.TryGetValue(ScaleKey, out var scale);
        if (hasMean != hasScale) throw new SafeTensorsFormatException(path, $"metadata '{MeanKey}' and '{ScaleKey}' come together.");
        if (hasMean)
        {
            try { scaler = new Standardizer(ReadNumbers(mean!, MeanKey, path), ReadNumbers(scale!, ScaleKey, path)); }
            catch (ArgumentException e) { throw new SafeTensorsFormatException(path, $"the standardisation in '{MeanKey}' and '{ScaleKey}' is invalid: {e.Message}"); }
        }
        return new TableSchema(features, Get(TargetKey), kind, classes, scaler);
    }

    public static string Kind(TableTarget kind) => kind switch { TableTarget.Classes => "classes", TableTarget.Binary => "binary", _ => "values" };

    private static string Strings(IEnumerable<string> items) => Json(w => { foreach (var s in items) w.WriteStringValue(s); });

    private static string Numbers(float[] values) => Json(w => { foreach (var v in values) w.WriteRawValue(v.ToString("R", CultureInfo.InvariantCulture)); });

    private static string Json(Action<Utf8JsonWriter> items)
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartArray();
            items(w);
            w.WriteEndArray();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    private static string[] ReadStrings(string json, string key, string path)
    {
        var list = new List<string>();
        Array(json, key, path, (ref Utf8JsonReader r) =>
        {
            if (r.TokenType != JsonTokenType.String) return false;
            list.Add(r.GetString()!);
            return true;
        });
        return [.. list];
    }

    private static float[] ReadNumbers(string json, string key, string path)
    {
        var list = new List<float>();
        Array(json, key, path, (ref Utf8JsonReader r) =>
        {
            if (r.TokenType != JsonTokenType.Number || !r.TryGetSingle(out float v)) return false;
            list.Add(v);
            return true;
        });
        return [.. list];
    }

    private delegate bool Item(ref Utf8JsonReader reader);

    private static void Array(string json, string key, string path, Item item)
    {
        try
        {
            var r = new Utf8JsonReader(Encoding.UTF8.GetBytes(json));
            if (!r.Read() || r.TokenType != JsonTokenType.StartArray) throw new JsonException("not an array");
            while (r.Read() && r.TokenType != JsonTokenType.EndArray)
                if (!item(ref r)) throw new JsonException($"unexpected {r.TokenType}");
            if (r.TokenType != JsonTokenType.EndArray || r.Read()) throw new JsonException("text after the array");
        }
        catch (JsonException e)
        {
            throw new SafeTensorsFormatException(path, $"metadata '{key}' is not a JSON array of {(key is MeanKey or ScaleKey ? "numbers" : "strings")} ({e.Message}).");
        }
    }
}
