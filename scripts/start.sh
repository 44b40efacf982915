#!/usr/bin/env bash
# Install into ./.venv, prepare the embedded default (SQLite under ./var, demo users, synthetic demo
# studies on first start, CPU models) and start the app on http://localhost:${SPINE_PORT:-8501}.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
.venv/bin/spine bootstrap
exec .venv/bin/streamlit run server.py --server.headless true --server.port "${SPINE_PORT:-8501}" \
  --browser.gatherUsageStats false
