"""Side-by-side timing of AOTInductor packages (``hwprune bench A.pt2 B.pt2``, ``hwprune run --aoti``).

Apart from :mod:`hwprune.aoti` so that building a package (which ``hwprune.export`` calls) never
imports the backends (which export ONNX): no import cycle."""
from __future__ import annotations

from typing import Sequence

import torch

from .aoti import package_runner
from .errors import ConfigError


def bench_packages(paths: Sequence[str] | dict[str, str], threads: int = 2, warmup: int = 5, repeats: int = 20) -> dict:
    """Latency of one or two packages, measured side by side (repeats interleaved): CUDA events
    on the GPU (:class:`hwprune.backends.TorchCudaBackend`), the wall clock with ``threads``
    intra-op threads on the CPU. With two, ``speedup`` is the first's median over the second's.
    ``paths``: files (each its own label) or ``{label: file}``."""
    from hwprune_deploy.timing import Protocol, measure_interleaved

    runners, infos = {}, {}
    named = paths.items() if isinstance(paths, dict) else ((p, p) for p in paths)
    for label, p in named:
        label = label if label not in runners else f"{label} (B)"
        runners[label], infos[label] = package_runner(p)
    devices = {i["device"] for i in infos.values()}
    if len(devices) > 1:
        raise ConfigError(f"packages for different devices ({', '.join(sorted(devices))}) cannot be compared side by side")
    device = devices.pop()
    protocol = Protocol(warmup=warmup, repeats=repeats)
    if device == "cuda":
        from .backends import get_backend

        timings = get_backend("torch-cuda", protocol=protocol).measure_fns(runners)
    else:
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            timings = measure_interleaved(runners, protocol)
        finally:
            torch.set_num_threads(prev)
    out = {"device": device, "threads": threads if device == "cpu" else None, "repeats": repeats, "warmup": warmup,
           "models": {k: {**infos[k], "median_ms": t.median_ms, "p10_ms": t.p10_ms, "p90_ms": t.p90_ms,
                          "iqr_ms": t.iqr_ms} for k, t in timings.items()}}
    if len(timings) == 2:
        (a, ta), (b, tb) = timings.items()
        out["speedup"] = ta.median_ms / tb.median_ms
        out["speedup_p10"] = ta.p10_ms / tb.p10_ms
    return out


def format_package_bench(res: dict) -> str:
    lines = [f"AOTInductor packages on {res['device']}" + (f", {res['threads']} threads" if res["threads"] else "")
             + f" ({res['repeats']} interleaved repeats after {res['warmup']} warm-up):"]
    for k, m in res["models"].items():
        lines.append(f"  {k}: median {m['median_ms']:.3f} ms (p10 {m['p10_ms']:.3f}, p90 {m['p90_ms']:.3f}), "
                     f"input {'x'.join(map(str, m['input_shape']))} {m['precision']}")
    if "speedup" in res:
        lines.append(f"  speedup of B over A: {res['speedup']:.2f}x by median ({res['speedup_p10']:.2f}x by p10)")
    return "\n".join(lines)
