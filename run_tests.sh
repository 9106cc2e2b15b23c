#!/bin/sh
# Runs every test. Creates .venv on first use. Extra arguments go to pytest,
# e.g. `sh run_tests.sh -k election -x`.
set -eu
cd "$(dirname "$0")"
. scripts/ensure_venv.sh
exec .venv/bin/python -m pytest "$@"
