#!/usr/bin/env bash
# Set up everything and run the test suite. Extra arguments go to pytest, e.g.
#   infra/local/test.sh -m "not slow"     # the quick tier
set -euo pipefail
source "$(dirname "$0")/env.sh"
bash "$(dirname "$0")/chromium.sh" || echo "[test] chromium could not be installed; the report page test will say so" >&2
python -m pytest "$@"
