"""NETDEF_RESULTS (tests/conftest.py): a GPU run cut by its time limit keeps the RESULT lines and the failures of the
tests that ended before it was stopped."""
from __future__ import annotations

from types import SimpleNamespace

import conftest


def report(nodeid: str, when: str, outcome: str, out: str = "", longrepr: str = "") -> SimpleNamespace:
    """The fields of a pytest TestReport that the hook reads."""
    return SimpleNamespace(nodeid=nodeid, when=when, outcome=outcome, failed=outcome == "failed", capstdout=out,
                           longreprtext=longrepr, sections=[("Captured stdout call", out)] if out else [])


def test_results_file_keeps_the_figures_and_each_failure_as_it_happens(tmp_path, monkeypatch):
    path = tmp_path / "results.txt"
    monkeypatch.setenv("NETDEF_RESULTS", str(path))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # as xdist's controller, or a run without xdist
    conftest.pytest_runtest_logreport(report("t.py::ok", "call", "passed", "RESULT speed 3.1\nchatter"))
    conftest.pytest_runtest_logreport(report("t.py::ok", "teardown", "passed"))
    assert path.read_text() == "t.py::ok passed: RESULT speed 3.1\n"
    conftest.pytest_runtest_logreport(report("t.py::bad", "call", "failed", "RESULT err 4e-2\nmore",
                                             "E   assert 0.04 <= 0.001"))
    conftest.pytest_runtest_logreport(report("t.py::setup_bad", "setup", "failed", longrepr="E   fixture broke"))
    text = path.read_text()
    assert text.split("\n")[1:4] == ["t.py::bad failed: RESULT err 4e-2", "FAILED t.py::bad (call)",
                                     "E   assert 0.04 <= 0.001"]
    assert "--- Captured stdout call\nRESULT err 4e-2\nmore\n" in text
    assert text.endswith("FAILED t.py::setup_bad (setup)\nE   fixture broke\n")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    conftest.pytest_runtest_logreport(report("t.py::bad2", "call", "failed", longrepr="E   x"))
    assert path.read_text() == text  # a worker: its controller writes the report, once
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    monkeypatch.delenv("NETDEF_RESULTS")
    conftest.pytest_runtest_logreport(report("t.py::bad2", "call", "failed", longrepr="E   x"))
    assert path.read_text() == text  # no file named: nothing written
