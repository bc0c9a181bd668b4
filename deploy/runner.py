"""Time ONNX micro-models (latency-table units) and full models on the device. Torch-free.

Used in-process by ``hwprune profile`` and, on a remote device, by ``hwprune-deploy measure``.
Points of one unit family are timed *interleaved* (repeat r of every point before repeat r+1 of
any), so a neighbour's burst of load hits all points of a staircase alike and does not bend it.
Each repeat runs enough calls to last ``min_repeat_ms``. The statistic is the 10th percentile of
repeats (``STATISTIC``): on a shared machine interference only ever *adds* time, so a low
quantile estimates the device's own latency far more stably than the median, and the same
statistic is used for units, whole models and validation, so they stay comparable.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

from .timing import Protocol, Timing, measure_interleaved
from .progress import bar as progress_bar

#: protocol for unit points: cheap enough to sample hundreds of points, median of 9 repeats
UNIT_PROTOCOL = Protocol(warmup=2, repeats=12, min_repeat_ms=2.0, statistic="p10")
#: protocol for whole models (remainder, calibration, validation)
MODEL_PROTOCOL = Protocol(warmup=2, repeats=20, min_repeat_ms=10.0, statistic="p10")
STATISTIC = "p10"


class OrtRunnerFactory:
    """Makes zero-arg callables from ONNX bytes: an ORT session with fixed threads and a random
    feed (all inputs, including a residual input of a fused add)."""

    name = "ort-cpu"

    def __init__(self, threads: int = 2, opt_level: str = "all", spinning: bool = False):
        self.threads, self.opt_level, self.spinning = int(threads), opt_level, spinning

    def __call__(self, data: bytes) -> Callable[[], object]:
        from .ort import make_session, random_feed

        sess = make_session(data, threads=self.threads, opt_level=self.opt_level, spinning=self.spinning)
        feed = random_feed(sess)
        return lambda: sess.run(None, feed)

    def fingerprint(self) -> dict:
        from .ort import cpu_fingerprint

        return {**cpu_fingerprint(), "threads": self.threads, "opt_level": self.opt_level,
                "spinning": self.spinning}


def measure_onnx_set(models: Mapping[str, bytes], factory: Callable[[bytes], Callable[[], object]],
                     protocol: Protocol = UNIT_PROTOCOL, chunk: int = 48) -> dict[str, Timing]:
    """Interleaved timing of several ONNX models (in chunks, to bound memory)."""
    keys = list(models)
    out: dict[str, Timing] = {}
    for i in range(0, len(keys), chunk):
        part = keys[i:i + chunk]
        fns = {k: factory(models[k]) for k in part}
        out.update(measure_interleaved(fns, protocol))
        del fns
    return out


def timing_ms(t: Timing) -> float:
    """The protocol statistic of a Timing (see STATISTIC)."""
    return float(t.p10_ms)


def iter_bundle(path: str) -> tuple[dict, Callable[[str], bytes]]:
    """Open a bundle zip: (manifest, read(name) -> bytes)."""
    import json
    import zipfile

    zf = zipfile.ZipFile(path)
    manifest = json.loads(zf.read("manifest.json"))
    return manifest, zf.read


def measure_bundle(path: str, threads: int = 2, backend: str = "ort-cpu", progress: bool = True,
                   unit_protocol: Protocol = UNIT_PROTOCOL, model_protocol: Protocol = MODEL_PROTOCOL) -> dict:
    """Measure every file a bundle names; returns the result document (manifest + timings)."""
    import time

    manifest, read = iter_bundle(path)
    if backend == "ort-cpu":
        factory = OrtRunnerFactory(threads)
    elif backend == "tensorrt":
        from .trt import TrtRunnerFactory

        factory = TrtRunnerFactory(precision=manifest.get("precision", "fp32"))
    else:
        raise SystemExit(f"hwprune-deploy: backend {backend!r} is not available device-side (use ort-cpu or tensorrt)")
    t0 = time.perf_counter()
    families = manifest["families"]
    bar = progress_bar(sum(len(f["points"]) for f in families.values()) + len(manifest.get("models", {})), progress,
                       desc="measuring", unit="pt")
    results: dict[str, dict] = {}
    for fkey, fam in families.items():
        files = {p["file"]: read(p["file"]) for p in fam["points"]}
        timings = measure_onnx_set(files, factory, unit_protocol)
        for p in fam["points"]:
            results[p["file"]] = timings[p["file"]].to_dict()
        bar.update(len(fam["points"]))
    for mkey, m in manifest.get("models", {}).items():
        results[m["file"]] = measure_onnx_set({m["file"]: read(m["file"])}, factory, model_protocol)[m["file"]].to_dict()
        bar.update(1)
    bar.close()
    return {"format": "hwprune-bundle-result", "version": 1, "manifest": manifest, "results": results,
            "fingerprint": factory.fingerprint(), "unit_protocol": unit_protocol.to_dict(),
            "model_protocol": model_protocol.to_dict(), "seconds": time.perf_counter() - t0}

