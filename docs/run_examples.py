"""Run every gallery example (docs/examples/**/plot_*.py) in its own process.

Quick mode (``HRFLOW_QUICK=1``, the default here) shrinks each example's training
budget so the whole gallery runs in minutes on a CPU; figures go to the Agg backend
(``MPLBACKEND=Agg``) and are discarded. Each example runs with a timeout; the script
prints one line per example, a summary line such as ``7 passed, 0 failed``, and exits
with status 1 if any example failed or timed out.

The examples' networks are small, so each example runs on one torch thread
(``OMP_NUM_THREADS=1`` unless already set) and ``--jobs`` examples run side by side
(default: 2, or 1 on a single core): on a busy machine, threads of one process
spinning while they wait for each other cost more than they gain.

Usage::

    python docs/run_examples.py                 # quick mode, every example
    python docs/run_examples.py -k density      # only examples whose path contains "density"
    python docs/run_examples.py --full          # the full budgets of the documentation
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent / "examples"


def find_examples(root: Path = EXAMPLES, pattern: str | None = None) -> list[Path]:
    """The gallery scripts under ``root``, sorted by path, optionally filtered."""
    found = sorted(root.rglob("plot_*.py"))
    if pattern:
        found = [p for p in found if pattern in str(p.relative_to(root))]
    return found


def run_example(path: Path, env: dict, timeout: float) -> tuple[str, float, float, str]:
    """Run one script; returns (status, wall seconds, CPU seconds or nan, output tail)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+", errors="replace") as log:
        proc = subprocess.Popen([sys.executable, str(path)], cwd=path.parent, env=env, stdout=log,
                                stderr=subprocess.STDOUT, text=True)
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            if hasattr(os, "wait4"):  # POSIX: the child's own CPU time as well
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                cpu = usage.ru_utime + usage.ru_stime
            else:  # pragma: no cover - Windows
                proc.wait()
                cpu = float("nan")
        finally:
            timer.cancel()
        elapsed = time.perf_counter() - start
        log.seek(0)
        out = log.read()[-3000:]
    if timed_out.is_set():
        return "timeout", elapsed, cpu, out
    status = "passed" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    return status, elapsed, cpu, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds allowed per example (default: 600)")
    parser.add_argument("--full", action="store_true",
                        help="full budgets: do not set HRFLOW_QUICK=1")
    parser.add_argument("-k", dest="pattern", default=None,
                        help="only run examples whose path contains this string")
    parser.add_argument("-j", "--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="examples run at the same time (default: 2)")
    parser.add_argument("--root", type=Path, default=EXAMPLES,
                        help="folder searched for plot_*.py (default: docs/examples)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print the output of passing examples too")
    args = parser.parse_args(argv)

    env = dict(os.environ)
    if args.full:
        env.pop("HRFLOW_QUICK", None)
    else:
        env["HRFLOW_QUICK"] = "1"
    env.setdefault("MPLBACKEND", "Agg")
    env.setdefault("OMP_NUM_THREADS", "1")
    root = args.root.resolve()
    examples = find_examples(root, args.pattern)
    if not examples:
        print(f"no example matches {args.pattern!r} under {root}")
        return 1

    mode = "full" if args.full else "quick (HRFLOW_QUICK=1)"
    print(f"running {len(examples)} example(s) in {mode} mode, {args.jobs} at a time, "
          f"timeout {args.timeout:.0f} s each", flush=True)
    total = time.perf_counter()

    def run(path):
        status, elapsed, cpu, out = run_example(path, env, args.timeout)
        print(f"{status:>18s}  {elapsed:7.1f} s (cpu {cpu:6.1f} s)  {path.relative_to(root)}", flush=True)
        if status != "passed" or args.verbose:
            print("    " + out.replace("\n", "\n    ").rstrip(), flush=True)
        return status

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        statuses = list(pool.map(run, examples))
    failed = [p for p, status in zip(examples, statuses) if status != "passed"]
    n_failed = len(failed)
    print(f"{len(examples) - n_failed} passed, {n_failed} failed "
          f"in {time.perf_counter() - total:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
