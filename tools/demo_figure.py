"""Regenerate the README picture from an ``hwprune run`` folder (or run the default first).

    python tools/demo_figure.py --run hwprune_run --out docs/img/hwprune_run.png
    python tools/demo_figure.py --fresh --out docs/img/hwprune_run.png   # hwprune run, then the figure

The picture is :func:`hwprune.report.summary_figure` of the run's ``report.json``: measured
latency per image and speedup per batch (baseline vs pruned, interleaved in one run), the
table's predicted latency next to the measured one, the per-group width profile and the
per-unit latency breakdown before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="hwprune_run", help="folder written by `hwprune run` (default hwprune_run)")
    p.add_argument("--out", default=os.path.join("docs", "img", "hwprune_run.png"), help="PNG to write")
    p.add_argument("--fresh", action="store_true", help="run `hwprune run --out RUN` first (default settings)")
    args = p.parse_args(argv)
    if args.fresh:
        subprocess.run([sys.executable, "-m", "hwprune", "run", "--out", args.run], check=True)
    path = os.path.join(args.run, "report.json")
    if not os.path.isfile(path):
        print(f"{path} does not exist; run `hwprune run --out {args.run}` first (or pass --fresh)", file=sys.stderr)
        return 2
    from hwprune.report import summary_figure

    with open(path) as f:
        rep = json.load(f)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    summary_figure(rep, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
