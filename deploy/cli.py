"""``hwprune-deploy`` / ``python -m hwprune_deploy.cli``: the device-side runner (torch-free).

    hwprune-deploy measure bundle.zip --out result.json [--threads 2] [--backend ort-cpu|tensorrt|...]

Measures every unit micro-model and full model in a bundle written by ``hwprune profile
--bundle`` and writes the timings; back on the host, ``hwprune profile --from-bundle-result
result.json`` turns them into a latency table. Needs numpy + onnxruntime (or tensorrt + pycuda).
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
    args = p.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
