# Build script for HpBackprop (PowerShell 7+; the same steps are plain commands, see README.md).
#   ./build.ps1            build everything (Release) and run the tests
#   ./build.ps1 -Ptx       also regenerate the PTX from native/kernels (needs CUDA 11.8's nvcc and clang-14)
param([switch]$Ptx, [switch]$NoTest)
$ErrorActionPreference = 'Stop'
Set-Location $PSScriptRoot
if ($Ptx) {
    bash native/kernels/build-ptx.sh
    if ($LASTEXITCODE -ne 0) { throw "PTX build failed" }
}
dotnet build -c Release
if ($LASTEXITCODE -ne 0) { throw "dotnet build failed" }
if (-not $NoTest) {
    dotnet test -c Release
    if ($LASTEXITCODE -ne 0) { throw "tests failed" }
}
