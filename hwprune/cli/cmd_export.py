"""``hwprune export``: ONNX (parity-checked in ONNX Runtime) or a TensorRT engine."""
from __future__ import annotations

import os
import shlex

from ..defaults import DEFAULT_ATOL, DEFAULT_RTOL, VACUOUS_FACTOR
from .common import add_model_args, load_from_args
from .main import SUMMARIES


def register(sub) -> None:
    p = sub.add_parser("export", help=SUMMARIES["export"],
                       description="Export a (pruned) model. ONNX: onnx.checker + ONNX Runtime vs PyTorch on "
                                   "several random inputs (max abs/rel error printed); a mismatch beyond "
                                   "tolerance is an error and nothing is written. TensorRT: the parity-checked "
                                   "ONNX is built into a serialized engine (needs `pip install "
                                   "'hwprune[tensorrt]'` and an NVIDIA GPU).")
    add_model_args(p)
    p.add_argument("--format", default="onnx", choices=["onnx", "tensorrt", "aoti"],
                   help="onnx (default), tensorrt, or aoti: a torch.export + AOTInductor package (.pt2) compiled for "
                        "--device, parity-checked against eager PyTorch -- the GPU artefact that needs no TensorRT")
    p.add_argument("--device", choices=["cpu", "cuda"],
                   help="aoti: the device the package is compiled for (default: cuda when visible, else cpu)")
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
    q = p.add_argument_group("int8 (ONNX Runtime)")
    q.add_argument("--precision", default="fp32", choices=["fp32", "int8", "fp16", "bf16"],
                   help="int8: static quantization by onnxruntime.quantization (QDQ, per-channel int8 weights, uint8 "
                        "activations) calibrated on --calib-data; instead of parity, top-1 of int8 vs fp32 on the "
                        "data's validation batches and their top-1 agreement are checked and printed. fp16/bf16: "
                        "--format aoti on a GPU (compared with eager fp32 at a looser tolerance)")
    q.add_argument("--max-int8-drop", type=float, default=1.0,
                   help="top-1 points int8 may lose against fp32 (default 1); more is an error naming the layer whose "
                        "quantization costs most")
    q.add_argument("--keep-fp32", action="append", default=[], metavar="LAYER",
                   help="leave this layer (module name, e.g. layers.0.conv1, or ONNX node name) unquantized; repeatable")
    q.add_argument("--calib-batches", type=int, default=8, help="calibration batches fed to quantize_static (default 8)")
    trt = p.add_argument_group("TensorRT")
    trt.add_argument("--fp16", action="store_true", help="allow fp16 kernels")
    trt.add_argument("--int8", action="store_true", help="int8 with entropy calibration (needs --calib-data)")
    trt.add_argument("--calib-data", help="calibration data spec for int8 (ONNX --precision int8 or TensorRT --int8): "
                                          "synthetic, imagefolder:PATH, cifar10:PATH, module:function")
    trt.add_argument("--sparse", action="store_true",
                     help="set the sparse-weights flag (2:4 sparse tensor cores) with the checkpoint's 2:4 masks "
                          "(hwprune prune --sparsity 2:4, fine-tuned with them fixed); a model without masks gets "
                          "one-shot magnitude masks, accuracy not recovered")
    trt.add_argument("--max-batch", type=int, default=32, help="largest batch of the engine's profile (default 32)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..export import ExportConfig, export

    config = ExportConfig(format=args.format, opset=args.opset, dynamic_batch=args.dynamic_batch, batch=args.batch,
                          input_size=args.input_size, atol=args.atol, rtol=args.rtol, samples=args.samples,
                          fp16=args.fp16, int8=args.int8, calib_data=args.calib_data, sparse=args.sparse,
                          max_batch=args.max_batch, precision=args.precision, max_int8_drop=args.max_int8_drop,
                          keep_fp32=tuple(args.keep_fp32), calib_batches=args.calib_batches, device=args.device)
    loaded = load_from_args(args)
    out = args.out or (os.path.splitext(os.path.basename(args.model))[0].replace(":", "_")
                       + {"onnx": ".onnx", "aoti": ".pt2"}.get(args.format, ".engine"))
    calib = None
    if config.int8 or config.precision == "int8":
        from ..data import make_data

        data = make_data(config.calib_data, input_size=config.input_size or loaded.input_size)
        calib = data if config.format == "onnx" else data.calib  # ONNX int8: calib calibrates, val checks
    result = export(loaded.model, out, config, input_size=loaded.input_size, calib=calib)
    if "int8" in result.info and isinstance(result.info["int8"], dict):
        q = result.info["int8"]
        c = q["check"]
        print(f"int8 (QDQ, per-channel weights; {q['calib_batches']} calibration batches of {config.calib_data}): "
              f"{q['ops'].get('QuantizeLinear', 0)} QuantizeLinear, {q['ops'].get('DequantizeLinear', 0)} "
              "DequantizeLinear nodes"
              + (f"; kept in fp32: {', '.join(c['keep_fp32'])}" if c["keep_fp32"] else ""))
        print(f"accuracy (int8 vs fp32 in ONNX Runtime, {c['images']} images of {c['split']}): top-1 "
              f"{100 * c['top1_fp32']:.1f}% -> {100 * c['top1_int8']:.1f}% ({c['drop_points']:+.1f} points, limit "
              f"{c['max_drop']:g}), top-1 agreement {100 * c['agreement']:.1f}%, relative logit error "
              f"{c['rel_logit_err']:.3g}")
    elif result.format == "aoti":
        a = result.info["aoti"]
        print(f"AOTInductor package for {a['device']} ({a['precision']}), compiled in {a['compile_s']:.0f} s, "
              f"{a['size_bytes'] / 1e6:.1f} MB")
        print(f"parity (package vs eager PyTorch): {result.parity}")
    else:
        print(f"parity (ONNX Runtime vs PyTorch): {result.parity}")
    if result.sparse_layers:
        print(f"2:4 sparse weights: {result.sparse_layers} ({result.info.get('sparse_masks')})")
    if "sparsity" in result.info:
        sp = result.info["sparsity"]
        print(f"{sp['pattern']} pattern in the ONNX weights: {sp['onnx_weights_nm']} of {sp['onnx_weights']} "
              f"conv/matmul weights ({sp['sparse_layers']} layers of the model are masked)")
    extra = f" (+ {result.onnx_path})" if result.onnx_path else ""
    print(f"wrote {result.path}{extra}")
    if str(result.path).endswith((".onnx", ".pt2")):  # the next step: time the file as deployed
        print(f"time it: hwprune bench --model {shlex.quote(str(result.path))}")
    return 0
