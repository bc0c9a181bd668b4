"""How much ORT's worker spinning changes latency and speedup. Three settings:

* blocked -- workers block between ops (how hwprune's default tables and `hwprune bench` time);
* spin in runs -- workers spin between the ops of a run and stop when it returns
  (``session.force_spinning_stop``; how ``hwprune profile --ort-spinning`` tables time);
* ORT default -- workers spin, and keep spinning between runs (a single-model deployment with
  default session options).

    python tools/ort_spinning.py --run hwprune_run              # baseline.onnx vs pruned.onnx of a `hwprune run`
    python tools/ort_spinning.py a.onnx b.onnx --rounds 6 --side-by-side

Alone, one session alive at a time: each round times every model in every setting (a fresh
session each, 20 warm-up runs, then back-to-back runs for ``--seconds``); per reading the median
of runs. ``--side-by-side`` also times every model with all the models' sessions alive, repeats
alternating between them (as hwprune's interleaved protocol does): there ORT's default breaks
down -- the idle sessions' workers keep spinning and take the CPU from the one timed (on this
2-vCPU VM the unpruned tiny_resnet read 0.84-1.3 ms instead of 0.47) -- while spin-in-runs
sessions read what they read alone. Prints per setting each model's median over rounds and the
speedup of every model over the first, median and range.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


#: make_session keyword arguments of each setting
SETTINGS = {"blocked (hwprune default)": {"spinning": False},
            "spin in runs (--ort-spinning)": {"spinning": True, "spin_between_runs": False},
            "spinning (ORT default)": {"spinning": None}}


def _session(path: str, threads: int, kw: dict):
    from hwprune_deploy.ort import make_session, random_feed

    sess = make_session(path, threads=threads, **kw)
    feed = random_feed(sess)
    for _ in range(20):
        sess.run(None, feed)
    return lambda: sess.run(None, feed)


def _runs(fn, seconds: float) -> list[float]:
    runs = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter_ns()
        fn()
        runs.append((time.perf_counter_ns() - t0) / 1e6)
    return runs


def time_session(path: str, kw: dict, threads: int, seconds: float) -> float:
    """One session alone: median ms of back-to-back runs for ``seconds``."""
    fn = _session(path, threads, kw)
    return float(np.median(_runs(fn, seconds)))


def time_side_by_side(paths: list[str], kw: dict, threads: int, seconds: float, slice_s: float = 0.1) -> dict:
    """All sessions alive; slices of ``slice_s`` alternate between them until each had
    ``seconds``: median ms of each model's runs."""
    fns = {p: _session(p, threads, kw) for p in paths}
    runs: dict[str, list[float]] = {p: [] for p in paths}
    for _ in range(max(1, int(round(seconds / slice_s)))):
        for p, fn in fns.items():
            runs[p] += _runs(fn, slice_s)
    return {p: float(np.median(r)) for p, r in runs.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="ONNX files; the first is the reference for speedups")
    ap.add_argument("--run", help="a `hwprune run` output folder: its baseline.onnx and pruned.onnx")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=1.5, help="timed seconds per model, setting and round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--side-by-side", action="store_true",
                    help="also time every setting with all the models' sessions alive, alternating")
    ap.add_argument("--json", help="also write the readings here")
    args = ap.parse_args(argv)
    paths = list(args.models)
    if args.run:
        paths = [os.path.join(args.run, "baseline.onnx"), os.path.join(args.run, "pruned.onnx")] + paths
    if len(paths) < 1:
        ap.error("give ONNX files or --run DIR")
    for p in paths:
        if not os.path.isfile(p):
            ap.error(f"{p!r} does not exist (a `hwprune run --out DIR` writes DIR/baseline.onnx and DIR/pruned.onnx)")
    settings = dict(SETTINGS)
    if args.side_by_side:
        settings.update({f"{s}, side by side": kw for s, kw in SETTINGS.items()})
    ms: dict[str, dict[str, list[float]]] = {s: {p: [] for p in paths} for s in settings}
    for r in range(args.rounds):
        for s, kw in settings.items():
            if s.endswith("side by side"):
                for p, v in time_side_by_side(paths, kw, args.threads, args.seconds).items():
                    ms[s][p].append(v)
                continue
            for p in paths:
                ms[s][p].append(time_session(p, kw, args.threads, args.seconds))
        print(f"round {r + 1}/{args.rounds}: " + "; ".join(
            f"{s}: " + " ".join(f"{ms[s][p][-1]:.3f}" for p in paths) for s in settings), file=sys.stderr, flush=True)
    names = [os.path.basename(p) for p in paths]
    print(f"ORT CPU, {args.threads} threads, {args.rounds} rounds of {args.seconds:g} s per model and setting, one "
          "session alive at a time unless 'side by side'; median ms of runs, median over rounds")
    print("| setting | " + " | ".join(names) + (" | speedup (median, range)" if len(paths) > 1 else "") + " |")
    print("|---" * (len(paths) + 1 + (len(paths) > 1)) + "|")
    for s in settings:
        row = [f"{np.median(ms[s][p]):.3f}" for p in paths]
        if len(paths) > 1:
            sp = [np.array(ms[s][paths[0]]) / np.array(ms[s][p]) for p in paths[1:]]
            row.append(", ".join(f"{np.median(v):.2f}x ({v.min():.2f}-{v.max():.2f})" for v in sp))
        print(f"| {s} | " + " | ".join(row) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"paths": paths, "threads": args.threads, "rounds": args.rounds, "seconds": args.seconds,
                       "median_ms": ms}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
