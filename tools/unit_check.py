"""Where does a latency table misprice a network? Per unit: the table's price against the unit's
kernel time *inside* the network (ORT's per-node profiler), for one pruned variant or two.

    python tools/unit_check.py --model resnet50 --table latency_tables/amd-epyc-2c-ort-cpu-fp32-b1.json \\
        --fidelity latency_tables/fidelity.json --variant 16 --variant 22
    python tools/unit_check.py --model tiny_resnet --table T.json --widths '{"stem.0": 16}'

Each variant is exported to ONNX and run ``--runs`` times in ``--rounds`` fresh sessions with the
profiler on (threads and worker mode as the table was timed); per node the median kernel time of
the runs, then the median over rounds. Conv/Gemm nodes are matched to the table's units in
execution order by weight shape and output size (ORT renames fused nodes by their output). With
two variants it also prints the per-unit *differences*: the table's against the network's, which
shows which units' width changes the table under- or over-prices. An int8 table's variants are
quantized as its units were (ORT static QDQ) and its QLinearConv/QGemm nodes matched; the nodes no
unit accounts for are summed by op type. In-graph per-node times move by
10-30% from second to second on a shared VM, so compare within a round-robin like this one, not
across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def node_times(data: bytes, threads: int, spinning: bool, runs: int) -> tuple[list[dict], float]:
    """Per node (execution order of the last run): name, op, weight shape, output shape, median
    kernel time (us) over ``runs`` runs; and the median wall time per run (ms)."""
    import shutil
    import time

    from hwprune_deploy.ort import make_session, random_feed

    d = tempfile.mkdtemp(prefix="hwprune-unitcheck-")
    try:
        sess = make_session(data, threads=threads, spinning=spinning, spin_between_runs=False,
                            profile_prefix=os.path.join(d, "p"))
        feed = random_feed(sess)
        for _ in range(10):
            sess.run(None, feed)
        wall = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            sess.run(None, feed)
            wall.append((time.perf_counter_ns() - t0) / 1e6)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    shapes = weight_shapes(data)
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")[-runs:]
    per: dict[str, list[float]] = {}
    meta: dict[str, dict] = {}
    order: list[str] = []
    for e in sorted(events, key=lambda e: e["ts"]):
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < starts[0]:
            continue
        name = e["name"][: -len("_kernel_time")]
        if name not in meta:
            a = e.get("args", {})
            ins = [next(iter(s.values())) for s in a.get("input_type_shape", [])]
            outs = [next(iter(s.values())) for s in a.get("output_type_shape", [])]
            op = a.get("op_name")
            wi = WEIGHT_INPUT.get(op, 1)
            weight = ins[wi] if len(ins) > wi else None
            if op in WEIGHT_INPUT:  # int8 weights are prepacked and not listed: the graph's shape, by node name
                weight = shapes.get(re.sub(r"_token_\d+$", "", name))
            meta[name] = {"name": name, "op": op, "in": ins[0] if ins else None,
                          "weight": weight, "out": outs[0] if outs else None}
            order.append(name)
        per.setdefault(name, []).append(float(e["dur"]))
    return [{**meta[n], "us": float(np.median(per[n]))} for n in order], float(np.median(wall))


#: which input of a node is its weight: QLinearConv and QGemm take (x, x_scale, x_zero_point, w, ...)
WEIGHT_INPUT = {"QLinearConv": 3, "QGemm": 3, "QLinearMatMul": 3}
#: the nodes that are a conv/linear unit's kernel, fp32 and int8 (ORT's fused QDQ forms)
UNIT_OPS = ("Conv", "FusedConv", "NhwcFusedConv", "Gemm", "MatMul", "QLinearConv", "QGemm", "QLinearMatMul",
            "MatMulInteger", "ConvInteger")


def weight_shapes(data: bytes) -> dict[str, list[int]]:
    """ONNX node name -> weight shape of every Conv/Gemm/MatMul of the model ``data`` (through the
    DequantizeLinear of a QDQ model's weight)."""
    import onnx

    g = onnx.load_from_string(data).graph
    dims = {i.name: list(i.dims) for i in g.initializer}
    prod = {o: n for n in g.node for o in n.output}
    out = {}
    for n in g.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1:
            w = n.input[1]
            if w in prod and prod[w].op_type == "DequantizeLinear":
                w = prod[w].input[0]
            if w in dims:
                out[n.name] = dims[w]
    return out


def _width_eq(got, want: int) -> bool:
    """A node's channel count against a unit's: equal, or padded up to ORT's NCHWc block (a
    24-channel conv runs as 32 channels)."""
    return got == want or (got is not None and want < got < want + 16 and got % 8 == 0)


def match_units(nodes: list[dict], units, widths: dict) -> dict[int, dict]:
    """unit index -> node, matching Conv/Gemm nodes in order by (cout, cin/groups, kernel) of the
    weight and the output size."""
    free = [n for n in nodes if n["op"] in UNIT_OPS and n["out"]]
    out: dict[int, dict] = {}
    for i, u in enumerate(units):
        cin, cout = u.widths(widths)
        fam = u.family
        if fam.kind == "linear":  # Gemm/MatMul: the weight may not be listed; match input and output widths
            want = lambda n, cin=cin, cout=cout: (n["in"] or [None])[-1] == cin and n["out"][-1] == cout  # noqa: E731
        else:
            g = cin if fam.kind == "dwconv" else fam.groups
            oh, ow = fam.out_hw()
            def want(n, g=g, oh=oh, ow=ow, cin=cin, cout=cout, k=list(fam.kernel)):
                wt = list(n["weight"] or [])
                hw = list(n["out"][-2:]) if n["op"] != "QLinearConv" or n["out"][1] == cout else list(n["out"][1:3])
                return (len(wt) == 4 and _width_eq(wt[0], cout) and (wt[1] == 1 if g == cin else _width_eq(wt[1], cin // g))
                        and wt[2:] == k and hw == [oh, ow])
        for j, n in enumerate(free):
            if want(n):
                out[i] = free.pop(j)
                break
    return out


def table_setup(model: str, table_path: str, input_size=None):
    """(table, loaded model, seeded example input, the table's cost model of the model, threads,
    spinning) -- the model as the table timed it (its resolution unless ``input_size``), threads
    and ORT worker mode as the table's units were timed. Shared with tools/cold_units.py."""
    import torch

    from hwprune.graph import ChannelGraph
    from hwprune.latency import LatencyTable
    from hwprune.latency.measure import table_spinning
    from hwprune.latency.validate import profiled_input_size
    from hwprune.models import load_model

    table = LatencyTable.load(table_path)
    loaded = load_model(model)
    size = input_size or profiled_input_size(table, loaded)
    x = torch.randn(table.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    cm = table.cost_model(ChannelGraph(loaded.model, x))
    return table, loaded, x, cm, int(table.device.get("threads", 2)), table_spinning(table)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--input-size", type=int, help="default: the resolution the table profiled the model at")
    ap.add_argument("--fidelity", help="a fidelity/validate JSON whose variants --variant picks from")
    ap.add_argument("--variant", type=int, action="append", default=[], help="variant index (once or twice)")
    ap.add_argument("--widths", action="append", default=[], help="widths as JSON {group: width} (once or twice)")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--top", type=int, default=15, help="rows to print, largest |difference| first")
    args = ap.parse_args(argv)

    from hwprune.export import onnx_bytes
    from hwprune.latency.measure import build_variant
    from hwprune_deploy.backends import get_backend

    variants: dict[str, dict] = {}
    if args.variant:
        if not args.fidelity:
            ap.error("--variant needs --fidelity (a fidelity.json or `hwprune validate --json` file)")
        with open(args.fidelity) as f:
            doc = json.load(f)
        rows = doc["variants"] if "variants" in doc else next(
            r["variants"] for r in doc["results"] if r["model"] == args.model)
        by_index = {v["index"]: v for v in rows}
        for i in args.variant:
            if i not in by_index:
                ap.error(f"variant {i} is not in {args.fidelity} (it has {min(by_index)}-{max(by_index)})")
            variants[f"v{i}"] = by_index[i]["widths"]
    for k, w in enumerate(args.widths):
        variants[f"w{k}"] = json.loads(w)
    if not variants:
        variants["full"] = {}
    if len(variants) > 2:
        ap.error("give one or two variants")
    table, loaded, x, cm, threads, spin = table_setup(args.model, args.table, args.input_size)
    units = [u for u, _ in cm.units]
    # as the backend ran the table's units: an int8 table's variants statically quantized (QDQ)
    backend = get_backend("ort-cpu", precision=getattr(table, "precision", "fp32"))
    data = {k: backend.quantized(onnx_bytes(build_variant(loaded.model, x, w) if w else loaded.model, x))
            for k, w in variants.items()}
    rounds: dict[str, list] = {k: [] for k in variants}
    for r in range(args.rounds):  # round-robin, so both variants meet the same states of the machine
        for k in variants:
            rounds[k].append(node_times(data[k], threads, spin, args.runs))
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    res = {}
    for k, w in variants.items():
        nodes = rounds[k][0][0]
        by_round = [{m["name"]: m["us"] for m in rr[0]} for rr in rounds[k]]
        for n in nodes:  # per node, the median over rounds
            n["us"] = float(np.median([r[n["name"]] for r in by_round]))
        wall = float(np.median([rr[1] for rr in rounds[k]]))
        m = match_units(nodes, units, w)
        price = cm.unit_costs(w)
        rows = [{"layer": u.layer, "cin_cout": u.widths(w), "table_us": 1000 * price[u.layer],
                 "net_us": m[i]["us"] if i in m else float("nan")} for i, u in enumerate(units)]
        matched = {id(n) for n in m.values()}
        other = sum(n["us"] for n in nodes if id(n) not in matched)
        res[k] = {"rows": rows, "wall_ms": wall, "other_us": other, "predicted_ms": cm.predict(w),
                  "units_ms": cm.units_sum(w), "unmatched": len(units) - len(m)}
        by_op: dict[str, list] = {}
        for n in nodes:
            if id(n) not in matched:
                by_op.setdefault(n["op"], []).append(n["us"])
        res[k]["other_by_op"] = {op: (len(v), sum(v)) for op, v in sorted(by_op.items(), key=lambda t: -sum(t[1]))}
        print(f"{k}: wall {wall:.3f} ms (median of {args.runs} runs x {args.rounds} rounds), table predicts "
              f"{res[k]['predicted_ms']:.3f} ms; units: table {res[k]['units_ms']:.3f} ms, in network "
              f"{np.nansum([r['net_us'] for r in rows]) / 1000:.3f} ms; other nodes {other / 1000:.3f} ms"
              + (f"; {res[k]['unmatched']} units unmatched" if res[k]["unmatched"] else ""))
        print("  other nodes by op: " + ", ".join(f"{op} x{c} {us / 1000:.3f} ms"
                                                 for op, (c, us) in res[k]["other_by_op"].items()))
    keys = list(variants)
    if len(keys) == 1:
        rows = sorted(res[keys[0]]["rows"], key=lambda r: -abs(r["net_us"] - r["table_us"]))
        print("| unit | cin, cout | table us | in network us | network - table |\n|---|---|---|---|---|")
        for r in rows[: args.top]:
            print(f"| {r['layer']} | {r['cin_cout']} | {r['table_us']:.1f} | {r['net_us']:.1f} | "
                  f"{r['net_us'] - r['table_us']:+.1f} |")
        return 0
    a, b = keys
    print(f"per-unit differences {a} - {b}: what the table says a width change costs, and what it costs in the "
          "network")
    print("| unit | cin, cout | table delta us | network delta us | network - table |\n|---|---|---|---|---|")
    diff = []
    for ra, rb in zip(res[a]["rows"], res[b]["rows"]):
        dt, dn = ra["table_us"] - rb["table_us"], ra["net_us"] - rb["net_us"]
        diff.append((ra["layer"], f"{ra['cin_cout']} vs {rb['cin_cout']}", dt, dn))
    for layer, cc, dt, dn in sorted(diff, key=lambda t: -abs(t[3] - t[2]))[: args.top]:
        print(f"| {layer} | {cc} | {dt:+.1f} | {dn:+.1f} | {dn - dt:+.1f} |")
    tot_t = sum(t[2] for t in diff)
    tot_n = np.nansum([t[3] for t in diff])
    print(f"sum over units: table {tot_t:+.1f} us, network {tot_n:+.1f} us; other nodes "
          f"{res[a]['other_us'] - res[b]['other_us']:+.1f} us; wall {1000 * (res[a]['wall_ms'] - res[b]['wall_ms']):+.1f} "
          f"us; table prediction {1000 * (res[a]['predicted_ms'] - res[b]['predicted_ms']):+.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
