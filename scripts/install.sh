#!/usr/bin/env bash
# Create ./.venv and install SpineReview into it (editable). Usage: scripts/install.sh [test]
# On a machine without a CUDA GPU, PyTorch's CPU build is used (requirements/cpu.txt), so no
# multi-GB CUDA libraries are downloaded. Set SPINE_TORCH=any to let pip choose (GPU servers).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extras=""
[ "${1:-}" = "test" ] && extras="[test]"
constraint=(-c requirements/cpu.txt)
[ "${SPINE_TORCH:-cpu}" = "any" ] && constraint=()
.venv/bin/python -m pip install --quiet --disable-pip-version-check "${constraint[@]}" -e ".${extras}"
