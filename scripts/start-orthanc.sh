#!/usr/bin/env bash
# Start Orthanc (Debian's package, scripts/ensure-orthanc.sh) as a development / test PACS, in the
# foreground, with the project's own configuration:
#   - loopback only, on ORTHANC_HTTP_PORT (default: a free port), no DICOM (DIMSE) listener;
#   - storage and index in DIR (default: a new temporary folder), removed by nobody but you;
#   - the DICOMweb plugin at /dicom-web/;
#   - HTTP basic authentication: ORTHANC_USER / ORTHANC_PASSWORD (defaults spine / spine-pacs).
# Usage: scripts/start-orthanc.sh [DIR]
# Point SpineReview at it with SPINE_DICOMWEB_URL=http://127.0.0.1:PORT/dicom-web and
# SPINE_DICOMWEB_USER / SPINE_DICOMWEB_PASSWORD.
set -euo pipefail
DIR=${1:-$(mktemp -d -t spine-orthanc.XXXXXX)}
mkdir -p "$DIR/db"
PORT=${ORTHANC_HTTP_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
USER_NAME=${ORTHANC_USER:-spine}
PASSWORD=${ORTHANC_PASSWORD:-spine-pacs}
PLUGINS=${ORTHANC_PLUGINS:-/usr/share/orthanc/plugins/libOrthancDicomWeb.so}
BINARY=$(command -v Orthanc || echo /usr/sbin/Orthanc)
umask 077
python3 - "$DIR" "$PORT" "$USER_NAME" "$PASSWORD" "$PLUGINS" >"$DIR/orthanc.json" <<'PY'
import json, sys
folder, port, user, password, plugins = sys.argv[1:]
print(json.dumps({
    "Name": "spinereview-test",
    "HttpPort": int(port),
    "DicomServerEnabled": False,
    "StorageDirectory": f"{folder}/db",
    "IndexDirectory": f"{folder}/db",
    "RemoteAccessAllowed": False,
    "AuthenticationEnabled": True,
    "RegisteredUsers": {user: password},
    "HttpTimeout": 60,
    "StableAge": 1,
    "Plugins": [plugins],
    "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
}, indent=2))
PY
echo "orthanc: http://127.0.0.1:$PORT/dicom-web (user $USER_NAME, storage $DIR)" >&2
exec "$BINARY" "$DIR/orthanc.json"
