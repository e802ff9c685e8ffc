#!/usr/bin/env bash
# run-sanitizers.sh — builds the emulator and the native kernel tests twice, with
# AddressSanitizer(+UBSan) and with ThreadSanitizer, into separate directories, and runs ctest
# in each.  Exits non-zero if a build fails, a test fails or a sanitizer reports anything.
#
#   native/kernels/run-sanitizers.sh            # both
#   native/kernels/run-sanitizers.sh thread     # one of: address, thread
#
# Build dirs: native/kernels/build/asan, native/kernels/build/tsan (git-ignored).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
jobs="${HPB_JOBS:-$(nproc 2>/dev/null || echo 2)}"
kinds=("$@")
[ ${#kinds[@]} -eq 0 ] && kinds=(address thread)

# Sanitizer reports fail the run; TSan also treats its own reports as errors (exitcode 66).
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:history_size=4${TSAN_OPTIONS:+:$TSAN_OPTIONS}"

status=0
for kind in "${kinds[@]}"; do
  case "$kind" in
    address) dir="$here/build/asan" ;;
    thread) dir="$here/build/tsan" ;;
    *) echo "unknown sanitizer '$kind' (address|thread)" >&2; exit 2 ;;
  esac
  echo "== $kind sanitizer: configure + build ($dir)"
  cmake -S "$here" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHPB_SANITIZE="$kind" -DHPB_EMU_TESTS=ON >/dev/null
  cmake --build "$dir" -j "$jobs" >/dev/null
  echo "== $kind sanitizer: ctest"
  if ! ctest --test-dir "$dir" --output-on-failure -j "$jobs"; then
    status=1
  fi
done
exit $status
