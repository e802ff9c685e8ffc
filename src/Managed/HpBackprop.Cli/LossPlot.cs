using System.Globalization;
using System.Text;

namespace HpBackprop.Cli;

/// <summary>
/// Writes the training loss as an SVG line chart: log-scaled loss axis, the per-step losses
/// averaged over bins (smoothed), and the final train/dev losses as labelled horizontal lines.
/// </summary>
internal static class LossPlot
{
    private const int Width = 800, Height = 480, Left = 70, Right = 20, Top = 40, Bottom = 50;

    public static string Render(ReadOnlySpan<float> losses, float? train, float? dev, string title)
    {
        if (losses.Length == 0) throw new ArgumentException("no losses to plot.", nameof(losses));
        int bins = Math.Min(400, losses.Length);
        var x = new double[bins];
        var y = new double[bins];
        for (int b = 0; b < bins; b++)
        {
            int s = (int)((long)b * losses.Length / bins), e = (int)((long)(b + 1) * losses.Length / bins);
            double sum = 0;
            for (int i = s; i < e; i++) sum += losses[i];
            x[b] = (s + e) / 2.0;
            y[b] = Math.Log10(Math.Max(sum / Math.Max(e - s, 1), 1e-6));
        }
        double ymin = y.Min(), ymax = y.Max();
        foreach (float? v in new[] { train, dev }) if (v is float f && f > 0) { ymin = Math.Min(ymin, Math.Log10(f)); ymax = Math.Max(ymax, Math.Log10(f)); }
        double pad = Math.Max((ymax - ymin) * 0.05, 0.01);
        ymin -= pad; ymax += pad;
        int count = losses.Length;
        double X(double step) => Left + (Width - Left - Right) * step / Math.Max(count, 1);
        double Y(double log) => Top + (Height - Top - Bottom) * (ymax - log) / (ymax - ymin);
        static string F(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);

        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{Height}\" viewBox=\"0 0 {Width} {Height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        sb.Append(CultureInfo.InvariantCulture, $"<rect width=\"{Width}\" height=\"{Height}\" fill=\"white\"/>\n");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{Width / 2}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{Escape(title)}</text>\n");
        // loss ticks at evenly spaced "nice" values, about six over the visible range
        double lo = Math.Pow(10, ymin), hi = Math.Pow(10, ymax);
        double raw = (hi - lo) / 6, mag = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double tick = new[] { 1.0, 2.0, 2.5, 5.0, 10.0 }.Select(f => f * mag).First(t => t >= raw);
        for (double v = Math.Ceiling(lo / tick) * tick; v <= hi; v += tick)
        {
            double ly = Math.Log10(v);
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" x2=\"{Width - Right}\" y1=\"{F(Y(ly))}\" y2=\"{F(Y(ly))}\" stroke=\"#e5e5e5\"/>");
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left - 6}\" y=\"{F(Y(ly) + 4)}\" text-anchor=\"end\">{v.ToString("0.###", CultureInfo.InvariantCulture)}</text>\n");
        }
        for (int t = 0; t <= 4; t++)
        {
            double step = losses.Length * t / 4.0;
            string anchor = t == 0 ? "start" : t == 4 ? "end" : "middle";
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{F(X(step))}\" y=\"{Height - Bottom + 18}\" text-anchor=\"{anchor}\">{Math.Round(step).ToString("N0", CultureInfo.InvariantCulture)}</text>\n");
        }
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{(Left + Width - Right) / 2}\" y=\"{Height - 10}\" text-anchor=\"middle\">step</text>\n");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"16\" y=\"{(Top + Height - Bottom) / 2}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {(Top + Height - Bottom) / 2})\">training loss (log scale, mean per {Math.Max(losses.Length / bins, 1)} steps)</text>\n");
        sb.Append(CultureInfo.InvariantCulture, $"<rect x=\"{Left}\" y=\"{Top}\" width=\"{Width - Left - Right}\" height=\"{Height - Top - Bottom}\" fill=\"none\" stroke=\"#888\"/>\n");
        sb.Append("<polyline id=\"loss\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"");
        for (int b = 0; b < bins; b++) sb.Append(CultureInfo.InvariantCulture, $"{F(X(x[b]))},{F(Y(y[b]))} ");
        sb.Append("\"/>\n");
        void Level(float? v, string name, string color, int dy)
        {
            if (v is not float f || !(f > 0)) return;
            double ly = Y(Math.Log10(f));
            sb.Append(CultureInfo.InvariantCulture, $"<line id=\"{name}\" x1=\"{Left}\" x2=\"{Width - Right}\" y1=\"{F(ly)}\" y2=\"{F(ly)}\" stroke=\"{color}\" stroke-dasharray=\"6 4\"/>");
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left + 8}\" y=\"{F(ly + dy)}\" fill=\"{color}\" stroke=\"white\" stroke-width=\"3\" paint-order=\"stroke\">final {name} loss {f.ToString("0.0000", CultureInfo.InvariantCulture)}</text>\n");
        }
        Level(train, "train", "#2ca02c", train <= dev ? 16 : -6);
        Level(dev, "dev", "#d62728", train <= dev ? -6 : 16);
        sb.Append("</svg>\n");
        return sb.ToString();
    }

    private static string Escape(string s) => s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;");
}
