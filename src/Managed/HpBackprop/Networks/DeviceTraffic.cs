namespace HpBackprop.Networks;

/// <summary>
/// What the training steps of a <see cref="Network"/> asked of its device since it was built: launches (kernels, cuBLAS
/// calls, or one per replayed graph), copies between host and device memory (minibatch uploads, step-state uploads,
/// loss reads: every one counted), the nodes of the captured step, and apart from them the one-time uploads of the training
/// sets <c>Fit</c> keeps on the device. A CPU network has none (<see cref="Network.Traffic"/>
/// is <see langword="null"/> there).
/// </summary>
/// <param name="Steps">Training steps counted (the network's <c>Step</c> calls, <c>Fit</c>'s steps included).</param>
/// <param name="Launches">Work submissions to the device over those steps: a kernel or a cuBLAS call queued on its own, or one replay of the captured step.</param>
/// <param name="Copies">Host↔device copies over those steps.</param>
/// <param name="Bytes">Bytes moved by those copies.</param>
/// <param name="GraphNodes">Nodes of the captured training step (0 until it is captured).</param>
public readonly record struct DeviceTraffic(long Steps, long Launches, long Copies, long Bytes, int GraphNodes)
{
    /// <summary>Launches per step, averaged over the steps counted (0 before the first).</summary>
    public double LaunchesPerStep => Steps == 0 ? 0 : (double)Launches / Steps;

    /// <summary>Bytes copied between host and device per step, averaged over the steps counted (0 before the first).</summary>
    public double BytesPerStep => Steps == 0 ? 0 : (double)Bytes / Steps;

    /// <summary>Copies made once before the steps rather than by them: the training sets <c>Fit</c> kept on the device (not in <see cref="Copies"/>).</summary>
    public long SetupCopies { get; init; }

    /// <summary>Bytes of <see cref="SetupCopies"/> (not in <see cref="Bytes"/>).</summary>
    public long SetupBytes { get; init; }
}
