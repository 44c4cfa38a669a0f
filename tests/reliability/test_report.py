"""RELIABILITY.md cannot drift from the suite: it lists exactly the suite's cases, all passed."""

import os
import re

import pytest

from .cases import CASES
from .conftest import REPO_ROOT, REPORT_ENV, render_report

REPORT = REPO_ROOT / "RELIABILITY.md"
ROW = re.compile(r"^\| `([^`]+)` \|.*\| (\S[^|]*?) \|$")


def _rows(text):
    return [ROW.match(line).groups() for line in text.splitlines() if ROW.match(line)]


def test_committed_report_lists_exactly_the_suites_cases(request):
    if request.config.getoption("reliability_report", default=None) or os.environ.get(REPORT_ENV):
        pytest.skip("this run regenerates RELIABILITY.md")
    rows = _rows(REPORT.read_text())
    ids = [case_id for case_id, _ in rows]
    assert len(ids) == len(set(ids)), "a case is listed twice"
    missing, extra = sorted(set(CASES) - set(ids)), sorted(set(ids) - set(CASES))
    assert not missing and not extra, (
        f"RELIABILITY.md is out of date (missing {missing}, not in the suite {extra}); "
        "regenerate it: python -m pytest tests/reliability --reliability-report=RELIABILITY.md")
    failed = [case_id for case_id, result in rows if result != "pass"]
    assert not failed, f"RELIABILITY.md records cases that did not pass: {failed}"


def test_the_report_is_rendered_from_records():
    """A case not recorded shows as NOT RUN, a failed test as FAILED: the table says what ran."""
    first, second = list(CASES)[:2]
    text = render_report({first: {"observed": "did | this", "lost": "no", "nodeid": "a"},
                          second: {"observed": "x", "lost": "no", "nodeid": "b"}},
                         {"a": "passed", "b": "FAILED"}, 1.0)
    results = dict(_rows(text))
    assert results[first] == "pass" and results[second] == "FAILED"
    assert set(results) == set(CASES)
    assert all(r == "NOT RUN" for case_id, r in results.items() if case_id not in (first, second))
    assert "did \\| this" in text
