"""``hwprune siblings``: the stock models that already run at the pruned latency, measured side by side."""
from __future__ import annotations

import argparse

from hwprune_deploy.backends import list_backends

from ..errors import ConfigError
from ..jsonio import write_json
from .main import SUMMARIES

EPILOG = """\
examples:
  hwprune siblings --model resnet50 --budget 0.5x              # which stock ResNets run within 0.5x of resnet50?
  hwprune siblings --model out/rn50/pruned.pt --plot sib.png   # the pruned model's own measured latency is the line
  hwprune siblings --model vit_b_16 --budget 0.3x --scope all  # every torchvision classifier under ViT-B/16's GFLOPs
  hwprune siblings --model resnet50 --candidates resnet18,timm:resnet26d --budget 0.6x

A pruned model is worth shipping only if it beats the stock models that already run at its
latency (Torch-Pruning's ViT-B/16 pruned 3.8x in MACs ran at 3.99 ms / 80.19%, the stock ViT-B/32
at 3.87 ms / 80.68%). The top-1 column is torchvision's published ImageNet-1K figure (read offline
from the weights' metadata, nothing is downloaded), the latency is measured here with the budget's
estimator. The candidates are built with random init: latency does not depend on the weights.
"""


def register(sub) -> None:
    p = sub.add_parser("siblings", help=SUMMARIES["siblings"], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Time a model, its pruned version and its family's smaller stock models side\n"
                                   "by side on the device, with the ImageNet-1K top-1 torchvision publishes for\n"
                                   "each: the accuracy a pruned model at that latency has to beat.")
    p.add_argument("--model", required=True, metavar="SPEC",
                   help="the reference: a torchvision name (resnet50), or a pruned checkpoint (OUT/pruned.pt), whose "
                        "base model is the reference and whose measured latency is the line")
    p.add_argument("--budget", help="the line without a pruned checkpoint: 0.5x, 2speedup (of the reference's "
                                    "measured latency) or 12ms")
    p.add_argument("--scope", default="family", choices=["family", "all"],
                   help="candidates: the torchvision models of the reference's family (default; ResNeXt and Wide "
                        "ResNet count as ResNet) or all torchvision classifiers, each publishing fewer GFLOPs")
    p.add_argument("--candidates", metavar="A,B",
                   help="name the candidates instead (any --model spec: torchvision, timm:NAME, zoo names; only "
                        "torchvision ones have a published top-1)")
    p.add_argument("--backend", default="ort-cpu", choices=list_backends(), help="where to time (default ort-cpu)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for CPU backends (default 2)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--input-size", type=int, help="square input resolution (default: the reference's own)")
    p.add_argument("--repeats", type=int, default=20, help="timed repeats per model (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up calls (default 5)")
    p.add_argument("--ort-spinning", action="store_true",
                   help="ort-cpu: ORT's default spinning workers (as `hwprune bench --ort-spinning`)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--plot", metavar="PNG", help="also plot published top-1 against measured latency")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..models import LoadedModel, build_from_id, load_model
    from ..siblings import SiblingsConfig, format_siblings, plot_siblings, siblings

    if args.model.endswith((".onnx", ".pt2", ".engine")):
        raise ConfigError(f"siblings rebuilds the model and its siblings in PyTorch: give the checkpoint or model name "
                          f"{args.model!r} was exported from")
    names = [n.strip() for n in (args.candidates or "").split(",") if n.strip()]
    if args.candidates is not None and not names:
        raise ConfigError(f"--candidates {args.candidates!r} names no model; e.g. --candidates resnet18,resnet34")
    if args.batch < 1:
        raise ConfigError(f"--batch {args.batch} must be >= 1")
    config = SiblingsConfig(budget=args.budget, scope=args.scope, names=names, backend=args.backend,
                            threads=args.threads, batch=args.batch, input_size=args.input_size, warmup=args.warmup,
                            repeats=args.repeats, spinning=args.ort_spinning)
    loaded = load_model(args.model)
    pruned = None
    if loaded.plan is not None:  # a pruned checkpoint: its base model is the reference, its latency the line
        if args.budget:
            raise ConfigError("a pruned checkpoint's own measured latency is the line: leave out --budget (or give "
                              "the base model's name with --budget to ask about a latency you have not pruned to)")
        base, size = build_from_id(loaded.plan.model_id, source=f"checkpoint {args.model!r}")
        pruned = loaded
        loaded = LoadedModel(model=base.eval(), model_id=loaded.plan.model_id, input_size=loaded.input_size or size)
    res = siblings(loaded, config, pruned=pruned)
    print(format_siblings(res))
    if args.json:
        write_json(args.json, res)
        print(f"wrote {args.json}")
    if args.plot:
        print(f"wrote {plot_siblings(res, args.plot)}")
    return 0
