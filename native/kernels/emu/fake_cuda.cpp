// fake_cuda.cpp — libhpb_fake_cuda.so, a stand-in CUDA driver for the .NET tests of the driver
// probe and the cuBLAS resolver (tests/HpBackprop.Tests/CudaBackendTests.cs): it loads like
// libcuda.so.1 and answers cuInit with CUDA_ERROR_NO_DEVICE (100), as a driver on a machine
// without a GPU does.  Not used by the library itself.
extern "C" __attribute__((visibility("default"))) int cuInit(unsigned flags) {
    (void)flags;
    return 100;  // CUDA_ERROR_NO_DEVICE
}

extern "C" __attribute__((visibility("default"))) int cuDeviceGetCount(int* count) {
    *count = 0;
    return 0;
}
