#!/usr/bin/env bash
# The TorchSharp parity suite (tests/HpBackprop.TorchSharpTests): builds it and runs its test executable, on Debian 12
# through a copy of its apphost given Debian 13's loader and C/C++ runtime (tests/torchsharp/runtime.sh; nothing is
# installed system-wide but patchelf). Any arguments go to the test runner, e.g.
#   bash tests/torchsharp/run.sh --filter "FullyQualifiedName~FixedCaseTests"
#   bash tests/torchsharp/run.sh --list-tests
# LibTorch's load fails now and then on the borrowed runtime: a run that could not load it (or died) is retried once.
# HPB_TORCHSHARP_REQUIRED=1 (the default here) makes a test fail, not end as not run, when LibTorch cannot load.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
export HPB_TORCHSHARP_REQUIRED="${HPB_TORCHSHARP_REQUIRED:-1}"
source tests/torchsharp/runtime.sh

dotnet build -c Release tests/HpBackprop.TorchSharpTests -v q -nologo >&2
exe=tests/HpBackprop.TorchSharpTests/bin/Release/net10.0/linux-x64/HpBackprop.TorchSharpTests
if ts_runtime_needed; then
  echo "torchsharp: this system's glibc/libstdc++ are older than LibTorch 2.10 needs; using Debian 13's runtime from $HPB_TS_RUNTIME" >&2
  ts_runtime_prepare
  exe=$(ts_patched_apphost "$exe")
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for attempt in 1 2; do
  set +e
  "$exe" --no-ansi "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  # retry once when LibTorch did not load or the process died (not for failing tests: exit 2)
  if [ "$attempt" = 1 ] && { grep -q "cannot load LibTorch" "$log" || [ "$rc" -gt 2 ] && [ "$rc" != 8 ]; }; then
    echo "torchsharp: the run could not load LibTorch or ended with exit code $rc; retrying once" >&2
    continue
  fi
  break
done
summary() { grep -A6 'Test run summary' "$log" | sed -nE "s/^[[:space:]]*$1:[[:space:]]+([0-9]+).*/\1/p" | tail -1; }
echo "torchsharp suite: $(summary succeeded) passed, $(summary failed) failed, $(summary skipped) not run (exit $rc)"
exit "$rc"
