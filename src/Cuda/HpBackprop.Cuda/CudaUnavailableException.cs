namespace HpBackprop.Cuda;

/// <summary>The CUDA backend cannot run here: no driver, no device, or a PTX the driver cannot JIT. The message says which and what to do.</summary>
public sealed class CudaUnavailableException : Exception
{
    /// <summary>Creates the exception.</summary>
    public CudaUnavailableException(string message) : base(message) { }
}
