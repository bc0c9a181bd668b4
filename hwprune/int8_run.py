"""The int8 step of ``hwprune run --precision int8``: quantize the unpruned and the pruned model as
deployed files (:func:`hwprune.quantize.export_int8`, calibrated on the run's data, top-1 checked
on its validation split), time fp32 unpruned, int8 unpruned and int8 pruned side by side
(:func:`hwprune.bench.measure_fp32_int8`), and write the three rows -- latency, speedup over fp32
unpruned, top-1 -- into the report."""
from __future__ import annotations

import os
from typing import Any

import torch

#: a pruned int8 file that loses more than this against its fp32 self is reported, not refused
RUN_MAX_DROP = 100.0


def int8_rows(baseline: torch.nn.Module, pruned: torch.nn.Module, data, size: int, work: str, out: str, bench_config,
              calib_batches: int = 4, eval_batches: int = 8) -> dict[str, Any]:
    """Write OUT/baseline-int8.onnx and OUT/pruned-int8.onnx and measure the three rows (see module doc)."""
    from hwprune_deploy.runner import timing_ms

    from .bench import measure_fp32_int8
    from .quantize import export_int8

    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    files = {}
    for k, m in (("baseline", baseline), ("pruned", pruned)):
        files[k] = export_int8(m, x, os.path.join(work, f"{k}-int8.onnx"), data, calib_batches=calib_batches,
                               eval_batches=eval_batches, max_drop=RUN_MAX_DROP)
    t, _ = measure_fp32_int8(bench_config, {"baseline": baseline.eval(), "pruned": pruned.eval()}, x,
                             reference="baseline")
    ref = timing_ms(t["baseline (fp32)"])
    rows = []
    for label, key, top1 in (("fp32 unpruned", "baseline (fp32)", files["baseline"].check.top1_fp32),
                             ("int8 unpruned", "baseline (int8)", files["baseline"].check.top1_int8),
                             ("int8 pruned", "pruned (int8)", files["pruned"].check.top1_int8)):
        ms = timing_ms(t[key])
        rows.append({"model": label, "latency_ms": ms, "median_ms": t[key].median_ms, "speedup": ref / ms, "top1": top1})
    return {"rows": rows, "batch": 1, "images": files["baseline"].check.images, "split": files["baseline"].check.split,
            "files": {k: os.path.join(out, f"{k}-int8.onnx") for k in files},
            "checks": {k: f.check.to_dict() for k, f in files.items()},
            "pruned_fp32_ms": timing_ms(t["pruned (fp32)"])}


def int8_markdown(rep: dict[str, Any]) -> str:
    """The report.md section of :func:`int8_rows`."""
    L = ["", "## fp32 and int8 (ONNX Runtime, static QDQ quantization)", "",
         f"Batch {rep['batch']}, timed side by side (p10 of repeats, mean of the fastest half of the passes); top-1 of the "
         f"ONNX files in ONNX Runtime on {rep['images']} images of the {rep['split']}.", "",
         "| model | latency ms | speedup vs fp32 unpruned | top-1 |", "|---|---|---|---|"]
    for r in rep["rows"]:
        L.append(f"| {r['model']} | {r['latency_ms']:.3f} | {r['speedup']:.2f}x | {100 * r['top1']:.1f}% |")
    L.append("")
    L.append("Files: " + ", ".join(f"`{p}`" for p in rep["files"].values()))
    return "\n".join(L) + "\n"
