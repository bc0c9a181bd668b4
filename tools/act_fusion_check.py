"""Is a unit's activation fused in its micro-model as it is in the network? Times the
``in224x224`` stem units of a table (conv+hardswish and conv+relu, 3 -> 8 and 16 channels) built
without an output context (as ``hwprune profile`` built every unit before 2026-12-04, and still
builds ReLU ones) and with one (the unit's output feeding a conv, as in a network, and as the
profiler now builds hard-swish units: ``hwprune.latency.micro.unit_contexts``), by kernel time,
interleaved, and prints ORT's optimised nodes of each.

    python tools/act_fusion_check.py --table T.json

Where the numbers in docs/latency.md ("SE families", 2026-12-04) come from. Do not run anything
else while it measures.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args(argv)

    import onnx
    import onnxruntime as ort

    from hwprune.latency import LatencyTable
    from hwprune.latency.measure import Measurer
    from hwprune.latency.micro import unit_onnx
    from hwprune_deploy.runner import measure_onnx_set, timing_ms

    table = LatencyTable.load(args.table, check_device=False)
    m = Measurer("ort-cpu", threads=args.threads)
    keys = [k for k in table.families if "in224x224" in k and k.startswith(("conv+hardswish", "conv+relu"))]
    if not keys:
        print(f"{args.table} has no 224-px stem unit with hard-swish or ReLU", file=sys.stderr)
        return 2
    for key in keys:
        fam = table.families[key].spec
        models, nodes = {}, {}
        for c in (8, 16):
            for octx in (False, True):
                name = f"{c}, {'output context' if octx else 'no output context'}"
                models[name] = unit_onnx(fam, 3, c, residual_context=m.unit_context, input_context=m.unit_context,
                                         output_context=octx)
                so = ort.SessionOptions()
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                so.log_severity_level = 3
                with tempfile.TemporaryDirectory() as d:
                    so.optimized_model_filepath = os.path.join(d, "opt.onnx")
                    ort.InferenceSession(models[name], so, providers=["CPUExecutionProvider"])
                    g = onnx.load(so.optimized_model_filepath).graph
                nodes[name] = " ".join(n.op_type + "".join(f"[{a.s.decode()}]" for a in n.attribute
                                                           if a.name == "activation") for n in g.node)
        runs = [measure_onnx_set(models, m.unit_factory, m.unit_protocol) for _ in range(args.passes)]
        print(key)
        for name in models:
            us = min(timing_ms(r[name]) for r in runs) * 1000
            print(f"  cout {name:20s} {us:7.1f} us   {nodes[name]}")
        print("  table:", ", ".join(f"({p}) {v * 1000:.1f} us" for p, v in table.families[key].points.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
