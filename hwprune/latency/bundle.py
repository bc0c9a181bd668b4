"""Profiling a device that has no PyTorch: write a bundle, measure it there, read it back.

    hwprune profile --model resnet50 --bundle rn50.zip            # host (torch)
    hwprune-deploy measure rn50.zip --out result.json --threads 2  # device (numpy + onnxruntime)
    hwprune profile --from-bundle-result result.json               # host: -> latency_tables/...

The bundle holds every unit micro-model at its grid points (ONNX), a trivial model for the
runtime's per-call overhead, the full model and a few calibration variants (weights replaced by
a repeated pattern, so the zip compresses), and a manifest saying what each file is. There is no
round trip to the device, so the grid cannot be refined adaptively: a denser fixed grid is used
(log-spaced, plus the two far-edge scans every family has; see :class:`~hwprune.latency.table.Family`).
"""
from __future__ import annotations

import json
import os
import zipfile

from ..errors import TableError
from ..graph import ChannelGraph
from ..models import LoadedModel
from .micro import overhead_onnx, patternize_onnx, unit_contexts, unit_onnx
from .measure import table_spinning
from .profile import (TABLE_DIR, ProfileConfig, axis_candidates, calibration_variants, example_input, preferred_align,
                      store_calibration)
from .sampling import spread_points
from .table import Family, LatencyTable, default_table_name, now
from .units import extract_units, model_key

BUNDLE_FORMAT = "hwprune-bundle"


def write_bundle(loaded: LoadedModel, config: ProfileConfig, path: str, points_per_axis: int = 6) -> dict:
    """Write ``path`` (zip); returns the manifest."""
    from ..onnx_export import onnx_bytes
    from .measure import build_variant

    if config.align is None:  # the device is elsewhere: its CPU is unknown here (8 suits AVX2 and GPUs)
        import dataclasses

        config = dataclasses.replace(config, align=preferred_align(config.backend, {}, config.precision))
    x = example_input(loaded, config)
    graph = ChannelGraph(loaded.model, x, ignore=config.ignore)
    units = extract_units(graph, dtype=config.precision)
    cands = axis_candidates(units, graph, config)
    files: dict[str, bytes] = {}
    families = {}
    from ..backends import backend_class

    kind = backend_class(config.backend)  # the registry's: how its unit micro-models look
    sparse, context = bool(kind.sparse24), bool(kind.unit_context)
    for u in units:
        fk = u.family.key
        if fk in families:
            continue
        cin_c, cout_c = sorted(cands[fk][0]), sorted(cands[fk][1])
        if u.family.tied:  # 1-D: every candidate on the diagonal
            cins = couts = sorted(set(cin_c) | set(cout_c))
            pts = [(c, c) for c in cins]
        else:  # log-spaced grid + the two far-edge scans (see profile._measure_family)
            cins, couts = spread_points(cin_c, points_per_axis), spread_points(cout_c, points_per_axis)
            pts = [(a, b) for a in cins for b in couts]
            pts += [(c, couts[-1]) for c in cin_c] + [(cins[-1], c) for c in cout_c]
            pts = list(dict.fromkeys(pts))
        plist = []
        for i, (a, b) in enumerate(pts):
            name = f"units/{len(families):03d}/{a}x{b}.onnx"
            files[name] = unit_onnx(u.family, a, b, sparse24=sparse, **unit_contexts(u.family, context))
            plist.append({"cin": a, "cout": b, "file": name})
        families[fk] = {"spec": u.family.to_dict(), "cins": cins, "couts": couts, "points": plist}
    variants = calibration_variants(graph.groups, config)
    models = {"overhead": {"file": "models/overhead.onnx", "role": "overhead"}}
    files["models/overhead.onnx"] = overhead_onnx()
    for k, w in variants.items():
        m = loaded.model if not w else build_variant(loaded.model, x, w)
        files[f"models/{k}.onnx"] = patternize_onnx(onnx_bytes(m, x))
        models[k] = {"file": f"models/{k}.onnx", "role": "full" if k == "full" else "calibration", "widths": w}
    manifest = {"format": BUNDLE_FORMAT, "version": 1, "backend": config.backend, "precision": config.precision,
                "batch": config.batch, "threads": config.threads, "spinning": config.spinning, "align": config.align,
                "min_width": config.min_width, "created": now(), "families": families, "models": models,
                "model": {"spec": loaded.model_id.get("spec"), "model_id": loaded.model_id, "model_key": model_key(graph),
                          "input_shape": list(x.shape), "units": [u.to_dict() for u in units]}}
    tmp = path + ".partial"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=1))
        for name, data in files.items():
            zf.writestr(name, data)
    os.replace(tmp, path)
    return manifest


def read_bundle_result(result_path: str, out: str | None = None) -> str:
    """Turn a device-side result file into (or into an extension of) a latency table; returns its path."""
    try:
        with open(result_path) as f:
            res = json.load(f)
        manifest, results, fp = res["manifest"], res["results"], res["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TableError(f"{result_path!r} is not a readable bundle result ({e}); produce it with "
                         "`hwprune-deploy measure bundle.zip --out result.json`") from None
    if res.get("format") != "hwprune-bundle-result":
        raise TableError(f"{result_path!r} is not an hwprune bundle result (format={res.get('format')!r})")
    backend, precision, batch = manifest["backend"], manifest["precision"], manifest["batch"]
    path = out or os.path.join(TABLE_DIR, default_table_name(fp, backend, precision, batch))
    if os.path.exists(path):
        table = LatencyTable.load(path, check_device=False)
        if table.device.get("cpu") != fp.get("cpu") or table.device.get("gpu") != fp.get("gpu"):
            raise TableError(f"table {path!r} was measured on another device; pass a different --out")
        if table_spinning(table) != bool(fp.get("spinning", False)):
            raise TableError(f"table {path!r} and {result_path!r} were timed with ORT's workers "
                             f"{'spinning' if table_spinning(table) else 'blocked'} and "
                             f"{'spinning' if fp.get('spinning') else 'blocked'} (--ort-spinning); one table "
                             "holds one protocol: pass a different --out")
    else:
        table = LatencyTable(fp, backend, precision, batch,
                             {"unit": res["unit_protocol"], "model": res["model_protocol"], "statistic": "p10",
                              "interleaved": "per family", "source": "bundle", "align": manifest["align"],
                              "min_width": manifest["min_width"]})
    stat = lambda t: float(t["p10_ms"])  # noqa: E731  (the runner's statistic)
    overhead = stat(results[manifest["models"]["overhead"]["file"]])
    if str(res["unit_protocol"].get("unit_time", "")).startswith("kernel"):
        overhead = 0.0  # kernel time never includes the per-call overhead
    for fk, fd in manifest["families"].items():
        fam = table.families.get(fk)
        from .units import UnitFamily

        if fam is None:
            fam = table.families[fk] = Family(UnitFamily.from_dict(fd["spec"]), [], [], {}, {}, {})
        for p in fd["points"]:
            k = f"{p['cin']},{p['cout']}"
            if k not in fam.points:
                t = results[p["file"]]
                fam.points[k], fam.iqr[k], fam.measured_at[k] = max(stat(t) - overhead, 1e-4), float(t["iqr_ms"]), now()
        fam.cins = sorted(set(fam.cins) | set(fd["cins"]))
        fam.couts = sorted(set(fam.couts) | set(fd["couts"]))
        if not fam.grid_complete():  # a grid merged from different bundles: keep only the bundle's axes
            fam.cins, fam.couts = list(fd["cins"]), list(fd["couts"])
        fam.invalidate()
        fam.lower_to_envelope()
    mi = manifest["model"]
    rec = {"spec": mi["spec"], "model_id": mi["model_id"], "input_shape": mi["input_shape"], "units": mi["units"]}
    table.models[mi["model_key"]] = rec
    variants = {k: m.get("widths", {}) for k, m in manifest["models"].items() if m["role"] != "overhead"}
    store_calibration(table, rec, variants, {k: stat(results[manifest["models"][k]["file"]]) for k in variants})
    rec.update(run_overhead_ms=overhead, profile_seconds=round(float(res.get("seconds", 0.0)), 1), source="bundle")
    table.history.append({"spec": mi["spec"], "model_key": mi["model_key"], "seconds": rec["profile_seconds"],
                          "when": now(), "source": "bundle"})
    table.save(path)
    return path
