#!/usr/bin/env bash
# Make sure the MONAI Label server used by tests/spine_core/inference/test_monailabel_real.py is
# installed: the pinned packages of requirements/monailabel.txt, --no-deps, in .venv/monailabel/ (a
# PYTHONPATH overlay over the project venv; see that file for why). Cached: rebuilt only when the
# pins change.
set -euo pipefail
cd "$(dirname "$0")/.."
req=requirements/monailabel.txt
target=.venv/monailabel
stamp="$target/.spinereview-requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  echo "ensure-monailabel: .venv is missing; run scripts/install.sh test first" >&2
  exit 1
fi
echo "installing MONAI Label (requirements/monailabel.txt) into $target for the MONAI Label tests" >&2
rm -rf "$target"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --target "$target" -r "$req"
echo "$want" > "$stamp"
