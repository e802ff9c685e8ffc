namespace HpBackprop.Cpu;

/// <summary>
/// Softmax cross-entropy straight from logits (exercise 2): one pass per row computes the
/// row's loss and <c>dlogits = (softmax(logits) − onehot(Yb))/n</c>.
/// </summary>
public static class CrossEntropy
{
    /// <summary>
    /// Returns the mean loss over the <paramref name="n"/> rows and writes <paramref name="dlogits"/>
    /// (which may alias <paramref name="logits"/>; pass an empty span for the loss alone).
    /// </summary>
    public static float ForwardBackward(ReadOnlySpan<float> logits, ReadOnlySpan<int> Yb, Span<float> dlogits, int n, int V)
    {
        double total = 0;
        float invN = 1f / n;
        for (int i = 0; i < n; i++)
        {
            ReadOnlySpan<float> row = logits.Slice(i * V, V);
            int y = Yb[i];
            if ((uint)y >= (uint)V) throw new ArgumentOutOfRangeException(nameof(Yb), y, $"target id at row {i} is outside [0, {V}).");
            float m = System.Numerics.Tensors.TensorPrimitives.Max(row);
            float target = row[y];
            float sum = 0;
            if (dlogits.IsEmpty)
            {
                for (int j = 0; j < V; j++) sum += MathF.Exp(row[j] - m);
            }
            else
            {
                Span<float> d = dlogits.Slice(i * V, V);
                for (int j = 0; j < V; j++) { float c = MathF.Exp(row[j] - m); d[j] = c; sum += c; }
                float s = invN / sum;
                for (int j = 0; j < V; j++) d[j] *= s;
                d[y] -= invN;
            }
            total += MathF.Log(sum) + m - target;
        }
        return (float)(total / n);
    }
}
