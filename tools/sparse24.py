"""Dense vs 2:4 semi-structured sparse timing of GEMM-like units on a CUDA GPU.

    python tools/sparse24.py                      # ViT-B/16-shaped Linear units, fp16, batch 32
    python tools/sparse24.py --tokens 197 --batch 8 --shapes 768x3072 3072x768

2:4 sparsity (two of every four weights zero; NVIDIA Ampere+ sparse tensor cores; Mishra et al.
2021, "Accelerating Sparse Deep Neural Networks") halves a GEMM's multiply work, but what a
layer gains depends on its shape: small GEMMs are bound by launch and memory, and the sparse
kernel adds its own metadata traffic. hwprune therefore times each unit both ways on the device,
so a search can choose per layer. Each unit is the same ``nn.Module`` the profiler times
(:func:`hwprune.latency.micro.unit_module`), once on ``torch-cuda`` (dense) and once on
``torch-cuda-sparse`` (weights replaced by ``torch.sparse.to_sparse_semi_structured``), measured
side by side, interleaved, with CUDA events (house protocol: warm-up, repeats, 10th percentile).
Writes latency_tables/sparse24-<gpu>-<precision>-b<batch>.json and .md. Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# ViT-B/16 at 224: attention out-projection, MLP fc1 and fc2; then half and quarter widths
DEFAULT_SHAPES = ["768x768", "768x3072", "3072x768", "384x1536", "1536x384", "192x768", "768x192"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="CINxCOUT per Linear unit")
    ap.add_argument("--tokens", type=int, default=197, help="tokens per image (197 for ViT-B/16 at 224)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--precision", default="fp16", help="fp16 (default) | bf16")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "latency_tables"))
    ap.add_argument("--eager", action="store_true",
                    help="time both paths eagerly instead of captured in CUDA graphs (the default): eager, "
                         "the 2:4 path is dominated by ~0.5 ms of per-call host set-up (see --diagnose)")
    ap.add_argument("--diagnose", action="store_true",
                    help="instead of the table: time each shape's 2:4 unit several ways (eager, CUDA graph, "
                         "torch.compile, CUTLASS forced, 2-D input) to find where a flat ~1 ms goes (issue #21)")
    args = ap.parse_args(argv)

    import torch

    from hwprune.backends import get_backend, require_cuda
    from hwprune.errors import ConfigError
    from hwprune.jsonio import write_json
    from hwprune.latency.micro import unit_module
    from hwprune.latency.table import device_slug
    from hwprune.latency.units import UnitFamily
    from hwprune_deploy.runner import UNIT_PROTOCOL, timing_ms

    shapes = []
    for s in args.shapes:
        try:
            a, b = (int(v) for v in s.lower().split("x"))
        except ValueError:
            raise ConfigError(f"shape {s!r} is not CINxCOUT (e.g. 768x3072)") from None
        if a % 64 or b % 64:
            raise ConfigError(f"shape {s!r}: 2:4 semi-structured kernels need widths that are multiples of 64")
        shapes.append((a, b))
    require_cuda()  # after the arguments, so a typo is reported even on a machine without a GPU
    if args.diagnose:
        return diagnose(shapes, args.tokens, args.batch, args.precision)
    graphs = not args.eager
    dense = get_backend("torch-cuda", precision=args.precision, protocol=UNIT_PROTOCOL, cuda_graphs=graphs)
    sparse = get_backend("torch-cuda-sparse", precision=args.precision, protocol=UNIT_PROTOCOL, cuda_graphs=graphs)
    fam = UnitFamily("linear", args.tokens, 1, batch=args.batch, dtype=args.precision)
    rows = []
    for a, b in shapes:
        torch.manual_seed(0)
        m_dense, (x,) = unit_module(fam, a, b, device="cuda")
        m_sparse, _ = unit_module(fam, a, b, device="cuda")
        fns = {"dense": dense.runner(m_dense, x), "sparse24": sparse.runner(m_sparse, x)}
        t = dense.measure_fns(fns)  # both timed interleaved, CUDA events on the same stream
        flops = 2.0 * args.batch * args.tokens * a * b
        d_ms, s_ms = timing_ms(t["dense"]), timing_ms(t["sparse24"])
        rows.append({"cin": a, "cout": b, "tokens": args.batch * args.tokens,
                     "dense_ms": d_ms, "sparse24_ms": s_ms,
                     "dense_iqr_ms": t["dense"].iqr_ms, "sparse24_iqr_ms": t["sparse24"].iqr_ms,
                     "dense_tflops": flops / d_ms / 1e9, "speedup": d_ms / s_ms})
        r = rows[-1]
        print(f"{a:>5} x {b:<5} dense {r['dense_ms']:.4f} ms ({r['dense_tflops']:.0f} TFLOP/s)  "
              f"2:4 {r['sparse24_ms']:.4f} ms  speedup {r['speedup']:.2f}x", flush=True)
    fp = dense.fingerprint()
    stem = os.path.join(args.out_dir, f"sparse24-{device_slug(fp)}-{args.precision}-b{args.batch}"
                        + ("-eager" if args.eager else ""))
    p = UNIT_PROTOCOL
    summary = {"device": fp, "precision": args.precision, "batch": args.batch, "tokens_per_image": args.tokens,
               "protocol": {"warmup": p.warmup, "repeats": p.repeats, "inner_calls": 10, "statistic": "p10",
                            "timer": "CUDA events", "cuda_graphs": graphs},
               "units": rows}
    os.makedirs(args.out_dir, exist_ok=True)
    write_json(stem + ".json", summary)
    lines = [f"# 2:4 semi-structured vs dense Linear units ({fp['gpu']}, {args.precision}, batch {args.batch} x "
             f"{args.tokens} tokens)", "",
             f"torch {fp['torch']}, CUDA {fp['cuda']}. Unit = Linear with bias as hwprune's profiler times it; "
             "dense on `torch-cuda`, 2:4 on `torch-cuda-sparse`, "
             + ("each captured in a CUDA graph and replayed, " if graphs else "eager (no CUDA graphs), ")
             + f"timed interleaved with CUDA events ({p.warmup} warm-up, {p.repeats} repeats of 10 calls, "
             "10th percentile).", "",
             "| cin x cout | dense (ms) | dense TFLOP/s | 2:4 (ms) | speedup |", "|---|---|---|---|---|"]
    lines += [f"| {r['cin']} x {r['cout']} | {r['dense_ms']:.4f} | {r['dense_tflops']:.0f} | {r['sparse24_ms']:.4f} | "
              f"{r['speedup']:.2f}x |" for r in rows]
    lines += ["", f"Reproduce: `python tools/sparse24.py --batch {args.batch} --precision {args.precision}"
              + (" --eager" if args.eager else "") + "` "
              "(on a CUDA GPU).", ""]
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    return 0


def diagnose(shapes, tokens: int, batch: int, precision: str) -> int:
    """Per shape, dense and 2:4 Linear timed several ways with CUDA events (p10 of 20 repeats of 10
    calls): where the semi-structured path's time goes. Variants:
    ``eager`` (what the table timed), ``graph`` (one call captured in a CUDA graph: host-side work such
    as Python tensor-subclass dispatch or per-call plan setup is gone), ``compile`` (torch.compile
    around the unit), ``cutlass`` (SparseSemiStructuredTensor._FORCE_CUTLASS: the CUTLASS kernels
    instead of cuSPARSELt), ``2d`` (a (batch*tokens, cin) input: no reshape of a 3-D input)."""
    import torch
    from torch import nn
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    print(f"torch {torch.__version__}, cuda {torch.version.cuda}, cusparselt available: "
          f"{torch.backends.cusparselt.is_available()}, version "
          f"{torch.backends.cusparselt.version() if torch.backends.cusparselt.is_available() else None}")

    def timed(fn) -> float:
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(20):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(10):
                fn()
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b) / 10)
        return sorted(ts)[2]

    def graphed(fn):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        return g.replay

    def sparse_linear(a, b, cutlass: bool):
        SparseSemiStructuredTensor._FORCE_CUTLASS = cutlass
        lin = nn.Linear(a, b).to("cuda", dt).eval()
        w = lin.weight.detach().clone().view(-1, 4)
        w[:, 2:] = 0
        lin.weight = nn.Parameter(to_sparse_semi_structured(w.view(b, a)), requires_grad=False)
        return lin

    print("| cin x cout | variant | dense ms | 2:4 ms | speedup |")
    print("|---|---|---|---|---|")
    for a, b in shapes:
        x3 = torch.randn(batch, tokens, a, device="cuda", dtype=dt)
        x2 = x3.reshape(-1, a).contiguous()
        dense = nn.Linear(a, b).to("cuda", dt).eval()
        variants = {
            "eager": lambda: (dense, sparse_linear(a, b, False), x3, None),
            "graph": lambda: (dense, sparse_linear(a, b, False), x3, graphed),
            "compile": lambda: (torch.compile(dense), torch.compile(sparse_linear(a, b, False)), x3, None),
            "cutlass": lambda: (dense, sparse_linear(a, b, True), x3, None),
            "2d": lambda: (dense, sparse_linear(a, b, False), x2, None),
        }
        for name, make in variants.items():
            try:
                d, sp, x, wrap = make()
                with torch.inference_mode():
                    fd, fs = (lambda: d(x)), (lambda: sp(x))
                    if wrap is not None:
                        fd, fs = wrap(fd), wrap(fs)
                    td, ts = timed(fd), timed(fs)
                print(f"| {a} x {b} | {name} | {td:.4f} | {ts:.4f} | {td / ts:.2f}x |", flush=True)
            except Exception as e:  # a variant this torch/GPU cannot run: say which and why
                print(f"| {a} x {b} | {name} | failed: {type(e).__name__}: {str(e)[:120]} | | |", flush=True)
            finally:
                SparseSemiStructuredTensor._FORCE_CUTLASS = False
    return 0


if __name__ == "__main__":
    from hwprune.errors import HwpruneError

    try:
        sys.exit(main())
    except HwpruneError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
