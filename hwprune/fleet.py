"""Profiling a fleet (issue #20 item 3): one latency table per device, each measured on its own
Ray node by the torch-free bundle runner.

A fleet file names the devices as Ray resources -- a node started with
``ray start --address HEAD --resources '{"cpu-epyc": 1}'`` is the device ``cpu-epyc``::

    [devices.epyc]
    resource = "cpu-epyc"        # required: the Ray resource that marks the device's node
    threads = 2                  # how to measure (as hwprune profile's flags)
    backend = "ort-cpu"
    spinning = false
    precision = "fp32"
    out = "latency_tables/epyc.json"   # default: latency_tables/<device>-<backend>-...json
    # repeats, min_repeat_ms, calib_variants: a shorter protocol (smoke tests)

The host writes each device's bundle (:func:`hwprune.latency.bundle.write_bundle`), a Ray task that
asks for one unit of the device's resource (and ``threads`` CPUs) measures it with
:func:`hwprune_deploy.fleet.measure_bundle_bytes` -- the node needs only ``pip install ./deploy``
and Ray -- and the result comes back and is read into the table
(:func:`hwprune.latency.bundle.read_bundle_result`). A resource no node offers is refused up front
(Ray would otherwise wait for it forever). Without Ray, the bundle workflow is unchanged.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, fields
from typing import Any, Optional

from .errors import ConfigError

_EXAMPLE = '[devices.epyc]\nresource = "cpu-epyc"\nthreads = 2'


@dataclass(frozen=True)
class FleetDevice:
    """One device of a fleet file (see module doc)."""

    name: str
    resource: str
    backend: str = "ort-cpu"
    threads: int = 2
    spinning: bool = False
    precision: str = "fp32"
    out: Optional[str] = None
    repeats: Optional[int] = None
    min_repeat_ms: Optional[float] = None
    calib_variants: Optional[int] = None  # pruned variants timed to fit the residual curve (default: profile's)

    def __post_init__(self):
        if not isinstance(self.resource, str) or not self.resource:
            raise ConfigError(f"fleet device {self.name!r}: resource must be a Ray resource name, e.g.\n{_EXAMPLE}")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ConfigError(f"fleet device {self.name!r}: threads {self.threads!r} must be an int >= 1")


def load_fleet(path: str) -> list[FleetDevice]:
    """The devices of a fleet TOML file; a missing file, no ``[devices.NAME]`` table or an unknown key
    is a ConfigError naming it."""
    import tomllib

    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"fleet file {path!r} cannot be read ({e.strerror}); write one like:\n{_EXAMPLE}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"fleet file {path!r} is not valid TOML ({e})") from None
    devices = doc.get("devices")
    if not isinstance(devices, dict) or not devices:
        raise ConfigError(f"fleet file {path!r} names no devices; write one [devices.NAME] table each:\n{_EXAMPLE}")
    known = {f.name for f in fields(FleetDevice)} - {"name"}
    out = []
    for name, spec in devices.items():
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ConfigError(f"fleet device {name!r}: unknown keys {unknown}; known: {', '.join(sorted(known))}")
        out.append(FleetDevice(name=name, **spec))
    return out


def profile_fleet(loaded, devices: list[FleetDevice], input_size: Optional[int] = None, points_per_axis: int = 6,
                  address: Optional[str] = None) -> list[dict[str, Any]]:
    """Measure one table per device on its Ray node (module doc); returns per device its name,
    resource, node and table path."""
    from hwprune_deploy.fleet import measure_bundle_bytes

    from .executor import _check_answers, _import_ray
    from .latency import ProfileConfig
    from .latency.bundle import read_bundle_result, write_bundle

    ray = _import_ray()
    started = False
    if address not in (None, "auto"):
        _check_answers(address)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        offered = ray.cluster_resources()
        missing = [d for d in devices if offered.get(d.resource, 0) < 1]
        if missing:
            have = sorted(k for k in offered if k not in ("CPU", "GPU", "memory", "object_store_memory")
                          and not k.startswith("node:"))
            raise ConfigError("no Ray node offers " + ", ".join(f"{d.resource!r} (device {d.name})" for d in missing)
                              + f"; custom resources in this cluster: {have or 'none'}. Start the device's node with "
                              f"`ray start --address HEAD:PORT --resources '{{\"{missing[0].resource}\": 1}}'`")
        task = ray.remote(measure_bundle_bytes)
        refs = []
        with tempfile.TemporaryDirectory() as tmp:
            for d in devices:
                cfg = ProfileConfig(backend=d.backend, threads=d.threads, spinning=d.spinning, precision=d.precision,
                                    input_size=input_size or loaded.input_size,
                                    **({} if d.calib_variants is None else {"calib_variants": d.calib_variants}))
                path = os.path.join(tmp, f"{d.name}.zip")
                write_bundle(loaded, cfg, path, points_per_axis=points_per_axis)
                with open(path, "rb") as f:
                    data = f.read()
                refs.append(task.options(resources={d.resource: 1}, num_cpus=d.threads).remote(
                    data, d.threads, d.backend, d.repeats, d.min_repeat_ms))
            rows = []
            for d, res in zip(devices, ray.get(refs)):
                result = os.path.join(tmp, f"{d.name}-result.json")
                with open(result, "w") as f:
                    json.dump(res, f)
                table = read_bundle_result(result, out=d.out)
                rows.append({"device": d.name, "resource": d.resource, "node": res.get("node"), "table": table})
        return rows
    finally:
        if started:
            ray.shutdown()
