"""A pytest plugin that appends one JSON line per case to a file the moment the case ends,
so a run cut off by its deadline keeps every case it finished (``gpu_check.sh``).

Active with ``--cases-jsonl PATH`` (``python benchmarks/gpu_check.py pytest`` passes it,
with ``--cases-step NAME`` and ``--cases-group NAME``). Each line is one ``os.write`` to
the file opened with O_APPEND, then ``fsync``, with SIGINT held back meanwhile: whole lines,
also when several processes append to the same file. The lines:

- ``{"event": "collected", "nodeids": [...]}``: the plan, once collection ends; a case in
  it with no line of its own was not reached.
- ``{"event": "case", "nodeid", "status", "duration_s", "error", "benchmark"}``: status
  passed, failed (the test), error (its setup or teardown), skipped (``error`` holds the
  reason), xfailed, xpassed, or interrupted (stopped by SIGINT while running: its
  ``benchmark`` holds the rounds finished so far, but not what the case would have
  recorded after them). ``benchmark`` (pytest-benchmark cases): median, min, max and
  rounds of the timed rounds, and the case's ``extra_info``.
- ``{"event": "session", "exitstatus"}``: pytest ended (not written when it was killed).
  After an interrupt the process then exits at once, skipping pytest's unconfigure, so
  that it ends well inside the grace period before its kill.

Each line also names its ``step``, ``group`` and ``pid``.

``ECGFAST_GPU_CHECK_CUT`` (set by ``gpu_check.sh --dry-run`` only): the first case whose
node id contains it is cut off there, inside its timed rounds when it is a benchmark: it
sends SIGALRM to its parent when that is coreutils' ``timeout`` (the alarm ``timeout``
sets itself: it then acts as on its deadline, sends its signal, exits 124) and waits for
the interrupt. So the dry run proves what a step cut off mid-case keeps, without waiting
for a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

CUT_ENV = "ECGFAST_GPU_CHECK_CUT"
#: Characters of a failure's text kept in its line (its end: the assertion and its values).
ERROR_CHARS = 3000


def pytest_addoption(parser):
    group = parser.getgroup("gpu_check", "one JSON line per finished case")
    group.addoption("--cases-jsonl", default=None, help="append one JSON line per case here")
    group.addoption("--cases-step", default="pytest", help="step name written in each line")
    group.addoption("--cases-group", default="", help="process group written in each line")


def pytest_configure(config):
    path = config.getoption("--cases-jsonl")
    if path:
        config.pluginmanager.register(
            CaseLog(path, config.getoption("--cases-step"), config.getoption("--cases-group")),
            "gpu_check_case_log")


def append_line(path: str, record: dict) -> None:
    """One JSON line appended to ``path`` in one write, flushed to disk (SIGINT blocked)."""
    line = (json.dumps(record, default=str) + "\n").encode()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def benchmark_record(item) -> dict | None:
    """What a pytest-benchmark case has measured so far (None: not a benchmark case)."""
    bench = (getattr(item, "funcargs", None) or {}).get("benchmark")
    if bench is None or not hasattr(bench, "extra_info"):
        return None
    out = {"extra_info": dict(bench.extra_info), "rounds": 0}
    stats = getattr(getattr(bench, "stats", None), "stats", None)
    if stats is not None and getattr(stats, "data", None):
        out.update(rounds=len(stats.data), median_s=stats.median, min_s=stats.min,
                   max_s=stats.max)
    return out


def _cut_here():
    """Make the step's ``timeout`` expire now, then wait for its signal."""
    parent = os.getppid()
    try:
        with open(f"/proc/{parent}/comm") as f:
            if f.read().strip() == "timeout":
                os.kill(parent, signal.SIGALRM)
    except OSError:
        pass  # not under timeout: wait for whatever interrupts
    while True:
        time.sleep(0.5)


class CaseLog:
    def __init__(self, path: str, step: str, group: str):
        self.path, self.base = path, {"step": step, "group": group, "pid": os.getpid()}
        self.reports: dict[str, list] = {}
        self.benchmarks: dict[str, dict | None] = {}
        self.written: set[str] = set()
        self.running: str | None = None
        self.cut = os.environ.get(CUT_ENV) or None

    def _write(self, **record):
        append_line(self.path, {**record, **self.base})

    def pytest_collection_finish(self, session):
        self._write(event="collected", nodeids=[item.nodeid for item in session.items])

    def pytest_runtest_logstart(self, nodeid, location):
        self.running = nodeid
        self.reports[nodeid] = []

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        if self.cut and self.cut in item.nodeid:
            self.cut = None
            print(f"\n{CUT_ENV}: {item.nodeid} is cut off on purpose", flush=True)
            bench = (getattr(item, "funcargs", None) or {}).get("benchmark")
            if bench is None:
                _cut_here()
            pedantic = bench.pedantic

            def cut_pedantic(target, *args, **kwargs):
                return pedantic(lambda *a, **k: _cut_here(), *args, **kwargs)

            bench.pedantic = cut_pedantic
        try:
            return (yield)
        except KeyboardInterrupt:
            self._interrupted(item.nodeid, benchmark_record(item))
            raise
        finally:
            self.benchmarks[item.nodeid] = benchmark_record(item)

    def pytest_runtest_logreport(self, report):
        self.reports.setdefault(report.nodeid, []).append(report)

    def pytest_runtest_logfinish(self, nodeid, location):
        self.running = None
        if nodeid in self.written:
            return
        reports = self.reports.pop(nodeid, [])
        status, error = "passed", None
        for rep in reports:
            if hasattr(rep, "wasxfail"):
                status, error = ("xfailed" if rep.skipped else "xpassed"), rep.wasxfail
            elif rep.failed:
                status = "failed" if rep.when == "call" else "error"
                error = rep.longreprtext[-ERROR_CHARS:]
                break
            elif rep.skipped and status == "passed":
                status = "skipped"
                error = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        self._write(event="case", nodeid=nodeid, status=status,
                    duration_s=round(sum(r.duration for r in reports), 6), error=error,
                    benchmark=self.benchmarks.pop(nodeid, None))
        self.written.add(nodeid)

    def _interrupted(self, nodeid, benchmark=None):
        if nodeid in self.written:
            return
        self.written.add(nodeid)
        self._write(event="case", nodeid=nodeid, status="interrupted", duration_s=None,
                    error="interrupted (SIGINT: the step's deadline) while running",
                    benchmark=benchmark)

    @pytest.hookimpl(tryfirst=True)
    def pytest_keyboard_interrupt(self, excinfo):
        if self.running is not None:  # interrupted in its setup or teardown
            self._interrupted(self.running)

    def pytest_sessionfinish(self, session, exitstatus):
        self._write(event="session", exitstatus=int(exitstatus))
        self.exitstatus = int(exitstatus)

    @pytest.hookimpl(tryfirst=True)
    def pytest_unconfigure(self, config):
        if getattr(self, "exitstatus", None) == pytest.ExitCode.INTERRUPTED:
            # the deadline is near: leave now, after the terminal's summary, instead of
            # pytest's clean-up (rounds of garbage collection, plugin imports)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(self.exitstatus)
