"""Options shared by the test suite."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--rewrite``: tests/test_scenarios.py writes each script's actual
    output back into the file instead of comparing (review the diff)."""
    parser.addoption("--rewrite", action="store_true", default=False,
                     help="regenerate the expected output of tests/scenarios/*.txt in place")
