"""How well one validation run pins a variant's latency ratio down: the same variants timed in
several runs, every pass kept, estimators compared run against run.

    python tools/pass_estimators.py --model mobilenet_v3_small --table T.json            # 2 runs of 8 passes
    python tools/pass_estimators.py --model mobilenet_v3_small --table T.json --runs 3 --passes 12

Each run is ``hwprune validate`` (the table's 30 random variants, seed 0, side by side with the
unpruned model, calibration variants interleaved) with every variant given exactly ``--passes``
passes; each pass's reading (p10 of repeats, scaled to the chunk's reference) is kept. For the
first k passes and each estimator (the two fastest, the fastest half, the middle half, the median)
the ratio of every variant is formed per run, and pairs of runs are compared: rms of the
run-to-run difference (after removing the pair's common level) and the share within 5%. A +-5%
fidelity bar cannot be judged where two runs of the same variants do not agree within 5%.
Where the numbers in docs/latency.md ("Measuring a 2 ms model") come from. Do not run anything
else while it measures.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hwprune.latency.measure import fastest_half, two_fastest  # noqa: E402
from hwprune_deploy.runner import timing_ms  # noqa: E402


def _middle_half(h) -> float:
    x = sorted(timing_ms(t) for t in h)
    return float(np.mean(x[len(x) // 4: len(x) - len(x) // 4]))


#: a model's figure from its passes (Timings): hwprune's own estimators, before and now, and two others
ESTIMATORS = {
    "two fastest": lambda h: timing_ms(two_fastest(h)),
    "fastest half": lambda h: timing_ms(fastest_half(h)),
    "middle half": _middle_half,
    "median": lambda h: float(np.median([timing_ms(t) for t in h])),
}


def one_run(spec: str, table: str, passes: int, samples: int) -> dict:
    from hwprune.latency import measure as M
    from hwprune.latency.validate import validate
    from hwprune.models import load_model

    hist: dict = {}
    orig = M.Measurer.models

    def models(self, *a, **k):  # exactly `passes` passes for every model, every pass kept
        k.update(passes=passes, max_passes=passes, fast_passes=passes)
        out = orig(self, *a, **k)
        hist.update(self.last_history)
        return out

    M.Measurer.models = models
    try:
        res = validate(load_model(spec), table, samples=samples, progress=False)
    finally:
        M.Measurer.models = orig
    return {"reference_ms": res.reference_ms, "history": hist, "summary": res.summary()}


def spread(runs: list[dict], k: int, est) -> list[tuple[float, float]]:
    out = []
    for a, b in itertools.combinations(runs, 2):
        names = sorted(n for n in a["history"] if n.startswith("v"))
        ra = np.array([est(a["history"][n][:k]) for n in names])
        rb = np.array([est(b["history"][n][:k]) for n in names])
        d = ra / rb
        d = d / np.median(d) - 1  # the pair's common level removed
        out.append((float(np.sqrt(np.mean(d ** 2))), float(np.mean(np.abs(d) <= 0.05))))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a model spec hwprune loads (e.g. mobilenet_v3_small)")
    ap.add_argument("--table", required=True, help="a latency table the model was profiled into")
    ap.add_argument("--runs", type=int, default=2, help="validation runs (default 2; pairs are compared)")
    ap.add_argument("--passes", type=int, default=8, help="passes per variant and run (default 8)")
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--json", help="write every run's pass-by-pass readings here")
    args = ap.parse_args(argv)
    if args.runs < 2 or args.passes < 2:
        ap.error(f"--runs {args.runs} / --passes {args.passes}: need at least 2 of each to compare")
    runs = []
    for i in range(args.runs):
        runs.append(one_run(args.model, args.table, args.passes, args.samples))
        s = runs[-1]["summary"]
        print(f"run {i + 1}: unpruned {runs[-1]['reference_ms']:.3f} ms, within 5% {s['within_5pct']:.0%}", flush=True)
    if args.json:
        with open(args.json, "w") as f:  # every pass's reading, ms
            json.dump([{**r, "history": {n: [timing_ms(t) for t in h] for n, h in r["history"].items()}}
                       for r in runs], f)
    print("\nrun-to-run rms spread of variant ratios / share within 5% (range over pairs of runs)")
    print("| passes | " + " | ".join(ESTIMATORS) + " |")
    print("|---" * (len(ESTIMATORS) + 1) + "|")
    for k in sorted({2, 4, 6, 8, args.passes}):
        if k > args.passes:
            continue
        cells = []
        for est in ESTIMATORS.values():
            s = spread(runs, k, est)
            r, w = [x[0] for x in s], [x[1] for x in s]
            cells.append(f"{min(r):.1%}-{max(r):.1%} / {min(w):.0%}-{max(w):.0%}")
        print(f"| {k} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
