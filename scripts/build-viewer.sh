#!/usr/bin/env bash
# Rebuild the browser viewer: frontend/ -> spine_viewer/static/workstation.js (+ SOURCES.sha256).
# Needs Node 20 and npm; installing SpineReview does not (the bundle is committed).
set -euo pipefail
cd "$(dirname "$0")/../frontend"
npm ci --no-audit --no-fund
npm run build
