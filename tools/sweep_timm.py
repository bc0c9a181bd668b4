"""Sweep timm: prune one small member of each timm family 50% and check it end to end.

For each architecture (``--model timm:NAME``, random init, no downloads): build it, trace its
channel groups, prune 50% uniform with the l1 criterion, run the pruned model forward (same output
shape, finite), check the cost models against the really pruned network as
``tests/test_cost_exact.py`` does (the FLOPs model against counted FLOPs, the parameter model
against the parameter count, every latency unit's widths against its Conv2d/Linear's channels),
export to ONNX with :func:`hwprune.export.export_onnx` and check ONNX Runtime against PyTorch
(parity tolerance scaled by the output's spread, :mod:`hwprune.parity`). Each architecture runs in
its own subprocess with an address-space cap (the steps and the worker scheme are
``tools/sweep_models.py``'s, with the cost check on).

    nice -n 15 python tools/sweep_timm.py --json docs/models_timm.json --markdown docs/models.md
    nice -n 15 python tools/sweep_timm.py --models resnet18,vit_tiny_patch16_224 --input-size 64

Input size: ``--input-size`` (default 64) for every architecture; one whose input size is fixed
at construction (ViTs, Swin, MaxViT...) is built for that size (``img_size``); one that does not
run at that size (a window or patch grid that does not divide it) is retried at the size its timm
config names, and the row says so.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sweep_models import (_fmt_e, _fmt_g, _fmt_m, _spread_note, merge_rows, prune_and_check,  # noqa: E402
                          run_isolated, write_markdown_section)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MD_BEGIN, MD_END = "<!-- timm-sweep:begin -->", "<!-- timm-sweep:end -->"

#: (family, architecture): the smallest member of each family timm ships (by parameter count)
ARCHS: list[tuple[str, str]] = [
    ("ResNet", "resnet10t"), ("ResNet", "resnet18"), ("ResNet-D", "resnet18d"), ("ResNeXt", "resnext26ts"),
    ("SE-ResNet", "seresnet18"), ("ECA-ResNet", "ecaresnet26t"), ("SK-ResNet", "skresnet18"),
    ("ResNeSt", "resnest14d"), ("Res2Net", "res2net50_14w_8s"), ("ResNetV2 (BiT)", "resnetv2_50x1_bit"),
    ("RegNetX", "regnetx_002"), ("RegNetY", "regnety_002"), ("RegNetZ", "regnetz_b16"),
    ("EfficientNet", "efficientnet_b0"), ("EfficientNet-Lite", "efficientnet_lite0"),
    ("EfficientNetV2", "tf_efficientnetv2_b0"), ("MobileNetV2", "mobilenetv2_050"),
    ("MobileNetV3", "mobilenetv3_small_050"), ("MobileNetV4", "mobilenetv4_conv_small"),
    ("MobileNetV4 hybrid", "mobilenetv4_hybrid_medium"), ("MNASNet", "mnasnet_small"), ("FBNet", "fbnetc_100"),
    ("LCNet", "lcnet_050"), ("TinyNet", "tinynet_e"), ("ReXNet", "rexnet_100"), ("GhostNet", "ghostnet_050"),
    ("GhostNetV2", "ghostnetv2_100"), ("RepGhost", "repghostnet_050"), ("RepVGG", "repvgg_a0"),
    ("RepViT", "repvit_m1"), ("ConvNeXt", "convnext_atto"), ("ConvNeXtV2", "convnextv2_atto"),
    ("CSPNet", "cspresnet50"), ("CSPNet (CS3)", "cs3darknet_s"), ("DarkNet", "darknet17"), ("DLA", "dla34"),
    ("HRNet", "hrnet_w18_small"), ("DenseNet", "densenet121"), ("DPN", "dpn48b"), ("VoVNet", "ese_vovnet19b_dw"),
    ("SelecSLS", "selecsls42b"), ("HGNetV2", "hgnetv2_b0"), ("Xception", "xception41"),
    ("Inception", "inception_v3"), ("NFNet", "nf_resnet26"), ("NF-RegNet", "nf_regnet_b0"),
    ("ViT", "vit_tiny_patch16_224"), ("DeiT", "deit_tiny_patch16_224"),
    ("DeiT distilled", "deit_tiny_distilled_patch16_224"), ("DeiT III", "deit3_small_patch16_224"),
    ("ViT registers", "vit_small_patch14_reg4_dinov2"), ("BEiT", "beit_base_patch16_224"),
    ("CaiT", "cait_xxs24_224"), ("XCiT", "xcit_nano_12_p16_224"), ("PiT", "pit_ti_224"),
    ("ConViT", "convit_tiny"), ("CrossViT", "crossvit_tiny_240"), ("Swin", "swin_tiny_patch4_window7_224"),
    ("SwinV2", "swinv2_cr_tiny_224"), ("PVTv2", "pvt_v2_b0"), ("Twins", "twins_svt_small"),
    ("PoolFormer", "poolformer_s12"), ("PoolFormerV2", "poolformerv2_s12"), ("MLP-Mixer", "mixer_s32_224"),
    ("ResMLP", "resmlp_12_224"), ("gMLP", "gmlp_ti16_224"), ("LeViT", "levit_128s"),
    ("EfficientFormer", "efficientformer_l1"), ("EfficientFormerV2", "efficientformerv2_s0"),
    ("FastViT", "fastvit_t8"), ("MaxViT", "maxvit_pico_rw_256"), ("CoAtNet", "coatnet_pico_rw_224"),
    ("EdgeNeXt", "edgenext_xx_small"), ("MobileViT", "mobilevit_xxs"), ("MobileViTv2", "mobilevitv2_050"),
    ("EfficientViT (MIT)", "efficientvit_b0"), ("EfficientViT (MSRA)", "efficientvit_m0"),
    ("TinyViT", "tiny_vit_5m_224"), ("FocalNet", "focalnet_tiny_srf"), ("DaViT", "davit_tiny"),
    ("InceptionNeXt", "inception_next_tiny"), ("MambaOut", "mambaout_femto"), ("StarNet", "starnet_s050"),
    ("GCViT", "gcvit_xxtiny"), ("Visformer", "visformer_tiny"), ("ConvMixer", "convmixer_768_32"),
]
FAMILY = {a: f for f, a in ARCHS}


def check_one(name: str, size: int, ratio: float = 0.5, criterion: str = "l1") -> dict:
    """Build timm:``name``, prune, forward, cost check, export, parity; returns a result row."""
    import torch

    from hwprune.models import load_model
    from hwprune.timm_models import default_input_size, fixed_input_size

    torch.set_num_threads(int(os.environ.get("SWEEP_THREADS", "1")))
    row: dict = {"model": name, "family": FAMILY.get(name, ""), "input_size": size, "status": "fail",
                 "stage": "build", "error": ""}
    t0 = time.perf_counter()
    try:
        import timm

        row["timm"], row["torch"] = timm.__version__, torch.__version__
        spec = f"timm:{name}"
        row["fixed_input_size"] = fixed_input_size(name)
        tried = []
        for s in dict.fromkeys([size, default_input_size(name)]):
            torch.manual_seed(0)
            try:
                loaded = load_model(spec, kwargs={"img_size": s})
                with torch.no_grad():
                    loaded.model(torch.randn(1, 3, s, s))
                break
            except Exception as e:
                tried.append(f"{s}: {type(e).__name__}: {str(e)[:200]}")
        else:
            raise RuntimeError("does not run unpruned at " + " or ".join(tried))
        if tried:
            row["size_note"] = f"runs at its own {s}, not {size} ({tried[0]})"
        size = row["input_size"] = s
        prune_and_check(row, loaded, size, ratio, criterion, check_costs=True)
    except Exception as e:  # a row per failure, with where and why
        row["error"] = f"{type(e).__name__}: {str(e)[:400]}"
        row["traceback"] = traceback.format_exc()[-2000:]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _run_isolated(name: str, size: int, timeout: int, mem_gb: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--_one", name, "--input-size", str(size)]
    return run_isolated(cmd, {"model": name, "family": FAMILY.get(name, ""), "input_size": size}, timeout, mem_gb)


def markdown_table(rows: list[dict]) -> str:
    """The table, rendered from the rows alone (every figure in it is a row's)."""
    ok = sum(r["status"] == "ok" for r in rows)
    versions = sorted({f"timm {r['timm']}, torch {r['torch']}" for r in rows if r.get("timm")})
    lines = [f"**{ok} / {len(rows)} timm architectures pass** ({'; '.join(versions)}; 50% uniform, "
             "l1; forward, output shape, FLOPs/parameter models and latency-unit widths equal to the pruned network's, "
             "ONNX export, ONNX Runtime parity within 1e-6 + 1e-3 x the output's std).", "",
             "| family | timm model | input | groups | prunable | GFLOPs before → after | M params before → after "
             "| parity max err / tolerance | s | status | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r.get("family", ""), r["model"])):
        note = f"{r.get('stage')}: {r.get('error', '')}" if r["status"] != "ok" else ""
        frozen = r.get("frozen") or {}
        if r["status"] == "ok" and frozen:
            reasons = sorted({v.split(":")[0].split(" (")[0] for v in frozen.values()})
            note = f"{len(frozen)} frozen ({'; '.join(reasons)[:300]})"
        note = "; ".join(n for n in (note, (r.get("cost") or {}).get("note", ""), r.get("size_note", ""),
                                     _spread_note(r)) if n)
        p = r.get("parity") or {}
        note = note.replace("|", "/").replace("\n", " ")
        lines.append(f"| {r.get('family', '')} | {r['model']} | {r['input_size']} | {r.get('groups', '-')} | "
                     f"{r.get('prunable', '-')} | {_fmt_g(r.get('flops_before'))} → {_fmt_g(r.get('flops_after'))} | "
                     f"{_fmt_m(r.get('params_before'))} → {_fmt_m(r.get('params_after'))} | "
                     f"{_fmt_e(p.get('max_abs'))} / {_fmt_e(p.get('tolerance'))} | {r.get('seconds', '-')} | "
                     f"{r['status']} | {note} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="comma-separated timm names (default: the built-in list, one or two per family)")
    ap.add_argument("--skip", default="", help="comma-separated names to leave out")
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--timeout", type=int, default=900, help="seconds per model")
    ap.add_argument("--mem-gb", type=float, default=8.0, help="address-space cap per model worker (0: none)")
    ap.add_argument("--json", help="write the rows as JSON (merged with rows already in the file)")
    ap.add_argument("--markdown", help="replace the timm sweep section of this markdown file with the table")
    ap.add_argument("--render-only", action="store_true", help="only render --json into --markdown")
    ap.add_argument("--_one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._one:
        print(json.dumps(check_one(args._one, args.input_size)))
        return 0
    def save(rows_now):
        return merge_rows(args.json, rows_now, lambda r: (r.get("family", ""), r["model"]))

    names = args.models.split(",") if args.models else [a for _, a in ARCHS]
    names = [n for n in names if n and n not in set(args.skip.split(","))]
    rows = []
    if not args.render_only:
        for name in names:
            r = _run_isolated(name, args.input_size, args.timeout, args.mem_gb)
            rows.append(r)
            print(f"{name:<34} {r['input_size']:>4} {r.get('groups', '-'):>5} {r.get('prunable', '-'):>5} "
                  f"{r['status']:<5} {r.get('seconds', '-'):>6}s {r.get('stage', '')}: {r.get('error', '')[:300]}",
                  flush=True)
            save(rows)
    rows = save(rows)
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"\n{ok} / {len(rows)} ok")
    if args.markdown:
        write_markdown_section(args.markdown, markdown_table(rows), MD_BEGIN, MD_END)
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
