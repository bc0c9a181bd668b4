"""How much ORT's worker spinning changes latency and speedup: blocked workers (how hwprune's
tables and `hwprune bench` time) against ORT's default (workers spin-wait between ops, as a
single-model deployment with default session options runs).

    python tools/ort_spinning.py --run hwprune_run              # baseline.onnx vs pruned.onnx of a `hwprune run`
    python tools/ort_spinning.py a.onnx b.onnx --rounds 6

Only one session is alive at a time: with two sessions alive and spinning on, the idle one's
workers take the CPU from the one being timed (on this 2-vCPU VM the unpruned tiny_resnet read
0.84-1.3 ms instead of 0.47), which is why hwprune times with spinning off. Each round times
every model in both settings, one after the other (a fresh session each, 20 warm-up runs, then
back-to-back runs for ``--seconds``); per reading the median of runs. Prints per setting each
model's median over rounds and the speedup of every model over the first, median and range.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def time_session(path: str, spinning, threads: int, seconds: float) -> float:
    from hwprune_deploy.ort import make_session, random_feed

    sess = make_session(path, threads=threads, spinning=spinning)
    feed = random_feed(sess)
    for _ in range(20):
        sess.run(None, feed)
    runs = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter_ns()
        sess.run(None, feed)
        runs.append((time.perf_counter_ns() - t0) / 1e6)
    del sess
    return float(np.median(runs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="ONNX files; the first is the reference for speedups")
    ap.add_argument("--run", help="a `hwprune run` output folder: its baseline.onnx and pruned.onnx")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=1.5, help="timed seconds per model, setting and round")
    ap.add_argument("--threads", type=int, default=2)
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
    settings = {"blocked (hwprune)": False, "spinning (ORT default)": None}
    ms: dict[str, dict[str, list[float]]] = {s: {p: [] for p in paths} for s in settings}
    for r in range(args.rounds):
        for s, spin in settings.items():
            for p in paths:
                ms[s][p].append(time_session(p, spin, args.threads, args.seconds))
        print(f"round {r + 1}/{args.rounds}: " + "; ".join(
            f"{s}: " + " ".join(f"{ms[s][p][-1]:.3f}" for p in paths) for s in settings), file=sys.stderr, flush=True)
    names = [os.path.basename(p) for p in paths]
    print(f"ORT CPU, {args.threads} threads, one session alive at a time, {args.rounds} rounds of "
          f"{args.seconds:g} s per model and setting; median ms of runs, median over rounds")
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
