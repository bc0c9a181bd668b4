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

import os
import re
from typing import Optional, Callable, Mapping

from .timing import Protocol, Timing, measure_interleaved
from .progress import bar as progress_bar

#: protocol for unit points: cheap enough to sample hundreds of points, median of 9 repeats
UNIT_PROTOCOL = Protocol(warmup=2, repeats=12, min_repeat_ms=2.0, statistic="p10")
#: protocol for whole models (remainder, calibration, validation)
MODEL_PROTOCOL = Protocol(warmup=2, repeats=20, min_repeat_ms=10.0, statistic="p10")
STATISTIC = "p10"


#: ops that only change memory layout or number format at a micro-model's edges: ORT's NCHWc
#: reorders (fp32), and in an int8 (QDQ) micro-model the input QuantizeLinear, the NHWC
#: Transposes ORT puts around its QLinearConvs and the output DequantizeLinear. A micro-model pays
#: them because its input/output are plain fp32 NCHW; inside a real network consecutive convs stay
#: in the blocked layout (fp32) or in uint8 NHWC (int8) and never run them (checked against ORT's
#: optimised graph of the quantized full model in tests/test_int8.py), so unit kernel time leaves
#: them out. fp32 micro-models hold none of the int8 ones.
LAYOUT_OPS = ("ReorderInput", "ReorderOutput", "QuantizeLinear", "DequantizeLinear", "Transpose")
#: metadata key a micro-model sets to "interior" when every layout op in it but the final output's
#: sits between its context nodes and is the unit's own cost (see hwprune.latency.micro.unit_onnx)
LAYOUT_KEY = "hwprune.layout"
#: the layout ops such a micro-model counts: ORT's NCHWc reorders (never an int8 model's
#: quantize/dequantize at its edges)
REORDER_OPS = ("ReorderInput", "ReorderOutput")
#: nodes named so are context in a micro-model (see hwprune.latency.micro.CONTEXT_PREFIX)
CONTEXT_PREFIX = "ctx_"


class OrtRunnerFactory:
    """Makes zero-arg callables from ONNX bytes: an ORT session with fixed threads and a random
    feed (all inputs, including a residual input of a fused add).

    ``kernel_time=True`` (how latency-table units are timed): the session runs with ORT's
    profiler on, and :func:`measure_onnx_set` reports the summed kernel time of the unit's own
    nodes per run -- not wall time, which would add the micro-model's layout reorders at its
    edges and the per-``run`` session overhead, neither of which the unit costs inside a network
    (on a 2-core EPYC they were 20-40% of a small 1x1 conv). Whole models are timed by wall clock.

    ``spinning``: False (hwprune's default) -- ORT's workers block between ops; True -- they spin
    during a run, as ORT's default does, and stop when it returns (``session.force_spinning_stop``),
    so many sessions can still be alive and timed side by side (with ORT's default the idle
    sessions' workers keep spinning and take the CPU from the one being timed).
    """

    name = "ort-cpu"

    def __init__(self, threads: int = 2, opt_level: str = "all", spinning: bool = False, kernel_time: bool = False):
        self.threads, self.opt_level, self.spinning = int(threads), opt_level, bool(spinning)
        self.kernel_time = kernel_time

    def __call__(self, data: bytes) -> Callable[[], object]:
        from .ort import make_session, random_feed

        if self.kernel_time:
            return _ProfiledRun(data, self.threads, self.opt_level, self.spinning)
        sess = make_session(data, threads=self.threads, opt_level=self.opt_level, spinning=self.spinning,
                            spin_between_runs=False)
        feed = random_feed(sess)
        return lambda: sess.run(None, feed)

    def fingerprint(self) -> dict:
        from .ort import cpu_fingerprint

        # spinning: True when ORT's workers spin between ops during a run (its default), False when they block
        return {**cpu_fingerprint(), "threads": self.threads, "opt_level": self.opt_level,
                "spinning": self.spinning}


class _ProfiledRun:
    """A session with ORT's profiler on; ``kernel_ms()`` gives per-run kernel time (ms) of every
    node except :data:`LAYOUT_OPS` and context nodes (:data:`CONTEXT_PREFIX`), in run order."""

    def __init__(self, data: bytes, threads: int, opt_level: str, spinning: bool):
        import shutil
        import tempfile
        import weakref

        from .ort import make_session, random_feed

        _sweep_dead_profiles(tempfile.gettempdir())
        # named with our pid: a SIGKILL inside the short window before the folder is removed below
        # leaves it behind, and the next measurement on this machine sweeps it (a clean-clone CI run hit it)
        self._dir = tempfile.mkdtemp(prefix=f"hwprune-prof-{os.getpid()}-")
        self._fd: Optional[int] = None
        try:
            self.sess = make_session(data, threads=threads, opt_level=opt_level, spinning=spinning,
                                     profile_prefix=os.path.join(self._dir, "p"), spin_between_runs=False)
            # ORT opens its profile file when the session is created and writes it at
            # end_profiling(): hold it by a descriptor and remove the file and its folder now, so a
            # hard kill (SIGKILL skips every cleanup) leaves nothing in the system temp
            names = os.listdir(self._dir)
            if len(names) == 1:
                self._fd = os.open(os.path.join(self._dir, names[0]), os.O_RDONLY)
                os.unlink(os.path.join(self._dir, names[0]))
                os.rmdir(self._dir)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        # an ORT that creates the file only at the end: removed after kernel_ms() reads it, and
        # also when the run is dropped unread (an error mid-measurement) or the process exits
        weakref.finalize(self, _drop_profile, self._dir, self._fd)
        self.feed = random_feed(self.sess)
        meta = self.sess.get_modelmeta().custom_metadata_map or {}
        self.interior_layout = meta.get(LAYOUT_KEY) == "interior"

    def __call__(self):
        return self.sess.run(None, self.feed)

    def _read_profile(self) -> bytes:
        import shutil

        path = self.sess.end_profiling()
        try:
            if self._fd is not None:
                os.lseek(self._fd, 0, os.SEEK_SET)
                chunks = []
                while chunk := os.read(self._fd, 1 << 20):
                    chunks.append(chunk)
                return b"".join(chunks)
            with open(path, "rb") as f:
                return f.read()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def kernel_ms(self) -> list[float]:
        """Per run: the summed kernel time of the unit's nodes (see :func:`kernel_per_run`)."""
        return kernel_per_run_raw(self._read_profile(), self.interior_layout)


def kernel_per_run_raw(raw: bytes, interior_layout: bool = False) -> list[float]:
    """:func:`kernel_per_run` of an ORT profile file's bytes: read line by line when ORT wrote it
    one event a line in its usual layout (:func:`_kernel_events_fast`), else parsed as JSON.

    Why: a unit of a few microseconds runs hundreds of times per timing, and ``json.loads`` of
    its ~1 MB profile took 23% of a whole ``hwprune profile`` (tiny_resnet at 32 px: 26 of 114 s,
    866 profiles, 690 MB); the line reader takes a fifth to a half of the time and gives the same
    floats (tests/test_latency_measure.py compares both on real ORT profiles)."""
    fast = _kernel_events_fast(raw)
    if fast is None:
        import json

        return kernel_per_run(json.loads(raw), interior_layout)
    return _sum_per_run(*fast, interior_layout)


#: the head of an event line as ORT's profiler writes it (its own serializer, fixed key order)
_EVENT_HEAD = re.compile(rb'"dur" :(\d+),"ts" :(\d+),"ph" : "X","name" :"([^"\\]*)","args" : \{')
_OP_NAME = b'"op_name" : "'


def _kernel_events_fast(raw: bytes) -> Optional[tuple[list, list]]:
    """What :func:`kernel_per_run` reads -- the ``model_run`` start times and the ``(ts, dur,
    name, op_name)`` of every Node ``*_kernel_time`` event -- from ORT's one-event-a-line profile
    layout, parsing nothing else; None when a line is not in that layout (the caller then parses
    the JSON)."""
    runs: list = []
    nodes: list = []
    for line in raw.split(b"\n"):
        if not line.startswith(b'{"cat"'):
            if line.strip() not in (b"", b"[", b"]"):
                return None
            continue
        node = line.startswith(b'{"cat" : "Node"')
        if not node and not line.startswith(b'{"cat" : "Session"'):
            return None
        m = _EVENT_HEAD.search(line, 0, 200)
        if m is None:
            return None
        name = m.group(3)
        if node:
            if name.endswith(b"_kernel_time"):
                i = line.find(_OP_NAME, m.end())
                j = line.find(b'"', i + len(_OP_NAME)) if i >= 0 else -1
                op = line[i + len(_OP_NAME):j].decode() if j >= 0 else ""
                nodes.append((int(m.group(2)), int(m.group(1)), name.decode(), op))
        elif name == b"model_run":
            runs.append(int(m.group(2)))
    return (runs, nodes) if runs else None


def kernel_per_run(events: list, interior_layout: bool = False) -> list[float]:
    """Per ``model_run`` in an ORT profile: the summed kernel time (ms) of the unit's nodes.
    Context nodes never count; layout ops count only with ``interior_layout`` (a micro-model
    marked so, :data:`LAYOUT_KEY`), and there only ORT's reorders, all but the run's last node
    (the graph output's, which no network runs)."""
    runs = [e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    nodes = [(e["ts"], e["dur"], e["name"], e.get("args", {}).get("op_name") or "") for e in events
             if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    return _sum_per_run(runs, nodes, interior_layout)


def _sum_per_run(runs: list, nodes: list, interior_layout: bool) -> list[float]:
    """:func:`kernel_per_run` from run start times and ``(ts, dur, name, op_name)`` node events."""
    import bisect

    runs = sorted(runs)
    per_run: list[list[tuple]] = [[] for _ in runs]
    for n in nodes:
        i = bisect.bisect_right(runs, n[0]) - 1
        if i >= 0:
            per_run[i].append(n)
    per = [0.0] * len(runs)
    for i, run in enumerate(per_run):
        run.sort(key=lambda n: n[0])
        last = len(run) - 1
        for j, (_, dur, name, op) in enumerate(run):
            own = interior_layout and op in REORDER_OPS and j < last
            if name.startswith(CONTEXT_PREFIX) or (op in LAYOUT_OPS and not own):
                continue
            per[i] += dur / 1e3
    return per

_SWEPT: set = set()


def _sweep_dead_profiles(folder: str) -> None:
    """Remove ``hwprune-prof-<pid>-*`` folders of processes that no longer exist (once per process
    and folder): what a hard kill between creating one and unlinking its profile file left."""
    import re
    import shutil

    if folder in _SWEPT:
        return
    _SWEPT.add(folder)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        m = re.fullmatch(r"hwprune-prof-(\d+)-\w+", name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
        except OSError:  # alive under another user (PermissionError): not ours to remove
            pass


def _drop_profile(folder: str, fd: Optional[int]) -> None:
    import shutil

    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
    shutil.rmtree(folder, ignore_errors=True)


def _kernel_timing(run: _ProfiledRun, wall: Timing) -> Timing:
    """Re-summarise the last ``repeats x inner`` runs of ``run`` by kernel time, repeat by repeat
    (the same grouping the wall-clock Timing used), so statistics stay comparable."""
    import numpy as np

    from .timing import summarize_ms

    per = run.kernel_ms()
    n = wall.repeats * wall.inner
    if len(per) < n or n == 0:
        raise ValueError(f"ORT profile holds {len(per)} runs, expected at least {n}")
    reps = np.asarray(per[-n:]).reshape(wall.repeats, wall.inner).mean(axis=1)
    t = summarize_ms(reps)
    return Timing(t.median_ms, t.p10_ms, t.p90_ms, t.iqr_ms, wall.repeats, wall.inner)


def measure_onnx_set(models: Mapping[str, bytes], factory: Callable[[bytes], Callable[[], object]],
                     protocol: Protocol = UNIT_PROTOCOL, chunk: int = 48) -> dict[str, Timing]:
    """Interleaved timing of several ONNX models (in chunks, to bound memory)."""
    keys = list(models)
    out: dict[str, Timing] = {}
    for i in range(0, len(keys), chunk):
        part = keys[i:i + chunk]
        fns = {k: factory(models[k]) for k in part}
        timings = measure_interleaved(fns, protocol)
        for k, fn in fns.items():
            if isinstance(fn, _ProfiledRun):
                timings[k] = _kernel_timing(fn, timings[k])
        out.update(timings)
        del fns
    return out


def unit_time(factory) -> str:
    """What a unit's time means for this factory (recorded in tables and bundle results)."""
    if getattr(factory, "kernel_time", False):
        return "kernel: summed ORT profiler kernel time of the unit's nodes, layout reorders excluded"
    return "wall: per-run wall clock minus the runtime's per-call overhead"


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


def backend_spins(name: str) -> bool:
    """Does the backend registered as ``name`` take ORT's worker spinning setting?"""
    from .backends import backend_class

    return bool(backend_class(name).supports_spinning)


def measure_bundle(path: str, threads: int = 2, backend: str = "ort-cpu", progress: bool = True,
                   unit_protocol: Protocol = UNIT_PROTOCOL, model_protocol: Protocol = MODEL_PROTOCOL) -> dict:
    """Measure every file a bundle names with the registered ONNX backend ``backend`` (see
    :mod:`hwprune_deploy.backends`); returns the result document (manifest + timings). An
    unknown, non-ONNX or unusable backend is a :class:`~hwprune_deploy.backends.BackendError`."""
    import time

    from .backends import UnsupportedOptionError, backend_spec, get_backend, list_backends

    if not backend_spec(backend).onnx:
        raise UnsupportedOptionError(f"backend {backend!r} runs PyTorch modules on the host, not a bundle's ONNX "
                                     f"files; device-side backends: {', '.join(list_backends(onnx=True))}")
    manifest, read = iter_bundle(path)
    be = get_backend(backend, threads=threads, precision=manifest.get("precision"),
                     # ORT: workers blocked or spinning in runs, as the bundle was written (--ort-spinning)
                     **({"spinning": bool(manifest.get("spinning", False))} if backend_spins(backend) else {}))
    be.check()
    factory, unit_factory = be.runner_factory(), be.runner_factory(kernel_time=True)
    t0 = time.perf_counter()
    families = manifest["families"]
    bar = progress_bar(sum(len(f["points"]) for f in families.values()) + len(manifest.get("models", {})), progress,
                       desc="measuring", unit="pt")
    results: dict[str, dict] = {}
    for fkey, fam in families.items():
        files = {p["file"]: read(p["file"]) for p in fam["points"]}
        timings = measure_onnx_set(files, unit_factory, unit_protocol)
        for p in fam["points"]:
            results[p["file"]] = timings[p["file"]].to_dict()
        bar.update(len(fam["points"]))
    for mkey, m in manifest.get("models", {}).items():
        results[m["file"]] = measure_onnx_set({m["file"]: read(m["file"])}, factory, model_protocol)[m["file"]].to_dict()
        bar.update(1)
    bar.close()
    return {"format": "hwprune-bundle-result", "version": 1, "manifest": manifest, "results": results,
            "fingerprint": factory.fingerprint(),
            "unit_protocol": {**unit_protocol.to_dict(), "unit_time": unit_time(unit_factory)},
            "model_protocol": model_protocol.to_dict(), "seconds": time.perf_counter() - t0}

