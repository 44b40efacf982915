#!/usr/bin/env bash
# Install what the tests need (the package with its test extras, Debian's Chromium for the browser
# tests, the MONAI Label server for tests/spine_core/inference/test_monailabel_real.py) and run the
# whole test suite, listing its 30 slowest tests (CI must stay under 40 minutes). Extra arguments go
# to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test
scripts/ensure-chromium.sh
scripts/ensure-orthanc.sh
scripts/ensure-monailabel.sh
export SPINE_TEST_PG_URL=${SPINE_TEST_PG_URL:-postgresql://postgres@127.0.0.1:5432/test}
echo "ruff: lint and import order (spine_core, db, spine_cli, spine_viewer, spine_web, pages, app.py, server.py, tests)"
.venv/bin/ruff check spine_core db spine_cli spine_viewer spine_web pages app.py server.py tests
echo "mypy: spine_core, db, spine_cli, spine_viewer, spine_web"
.venv/bin/mypy
exec .venv/bin/python -m pytest -n "${SPINE_TEST_WORKERS:-2}" --dist loadgroup --durations=30 "$@"
