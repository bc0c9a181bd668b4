"""Does a convolution cost more inside a network than alone? Weight caching, measured.

A latency-table unit is timed as a micro-model run over and over: its weights stay in the CPU's
last-level cache between runs. Inside a network whose weights exceed that cache (resnet18: 47 MB,
resnet50: 100 MB, against this VM's 32 MB L3) every layer's weights come from DRAM again on each
inference. For a layer with many weights and few output positions (late layers at small inputs:
resnet18's layer4 at 64 px works on 2x2 maps) that streaming, not arithmetic, sets its time.

Two measurements per convolution shape (cin = cout, 3x3, padding 1, + ReLU), ORT CPU, fixed
threads, workers blocked, every call timed alone (wall clock, after a warm-up), p10 and median:

* **chain**: N copies of the conv, each with its own weights, in one model; the time per conv as
  N grows. Once the chain's weights pass the last-level cache, each conv pays for its weights.
* **replicas**: one conv in R sessions (each holds its own copy of the weights), called round-robin:
  the time per call as R grows. This is a way to time a *unit* with the weights cold, as the
  network runs it, without timing anything else.

    python tools/weight_cache.py --out bench_out/weight_cache.json

Both move together if weight streaming is the cause; a shape with few weights should not move.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hwprune_deploy.ort import cpu_fingerprint, make_session, random_feed  # noqa: E402


def conv_chain_onnx(c: int, hw: int, n: int, seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    m = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.ReLU())
                              for _ in range(n)]).eval()
    buf = io.BytesIO()
    torch.onnx.export(m, torch.randn(1, c, hw, hw), buf, dynamo=False)
    return buf.getvalue()


def time_calls(fns: list, calls: int, warmup: int) -> tuple[float, float]:
    """(p10, median) in us of ``calls`` calls that go to ``fns`` round-robin, each timed alone."""
    for i in range(warmup * len(fns)):
        fns[i % len(fns)]()
    out = np.empty(calls)
    for i in range(calls):
        fn = fns[i % len(fns)]
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return float(np.percentile(out, 10) * 1e6), float(np.median(out) * 1e6)


def runner(data: bytes, threads: int):
    sess = make_session(data, threads=threads, spinning=False)
    feed = random_feed(sess)
    return lambda: sess.run(None, feed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="512x2,256x4,128x8,64x16", help="CxHW,...: channels x spatial size")
    ap.add_argument("--chain", default="1,2,3,4,6,8", help="chain lengths N")
    ap.add_argument("--replicas", default="1,2,4,8,16", help="replica counts R")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=10, help="warm-up calls per session")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    print("| conv (3x3) | weights | " + " | ".join(f"chain N={n}" for n in args.chain.split(",")) + " | "
          + " | ".join(f"replicas R={r}" for r in args.replicas.split(",")) + " |")
    print("|---|---|" + "---|" * (len(args.chain.split(",")) + len(args.replicas.split(","))))
    for shape in args.shapes.split(","):
        c, hw = (int(v) for v in shape.lower().split("x"))
        mb = c * c * 9 * 4 / 1e6
        row = {"channels": c, "spatial": hw, "weight_mb": mb, "chain": {}, "replicas": {}}
        for n in map(int, args.chain.split(",")):
            fn = runner(conv_chain_onnx(c, hw, n), args.threads)
            p10, med = time_calls([fn], args.calls, args.warmup)
            row["chain"][n] = {"p10_us_per_conv": p10 / n, "median_us_per_conv": med / n}
            del fn
        one = conv_chain_onnx(c, hw, 1)
        for r in map(int, args.replicas.split(",")):
            fns = [runner(one, args.threads) for _ in range(r)]  # R sessions: R copies of the weights
            p10, med = time_calls(fns, args.calls, args.warmup)
            row["replicas"][r] = {"p10_us": p10, "median_us": med}
            del fns
        rows.append(row)
        print(f"| {c}->{c} @ {hw}x{hw} | {mb:.2f} MB | "
              + " | ".join(f"{v['p10_us_per_conv']:.0f}" for v in row["chain"].values()) + " | "
              + " | ".join(f"{v['p10_us']:.0f}" for v in row["replicas"].values()) + " |", flush=True)
    print("(us, p10 of the calls: per conv for a chain, per call for replicas)")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "fingerprint": cpu_fingerprint(), "threads": args.threads, "calls": args.calls,
                       "warmup": args.warmup, "spinning": False, "when": time.strftime("%Y-%m-%d %H:%M")}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
