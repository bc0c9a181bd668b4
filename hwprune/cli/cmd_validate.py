"""``hwprune validate``: predicted vs measured latency on random pruned variants (issue #3), and with
``--shapes`` on structured ones."""
from __future__ import annotations

from hwprune_deploy.timing import FAST_MS, FAST_PASSES, MODEL_PASSES

from .common import add_model_args, load_from_args
from .main import SUMMARIES


def register(sub) -> None:
    p = sub.add_parser("validate", help=SUMMARIES["validate"],
                       description="Draw N random pruned variants of the model, predict each from the table, "
                                   "measure each end to end on the table's backend, and print the errors. "
                                   "Also printed: how repeatable this run's own stopwatch was (each variant's "
                                   "ratio from its even passes against its odd passes); where its halves agree "
                                   "within 5% on fewer than 95% of the variants, a +-5% bar cannot be judged on "
                                   "this machine.")
    add_model_args(p)
    p.add_argument("--table", required=True, help="latency table JSON (from `hwprune profile`)")
    p.add_argument("--samples", type=int, default=30, help="random variants to draw (default 30)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the variants (default 0)")
    p.add_argument("--align", type=int, default=None,
                   help="width grid of the variants (default: the grid a search spends this table on -- its "
                        "device's grid at its precision, never finer than the grid it was profiled on; e.g. 16 for an "
                        "int8 table on x86 even if profiled on 8)")
    p.add_argument("--min-width", type=int, default=8, help="smallest width per group (default 8)")
    p.add_argument("--no-recalibrate", action="store_true",
                   help="do not also re-fit the table's calibration from its calibration variants timed alongside "
                        "(by default both figures are printed: the table as profiled, and recalibrated to the machine "
                        "as it is now -- on a shared VM the machine drifts between profiling and validation)")
    p.add_argument("--shapes", action="store_true",
                   help="also time structured variants in the same passes -- the early half of the network cut to "
                        "1/2 and 1/4 with the late half kept, the reverse, and all cut alike -- and print their errors "
                        "apart: random variants cut every layer by about the same share, a search does not, and a "
                        "table can price the one well and the other badly (docs/latency.md, 'Where a plan prunes')")
    p.add_argument("--passes", type=int, default=None, metavar="N",
                   help=f"time every variant in at least N passes (default {MODEL_PASSES}; a model under {FAST_MS:g} ms "
                        f"gets at least {FAST_PASSES}); "
                        "a variant's figure is the mean of its fastest half. On a noisy machine, where the "
                        "repeatability line says the halves disagree, more passes (e.g. --passes 12) pin the "
                        "measured ratios down, at a proportional cost in time")
    p.add_argument("--json", help="write the full result (per-variant widths and errors) here")
    p.add_argument("--plot", metavar="DIR", help="write a predicted-vs-measured scatter PNG to DIR")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..jsonio import write_json
    from ..latency import validate
    from ..latency.measure import model_passes

    loaded = load_from_args(args)
    r = validate(loaded, args.table, samples=args.samples, seed=args.seed, align=args.align,
                 min_width=args.min_width, progress=not args.no_progress, input_size=args.input_size,
                 recalibrate=not args.no_recalibrate, shapes=args.shapes, passes=args.passes)
    rc = r.recalibration is not None
    print(f"{'variant':>7} {'predicted':>10} {'measured':>9} {'error':>7}   {'predicted ms':>12} {'measured ms':>11} "
          f"{'error':>7}" + (f"   {'recalibrated':>12} {'error':>7}" if rc else ""))
    for v in r.variants:
        print(f"{v['index']:>7} {v['predicted_ratio']:>9.3f}x {v['measured_ratio']:>8.3f}x {100 * v['error']:>6.1f}%   "
              f"{v['predicted_ms']:>12.3f} {v['measured_ms']:>11.3f} {100 * v['error_ms']:>6.1f}%" +
              (f"   {v['predicted_ratio_recalibrated']:>11.3f}x {100 * v['error_recalibrated']:>6.1f}%" if rc else ""))
    ab = r.summary("error_ms")
    spin = " (ORT workers spinning)" if r.spinning else ""
    print(f"{r.model} on {r.backend}{spin}, {len(r.variants)} variants on a {r.align}-channel grid (latency as a "
          f"ratio to the unpruned model, timed side by side): median |error| {100 * r.median_abs_error:.1f}%, "
          f"within +-5%: {100 * r.share_within(0.05):.0f}%, within +-10%: {100 * r.share_within(0.10):.0f}%, "
          f"max |error| {100 * r.max_abs_error:.1f}%")
    print(f"  in ms (unpruned: predicted {r.predicted_full_ms:.3f}, measured now {r.reference_ms:.3f}): median |error| "
          f"{100 * ab['median_abs_error']:.1f}%, within +-5%: {100 * ab['within_5pct']:.0f}%, within +-10%: "
          f"{100 * ab['within_10pct']:.0f}%, max |error| {100 * ab['max_abs_error']:.1f}%")
    rep = r.repeatability()
    if rep is not None:
        print(f"  repeatability of this run's stopwatch: each variant's ratio from its even passes against its odd "
              f"passes differs by {100 * rep['rms']:.1f}% rms, within 5% on {100 * rep['within_5pct']:.0f}% of "
              f"variants" + (" -- the +-5% figures above are at the limit of what this machine can judge; more "
                             f"passes pin the ratios down (--passes {max(12, 2 * model_passes(args.passes))})"
                             if rep["within_5pct"] < 0.95 else ""))
    if rc:
        q = r.summary("error_recalibrated")
        w = r.recalibration.get("window")
        width = f", running median of {w}" if w else ""
        print(f"  recalibrated (residual curve re-fitted from the table's {len(r.recalibration['variants'])} calibration "
              f"variants timed alongside{width}): median |error| {100 * q['median_abs_error']:.1f}%, within +-5%: "
              f"{100 * q['within_5pct']:.0f}%, within +-10%: {100 * q['within_10pct']:.0f}%, max |error| "
              f"{100 * q['max_abs_error']:.1f}%")
    elif not args.no_recalibrate:
        print("  no recalibrated figure: the table has no calibration variants to re-time (profiled with --quick or "
              "--calib-variants 0)")
    if r.shapes:
        print("structured variants (timed in the same passes; not in the figures above): predicted / measured ratio, "
              "error; 'units' is the units' sum alone, before calibration")
        for v in r.shapes:
            print(f"  {v['name']:>11}  {v['predicted_ratio']:.3f}x / {v['measured_ratio']:.3f}x  {100 * v['error']:+6.1f}%   "
                  f"units {v['units_ratio']:.3f}x {100 * (v['units_ratio'] / v['measured_ratio'] - 1):+6.1f}%" +
                  (f"   recalibrated {100 * v['error_recalibrated']:+6.1f}%" if rc else ""))
        worst = max(r.shapes, key=lambda v: abs(v["error"]))
        print(f"  worst: {worst['name']} {100 * worst['error']:+.1f}% -- a search whose plans have that shape (halp keeps "
              "the layers the table says are cheap) lands off by about that much until the closed loop corrects it")
    if args.json:
        write_json(args.json, r.to_dict())
        print(f"wrote {args.json}")
    if args.plot:
        from ..latency.plots import plot_validation

        print(f"wrote {plot_validation(r.to_dict(), args.plot)}")
    return 0
