"""``hwprune bench``: latency and throughput of one or two models, measured side by side."""
from __future__ import annotations

from hwprune_deploy.backends import list_backends

from ..errors import ConfigError
from ..jsonio import write_json
from .main import SUMMARIES


def register(sub) -> None:
    p = sub.add_parser("bench", help=SUMMARIES["bench"],
                       description="Measure latency (median, p90) and throughput per batch size; with two "
                                   "--model the repeats are interleaved and the speedup of B over A printed; "
                                   "with --table the table's prediction is shown next to the measurement.")
    p.add_argument("--model", action="append", required=True, metavar="SPEC",
                   help="model A (the reference), then optionally model B: a checkpoint, zoo or torchvision name; or "
                        ".onnx files as `hwprune export` writes them (fp32 or int8), timed on ORT CPU as they are; or "
                        "two .pt2 AOTInductor packages (hwprune export --format aoti), timed on the device they "
                        "were compiled for")
    p.add_argument("--weights", action="append", default=[], metavar="FILE",
                   help="state_dict for the corresponding --model (in order)")
    p.add_argument("--backend", default="ort-cpu", choices=list_backends(),
                   help="where to run: a registered backend (default ort-cpu)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for CPU backends (default 2)")
    p.add_argument("--batch", default="1", help="comma-separated batch sizes, e.g. 1,8,32 (default 1)")
    p.add_argument("--input-size", type=int, help="square input resolution (default: the model's own)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"],
                   help="fp16: GPU backends; int8: ort-cpu, each model statically quantized (QDQ) before timing")
    p.add_argument("--int8", action="store_true",
                   help="ort-cpu: time every model twice, fp32 and int8 (statically quantized, QDQ per-channel), all "
                        "side by side; speedups over the first model in fp32")
    p.add_argument("--repeats", type=int, default=20, help="timed repeats per model and batch (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up calls (default 5)")
    p.add_argument("--table", help="latency table: print predicted latency next to the measurement")
    p.add_argument("--ort-spinning", action="store_true",
                   help="ort-cpu: let ORT's worker threads spin between ops (ORT's default session options, "
                        "what a single-model deployment usually runs; faster for small models). Default off, "
                        "as latency tables are profiled; each repeat then runs in a fresh session, one alive at a time")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..bench import BenchConfig, bench, format_bench
    from ..models import load_model

    config = BenchConfig(backend=args.backend, threads=args.threads, batches=args.batch, input_size=args.input_size,
                         warmup=args.warmup, repeats=args.repeats, precision=args.precision, int8=args.int8,
                         spinning=args.ort_spinning)
    if len(args.model) > 2:
        raise ConfigError(f"bench compares at most two models (A and B); got {len(args.model)} --model")
    if len(args.weights) > len(args.model):
        raise ConfigError("more --weights than --model; give one --weights per --model, in order")
    if all(spec.endswith(".pt2") for spec in args.model):  # AOTInductor packages (hwprune export --format aoti)
        from ..aoti_bench import bench_packages, format_package_bench

        res = bench_packages(args.model, threads=args.threads, warmup=args.warmup, repeats=args.repeats)
        return _show(format_package_bench(res), res, args.json)
    onnx_files = [spec.endswith(".onnx") for spec in args.model]
    if any(onnx_files):  # exported files (hwprune export --format onnx [--precision int8]), timed as deployed
        if not all(onnx_files):
            raise ConfigError(f"bench times ONNX files against ONNX files ({', '.join(args.model)}): export the "
                              "checkpoint first (`hwprune export --model CKPT --out B.onnx`) and bench the two files")
        if args.backend != "ort-cpu" or args.precision != "fp32" or args.int8 or args.table or args.weights:
            raise ConfigError("ONNX files are timed as they are, on ort-cpu: --backend, --precision, --int8, --table "
                              "and --weights apply to checkpoints and model names (an int8 file is timed as int8)")
        from hwprune_deploy.onnx_bench import OnnxBenchError, bench_onnx_files, format_onnx_bench

        try:
            res = bench_onnx_files(args.model, threads=args.threads, batches=config.batches, warmup=args.warmup,
                                   repeats=args.repeats, spinning=args.ort_spinning, input_size=args.input_size)
        except OnnxBenchError as e:
            raise ConfigError(str(e)) from None
        return _show(format_onnx_bench(res), res, args.json)
    models = {}
    for i, spec in enumerate(args.model):
        label = spec if spec not in models else f"{spec} ({'AB'[i]})"
        models[label] = load_model(spec, weights=args.weights[i] if i < len(args.weights) else None)
    res = bench(models, config, table=args.table)
    return _show(format_bench(res), res, args.json)


def _show(text: str, res: dict, json_path) -> int:
    """Print a bench's table and, with --json, write its results."""
    print(text)
    if json_path:
        write_json(json_path, res)
        print(f"wrote {json_path}")
    return 0
