#!/usr/bin/env bash
# Make sure Debian's nginx is installed, for the team deployment (scripts/serve-team.sh): the
# reverse proxy in front of the app replicas (never a downloaded build). Its own service is not
# used: serve-team.sh starts nginx with a configuration of its own.
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian's nginx for the team deployment" >&2
$SUDO apt-get update -qq
# The package's own service start is denied in containers (policy-rc.d); that is fine.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx-light >/dev/null 2>&1 \
  || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null
