"""``hwprune-deploy`` / ``python -m hwprune_deploy.cli``: the device-side runner (torch-free).

    hwprune-deploy measure bundle.zip --out result.json [--threads 2] [--backend ort-cpu|tensorrt|...]
    hwprune-deploy bench base.onnx pruned.onnx [--batch 1,8] [--threads 2] [--spinning] [--json b.json]

Measures every unit micro-model and full model in a bundle written by ``hwprune profile
--bundle`` and writes the timings; back on the host, ``hwprune profile --from-bundle-result
result.json`` turns them into a latency table. ``bench`` times one or two exported ONNX files
(``hwprune export``, fp32 or int8) side by side on ONNX Runtime's CPU provider, as ``hwprune bench``
does on the host. Needs numpy + onnxruntime (or tensorrt + pycuda).
``--backend`` takes any ONNX backend of the registry (:mod:`hwprune_deploy.backends`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile


def write_json_atomic(path: str, obj) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv=None) -> int:
    from .backends import BackendError, list_backends

    p = argparse.ArgumentParser(prog="hwprune-deploy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    m = sub.add_parser("measure", help="time a profiling bundle into a result file")
    m.add_argument("bundle", help="bundle zip written by `hwprune profile --bundle`")
    m.add_argument("--out", required=True, help="result JSON to write")
    m.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    m.add_argument("--backend", default="ort-cpu", choices=list_backends(onnx=True),
                   help="registered ONNX backend to time with (default ort-cpu)")
    m.add_argument("--repeats", type=int, help="repeats per model (default: the house protocol)")
    m.add_argument("--min-repeat-ms", type=float, help="shortest repeat in ms (default: the house protocol)")
    m.add_argument("--no-progress", action="store_true")
    b = sub.add_parser("bench", help="time one or two exported ONNX files side by side (ORT CPU)")
    b.add_argument("files", nargs="+", metavar="FILE.onnx", help="model A (the reference), then optionally model B")
    b.add_argument("--batch", default="1", help="comma-separated batch sizes, e.g. 1,8 (default 1)")
    b.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    b.add_argument("--input-size", type=int, help="square input size, for files exported with symbolic sizes")
    b.add_argument("--repeats", type=int, default=20, help="timed repeats per file and batch (default 20)")
    b.add_argument("--warmup", type=int, default=5, help="warm-up calls (default 5)")
    b.add_argument("--spinning", action="store_true",
                   help="ORT's worker threads spin between ops (its default session options); default: blocked")
    b.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.command == "bench":
        return _bench(args)
    if args.command != "measure":
        p.print_help()
        return 0
    if not os.path.isfile(args.bundle):
        print(f"hwprune-deploy: error: bundle {args.bundle!r} does not exist", file=sys.stderr)
        return 2
    from dataclasses import replace

    from .runner import MODEL_PROTOCOL, UNIT_PROTOCOL, measure_bundle

    over = {k: v for k, v in (("repeats", args.repeats), ("min_repeat_ms", args.min_repeat_ms)) if v is not None}
    try:
        res = measure_bundle(args.bundle, threads=args.threads, backend=args.backend, progress=not args.no_progress,
                             unit_protocol=replace(UNIT_PROTOCOL, **over), model_protocol=replace(MODEL_PROTOCOL, **over))
    except BackendError as e:  # unusable here (TensorRT missing, ...): the message says what to do
        print(f"hwprune-deploy: error: {e}", file=sys.stderr)
        return 2
    except (KeyError, ValueError, OSError) as e:
        print(f"hwprune-deploy: error: cannot measure {args.bundle!r}: {e}", file=sys.stderr)
        return 2
    write_json_atomic(args.out, res)
    print(f"measured {len(res['results'])} models in {res['seconds']:.1f} s -> {args.out}")
    print(f"read it back on the host: hwprune profile --from-bundle-result {args.out}")
    return 0


def _bench(args) -> int:
    from .onnx_bench import bench_onnx_files, format_onnx_bench
    from .timing import parse_batches

    try:  # OnnxBenchError and a bad batch list are ValueErrors that name the value and the fix
        res = bench_onnx_files(args.files, threads=args.threads, batches=parse_batches(args.batch),
                               warmup=args.warmup, repeats=args.repeats, spinning=args.spinning,
                               input_size=args.input_size)
    except ValueError as e:
        print(f"hwprune-deploy: error: {e}", file=sys.stderr)
        return 2
    print(format_onnx_bench(res))
    if args.json:
        write_json_atomic(args.json, res)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
