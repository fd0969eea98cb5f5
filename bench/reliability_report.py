"""Run the reliability suite and write its results table into docs/reliability.md.

    python bench/reliability_report.py            # the default rounds (what CI runs)
    python bench/reliability_report.py --heavy    # the full rounds: 20 per scenario
    python bench/reliability_report.py --heavy --lease  # the same rounds with MIGRATE_LOCK=lease

The tests record each scenario's rounds, failures, lost rows and harness errors
(``FM_RELIABILITY_REPORT``); pytest's JUnit file gives the pass/fail of every other test.
Nothing is typed in by hand: the table between the ``results`` markers is replaced by what this
run measured, failures included.

A harness error (the test's own machinery could not bind a socket, spawn or exec a process) is
not a finding about fastapi-migrate: the tests raise ``HarnessError`` for it, and both tables
count it in a column of its own, never under "failures" / "failed".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
LEASE_START, LEASE_END = "<!-- lease:start -->", "<!-- lease:end -->"
LEASE_FILES = [
    "tests/test_reliability_stampede.py",
    "tests/test_reliability_kill.py",
    "tests/test_reliability_lock_loss.py",
]
"""The scenarios parametrized by the lock (``tests/reliability_helpers.LOCKS``)."""
FILES = [
    "tests/test_reliability_stampede.py",
    "tests/test_reliability_kill.py",
    "tests/test_reliability_lock_loss.py",
    "tests/test_reliability_disconnect.py",
    "tests/test_reliability_locks.py",
    "tests/test_bad_input.py",
    "tests/test_properties.py",
]


def run_suite(heavy: bool, workers: int, scratch: Path, lease: bool) -> tuple[int, float]:
    """Run pytest once (``lease``: only the lease's rounds); its exit code and wall time."""
    env = {**os.environ, "FM_RELIABILITY_REPORT": str(scratch / "rounds.jsonl")}
    env.pop("FM_HEAVY", None)
    command = [
        sys.executable,
        "-m",
        "pytest",
        *(LEASE_FILES if lease else FILES),
        *(["-k", "lease"] if lease else []),
        "-q",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        f"--junitxml={scratch / 'junit.xml'}",
        *(["-n", str(workers)] if workers > 1 else []),
        *(["--heavy"] if heavy else []),
    ]
    started = time.monotonic()
    code = subprocess.call(command, cwd=ROOT, env=env)
    return code, time.monotonic() - started


def rounds_table(path: Path) -> list[str]:
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    order = ["sqlite", "postgresql", "mariadb"]
    rows.sort(
        key=lambda r: (r["scenario"], order.index(r["database"].split(",")[0]), r["database"])
    )
    lines = [
        "| scenario | database | runs | failures | data lost | harness errors | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['database']} | {r['runs']} | {r['failures']} | "
            f"{r['data_lost']} | {r.get('harness_errors', 0)} | {r['note']} |"
        )
    return lines


def outcome(case: ET.Element) -> str:
    """``passed``, ``failed``, ``harness error`` (the test raised ``HarnessError``) or
    ``skipped``."""
    for tag in ("failure", "error"):
        problem = case.find(tag)
        if problem is not None:
            text = f"{problem.get('message', '')}\n{problem.text or ''}"
            return "harness error" if "HarnessError" in text else "failed"
    return "skipped" if case.find("skipped") is not None else "passed"


def tests_table(path: Path) -> tuple[list[str], dict[str, int]]:
    """Per test file: passed, failed, harness errors, skipped (from pytest's JUnit XML)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    totals: dict[str, int] = defaultdict(int)
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        result = outcome(case)
        counts[module][result] += 1
        totals[result] += 1
    lines = [
        "| test file | passed | failed | harness errors | skipped |",
        "|---|---:|---:|---:|---:|",
    ]
    for module in sorted(counts):
        c = counts[module]
        lines.append(
            f"| `tests/{module}.py` | {c['passed']} | {c['failed']} | {c['harness error']} | "
            f"{c['skipped']} |"
        )
    return lines, totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heavy", action="store_true", help="the full rounds (20 each)")
    parser.add_argument("-n", type=int, default=2, help="pytest-xdist workers (default 2)")
    parser.add_argument(
        "--lease",
        action="store_true",
        help="only the rounds with MIGRATE_LOCK=lease, into the page's second table",
    )
    args = parser.parse_args()
    start, end = (LEASE_START, LEASE_END) if args.lease else (START, END)
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        load_before = os.getloadavg()[0]
        code, wall = run_suite(args.heavy, args.n, scratch, args.lease)
        tests, totals = tests_table(scratch / "junit.xml")
        rounds = rounds_table(scratch / "rounds.jsonl")
    shared = ": the machine was shared" if load_before > (os.cpu_count() or 1) / 2 else ""
    kind = "--heavy (full rounds)" if args.heavy else "default rounds (as CI runs them)"
    flags = (" --heavy" if args.heavy else "") + (" --lease" if args.lease else "")
    block = [
        start,
        f"Run: `python bench/reliability_report.py{flags}`, "
        f"{kind}, {time.strftime('%Y-%m-%d')}, on {os.cpu_count()} cores "
        f"({platform.python_implementation()} {platform.python_version()}, load average "
        f"{load_before:.1f} at the start{shared}), {wall / 60:.1f} minutes. "
        f"Tests: {totals['passed']} passed, {totals['failed']} failed, "
        f"{totals['harness error']} harness errors, {totals['skipped']} skipped.",
        "",
        *rounds,
        "",
        *tests,
        end,
    ]
    text = DOC.read_text()
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    DOC.write_text(head + "\n".join(block) + tail)
    print("\n".join(block))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
