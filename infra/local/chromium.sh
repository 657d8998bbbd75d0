#!/usr/bin/env bash
# Make sure a headless Chromium is present (the run-report page test renders in it).
# Installs Debian's `chromium` package when missing and this is root on a Debian-like system;
# otherwise says so and leaves it (the test then fails in CI and is skipped elsewhere).
set -euo pipefail
for name in chromium chromium-browser google-chrome; do
  if command -v "$name" >/dev/null 2>&1; then exit 0; fi
done
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "[chromium] installing Debian's chromium" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2
else
  echo "[chromium] not installed and cannot install it here (needs root and apt-get)" >&2
fi
