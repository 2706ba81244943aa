#!/usr/bin/env bash
# Idempotent install of the headless browser the report tests open report.html in: Debian's chromium package.
# A system package (not the venv) because browser builds cannot be downloaded by pip/playwright on our machines.
# Fast path: nothing to do when /usr/bin/chromium is already there.
set -euo pipefail

CHROMIUM="${SDAE_CHROMIUM:-/usr/bin/chromium}"
if [[ -x "$CHROMIUM" ]]; then
  echo "[install_browser] chromium present ($CHROMIUM)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[install_browser] $CHROMIUM is missing and apt-get is not available: install Chromium and set SDAE_CHROMIUM" >&2
  exit 1
fi
SUDO=()
if [[ "$(id -u)" != 0 ]]; then SUDO=(sudo); fi
echo "[install_browser] installing Debian's chromium package"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
[[ -x "$CHROMIUM" ]] || { echo "[install_browser] apt-get finished but $CHROMIUM is still missing" >&2; exit 1; }
echo "[install_browser] installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
