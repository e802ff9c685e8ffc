#!/usr/bin/env bash
# Sourced by run.sh (and bench/baselines scripts): makes a program that uses TorchSharp able to load LibTorch on
# this machine. TorchSharp 0.107's native wrapper (libLibTorchSharp.so, LibTorch 2.10) needs glibc >= 2.38 and
# GCC 13's libstdc++ (GLIBCXX_3.4.32). Where the system has them, nothing is done. Otherwise (Debian 12: glibc 2.36,
# GCC 12) Debian 13's dynamic loader and C/C++ runtime are unpacked, not installed, into a folder:
#   apt-get download libc6 libstdc++6 libgcc-s1   (through a private source list for trixie, its own state folders)
#   dpkg -x each into $HPB_TS_RUNTIME/root
# and a copy of the program's apphost is given that loader and library path with patchelf:
#   patchelf --set-interpreter ROOT/usr/lib64/ld-linux-x86-64.so.2 --set-rpath ROOT/usr/lib/x86_64-linux-gnu
# Functions:
#   ts_runtime_needed          exit 0 when the system's C/C++ runtime is too old for TorchSharp
#   ts_runtime_prepare         fetches and unpacks the runtime once (needs apt-get and dpkg; installs patchelf as root)
#   ts_patched_apphost APPHOST prints the path of a patched copy (APPHOST.trixie) of an apphost, made when older than it
# Variables: HPB_TS_RUNTIME (default ~/.cache/hpbackprop/trixie-runtime), DOTNET_ROOT (exported).

: "${HPB_TS_RUNTIME:=${XDG_CACHE_HOME:-$HOME/.cache}/hpbackprop/trixie-runtime}"
export DOTNET_ROOT="${DOTNET_ROOT:-$(dirname "$(readlink -f "$(command -v dotnet)")")}"

ts_runtime_needed() {
  local glibc minor
  glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
  minor=${glibc#2.}
  if [ -z "$glibc" ] || [ "${minor%%.*}" -lt 38 ] 2>/dev/null; then return 0; fi
  local cxx
  cxx=$(/sbin/ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF; exit}')
  [ -n "$cxx" ] && grep -q GLIBCXX_3.4.32 "$cxx" && return 1
  return 0
}

ts_runtime_prepare() {
  local dir=$HPB_TS_RUNTIME
  if [ -x "$dir/root/usr/lib64/ld-linux-x86-64.so.2" ] && [ -f "$dir/root/usr/lib/x86_64-linux-gnu/libstdc++.so.6" ]; then
    command -v patchelf >/dev/null && return 0
  fi
  if ! command -v patchelf >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      echo "torchsharp runtime: installing patchelf (apt-get)" >&2
      apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends patchelf >/dev/null || return 1
    else
      echo "torchsharp runtime: patchelf is needed (apt-get install patchelf)" >&2; return 1
    fi
  fi
  [ -x "$dir/root/usr/lib64/ld-linux-x86-64.so.2" ] && [ -f "$dir/root/usr/lib/x86_64-linux-gnu/libstdc++.so.6" ] && return 0
  echo "torchsharp runtime: fetching Debian 13's libc6, libstdc++6, libgcc-s1 into $dir (not installed)" >&2
  rm -rf "$dir/apt" "$dir/debs" "$dir/root"
  mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial" "$dir/debs" "$dir/root"
  cat > "$dir/apt/sources.list" <<'SRC'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
SRC
  local opts=(-o "Dir::Etc::SourceList=$dir/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$dir/apt/lists" -o "Dir::Cache=$dir/apt/cache" -o "Dir::State::status=/var/lib/dpkg/status"
              -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" update -q >&2 || return 1
  (cd "$dir/debs" && apt-get "${opts[@]}" download libc6 libstdc++6 libgcc-s1 >&2) || return 1
  local deb
  for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$dir/root" || return 1; done
  rm -rf "$dir/apt/cache"
  [ -x "$dir/root/usr/lib64/ld-linux-x86-64.so.2" ] || { echo "torchsharp runtime: no loader in $dir/root/usr/lib64" >&2; return 1; }
}

ts_patched_apphost() {
  local host=$1 copy=$1.trixie
  if [ ! -f "$copy" ] || [ "$host" -nt "$copy" ]; then
    cp "$host" "$copy"
    patchelf --set-interpreter "$HPB_TS_RUNTIME/root/usr/lib64/ld-linux-x86-64.so.2" \
             --set-rpath "$HPB_TS_RUNTIME/root/usr/lib/x86_64-linux-gnu" "$copy" || return 1
  fi
  echo "$copy"
}
