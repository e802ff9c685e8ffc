#!/usr/bin/env bash
# Regenerate the layer-stack oracle bundles (stack_oracle.py) into a temporary folder
# and compare them with the committed ones in tests/reference/stacks.
# Exits non-zero on any difference. Needs /usr/bin/python3 with torch (Debian
# python3-torch) and numpy.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py=/usr/bin/python3
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$py" "$here/stack_oracle.py" --out "$tmp" >/dev/null
"$py" "$here/compare_bundles.py" "$here/stacks" "$tmp"
# compare_bundles only reports files that exist in the committed folder: a case
# generated but not committed is a difference too.
extra="$(cd "$tmp" && for f in *.safetensors; do [ -e "$here/stacks/$f" ] || echo "$f"; done)"
if [ -n "$extra" ]; then
    echo "FAIL generated but not committed:" $extra
    exit 1
fi
