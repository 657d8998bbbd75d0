#!/usr/bin/env bash
# Set up everything and run the test suite. Extra arguments go to pytest, e.g.
#   infra/local/test.sh -m "not slow"     # the quick tier
set -euo pipefail
source "$(dirname "$0")/env.sh"
python -m pytest "$@"
