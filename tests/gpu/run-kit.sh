#!/usr/bin/env bash
# run-kit.sh — the one command to run on the GPU machine, from the repository root, given the
# archive that build-kit.sh wrote (default tests/gpu/out/hpbackprop-gpu-kit.tar.xz):
#
#   bash tests/gpu/run-kit.sh [ARCHIVE]
#
# Needs bash, coreutils (timeout), tar with xz (or python3 to unpack), nvidia-smi and the NVIDIA
# driver; python3 with PyTorch for the PyTorch side and the 'large' oracle bundles;
# compute-sanitizer and ncu when present. No .NET SDK, no network.
# Writes at most 8 files to $OUT (./gpu-results when OUT is unset), summary.md first; every
# phase has its own time limit and the whole run stops starting phases after 7 min 50 s.
# Exit: 0 every phase passed; 1 something failed (summary.md says what); 2 no archive;
# 3 no GPU (the published tests still run and report the driver tests as not run); 4 a GPU is
# there but cannot be used (cuBLAS missing, the PTX refused, no context: summary.md says which);
# 5 the tree is not the one the kit was built from (its scripts and bundles would not match the binaries).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
archive="${1:-tests/gpu/out/hpbackprop-gpu-kit.tar.xz}"
out="${OUT:-$root/gpu-results}"
kit="$root/tests/gpu/out/kit"
start=$(date +%s)
deadline=$((start + 470))
mkdir -p "$out"

if [ ! -f "$archive" ]; then
  echo "run-kit.sh: no kit archive at $archive; build it with 'bash tests/gpu/build-kit.sh' on a machine with the .NET SDK and bring it along" >&2
  printf '# HpBackprop GPU kit\n\nNot run: no kit archive at `%s` (build it with `bash tests/gpu/build-kit.sh`).\n' "$archive" > "$out/summary.md"
  exit 2
fi

# ---- files (at most 8)
summary="$out/summary.md"; envf="$out/environment.txt"; testsf="$out/tests.log"; parityf="$out/parity.md"
seedf="$out/seed-train.log"; stepsf="$out/steps.md"; sanf="$out/sanitizers.log"; ncuf="$out/ncu.txt"
rm -f "$summary" "$envf" "$testsf" "$parityf" "$seedf" "$stepsf" "$sanf" "$ncuf"
rows=()      # phase table of summary.md
failed=()    # phases that failed

now() { date +%s; }
# phase NAME LIMIT_S LOGFILE CMD... : runs CMD under its limit (cut to what is left of the whole
# run), appending stdout+stderr to LOGFILE; records a row; returns the command's status
# (124 = out of time, 125 = not started: no time left).
phase() {
  local name="$1" limit="$2" log="$3"; shift 3
  local left=$((deadline - $(now)))
  if [ "$left" -lt 10 ]; then
    rows+=("| $name | $limit s | – | not started: the run's 8-minute budget is spent |")
    echo "== $name: not started (no time left)" >> "$log"
    return 125
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0; t0=$(now)
  echo "== $name (limit ${limit}s)" >> "$log"
  echo "run-kit.sh: $name (limit ${limit}s)" >&2
  timeout --kill-after=10 "$limit" "$@" >> "$log" 2>&1
  local rc=$?
  local took=$(( $(now) - t0 ))
  local verdict="passed"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then verdict="**out of time** (killed after ${limit} s)"
  elif [ "$rc" != 0 ]; then verdict="**failed** (exit $rc)"; fi
  rows+=("| $name | $limit s | $took s | $verdict |")
  [ "$verdict" = passed ] || failed+=("$name")
  echo "== $name: exit $rc after ${took}s" >> "$log"
  return "$rc"
}
skip() { rows+=("| $1 | – | – | not run: $2 |"); }

# ---- unpack
rm -rf "$kit"; mkdir -p "$kit"
if ! tar -C "$kit" -xJf "$archive" 2>/dev/null; then
  rm -rf "$kit"; mkdir -p "$kit"
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$archive" "$kit" || { echo "run-kit.sh: cannot unpack $archive" >&2; exit 2; }
fi
app="$kit/app"
manifest=$(cat "$kit/MANIFEST" 2>/dev/null)

# ---- the tree must be the one the binaries were built from: the scripts and bundles the run reads
tree_hash() { find tests/gpu tests/reference -type f \( -name '*.py' -o -name '*.sh' -o -name '*.safetensors' \) \
  ! -path 'tests/reference/generated/*' ! -path 'tests/gpu/out/*' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16; }
want=$(sed -n 's/^tree: //p' "$kit/MANIFEST" 2>/dev/null)
have=$(tree_hash)
if [ -z "$want" ] || [ "$want" != "$have" ]; then
  echo "run-kit.sh: this tree (scripts and bundles $have) is not the one the kit was built from (${want:-no tree hash in MANIFEST}); rebuild the kit from this tree with build-kit.sh" >&2
  printf '# HpBackprop GPU kit\n\nNot run: the tree (its scripts and bundles hash to `%s`) is not the one the kit was built from (`%s`, %s). Rebuild the kit from this tree with `bash tests/gpu/build-kit.sh`.\n' \
    "$have" "${want:-none}" "$(echo "$manifest" | head -1)" > "$out/summary.md"
  exit 5
fi

# the python3 with PyTorch (the first on the PATH that imports torch)
py=python3
for p in python3 /usr/bin/python3 /usr/local/bin/python3 /opt/conda/bin/python3; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch' >/dev/null 2>&1; then py=$p; break; fi
done

# cuBLAS outside the loader's path: PyTorch's wheels (nvidia/cu13/lib, nvidia/cublas/lib), ahead of the
# resolver's own list (toolkit lib64 directories, LD_LIBRARY_PATH, ldconfig)
wheel_dirs=$("$py" -c 'import os, sys
for p in sys.path:
    for sub in ("nvidia/cu13/lib", "nvidia/cublas/lib"):
        d = os.path.join(p, sub)
        if os.path.isdir(d): print(d)' 2>/dev/null | paste -sd: -)
[ -n "$wheel_dirs" ] && export HPB_CUBLAS_PATH="${HPB_CUBLAS_PATH:+$HPB_CUBLAS_PATH:}$wheel_dirs"

# ---- 1. environment
{
  echo "# kit"; echo "$manifest"; echo
  echo "# machine"; uname -a; nproc; free -g 2>/dev/null | head -2; echo
  echo "# nvidia-smi"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total,clocks.max.sm --format=csv 2>&1
    nvidia-smi 2>&1
  else echo "nvidia-smi: not found"; fi
  echo; echo "# driver"; cat /proc/driver/nvidia/version 2>/dev/null || echo "/proc/driver/nvidia/version: absent"
  echo; echo "# libraries (ldconfig)"; ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libcublas' || echo "no libcuda/libcublas in the ldconfig cache"
  echo "HPB_CUBLAS_PATH=${HPB_CUBLAS_PATH:-}"
  echo; echo "# tools"
  for t in compute-sanitizer ncu nvcc python3; do printf '%s: %s\n' "$t" "$(command -v "$t" || echo absent)"; done
  echo "python with torch: $py"
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -1
  echo
} > "$envf"
# the smoke phase first, so that a short lease still brings back the device, parity on two stacks and a step time
phase "smoke: device, driver, cuBLAS; parity on two stacks (20 steps); the step time at S" 90 "$envf" "$app/HpBackprop.GpuKit" smoke
env_rc=$?
gpu=0; [ "$env_rc" = 0 ] || [ "$env_rc" = 1 ] && gpu=1
if [ "$env_rc" = 3 ] || [ "$env_rc" = 4 ]; then # no GPU, or an unusable one, is a finding, not a failure of the phase
  rows[-1]="${rows[-1]/\*\*failed\*\* (exit $env_rc)/$([ "$env_rc" = 3 ] && echo 'no GPU (exit 3)' || echo 'GPU present but unusable (exit 4)')}"
  unset 'failed[-1]'
fi
device=$(sed -n 's/^device: //p' "$envf" | head -1)
cublas=$(sed -n 's/^cuBLAS: //p' "$envf" | head -1)
kernels=$(sed -n 's/^kernels: //p' "$envf" | head -1)
nogpu=$(grep -m1 -E '^no GPU: ' "$envf" | sed -E 's/^no GPU: //; s/\.$//')
unusable=$(grep -m1 -E '^GPU present but unusable: ' "$envf" | sed -E 's/^GPU present but unusable: //; s/\.$//')

if [ "$gpu" = 1 ]; then
  # ---- 2. CUDA vs CPU, every kind of stack
  phase "parity: CUDA vs CPU after the same steps, every kind of stack" 60 "$parityf" "$app/HpBackprop.GpuKit" parity --steps 100
  # ---- 3./4. step times: HpBackprop in process, PyTorch eager and CUDA graph, both with the minibatches on the device
  phase "step times S, M, L, deep, mlp: HpBackprop CUDA" 60 "$stepsf" "$app/HpBackprop.GpuKit" steps --shapes S,M,L,deep,mlp --seconds 1.5
  phase "step times S, M, L, deep, mlp: PyTorch eager and CUDA graph (fp32, TF32 off)" 90 "$stepsf" "$py" tests/gpu/torch_gpu_steps.py --shapes S,M,L,deep,mlp --seconds 1.5
fi
# ---- 5. the driver-path tests (on a machine without a GPU: reported as not run)
if [ "$gpu" = 1 ] && [ ! -f tests/reference/generated/large.f32.safetensors ]; then
  phase "oracle: generate the 'large' bundles (PyTorch)" 60 "$testsf" "$py" tests/reference/oracle.py --cases large --out tests/reference/generated
fi
phase "driver-path tests (TestCategory=GpuDriver, CudaDriverPathTests)" 150 "$testsf" \
  "$app/HpBackprop.Tests" --filter "TestCategory=GpuDriver|FullyQualifiedName~CudaDriverPathTests" --no-progress
tests_line=$(grep -A5 'Test run summary' "$testsf" | tr -s ' \n' ' ' | sed -E 's/.*total: ([0-9]+) failed: ([0-9]+) succeeded: ([0-9]+) skipped: ([0-9]+).*/\1 total, \3 passed, \2 failed, \4 not run (inconclusive)/')
[ -n "$tests_line" ] || tests_line="no summary line (see tests.log)"

if [ "$gpu" = 1 ]; then
  # ---- 6. the seed recipe: 200,000 steps on the GPU
  data=(); [ -f "$kit/data/names.txt" ] && data=(--data "$kit/data/names.txt")
  phase "seed recipe: train 200,000 steps --device cuda" 120 "$seedf" "$app/HpBackprop.Cli" train --device cuda "${data[@]}" --json --samples 10
  # ---- 7. compute-sanitizer
  san=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  if [ -n "$san" ]; then
    for tool in memcheck racecheck synccheck initcheck; do
      extra=(); [ "$tool" = memcheck ] && extra=(--leak-check full)
      phase "compute-sanitizer $tool (short runs, large-V paths)" 45 "$sanf" "$san" --tool "$tool" "${extra[@]}" --error-exitcode 86 "$app/HpBackprop.GpuKit" sanitize
    done
  else
    skip "compute-sanitizer" "not found on this machine"
  fi
  # ---- 8. optional: ncu kernel times of the S and L steps
  ncu_bin=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
  if [ -n "$ncu_bin" ]; then
    phase "ncu: kernel times of 2 steps at S and at L (optional)" 45 "$ncuf" "$ncu_bin" --csv --metrics gpu__time_duration.sum \
      --launch-skip 400 --launch-count 40 "$app/HpBackprop.GpuKit" steps --shapes S,L --seconds 0.3 || true
    [ "${failed[-1]:-}" = "ncu: kernel times of 2 steps at S and at L (optional)" ] && unset 'failed[-1]' # optional: never fails the run
  else
    skip "ncu (optional)" "not found on this machine"
  fi
else
  for p in "parity: CUDA vs CPU" "step times: HpBackprop CUDA and PyTorch" "seed recipe on the GPU" "compute-sanitizer" "ncu (optional)"; do
    skip "$p" "$([ "$env_rc" = 4 ] && echo 'GPU present but unusable' || echo 'no GPU')"
  done
fi

# ---- summary.md
elapsed=$(( $(now) - start ))
{
  echo "# HpBackprop GPU kit — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  if [ "$gpu" = 1 ]; then
    echo "**GPU:** $device. **cuBLAS:** $cublas. **Kernels:** ${kernels:-?}."
  elif [ "$env_rc" = 4 ]; then
    echo "**A GPU is present but unusable**, so nothing ran on it: ${unusable:-see environment.txt}."
    echo "The published tests ran without the .NET SDK; the driver tests among them report the same reason."
  else
    echo "**No GPU was found**, so nothing ran on a GPU: ${nogpu:-the probe found no usable CUDA device (environment.txt)}."
    echo "The published tests ran without the .NET SDK; the driver tests among them are reported as not run."
  fi
  echo
  echo "Kit: $(echo "$manifest" | head -1 | sed 's/^commit: /commit /'); whole run $elapsed s."
  echo
  echo "| phase | limit | took | result |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "**Tests:** $tests_line."
  if grep -q '^failed ' "$testsf" 2>/dev/null; then
    echo; echo "Failed tests:"; grep '^failed ' "$testsf" | sed 's/^/- /' | head -20
  fi
  if [ "$gpu" = 1 ]; then
    echo
    echo "## Smoke (environment.txt)"; echo
    grep -E '^(device|driver CUDA|cuBLAS|runtime start):' "$envf" | sed 's/^/    /'
    echo
    echo "## CUDA vs CPU (parity.md)"; echo
    grep '^|' "$parityf" 2>/dev/null || echo "(no table: see parity.md)"
    echo
    echo "## Seed recipe on the GPU (seed-train.log)"; echo
    grep -m1 '^{' "$seedf" 2>/dev/null || echo "(no summary line: see seed-train.log)"
    grep -E '^(trained|train loss|step +200,000)' "$seedf" 2>/dev/null | sed 's/^/    /'
    echo
    echo "## Step times, µs per step (steps.md)"; echo
    python3 - "$stepsf" <<'PY' 2>/dev/null || echo "(see steps.md)"
import json, sys
rows = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if "shape" not in r:
        continue
    key = "hpbackprop" if r["side"] == "hpbackprop-cuda" else "torch-" + r["variant"]
    rows.setdefault(r["shape"], {})[key] = r
print("| shape | HpBackprop CUDA median (best) | PyTorch eager median (best) | PyTorch CUDA graph median (best) | × vs eager | × vs graph |")
print("|---|---|---|---|---|---|")
def cell(r): return f"{r['us_median']:.1f} ({r['us_min']:.1f})" if r else "–"
def ratio(a, b): return f"{b['us_median'] / a['us_median']:.2f}×" if a and b else "–"
for s in ("S", "M", "L", "deep", "mlp"):
    d = rows.get(s, {})
    h, e, g = d.get("hpbackprop"), d.get("torch-eager"), d.get("torch-graph")
    print(f"| {s} | {cell(h)} | {cell(e)} | {cell(g)} | {ratio(h, e)} | {ratio(h, g)} |")
PY
    echo
    echo "## compute-sanitizer (sanitizers.log)"; echo
    if [ -f "$sanf" ]; then grep -E '^== compute-sanitizer|ERROR SUMMARY|LEAK SUMMARY|RACECHECK SUMMARY' "$sanf" | sed 's/^/    /'; else echo "not run"; fi
  fi
  echo
  echo "## Files"
  echo
  for f in "$summary" "$envf" "$testsf" "$parityf" "$seedf" "$stepsf" "$sanf" "$ncuf"; do
    [ -f "$f" ] && echo "- \`$(basename "$f")\`"
  done
  echo
  if [ "$env_rc" = 4 ]; then echo "Exit code 4: a GPU is present but unusable."
  elif [ "$gpu" != 1 ]; then echo "Exit code 3: no GPU."
  elif [ "${#failed[@]}" -gt 0 ]; then echo "Exit code 1: failed — $(printf '%s; ' "${failed[@]}" | sed 's/; $//')."
  else echo "Exit code 0: every phase passed."; fi
} > "$summary"

cat "$summary"
[ "$env_rc" = 4 ] && exit 4
[ "$gpu" = 1 ] || exit 3
[ "${#failed[@]}" -eq 0 ] || exit 1
exit 0
