#!/usr/bin/env bash
# Make sure Debian's Orthanc and its DICOMweb plugin are installed, for `spine import dicomweb`,
# `spine push` and the PACS integration tests (never a downloaded build), and dicom3tools, whose
# dciodvfy checks the SEG and SR we write against the standard in those tests.
set -euo pipefail
if command -v Orthanc >/dev/null 2>&1 && [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] \
   && command -v dciodvfy >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian's orthanc and orthanc-dicomweb for the PACS tests" >&2
$SUDO apt-get update -qq
# The package's own service start is denied in containers (policy-rc.d); that is fine: we start
# Orthanc ourselves with our configuration (scripts/start-orthanc.sh).
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq orthanc orthanc-dicomweb dicom3tools >/dev/null
