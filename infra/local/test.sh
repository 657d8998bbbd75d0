#!/usr/bin/env bash
# Set up everything and run the test suite. Extra arguments go to pytest, e.g.
#   infra/local/test.sh -m "not slow"     # the quick tier
# VLMBATCH_TEST_WORKERS=N runs the tests on N pytest-xdist workers, a file's tests on one worker so
# that a module's engine starts once (tests/conftest.py). Default 0, in this process: on the 2-core
# CI machine two workers made the whole run slower (about 31 min against 25: two Ray instances and
# their engines contend for the same two cores); use it where there are cores to spare.
set -euo pipefail
source "$(dirname "$0")/env.sh"
bash "$(dirname "$0")/chromium.sh" || echo "[test] chromium could not be installed; the report page test will say so" >&2
workers=(-n "${VLMBATCH_TEST_WORKERS:-0}" --dist loadgroup)
for arg in "$@"; do
  case "$arg" in -n*|--numprocesses*|--pdb|no:xdist) workers=() ;; esac
done
python -m pytest "${workers[@]}" "$@"
