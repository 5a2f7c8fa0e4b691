"""Every split's test score, mean and sd over seeds, from a ``bench_quality.py --all-splits`` log.

``bench_quality.py --all-splits`` prints, per (data set, seed, depth, NFE), the
test score of every split of the NFE budget (mean +- sd over the test draws of
that seed). This script collects those lines and prints, per data set, depth,
NFE and split, the mean over the seeds of the per-seed means and their sample
sd (``ddof=1``): the comparison of splits with no selection on validation data,
hence no winner's curse.

Run:  python benchmarks/summarize_splits.py benchmarks/out/LOG [LOG ...]
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import numpy as np

LINE = re.compile(r"^\s*(?P<data>\S+) (?:seed (?P<seed>\d+)|(?P<exact>exact)) depth (?P<depth>\d+) "
                  r"NFE (?P<nfe>\d+) test, every split: (?P<rest>.*)$")
SPLIT = re.compile(r"(?P<steps>[\dx]+) (?P<mean>[\d.]+) \+- [\d.]+")


def collect(lines):
    """{(data, depth, nfe): {steps: {seed: score}}} from the lines of a log.

    Exact-field lines (``"<data> exact depth ..."``) count as ``"<data> exact"``, seed 0.
    """
    table = defaultdict(lambda: defaultdict(dict))
    for line in lines:
        m = LINE.match(line)
        if m is None:
            continue
        data = m["data"] + (" exact" if m["exact"] else "")  # exact fields: seed 0 only
        key = (data, int(m["depth"]), int(m["nfe"]))
        for s in SPLIT.finditer(m["rest"]):
            table[key][s["steps"]][int(m["seed"] or 0)] = float(s["mean"])
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+")
    args = parser.parse_args(argv)
    lines = [line for path in args.logs for line in open(path, encoding="utf-8")]
    table = collect(lines)
    if not table:
        print("no 'every split' lines found (run bench_quality.py with --all-splits)")
        return 1
    for (data, depth, nfe), splits in sorted(table.items()):
        cells = []
        for steps, by_seed in splits.items():
            v = np.array([by_seed[s] for s in sorted(by_seed)])
            if len(v) == 1:
                cells.append(f"{steps} {v[0]:.4f} (one seed)")
            else:
                cells.append(f"{steps} {v.mean():.4f} +- {v.std(ddof=1):.4f} ({len(v)} seeds)")
        print(f"{data} depth {depth} NFE {nfe}: " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
