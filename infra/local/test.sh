#!/usr/bin/env bash
# Set up everything and run the test suite. Extra arguments go to pytest, e.g.
#   infra/local/test.sh -m "not slow"     # the quick tier
# Tests run on two pytest-xdist workers (most of a slow test's time is one process starting or
# waiting: Ray, an engine, a subprocess run), a file's tests on one worker so that a module's
# engine starts once; VLMBATCH_TEST_WORKERS=0 runs them in this process, one after another.
set -euo pipefail
source "$(dirname "$0")/env.sh"
bash "$(dirname "$0")/chromium.sh" || echo "[test] chromium could not be installed; the report page test will say so" >&2
workers=(-n "${VLMBATCH_TEST_WORKERS:-2}" --dist loadgroup)
for arg in "$@"; do
  case "$arg" in -n*|--numprocesses*|--pdb|no:xdist) workers=() ;; esac
done
python -m pytest "${workers[@]}" "$@"
