#!/bin/sh
# System packages the test suite needs, installed with apt-get (Debian/Ubuntu):
#   prometheus  promtool (`promtool check metrics`) and the server the dashboard tests query
#   chromium    headless browser for the dashboard rendering test (driven by playwright-core)
# Idempotent: does nothing when every tool is already present. Needs root (or sudo) otherwise.
set -eu

missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v prometheus >/dev/null 2>&1 || case "$missing" in *prometheus*) ;; *) missing="$missing prometheus" ;; esac
[ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1 || missing="$missing chromium"

if [ -z "$missing" ]; then
  echo "system test dependencies already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "need root to install:$missing" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
# --no-install-recommends keeps Prometheus from pulling in node-exporter and friends.
# shellcheck disable=SC2086
$SUDO apt-get install -y --no-install-recommends $missing
echo "installed:$missing"
