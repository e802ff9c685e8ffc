#!/usr/bin/env bash
# Regenerate the committed PyTorch oracle bundles (every case but 'large') into a temporary
# folder and compare them with tests/reference/bundles. Exits non-zero on mismatch.
# The 'large' case (80 MB) is not committed: .ci/run generates it into the ignored folder
# tests/reference/generated with `oracle.py --cases large --out tests/reference/generated`.
# Needs /usr/bin/python3 with torch (Debian python3-torch) and numpy.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py=/usr/bin/python3
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
committed=$(cd "$here/bundles" && ls *.safetensors | sed 's/\.f[0-9]*\.safetensors$//' | sort -u | paste -sd, -)
"$py" "$here/oracle.py" --out "$tmp" --cases "$committed"
"$py" "$here/compare_bundles.py" "$here/bundles" "$tmp"
