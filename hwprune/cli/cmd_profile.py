"""``hwprune profile``: measure a model's units on a device into a latency table (issue #3)."""
from __future__ import annotations

import os
import time

from hwprune_deploy.backends import list_backends

from .common import add_grid_args, add_model_args, load_from_args
from .main import SUMMARIES


def register(sub) -> None:
    p = sub.add_parser("profile", help=SUMMARIES["profile"],
                       description="Measure the fused units (conv+bn+act, conv+bn+add+act, depthwise, linear) of a "
                                   "model on a backend into a latency table (default latency_tables/<device>-<backend>-"
                                   "<precision>-b<batch>.json; an existing table is extended). With --bundle, write "
                                   "ONNX micro-models for a device without PyTorch instead; read its result back "
                                   "with --from-bundle-result.")
    add_model_args(p, default="")
    add_grid_args(p, align_default=None,
                  align_help="sample widths that are multiples of this (default: the device's grid -- on ort-cpu "
                             "the CPU's NCHWc channel block, 16 with AVX-512 and 8 with AVX2, since other widths "
                             "leave ORT's blocked layout and pay reorders, and 16 for --precision int8, the "
                             "channel block of ORT's int8 kernels; 8 on GPUs); a grouped conv whose conv groups "
                             "are each a multiple of it at full width keeps them so (hwprune inspect shows every "
                             "group's step)")
    g = p.add_argument_group("profiling")
    g.add_argument("--backend", default="ort-cpu", choices=list_backends(),
                   help="a registered backend: " + " | ".join(list_backends()) + " (default ort-cpu)")
    g.add_argument("--threads", type=int, default=2, help="intra-op threads, pinned and recorded (default 2)")
    g.add_argument("--precision", default="fp32", help="fp32 | fp16 | bf16 (GPU backends) | int8 (ort-cpu: every unit "
                   "and calibration variant statically quantized, QDQ with per-channel int8 weights; the table "
                   "is named ...-int8-b<batch>.json and serves only int8 searches)")
    g.add_argument("--ort-spinning", action="store_true",
                   help="ort-cpu: time with ORT's worker threads spinning between the ops of a run, as ORT's default "
                        "session options do (what a default deployment runs), instead of blocked (hwprune's default); "
                        "they stop between runs, so sessions are still timed side by side. The table is named "
                        "...-ort-cpu-spin-..., and validate, recalibrate and the closed loop then time the same way")
    g.add_argument("--out", help="table file to write/extend (default: latency_tables/<device>-<backend>-...json)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted profile (finished units are kept)")
    g.add_argument("--calib-variants", type=int, default=None,
                   help="extra random pruned variants measured end to end to calibrate the table "
                        "(default 20, denser at the light end; 0 with --quick unless given)")
    g.add_argument("--plot", metavar="DIR", help="write latency-vs-width PNGs (the staircase) per unit to DIR")
    g.add_argument("--bundle", metavar="ZIP", help="write a device bundle (ONNX micro-models + manifest) instead")
    g.add_argument("--from-bundle-result", metavar="JSON", help="read a `hwprune-deploy measure` result into a table")
    g.add_argument("--fleet", metavar="TOML",
                   help="profile every device of a fleet file on its own Ray node (devices are Ray resources; "
                        "each node needs only `pip install ./deploy` and Ray): one table per device (hwprune.fleet)")
    g.add_argument("--ray-address", metavar="auto|HOST:PORT", help="--fleet: the Ray cluster (default: this machine)")
    g.add_argument("--recalibrate", action="store_true",
                   help="keep the table's units, re-time only the full model and its calibration variants and re-fit "
                        "the residual curve (about 30 s for resnet50 on 2 cores): for a machine that may have drifted "
                        "since it was profiled (`hwprune validate` prints the table's figures both ways)")
    g.add_argument("--quick", action="store_true",
                   help="coarse, fast profile (2-3 points per axis, short protocol) for smoke tests")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import ConfigError
    from ..latency import ProfileConfig, profile

    t0 = time.perf_counter()
    if args.from_bundle_result:
        from ..latency.bundle import read_bundle_result

        path = read_bundle_result(args.from_bundle_result, out=args.out)
        print(f"latency table written to {path} (from {args.from_bundle_result})")
        _maybe_plot(args, path)
        return 0
    if not args.model:
        raise ConfigError("--model is required (e.g. --model resnet50), unless --from-bundle-result is given")
    if args.recalibrate:
        return _recalibrate(args)
    if args.fleet:
        return _fleet(args)
    make = ProfileConfig.quick if args.quick else ProfileConfig
    config = make(backend=args.backend, threads=args.threads, batch=args.batch, input_size=args.input_size,
                           precision=args.precision, align=args.align, min_width=args.min_width, out=args.out,
                           resume=args.resume, ignore=tuple(args.ignore), spinning=args.ort_spinning,
                  **({} if args.calib_variants is None else {"calib_variants": args.calib_variants}))
    loaded = load_from_args(args)
    if args.bundle:
        from ..latency.bundle import write_bundle

        man = write_bundle(loaded, config, args.bundle, points_per_axis=2 if args.quick else 6)
        n = sum(len(f["points"]) for f in man["families"].values())
        print(f"bundle written to {args.bundle}: {len(man['families'])} units, {n} micro-models, "
              f"{len(man['models'])} whole models ({time.perf_counter() - t0:.1f} s)")
        print(f"on the device: python -m hwprune_deploy.cli measure {os.path.basename(args.bundle)} --out result.json "
              f"--threads {args.threads}")
        print("then here:     hwprune profile --from-bundle-result result.json")
        return 0
    path = profile(loaded, config, progress=not args.no_progress)
    dt = time.perf_counter() - t0
    from ..latency import LatencyTable

    t = LatencyTable.load(path, check_device=False)
    rec = [r for r in t.models.values() if r.get("spec") == loaded.model_id.get("spec")][-1]
    print(f"latency table written to {path}")
    print(f"profiled {rec['spec']} at {'x'.join(map(str, rec['input_shape']))} on {t.backend} "
          f"({args.threads} threads) in {dt:.1f} s: {len(rec['units'])} units, {rec.get('points_measured', 0)} points "
          f"measured; full model {rec['full_ms']:.3f} ms, units {rec['units_full_ms']:.3f} ms, "
          f"calibration a={rec['calibration']['a']:.3f} b={rec['calibration']['b']:.3f} ms"
          + (_curve(rec["calibration"]) if rec["calibration"].get("correction") else ""))
    ms = rec.get("machine_state")
    if ms:
        dev, n = ms["attempts"][ms["kept"]]["deviation"], len(ms["attempts"])
        print(f"machine state: the full model read {ms['reference_ms']:.3f} ms (median of {len(ms['probes_ms'])} probes) "
              f"while the units were timed; the calibration read it {100 * dev:+.1f}% off"
              + (f" (kept attempt {ms['kept'] + 1} of {n})" if n > 1 else "")
              + ("" if ms["in_state"] else f": beyond +-{100 * ms['tolerance']:.0f}%, validate this table"))
    _maybe_plot(args, path)
    return 0


def _fleet(args) -> int:
    """--fleet: one table per device of the fleet file, each measured on its Ray node."""
    from ..fleet import load_fleet, profile_fleet

    devices = load_fleet(args.fleet)  # a bad fleet file fails before the model is loaded
    loaded = load_from_args(args)
    for row in profile_fleet(loaded, devices, input_size=args.input_size, points_per_axis=2 if args.quick else 6,
                             address=args.ray_address):
        print(f"{row['device']} (Ray resource {row['resource']}, node {row['node']}): latency table {row['table']}")
    return 0


def _recalibrate(args) -> int:
    from ..errors import ConfigError
    from ..latency.measure import Measurer
    from ..latency.profile import TABLE_DIR, recalibrate
    from ..latency.table import default_table_name

    path = args.out or os.path.join(TABLE_DIR, default_table_name(
        Measurer(args.backend, args.threads, args.precision, spinning=args.ort_spinning).fingerprint(), args.backend,
        args.precision, args.batch))
    if not os.path.isfile(path):
        raise ConfigError(f"--recalibrate needs an existing table, and {path!r} does not exist; profile first "
                          f"(`hwprune profile --model {args.model}`) or pass the table with --out")
    loaded = load_from_args(args)
    r = recalibrate(loaded, path, threads=args.threads, input_size=args.input_size)
    b, a = r["before"], r["after"]

    def lightest(cal):  # the residual at the smallest calibration point: where drift shows most
        c = (cal or {}).get("correction") or {}
        return f"{c['residual_ms'][0]:+.3f} ms at {c['units_ms'][0]:.2f} ms of units" if c.get("units_ms") else "none"

    print(f"recalibrated {loaded.model_id.get('spec')} in {path} ({r['variants']} calibration variants, "
          f"{r['seconds']:.1f} s): full model {b['full_ms']:.3f} -> {a['full_ms']:.3f} ms; residual at the lightest "
          f"variant {lightest(b['calibration'])} -> {lightest(a['calibration'])}")
    if not r["variants"]:
        print("  the table has no calibration variants (profiled with --quick or --calib-variants 0), so only the full "
              "model was re-timed and its remainder re-fitted; profile with --calib-variants 20 for a residual curve")
    return 0


def _maybe_plot(args, path: str) -> None:
    if args.plot:
        from ..latency.plots import plot_table

        files = plot_table(path, args.plot)
        print(f"wrote {len(files)} plots to {args.plot}")


def _curve(cal: dict) -> str:
    """`` + residual curve (running median of 9, chosen by leave-one-out)`` for a fitted calibration."""
    w = cal.get("window")
    how = f" (running median of {w}{', chosen by leave-one-out' if cal.get('loo_error') else ''})" if w else ""
    return f" + residual curve{how}"
