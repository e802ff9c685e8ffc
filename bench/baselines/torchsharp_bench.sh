#!/usr/bin/env bash
# TorchSharp beside HpBackprop in one process (bench/HpBackprop.TorchSharpBench): builds it and runs its apphost, on
# Debian 12 through a copy given Debian 13's loader and C/C++ runtime (tests/torchsharp/runtime.sh). Arguments go to it:
#   bash bench/baselines/torchsharp_bench.sh side --shapes S,M,L,deep,mlp --threads 1,2 --seconds 1 --rounds 3
#   bash bench/baselines/torchsharp_bench.sh --filter '*TrainingStep*'      (BenchmarkDotNet, in process)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
source tests/torchsharp/runtime.sh
# HPB_TS_NO_BUILD=1: already built (the side-by-side runners build it once)
[ "${HPB_TS_NO_BUILD:-}" = 1 ] || dotnet build -c Release bench/HpBackprop.TorchSharpBench -v q -nologo >&2
exe=bench/HpBackprop.TorchSharpBench/bin/Release/net10.0/linux-x64/HpBackprop.TorchSharpBench
if ts_runtime_needed; then
  ts_runtime_prepare
  exe=$(ts_patched_apphost "$exe")
fi
exec "$exe" "$@"
