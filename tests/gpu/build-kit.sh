#!/usr/bin/env bash
# build-kit.sh — builds the GPU validation kit on a machine with the .NET SDK (no GPU needed):
# the test executable (MSTest on Microsoft.Testing.Platform), the hpbackprop CLI and the kit's
# measuring tool, published self-contained for linux-x64 into one folder, plus makemore's names.txt
# (HPB_NAMES=path/to/names.txt; default ../shared/data/names.txt when it is there), packed as tests/gpu/out/hpbackprop-gpu-kit.tar.xz (ignored by
# git; must stay under 40 MB so that it travels beside the working tree).
#
#   bash tests/gpu/build-kit.sh
#
# Then, on the GPU machine, from the repository root: bash tests/gpu/run-kit.sh (tests/gpu/README.md).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/out"
stage="$out/stage"
archive="$out/hpbackprop-gpu-kit.tar.xz"
limit=$((40 * 1000 * 1000))
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

command -v dotnet >/dev/null || { echo "build-kit.sh: the .NET SDK (dotnet) is needed to build the kit" >&2; exit 1; }
command -v xz >/dev/null || { echo "build-kit.sh: xz is needed to pack the kit" >&2; exit 1; }
rm -rf "$stage" "$archive"
mkdir -p "$stage/app" "$stage/data"

# one folder, three apps: they share the runtime and the HpBackprop assemblies
props=(-c Release -r linux-x64 --self-contained true -p:DebugType=none -p:DebugSymbols=false -p:GenerateDocumentationFile=false -nologo -v q)
for project in tests/HpBackprop.Tests src/Managed/HpBackprop.Cli tests/gpu/kit; do
  echo "build-kit.sh: publishing $project"
  dotnet publish "$root/$project" "${props[@]}" -o "$stage/app" | { grep -E "error|warn" || true; }
done
for f in HpBackprop.Tests HpBackprop.Cli HpBackprop.GpuKit libhpbackprop_kernels_emu.so libhpb_fake_cuda.so; do
  [ -f "$stage/app/$f" ] || { echo "build-kit.sh: $f is missing from the published folder" >&2; exit 1; }
done
rm -f "$stage/app/"*.xml
# ONNX Runtime's native library (34 MB) is for the ONNX export tests, which the kit does not run (run-kit.sh runs the GPU
# tests); without it the archive stays well under its limit
rm -f "$stage/app/"libonnxruntime*.so

names="${HPB_NAMES:-$root/../shared/data/names.txt}"
if [ -f "$names" ]; then
  cp "$names" "$stage/data/names.txt"
  data="names.txt (makemore's corpus, from $names)"
else
  data="none (the seed recipe uses the built-in corpus)"
fi
{
  echo "commit: $(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n)"
  echo "sdk: $(dotnet --version); runtime: $(sed -nE 's/.*"Microsoft.NETCore.App\/([^"]+)".*/\1/p' "$stage/app/HpBackprop.Tests.deps.json" | head -1)"
  echo "data: $data"
  # the scripts and bundles run-kit.sh reads from the tree: it refuses a tree whose hash differs (the same command there)
  echo "tree: $(cd "$root" && find tests/gpu tests/reference -type f \( -name '*.py' -o -name '*.sh' -o -name '*.safetensors' \) \
    ! -path 'tests/reference/generated/*' ! -path 'tests/gpu/out/*' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
} > "$stage/MANIFEST"

echo "build-kit.sh: packing"
tar -C "$stage" -cf - . | xz -9 -T0 > "$archive"
size=$(stat -c %s "$archive")
rm -rf "$stage"
if [ "$size" -ge "$limit" ]; then
  echo "build-kit.sh: $archive is $size bytes, over the 40 MB limit" >&2
  exit 1
fi
echo "build-kit.sh: wrote $archive ($(awk -v s="$size" 'BEGIN { printf "%.1f MB", s / 1e6 }'))"
