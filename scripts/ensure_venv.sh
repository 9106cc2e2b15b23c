# Sourced by run_dns.sh and run_tests.sh: make sure .venv exists and holds
# this project with its test extras, reinstalling when pyproject.toml changes.
# Needs only a python3 (3.11 or newer) on PATH.
set -eu

if [ -z "${PYTHON:-}" ]; then
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            PYTHON=$candidate
            break
        fi
    done
fi
if [ -z "${PYTHON:-}" ]; then
    echo "error: MyDNS needs Python 3.11 or newer; install it (e.g. apt-get install python3) or set PYTHON=/path/to/python3" >&2
    exit 2
fi

stamp=.venv/.installed-from
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv with $PYTHON ..." >&2
    "$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
    echo "installing mydns_lab and its dependencies into .venv ..." >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
    cp pyproject.toml "$stamp"
fi
