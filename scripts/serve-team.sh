#!/usr/bin/env bash
# A team deployment on this machine, in one command: N app replicas (`streamlit run server.py`),
# Debian's nginx in front of them on one address, the inference backend, one `spine worker` that
# runs the long jobs the replicas queue (SPINE_WORKER=external), and the database given by URL
# (PostgreSQL for a team; every replica shares its sign-in sessions, throttle and jobs).
#
#   SPINE_DB_URL=postgresql://spine@dbhost:5432/spine scripts/serve-team.sh --replicas 3
#
# Options: --replicas N (default 2) · --route-servers N: processes serving the workstation's box
# saves (`python -m spine_web`, default 1; ports after the replicas') · --port P: nginx listens on P (default 8080) · --app-port P:
# first replica's port (default 8601; replicas on 127.0.0.1:P, P+1, ...) · --backend-port P
# (default 8000) · --ray [--ray-replicas N]: the backend on Ray Serve · --listen ADDR: nginx's
# address (default 0.0.0.0).
# Environment: SPINE_DB_URL (required), SPINE_DATA_DIR (the shared data folder, default ./var),
# SPINE_BACKEND_URL (an existing backend: none is started here), SPINE_BACKEND_TOKEN (made up
# and kept in $SPINE_DATA_DIR/team/backend-token when unset), SPINE_VOLUME_SECRET (likewise, in
# team/volume-secret). Logs and nginx's files:
# $SPINE_DATA_DIR/team/. A replica that dies is started again. Ctrl-C (or SIGTERM) stops everything it
# started.
set -euo pipefail
cd "$(dirname "$0")/.."

REPLICAS=2 ROUTE_SERVERS=1 PORT=8080 APP_PORT=8601 BACKEND_PORT=8000 RAY="" RAY_REPLICAS=1 LISTEN=0.0.0.0
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) REPLICAS="$2"; shift 2 ;;
    --route-servers) ROUTE_SERVERS="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --app-port) APP_PORT="$2"; shift 2 ;;
    --backend-port) BACKEND_PORT="$2"; shift 2 ;;
    --ray) RAY=1; shift ;;
    --ray-replicas) RAY_REPLICAS="$2"; shift 2 ;;
    --listen) LISTEN="$2"; shift 2 ;;
    *) echo "serve-team.sh: unknown option $1 (see the comment at the top of the script)" >&2; exit 2 ;;
  esac
done
case "$REPLICAS" in ''|*[!0-9]*|0) echo "serve-team.sh: --replicas must be a number >= 1" >&2; exit 2 ;; esac
case "$ROUTE_SERVERS" in ''|*[!0-9]*|0) echo "serve-team.sh: --route-servers must be a number >= 1" >&2; exit 2 ;; esac
if [ -z "${SPINE_DB_URL:-}" ]; then
  echo "serve-team.sh: set SPINE_DB_URL to the team's PostgreSQL, e.g." \
       "postgresql://spine@127.0.0.1:5432/spine" >&2
  exit 2
fi
case "$SPINE_DB_URL" in
  sqlite*) echo "serve-team.sh: warning: SQLite serves one machine only; use PostgreSQL for a team" >&2 ;;
esac
export SPINE_DB_URL
export SPINE_DATA_DIR="${SPINE_DATA_DIR:-$PWD/var}"
RUN="$SPINE_DATA_DIR/team"
mkdir -p "$RUN/tmp" "$RUN/cache"
if [ -z "${SPINE_BACKEND_TOKEN:-}" ]; then
  [ -s "$RUN/backend-token" ] || (umask 077; .venv/bin/python -c \
    "import secrets; print(secrets.token_urlsafe(32))" > "$RUN/backend-token")
  SPINE_BACKEND_TOKEN="$(cat "$RUN/backend-token")"
fi
export SPINE_BACKEND_TOKEN
# the key of the viewer's volume grants (spine_viewer.grants): one for every replica, so a reader
# whose replica died keeps the same chunk URLs on the next one and reads them from the browser cache
if [ -z "${SPINE_VOLUME_SECRET:-}" ]; then
  [ -s "$RUN/volume-secret" ] || (umask 077; .venv/bin/python -c \
    "import secrets; print(secrets.token_urlsafe(32))" > "$RUN/volume-secret")
  SPINE_VOLUME_SECRET="$(cat "$RUN/volume-secret")"
fi
export SPINE_VOLUME_SECRET

scripts/ensure-nginx.sh
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

PIDS=()
stop() {
  trap - INT TERM EXIT
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

echo "database: migrations" >&2
.venv/bin/spine db upgrade

if [ -z "${SPINE_BACKEND_URL:-}" ]; then
  if [ -n "$RAY" ]; then
    .venv/bin/spine serve --ray --replicas "$RAY_REPLICAS" --port "$BACKEND_PORT" \
      > "$RUN/backend.log" 2>&1 &
  else
    .venv/bin/spine serve --port "$BACKEND_PORT" > "$RUN/backend.log" 2>&1 &
  fi
  PIDS+=("$!")
  export SPINE_BACKEND_URL="http://127.0.0.1:$BACKEND_PORT"
  echo "backend: $SPINE_BACKEND_URL (log $RUN/backend.log)" >&2
fi

# "predict all", single-study predictions and PACS imports are queued in the database for the
# worker below (it needs the SPINE_DICOMWEB_* settings of this environment for the imports)
export SPINE_WORKER=external
.venv/bin/spine worker > "$RUN/worker.log" 2>&1 &
PIDS+=("$!")
echo "job worker: spine worker (log $RUN/worker.log)" >&2

# A replica that dies (a crash, the OOM killer, kill -9) is started again; meanwhile its readers'
# browsers reconnect through nginx to the other replicas, still signed in (the sessions are rows).
replica() {  # replica INDEX PORT
  local child=""
  trap '[ -n "$child" ] && kill "$child" 2>/dev/null; exit 0' INT TERM
  : > "$RUN/replica-$1.log"
  while true; do
    .venv/bin/streamlit run server.py --server.headless true --server.address 127.0.0.1 \
      --server.port "$2" --browser.gatherUsageStats false >> "$RUN/replica-$1.log" 2>&1 &
    child=$!
    wait "$child" || true
    echo "serve-team.sh: replica $1 (127.0.0.1:$2) ended; starting it again" >&2
    sleep 1
  done
}

SERVERS=""
for i in $(seq 0 $((REPLICAS - 1))); do
  port=$((APP_PORT + i))
  replica "$i" "$port" &
  PIDS+=("$!")
  SERVERS="$SERVERS    server 127.0.0.1:$port max_fails=1 fail_timeout=5s;
"
  echo "replica $i: 127.0.0.1:$port (log $RUN/replica-$i.log)" >&2
done

ROUTES=""
for i in $(seq 0 $((ROUTE_SERVERS - 1))); do
  port=$((APP_PORT + REPLICAS + i))
  .venv/bin/python -m spine_web --port "$port" > "$RUN/routes-$i.log" 2>&1 &
  PIDS+=("$!")
  ROUTES="$ROUTES        server 127.0.0.1:$port max_fails=1 fail_timeout=5s;
"
  echo "box-save route server $i: 127.0.0.1:$port (log $RUN/routes-$i.log)" >&2
done

sed -e "s#@RUN@#$RUN#g" -e "s#@LISTEN@#$LISTEN:$PORT#g" deploy/nginx-team.conf \
  | awk -v servers="$SERVERS" -v routes="$ROUTES" \
      '{ if ($0 ~ /@SERVERS@/) printf "%s", servers; else if ($0 ~ /@ROUTES@/) printf "%s", routes; else print }' \
  > "$RUN/nginx.conf"
"$NGINX" -t -q -c "$RUN/nginx.conf" -p "$RUN"
"$NGINX" -c "$RUN/nginx.conf" -p "$RUN" -g "daemon off;" &
PIDS+=("$!")
echo "SpineReview for the team: http://$LISTEN:$PORT (nginx, config $RUN/nginx.conf)" >&2
wait -n || true
echo "serve-team.sh: a process ended; stopping the others (see the logs in $RUN)" >&2
