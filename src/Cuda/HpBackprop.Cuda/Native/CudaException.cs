namespace HpBackprop.Cuda.Native;

/// <summary>A CUDA driver or cuBLAS call failed. The message names the call and the error.</summary>
public sealed class CudaException : Exception
{
    /// <summary>Creates the exception.</summary>
    public CudaException(string call, int code, string errorName, string? detail = null)
        : base($"{call} failed: {errorName} ({code}){(string.IsNullOrEmpty(detail) ? "" : ": " + detail)}")
    {
        Call = call; Code = code; ErrorName = errorName;
    }

    /// <summary>The failing entry point.</summary>
    public string Call { get; }

    /// <summary>The CUresult or cublasStatus_t value.</summary>
    public int Code { get; }

    /// <summary>The symbolic name of the error (CUDA_ERROR_… or CUBLAS_STATUS_…).</summary>
    public string ErrorName { get; }
}
