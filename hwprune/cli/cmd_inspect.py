"""``hwprune inspect``: list a model's channel groups and where its FLOPs are."""
from __future__ import annotations

from .common import add_grid_args, add_model_args, load_from_args
from .main import SUMMARIES


def register(sub) -> None:
    p = sub.add_parser("inspect", help=SUMMARIES["inspect"],
                       description="Trace a model and print every group of coupled channels: the layers "
                                   "that must be cut together, their width and their share of the FLOPs.")
    add_model_args(p, default="tiny_resnet_synthetic")
    add_grid_args(p)
    p.add_argument("--json", metavar="FILE", help="also write the groups as JSON")
    p.add_argument("--list", action="store_true", help="list the built-in and torchvision model names (and how to name timm ones) and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..counting import per_module_flops, summarize
    from ..graph import ChannelGraph
    from ..models import torchvision_classifiers
    from ..zoo import ZOO

    if args.list:
        print("built-in:    " + " ".join(ZOO))
        print("torchvision: " + " ".join(torchvision_classifiers()))
        try:
            import timm

            print(f"timm:        timm:NAME for any of the {len(timm.list_models())} names in timm.list_models() "
                  f"(timm {timm.__version__}; random init or --weights FILE, never a download)")
        except ImportError:
            print("timm:        timm:NAME once timm is installed: pip install 'hwprune[timm]'")
        return 0
    loaded = load_from_args(args)
    size = args.input_size or loaded.input_size
    x = torch.randn(args.batch, 3, size, size)
    graph = ChannelGraph(loaded.model, x, ignore=args.ignore)
    flops = per_module_flops(loaded.model, x)
    total = sum(flops.values()) or 1
    s = summarize(loaded.model, x)
    print(f"{loaded.model_id['spec']}: input {list(x.shape)}, {s['flops'] / 1e9:.3f} GFLOPs, "
          f"{s['params'] / 1e6:.3f} M params, {len(graph.groups)} channel groups "
          f"({len(graph.prunable)} prunable)")
    rows = []
    print(f"{'group':<44} {'kind':<9} {'width':>6} {'layers':>6} {'FLOPs%':>7}  widths on grid")
    for g in graph.groups:
        share = 100.0 * sum(flops.get(m, 0) for m in g.layers) / total
        ws = g.candidate_widths(args.align, args.min_width)
        why = g.step_reason(args.align) if g.prunable else ""
        grid = (f"{ws[0]}..{ws[-1]} ({len(ws)})" + (f"; {why}" if why else "")) if g.prunable else f"frozen: {g.reason}"
        print(f"{g.name:<44} {g.kind:<9} {g.width:>6} {len(g.layers):>6} {share:>6.1f}%  {grid}")
        rows.append({"name": g.name, "kind": g.kind, "width": g.width, "blocks": g.blocks, "conv_groups": g.conv_groups,
                     "layers": g.layers, "flops_share": share / 100, "prunable": g.prunable, "candidate_widths": ws,
                     "step": g.step(args.align) if g.prunable else g.width, "step_reason": why})
    if args.json:
        from ..jsonio import write_json

        write_json(args.json, {"model": loaded.model_id, "input_shape": list(x.shape), "summary": s, "groups": rows})
        print(f"wrote {args.json}")
    return 0
