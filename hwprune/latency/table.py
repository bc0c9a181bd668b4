"""The latency table: a versioned JSON file of measured unit latencies + per-model remainders.

Layout (format ``hwprune-latency-table``, version 1)::

    device        fingerprint of the machine and runtime (CPU model, cores, ORT/numpy versions, threads)
    backend, precision, batch, protocol (warm-up, repeats, statistic, spread)
    families      {signature: {spec, cins, couts, points {"cin,cout": ms}, iqr {...}, measured_at {...}}}
    models        {model key: {spec, input_shape, units [...], full_ms, units_full_ms, remainder_ms,
                               calibration {a, b, correction {units_ms, residual_ms}, variants},
                               profile_seconds}}
    in_progress   set while a profile is running; a killed profile resumes from it (--resume)

``predict(widths) = S + residual(S)`` with ``S = sum(unit(cin, cout))``, each unit interpolated
between its measured points (scan-warped bilinear, see :class:`Family`). The residual curve is
fitted on the full model and a few extra pruned variants measured end to end (never the
validation set; see :func:`hwprune.latency.profile.fit_calibration`) and absorbs what the units
do not share with the network (pooling and classifier glue, scheduling, cache state). Tables
with fewer than three such points use ``a * S + b`` (a = 1, b = the remainder at full width).
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Optional

from ..errors import TableBatchError, TableError
from ..jsonio import write_json
from .sampling import bilinear, interp1, monotone_envelope, suffix_min
from .units import UnitFamily, UnitUse, extract_units, model_key

TABLE_FORMAT = "hwprune-latency-table"
TABLE_VERSION = 1


class TableMismatchWarning(UserWarning):
    """The table was measured on another device or runtime; its numbers may not apply here."""


def _pk(cin: int, cout: int) -> str:
    return f"{int(cin)},{int(cout)}"


@dataclass
class Family:
    """One unit shape's measurements: a product grid ``cins x couts`` (sampled sparsely, log-spaced)
    plus, where profiled, the two *axis scans* -- every grid width along the far edges,
    ``(c, couts[-1])`` for all c and ``(cins[-1], c)`` for all c -- stored as ordinary points.

    Prediction is bilinear on the grid, but in *warped* coordinates: the position of ``cin``
    between its two grid neighbours is read off the cin scan's latency (and likewise cout), not
    off the raw width. Conv latency on a SIMD machine is close to ``alpha + beta * A(cin) *
    B(cout)`` with staircases A, B (vector blocks, output-channel tiles: on a 2-core EPYC a
    56x56 conv with 40 output channels costs what 48 do); bilinear interpolation in (A, B) is
    exact for that form, so the staircase between grid points comes from the scans instead of a
    straight line -- the error that dominated heavily pruned variants (where every unit sits
    between grid points). Without scans (older tables) the weight is the plain linear one."""

    spec: UnitFamily
    cins: list[int]
    couts: list[int]
    points: dict[str, float]
    iqr: dict[str, float]
    measured_at: dict[str, float]
    _curves: Optional[tuple] = field(default=None, repr=False, compare=False)

    def has(self, cin: int, cout: int) -> bool:
        return _pk(cin, cout) in self.points

    def value(self, cin: int, cout: int) -> float:
        try:
            return self.points[_pk(cin, cout)]
        except KeyError:
            raise TableError(f"unit {self.spec.key} has no measurement at cin={cin}, cout={cout}; "
                             "the table is incomplete -- re-run `hwprune profile --resume`") from None

    def grid_complete(self) -> bool:
        if self.spec.tied:
            return all(self.has(c, c) for c in self.cins)
        return all(self.has(a, b) for a in self.cins for b in self.couts)

    def invalidate(self) -> None:
        """Forget cached scans (call after changing ``points``)."""
        self._curves = None

    def curves(self) -> tuple[dict[int, float], dict[int, float]]:
        """(cin scan at cout = couts[-1], cout scan at cin = cins[-1]): {width: ms}, measured points only."""
        if self._curves is None:
            cin_c: dict[int, float] = {}
            cout_c: dict[int, float] = {}
            if self.cins and self.couts and not self.spec.tied:
                far_in, far_out = self.cins[-1], self.couts[-1]
                for k, v in self.points.items():
                    a, b = (int(t) for t in k.split(","))
                    if b == far_out:
                        cin_c[a] = v
                    if a == far_in:
                        cout_c[b] = v
            self._curves = ({k: cin_c[k] for k in sorted(cin_c)}, {k: cout_c[k] for k in sorted(cout_c)})
        return self._curves

    def envelope(self) -> dict[tuple[int, int], float]:
        """Each point's noise-free value: grid points lowered to the smallest value among points
        with at least as many channels (:func:`~hwprune.latency.sampling.monotone_envelope`), the
        far-edge scans to their suffix minimum."""
        env = monotone_envelope(self.cins, self.couts, self.value, self.spec.tied)
        if not self.spec.tied:
            far_in, far_out = self.cins[-1], self.couts[-1]
            cin_curve, cout_curve = self.curves()
            for curve, pt in ((cin_curve, lambda c: (c, far_out)), (cout_curve, lambda c: (far_in, c))):
                for c, v in suffix_min(curve).items():
                    env[pt(c)] = min(v, env.get(pt(c), v))
        return env

    def lower_to_envelope(self, rounds: int = 2) -> None:
        """Write :meth:`envelope` into the points, ``rounds`` times: lowering a scan point can
        lower the grid again (each pass only lowers points)."""
        for _ in range(rounds):
            for (a, b), v in self.envelope().items():
                self.points[_pk(a, b)] = v
            self.invalidate()

    def predict(self, cin: float, cout: float) -> float:
        """Interpolated latency (ms) at (cin, cout); exact on measured grid points."""
        if self.spec.tied:
            return interp1(self.cins, [self.value(c, c) for c in self.cins], cin)
        cin_curve, cout_curve = self.curves()
        return bilinear(self.cins, self.couts, self.value, cin, cout,
                        warp_x=cin_curve if len(cin_curve) > 2 else None,
                        warp_y=cout_curve if len(cout_curve) > 2 else None)

    def to_dict(self) -> dict:
        return {"spec": self.spec.to_dict(), "cins": self.cins, "couts": self.couts, "points": self.points,
                "iqr": self.iqr, "measured_at": self.measured_at}

    @classmethod
    def from_dict(cls, d: dict) -> "Family":
        return cls(UnitFamily.from_dict(d["spec"]), [int(v) for v in d["cins"]], [int(v) for v in d["couts"]],
                   {k: float(v) for k, v in d["points"].items()}, dict(d.get("iqr", {})),
                   dict(d.get("measured_at", {})))


class LatencyTable:
    """Measured unit latencies for one (device, backend, precision, batch)."""

    def __init__(self, device: dict, backend: str, precision: str = "fp32", batch: int = 1,
                 protocol: Optional[dict] = None):
        self.device = dict(device)
        self.backend, self.precision, self.batch = backend, precision, int(batch)
        self.protocol = dict(protocol or {})
        self.families: dict[str, Family] = {}
        self.models: dict[str, dict] = {}
        self.in_progress: Optional[dict] = None
        self.history: list[dict] = []
        self.path: Optional[str] = None

    # ------------------------------------------------------------------ file I/O
    def to_dict(self) -> dict:
        return {"format": TABLE_FORMAT, "version": TABLE_VERSION, "device": self.device, "backend": self.backend,
                "precision": self.precision, "batch": self.batch, "protocol": self.protocol,
                "in_progress": self.in_progress, "history": self.history,
                "models": self.models, "families": {k: f.to_dict() for k, f in self.families.items()}}

    def save(self, path: str) -> None:
        """Atomic: write a temp file, fsync, rename; a reader or a kill never sees half a table."""
        write_json(path, self.to_dict())
        self.path = path

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> "LatencyTable":
        if not isinstance(d, dict) or d.get("format") != TABLE_FORMAT:
            raise TableError(f"{source} is not an hwprune latency table (format={d.get('format') if isinstance(d, dict) else None!r}); "
                             "make one with `hwprune profile --model M`")
        if d.get("version") != TABLE_VERSION:
            raise TableError(f"{source} has table version {d.get('version')!r}; this hwprune reads version {TABLE_VERSION}. "
                             "Re-profile the device with `hwprune profile`.")
        try:
            t = cls(d["device"], d["backend"], d.get("precision", "fp32"), d.get("batch", 1), d.get("protocol"))
            t.families = {k: Family.from_dict(f) for k, f in d["families"].items()}
            t.models = dict(d.get("models", {}))
            t.in_progress = d.get("in_progress")
            t.history = list(d.get("history", []))
        except (KeyError, TypeError, ValueError) as e:
            raise TableError(f"{source} is a damaged latency table ({type(e).__name__}: {e}); "
                             "delete it and re-run `hwprune profile`") from None
        return t

    @classmethod
    def load(cls, path: str, check_device: bool = True) -> "LatencyTable":
        """Read and validate a table; warns loudly when it was measured on another device/runtime."""
        if not os.path.isfile(path):
            raise TableError(f"latency table {path!r} does not exist; make it with `hwprune profile --model M` "
                             "or pick one from latency_tables/")
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise TableError(f"latency table {path!r} is corrupted or truncated ({e}); "
                             "delete it and re-run `hwprune profile` (or `--resume` an interrupted one)") from None
        t = cls.from_dict(d, source=f"latency table {path!r}")
        t.path = path
        if check_device:
            t.check_device()
        return t

    def check_device(self, current: Optional[dict] = None) -> list[str]:
        """Fields of the recorded fingerprint that differ from this machine's (and warn if any)."""
        if current is None:
            from ..backends import get_backend

            try:
                current = get_backend(self.backend, threads=int(self.device.get("threads", 2))).fingerprint()
            except Exception:
                return []
        # cpu_id: the microarchitecture behind a CPU name such as "AMD EPYC" (compared where both record it;
        # tables from before 2026-12-05 do not)
        keys = ("cpu", "cpu_id", "nchwc_block", "cores", "machine", "gpu", "driver", "onnxruntime", "tensorrt", "torch",
                "cuda", "threads")
        diff = [f"{k}: table {self.device.get(k)!r} vs here {current.get(k)!r}" for k in keys
                if k in self.device and k in current and self.device.get(k) != current.get(k)]
        if diff:
            warnings.warn("LATENCY TABLE FROM ANOTHER DEVICE/RUNTIME -- its numbers may not hold here ("
                          + "; ".join(diff) + "). Re-profile this machine with `hwprune profile` for "
                          "trustworthy budgets.", TableMismatchWarning, stacklevel=2)
        return diff

    # ------------------------------------------------------------------ queries
    def family(self, spec: UnitFamily) -> Optional[Family]:
        return self.families.get(spec.key)

    def record_for(self, graph) -> dict:
        key = model_key(graph)
        rec = self.models.get(key)
        if rec is None:
            shape = "x".join(map(str, graph.example_input.shape))
            def held(r: dict) -> str:  # the builder's arguments too: tiny_resnet and tiny_resnet(width=16) differ
                kw = (r.get("model_id") or {}).get("kwargs") or {}
                args = f"({', '.join(f'{k}={v!r}' for k, v in kw.items())})" if kw else ""
                return f"{r.get('spec')}{args} @ {'x'.join(map(str, r.get('input_shape', [])))}"

            known = ", ".join(held(r) for r in self.models.values()) or "none"
            batch = graph.example_input.shape[0]
            if batch != self.batch:  # one table holds one batch: profiling into it would be refused
                raise TableBatchError(f"table {self.path or ''} was profiled at batch {self.batch} and this model is "
                                      f"traced at batch {batch} (input {shape}; the table holds: {known}). Pass "
                                      f"--batch {self.batch} to spend it, or profile batch {batch} into another "
                                      f"table (`hwprune profile --model <M> --batch {batch} --backend {self.backend} "
                                      "--out <new table>`).")
            raise TableError(f"table {self.path or ''} has no profile of this model at input {shape} "
                             f"(it holds: {known}). Add it with `hwprune profile --model <M> --input-size "
                             f"{graph.example_input.shape[-1]} --batch {batch} "
                             f"--backend {self.backend} --out {self.path or '<table>'}`.")
        return rec

    def missing_units(self, graph) -> list[str]:
        """Unit signatures ``graph`` needs that the table lacks (or covers only partly).

        Units are extracted without the ONNX fusion pass, so a unit's key may carry fewer fused
        ops than the table's; it is covered when *any* family of the same shape spans its widths
        (resnet50 has three 1x1 families at 56x56 -- conv+relu, conv+add+relu and the downsample
        conv -- and judging by the first one found made the committed table look incomplete)."""
        missing = []
        for u in extract_units(graph, dtype=self.precision, fuse=False):
            fams = self._families_by_shape(u.family)
            if not fams:
                missing.append(u.family.key)
                continue
            if not any(u.cin <= max(f.cins) and (f.spec.tied or u.cout <= max(f.couts)) for f in fams):
                missing.append(f"{u.family.key} (needs cin={u.cin}, cout={u.cout})")
        return missing

    def _families_by_shape(self, spec: UnitFamily) -> list[Family]:
        """Families of the same shape, ignoring fused ops (used when the ONNX fusion pass is skipped)."""
        shape = (spec.kind, spec.h, spec.w, spec.kernel, spec.stride, spec.padding, spec.dilation, spec.groups,
                 spec.batch, spec.dtype)
        return [f for f in self.families.values()
                if (f.spec.kind, f.spec.h, f.spec.w, f.spec.kernel, f.spec.stride, f.spec.padding, f.spec.dilation,
                    f.spec.groups, f.spec.batch, f.spec.dtype) == shape]

    def covers(self, graph) -> bool:
        try:
            self.record_for(graph)
        except TableError:
            return False
        return not self.missing_units(graph)

    def cost_model(self, graph) -> "TableCostModel":
        """A :class:`hwprune.cost.CostModel` in ms for ``graph`` (raises TableError if not covered)."""
        return self.cost_model_for_record(self.record_for(graph))

    def cost_model_for_record(self, rec: dict) -> "TableCostModel":
        units = []
        for u in rec["units"]:
            fam = self.families.get(u["family"])
            if fam is None or not fam.grid_complete():
                raise TableError(f"table {self.path or ''} lacks unit {u['family']} for layer {u['layer']}; "
                                 f"re-run `hwprune profile --model {rec.get('spec')} --resume --out {self.path or '<table>'}`")
            units.append((UnitUse.from_dict(u, fam.spec), fam))
        return TableCostModel(units, rec)


class TableCostModel:
    """``predict(widths) -> ms`` from the table: sum of interpolated units plus the model's
    calibration residual curve (or ``a * sum + b`` where it has none). Widths missing from the
    dict are full."""

    unit = "ms"

    def __init__(self, units: list[tuple[UnitUse, Family]], record: dict):
        self.units = units
        self.record = record
        cal = record.get("calibration") or {}
        self.a = float(cal.get("a", 1.0))
        self.b = float(cal.get("b", record.get("remainder_ms", 0.0)))
        corr = cal.get("correction") or {}
        xs, rs = corr.get("units_ms") or [], corr.get("residual_ms") or []
        self.correction = (list(map(float, xs)), list(map(float, rs))) if len(xs) == len(rs) and len(xs) >= 3 else None
        self.units_full = float(record.get("units_full_ms") or 0.0)

    def unit_costs(self, widths: Mapping[str, int]) -> dict[str, float]:
        """Per layer: interpolated unit latency (ms, before calibration)."""
        return {u.layer: fam.predict(*u.widths(widths)) for u, fam in self.units}

    def units_sum(self, widths: Mapping[str, int]) -> float:
        return float(sum(fam.predict(*u.widths(widths)) for u, fam in self.units))

    def from_units(self, units_ms: float) -> float:
        """Whole-model latency (ms) for a units sum: plus the residual curve where the record has
        one (see :func:`hwprune.latency.profile.fit_calibration`), else ``a * sum + b``."""
        if self.correction is None:
            if self.b < 0 and 0 < units_ms < self.units_full:
                # a shortfall (the units over-predict the full model) shrinks with the model, as the
                # curve's does below its smallest variant: a*u + b went negative for small u on a
                # quick table (a CI run read a -0.37 ms floor); exact at full width as before
                return self.a * units_ms + self.b * units_ms / self.units_full
            return self.a * units_ms + self.b
        xs, rs = self.correction
        if units_ms <= xs[0]:
            # below the smallest calibration variant: an overhead (>= 0) stays constant, a
            # shortfall shrinks with the model, so a prediction never turns negative
            return units_ms + (rs[0] if rs[0] >= 0 else rs[0] * units_ms / xs[0])
        if units_ms >= xs[-1]:
            return units_ms + rs[-1]
        return units_ms + interp1(xs, rs, units_ms)

    def predict(self, widths: Mapping[str, int]) -> float:
        return self.from_units(self.units_sum(widths))

    def marginal(self, widths: Mapping[str, int], group: str, new_width: int) -> float:
        """HALP-style latency delta (ms) of moving ``group`` to ``new_width``, read off the table
        (staircase included), everything else held at ``widths``."""
        w2 = dict(widths)
        w2[group] = new_width
        touched = [(u, f) for u, f in self.units if group in u.groups()]
        delta = float(sum(f.predict(*u.widths(w2)) - f.predict(*u.widths(widths)) for u, f in touched))
        if self.correction is None and (self.b >= 0 or self.units_full <= 0):
            return self.a * delta
        s = self.units_sum(widths)
        return self.from_units(s + delta) - self.from_units(s)


def as_table(table, check_device: bool = True):
    """``table`` read with :meth:`LatencyTable.load` when it is a path; anything else (a loaded
    table, a user's cost model, None) as it is. ``check_device=False`` skips the other-device
    warning (for a second read of a table already checked)."""
    return LatencyTable.load(table, check_device=check_device) if isinstance(table, str) else table


def device_slug(device: dict) -> str:
    """A filesystem-safe name of a fingerprinted device: the GPU's name, or the CPU's plus its
    core count (``nvidia-h100-80gb-hbm3``, ``amd-epyc-2c``)."""
    name = device.get("gpu") or device.get("cpu") or "device"
    slug = "".join(c.lower() if c.isalnum() else "-" for c in name)
    while "--" in slug:
        slug = slug.replace("--", "-")
    cores = device.get("cores")
    return slug.strip("-") + (f"-{cores}c" if cores and not device.get("gpu") else "")


def default_table_name(device: dict, backend: str, precision: str, batch: int) -> str:
    """``<device>-<backend>-<precision>-b<batch>.json`` (see :func:`device_slug`); a table timed
    with ORT's workers spinning (``device["spinning"]``) gets ``-spin`` after the backend."""
    spin = "-spin" if device.get("spinning") else ""
    return f"{device_slug(device)}-{backend}{spin}-{precision}-b{batch}.json"


def now() -> float:
    return round(time.time(), 3)


def isfinite(v: float) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
