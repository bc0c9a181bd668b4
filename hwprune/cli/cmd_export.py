"""``hwprune export``: ONNX (parity-checked in ONNX Runtime) or a TensorRT engine."""
from __future__ import annotations

import os

from ..export import ExportConfig, export
from ..parity import DEFAULT_ATOL, DEFAULT_RTOL, VACUOUS_FACTOR
from .common import add_model_args, load_from_args


def register(sub) -> None:
    p = sub.add_parser("export", help="export ONNX / TensorRT engines with a parity check",
                       description="Export a (pruned) model. ONNX: onnx.checker + ONNX Runtime vs PyTorch on "
                                   "several random inputs (max abs/rel error printed); a mismatch beyond "
                                   "tolerance is an error and nothing is written. TensorRT: the parity-checked "
                                   "ONNX is built into a serialized engine (needs `pip install "
                                   "'hwprune[tensorrt]'` and an NVIDIA GPU).")
    add_model_args(p)
    p.add_argument("--format", default="onnx", choices=["onnx", "tensorrt"], help="onnx (default) or tensorrt")
    p.add_argument("--out", help="output file (default: <model stem>.onnx / .engine)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--dynamic-batch", action="store_true", help="make the batch axis dynamic (parity checked at "
                                                                "several batch sizes)")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                   help=f"absolute tolerance of the parity check (default {DEFAULT_ATOL:g}); an output whose spread "
                        f"(std) is at most {VACUOUS_FACTOR:g}x this is too flat to prove anything and is refused")
    p.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                   help=f"tolerance relative to the reference output's spread, its standard deviation "
                        f"(default {DEFAULT_RTOL:g}): passes when max |err| <= atol + rtol x std")
    p.add_argument("--samples", type=int, default=3, help="random inputs compared (default 3)")
    trt = p.add_argument_group("TensorRT")
    trt.add_argument("--fp16", action="store_true", help="allow fp16 kernels")
    trt.add_argument("--int8", action="store_true", help="int8 with entropy calibration (needs --calib-data)")
    trt.add_argument("--calib-data", help="calibration data spec: synthetic, imagefolder:PATH, cifar10:PATH, ...")
    trt.add_argument("--sparse", action="store_true",
                     help="apply 2:4 magnitude masks to Linear/Conv weights and set the sparse-weights flag")
    trt.add_argument("--max-batch", type=int, default=32, help="largest batch of the engine's profile (default 32)")
    p.set_defaults(func=run)


def run(args) -> int:
    config = ExportConfig(format=args.format, opset=args.opset, dynamic_batch=args.dynamic_batch, batch=args.batch,
                          input_size=args.input_size, atol=args.atol, rtol=args.rtol, samples=args.samples,
                          fp16=args.fp16, int8=args.int8, calib_data=args.calib_data, sparse=args.sparse,
                          max_batch=args.max_batch)
    loaded = load_from_args(args)
    out = args.out or (os.path.splitext(os.path.basename(args.model))[0].replace(":", "_")
                       + (".onnx" if args.format == "onnx" else ".engine"))
    calib = None
    if config.int8:
        from ..data import make_data

        calib = make_data(config.calib_data, input_size=config.input_size or loaded.input_size).calib
    result = export(loaded.model, out, config, input_size=loaded.input_size, calib=calib)
    print(f"parity (ONNX Runtime vs PyTorch): {result.parity}")
    if result.sparse_layers:
        print(f"2:4 masks applied to {result.sparse_layers} layers")
    extra = f" (+ {result.onnx_path})" if result.onnx_path else ""
    print(f"wrote {result.path}{extra}")
    return 0
