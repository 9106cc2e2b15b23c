"""`python query.py --help`: see mydns_lab/queryclient.py and docs/service.md."""

import os
import sys
from pathlib import Path

try:
    from mydns_lab.clients.query import main
except ImportError:
    # Run by a python without the project's packages: use the project's .venv
    # (made by run_dns.sh or run_tests.sh) if there is one.
    venv_python = Path(__file__).resolve().parent / ".venv" / "bin" / "python"
    if not venv_python.exists() or Path(sys.prefix).resolve() == venv_python.parents[1]:
        raise
    os.execv(venv_python, [str(venv_python), __file__, *sys.argv[1:]])

if __name__ == "__main__":
    sys.exit(main())
