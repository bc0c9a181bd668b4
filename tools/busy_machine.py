"""A burst of load during the closed loop's first reading, for a budget in ms: what the loop does
with it (hwprune.closed_loop.settle).

Starts ``--hogs`` busy processes, then ``hwprune prune`` with ``--budget`` (in ms) on ``--table``,
and stops the hogs after ``--hog-seconds``; prune's closed-loop lines are printed with their time
since the start, then the closed loop's rounds from report.json (the ``settle`` record: the
unpruned and pruned model of every reading, which one was kept). It also prints the table target
the loop would have searched next had it judged by the loaded reading alone (the tightening rule
``min(target, predicted) * budget / measured``, computed, not run).

    .venv/bin/python tools/busy_machine.py --table T.json --budget 0.9ms            # tiny_resnet at 32 px
    .venv/bin/python tools/busy_machine.py --table T.json --budget 0.9ms --hog-seconds 0   # no load

``--hog-seconds`` must cover the start of prune up to its first measurement (about 8 s for the
demo model on an idle 2-core VM, longer under the load) and end before the pause that follows it
(3 s): 14 s did on 2026-12-05. The table must be this machine's (a table of another machine reads
slow for good, and the loop then judges at this machine's speed).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time


def _busy() -> None:
    while True:
        pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", required=True, help="a latency table of this machine with the model in it")
    ap.add_argument("--budget", default="0.9ms", help="a budget in ms (default 0.9ms)")
    ap.add_argument("--model", default="tiny_resnet")
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--strategy", default="halp")
    ap.add_argument("--hogs", type=int, default=2, help="busy processes (default 2: one per core here)")
    ap.add_argument("--hog-seconds", type=float, default=14.0, help="how long they run from the start (default 14)")
    ap.add_argument("--out", default="busy_machine_out", help="prune's output folder (default busy_machine_out)")
    args = ap.parse_args(argv)
    if not args.budget.endswith("ms"):
        ap.error(f"--budget {args.budget!r}: give a budget in ms (e.g. 0.9ms); a share of the unpruned model is "
                 "judged side by side and never paused for")
    if not os.path.isfile(args.table):
        ap.error(f"--table {args.table!r} does not exist (hwprune profile --model {args.model} --input-size "
                 f"{args.input_size} --out {args.table})")
    t0 = time.time()
    hogs = [mp.Process(target=_busy, daemon=True) for _ in range(args.hogs if args.hog_seconds > 0 else 0)]
    for h in hogs:
        h.start()

    def stop():
        time.sleep(args.hog_seconds)
        for h in hogs:
            h.terminate()
        print(f"[{time.time() - t0:6.1f} s] load stopped ({len(hogs)} busy processes)", flush=True)

    if hogs:
        threading.Thread(target=stop, daemon=True).start()
    cmd = [sys.executable, "-m", "hwprune", "prune", "--model", args.model, "--input-size", str(args.input_size),
           "--strategy", args.strategy, "--budget", args.budget, "--table", args.table, "--out", args.out, "--quiet"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if line.startswith("closed loop"):
            print(f"[{time.time() - t0:6.1f} s] {line.rstrip()}", flush=True)
    p.wait()
    for h in hogs:
        h.terminate()
    print(p.stdout.read().rstrip())
    if p.returncode not in (0, 3):
        print(f"prune failed (exit {p.returncode})", file=sys.stderr)
        return p.returncode
    rep = json.load(open(os.path.join(args.out, "report.json")))
    budget_ms = float(args.budget[:-2])
    for step in rep["closed_loop"]:
        print(f"round {step['round']}: target {step['target']:.3f}, predicted {step['predicted']:.3f}, unpruned "
              f"{step['baseline_ms']:.3f} ms, pruned {step['measured_ms']:.3f} ms")
        s = step.get("settle")
        if s:
            first = s["pruned_ms"][0]
            print(f"  settle: unpruned {', '.join(f'{v:.3f}' for v in s['baseline_ms'])} ms (table "
                  f"{s['predicted_full_ms']:.3f}), pruned {', '.join(f'{v:.3f}' for v in s['pruned_ms'])} ms; kept "
                  f"reading {s['kept']}, settled: {s['settled']}")
            if first > budget_ms:
                loaded = min(step["target"], step["predicted"]) * budget_ms / first
                print(f"  judged by the loaded reading alone, the next table target would have been {loaded:.3f} "
                      f"(from {step['target']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
