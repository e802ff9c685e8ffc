#!/usr/bin/env bash
# Regenerate the PyTorch oracle bundles into a temporary folder and compare them
# with the committed ones in tests/reference/bundles. Exits non-zero on mismatch.
# Needs /usr/bin/python3 with torch (Debian python3-torch) and numpy.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py=/usr/bin/python3
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$py" "$here/oracle.py" --out "$tmp"
"$py" "$here/compare_bundles.py" "$here/bundles" "$tmp"
