#!/usr/bin/env bash
# build-emulator.sh — configures (once) and builds libhpbackprop_kernels_emu.so, quietly and
# incrementally.  Called by HpBackprop.Emulator.targets before `dotnet build`; usable by hand.
#
#   native/kernels/build-emulator.sh [BUILD_DIR]     (default native/kernels/build/emu-release)
#
# Needs only CMake (>= 3.20) and a C++20 compiler (g++ or clang++); no CUDA toolkit.
# Concurrent callers (several projects of one solution build in parallel) are serialised with
# flock on BUILD_DIR/.lock.  Output goes to BUILD_DIR/*.log and is printed only on failure.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${1:-$here/build/emu-release}"

# Exit code 3, with one line on stdout, when a tool is missing: the MSBuild import then says the
# emulator is not built and the build goes on (the emulator is optional).
if ! command -v cmake >/dev/null 2>&1; then
  echo "cmake not found; it needs CMake >= 3.20 and a C++20 compiler, e.g. apt-get install cmake g++"
  exit 3
fi
if [ -z "${CXX:-}" ] && ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
  echo "no C++ compiler found (c++, g++, clang++ or \$CXX); it needs a C++20 compiler, e.g. apt-get install g++"
  exit 3
fi
mkdir -p "$dir"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$dir/.lock"
  flock 9
fi
# configure every time (seconds when cached): a build folder made before CMakeLists.txt gained a target
# would otherwise be asked for that target before make regenerates its rules ("No rule to make target")
if ! cmake -S "$here" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DHPB_EMU_TESTS=OFF >"$dir/configure.log" 2>&1; then
  cat "$dir/configure.log" >&2
  echo "error HPB002: configuring the CUDA emulator library failed (log: $dir/configure.log)" >&2
  exit 1
fi
if ! cmake --build "$dir" --target hpbackprop_kernels_emu hpb_fake_cuda --parallel "$(nproc 2>/dev/null || echo 2)" >"$dir/build.log" 2>&1; then
  cat "$dir/build.log" >&2
  echo "error HPB003: building the CUDA emulator library failed (log: $dir/build.log)" >&2
  exit 1
fi
