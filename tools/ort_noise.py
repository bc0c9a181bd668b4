"""How steady ORT's timings are on this machine, per worker mode, thread count and precision.

    python tools/ort_noise.py                          # resnet18 at 224, fp32 and int8 (QDQ), 2 and 1 threads
    python tools/ort_noise.py --model mobilenet_v3_small --threads 2

For each thread count and worker mode (blocked between ops, hwprune's default; spinning within a
run, ``--ort-spinning``) the fp32 model and its static int8 quantization (the ``ort-cpu`` int8
backend's ``quantize_static``) are timed interleaved with hwprune's protocol (3 warm-up, 30
repeats of >= 10 ms) and printed as p10, median and the inter-quartile range of the repeats.
A table and its validation are only as good as this spread: on the 2-vCPU AVX2 EPYC of
2026-12-01 the blocked mode read resnet18 with an IQR of 13-21% of the median and the spinning
mode 1-2% (docs/latency.md, "Timing noise on this machine").
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18", help="a model spec hwprune loads (default resnet18)")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args(argv)

    import torch

    from hwprune.models import load_model
    from hwprune.onnx_export import onnx_bytes
    from hwprune_deploy.backends import get_backend
    from hwprune_deploy.runner import OrtRunnerFactory, measure_onnx_set
    from hwprune_deploy.timing import Protocol

    torch.manual_seed(0)
    model = load_model(args.model).model.eval()
    x = torch.randn(1, 3, args.input_size, args.input_size)
    fp32 = onnx_bytes(model, x)
    models = {"fp32": fp32, "int8": get_backend("ort-cpu", precision="int8").quantized(fp32)}
    proto = Protocol(warmup=3, repeats=args.repeats, min_repeat_ms=10, statistic="p10")
    print(f"{args.model} @ {args.input_size}, batch 1; per repeat >= 10 ms of back-to-back runs")
    for threads in args.threads:
        for spin in (False, True):
            t = measure_onnx_set(models, OrtRunnerFactory(threads=threads, spinning=spin), proto)
            for k, v in t.items():
                print(f"threads {threads}  {'spinning' if spin else 'blocked '}  {k}: p10 {v.p10_ms:7.2f} ms  "
                      f"median {v.median_ms:7.2f} ms  IQR {v.iqr_ms:5.2f} ms ({100 * v.iqr_ms / v.median_ms:.0f}%)",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
