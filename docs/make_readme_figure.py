"""Regenerate the README's figure from a gallery example (no hand-made images).

Runs ``docs/examples/plot_1_velocity_distribution.py`` (HRF2's velocity
distribution against Theorem 1) with the Agg backend and saves its first figure
to ``docs/_static/readme_velocity_distribution.png``. Set ``HRFLOW_QUICK=1`` for
the reduced training budget.

Usage::

    python docs/make_readme_figure.py [--example PATH] [--out PATH] [--dpi 110]
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", type=Path, default=DOCS / "examples" / "plot_1_velocity_distribution.py")
    parser.add_argument("--out", type=Path, default=DOCS / "_static" / "readme_velocity_distribution.png")
    parser.add_argument("--dpi", type=int, default=110)
    args = parser.parse_args(argv)

    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    saved = []

    def keep_figures(*_args, **_kwargs):  # replaces plt.show: remember the figures, draw nothing
        saved.extend(plt.figure(num) for num in plt.get_fignums() if plt.figure(num) not in saved)

    plt.show = keep_figures
    runpy.run_path(str(args.example), run_name="__main__")
    keep_figures()
    if not saved:
        print(f"{args.example} made no figure", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    saved[0].savefig(args.out, dpi=args.dpi, bbox_inches="tight")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
