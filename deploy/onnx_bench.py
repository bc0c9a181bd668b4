"""Side-by-side timing of exported ONNX files (``hwprune bench --model a.onnx --model b.onnx`` on
the host, ``hwprune-deploy bench a.onnx b.onnx`` on a device without PyTorch).

What ``hwprune export`` writes (fp32, or int8 QDQ with ``--precision int8``) is the deployable
artefact; this times those files themselves on ONNX Runtime's CPU provider, with the session
options latency tables and ``bench`` use (fixed intra-op threads, one inter-op thread, full graph
optimisation; workers blocked between ops unless ``spinning``), repeats interleaved between the
files so a noisy neighbour hits both alike. Torch-free: numpy and onnxruntime (onnx, where
installed, only to say whether a file is int8)."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np


class OnnxBenchError(ValueError):
    """A file or setting bench cannot time; the message names the file and the fix."""


def _input_shape(path: str, sess, batch: int, input_size: Optional[int]) -> tuple[str, list[int]]:
    """(name, shape) of the file's one image input at ``batch``; symbolic spatial dims take
    ``input_size``. Errors name the file, the dimension and the fix."""
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise OnnxBenchError(f"{path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); bench times "
                             "image classifiers with one NCHW input, as `hwprune export` writes them")
    inp = inputs[0]
    shape = list(inp.shape)
    if len(shape) != 4:
        raise OnnxBenchError(f"{path}: input {inp.name!r} has shape {shape}; bench needs one NCHW image input")
    n = shape[0]
    if isinstance(n, int) and n != batch:
        raise OnnxBenchError(f"{path} is exported for batch {n} only and --batch asks for {batch}: bench it with "
                             f"--batch {n}, or export with `hwprune export --dynamic-batch`")
    shape[0] = batch
    for i in (2, 3):
        if not isinstance(shape[i], int):
            if input_size is None:
                raise OnnxBenchError(f"{path}: input {inp.name!r} has a symbolic size {shape[i]!r}; pass --input-size")
            shape[i] = input_size
        elif input_size is not None and shape[i] != input_size:
            raise OnnxBenchError(f"{path} is exported for {shape[2]}x{shape[3]} inputs and --input-size asks for "
                                 f"{input_size}: leave --input-size out, or export at that size")
    if not isinstance(shape[1], int):
        shape[1] = 3
    return inp.name, shape


def _precision(path: str) -> str:
    try:
        import onnx
    except ImportError:  # the device side without the int8 extra
        return "unknown (pip install onnx to tell)"
    ops = {n.op_type for n in onnx.load(path, load_external_data=False).graph.node}
    return "int8 (QDQ)" if "QuantizeLinear" in ops or "QLinearConv" in ops else "fp32"


def bench_onnx_files(paths: Sequence[str], threads: int = 2, batches: Sequence[int] = (1,), warmup: int = 5,
                     repeats: int = 20, spinning: bool = False, input_size: Optional[int] = None,
                     passes: Optional[int] = None) -> dict:
    """Latency of one or two ONNX files per batch size, measured side by side with the estimator
    latency budgets use: ``passes`` (default :data:`~hwprune_deploy.timing.MODEL_PASSES`, 4)
    interleaved runs of ``repeats`` each, :data:`~hwprune_deploy.timing.FAST_PASSES` (8) for a
    file under :data:`~hwprune_deploy.timing.FAST_MS`, and per file the mean of the fastest half
    of its passes (:func:`~hwprune_deploy.timing.fastest_half`), as the closed loop and
    ``hwprune bench`` measure checkpoints. With two files, ``speedup[batch]`` is the first's p10
    over the second's and ``speedup_median`` the same by median, as ``hwprune bench`` names them.
    ``spinning``: ORT's workers spin between ops (its default session options); each repeat then
    runs in a fresh session, one alive at a time."""
    from .ort import make_session
    from .timing import (FAST_MS, FAST_PASSES, MODEL_PASSES, Protocol, fastest_half, measure_interleaved,
                         measure_interleaved_fresh)

    if not 1 <= len(paths) <= 2:
        raise OnnxBenchError(f"bench compares one or two ONNX files; got {len(paths)}")
    n_passes = MODEL_PASSES if passes is None else passes
    if repeats < 3 or warmup < 0 or threads < 1 or not batches or min(batches) < 1 or n_passes < 1:
        raise OnnxBenchError(f"repeats {repeats} must be >= 3, warmup {warmup} >= 0, threads {threads} >= 1, passes "
                             f"{n_passes} >= 1 and every batch in {list(batches)} >= 1")
    for p in paths:
        if not os.path.isfile(p):
            raise OnnxBenchError(f"ONNX file {p!r} does not exist (looked in {os.getcwd()}); write one with "
                                 "`hwprune export --format onnx --out FILE`")
    labels = {}
    for p in paths:
        labels[p if p not in labels else f"{p} (B)"] = p
    protocol = Protocol(warmup=warmup, repeats=repeats)

    def session(path, spin: bool):
        try:
            return make_session(path, threads=threads, spinning=spin, spin_between_runs=False)
        except Exception as e:  # onnxruntime's own errors: InvalidProtobuf, NoSuchFile, Fail
            raise OnnxBenchError(f"ONNX Runtime cannot load {path}: {str(e).splitlines()[0][:300]}") from None

    def runner(sess, feed):
        return lambda: sess.run(None, feed)

    # each file loaded once, workers blocked: the timed sessions or, with spinning, only where the
    # input shapes are read (spinning sessions must not be alive together: those are made fresh)
    sessions = {label: session(p, False) for label, p in labels.items()}
    rows, speedup, speedup_median = [], {}, {}
    shapes = {}
    for b in batches:
        feeds = {}
        for label, p in labels.items():
            name, shape = _input_shape(p, sessions[label], b, input_size)
            shapes[label] = shape
            feeds[label] = {name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        def one_pass() -> dict:
            if spinning:  # a fresh spinning session per repeat, one alive at a time
                return measure_interleaved_fresh({k: (lambda p=labels[k], f=feeds[k]: runner(session(p, True), f))
                                                  for k in labels}, protocol)
            return measure_interleaved({k: runner(sessions[k], feeds[k]) for k in labels}, protocol)

        history = {k: [] for k in labels}
        target = n_passes
        while len(history[next(iter(labels))]) < target:
            for k, t in one_pass().items():
                history[k].append(t)
            if passes is None and len(history[next(iter(labels))]) == n_passes and \
                    min(fastest_half(h).p10_ms for h in history.values()) < FAST_MS:
                target = FAST_PASSES  # a file under 4 ms: 8 passes, as the closed loop gives such models
        timings = {k: fastest_half(h) for k, h in history.items()}
        n_done = len(history[next(iter(labels))])
        for k, t in timings.items():
            rows.append({"model": k, "batch": b, "median_ms": t.median_ms, "p10_ms": t.p10_ms, "p90_ms": t.p90_ms,
                         "iqr_ms": t.iqr_ms, "throughput": 1000.0 * b / t.median_ms, "passes": n_done})
        if len(timings) == 2:
            (_, ta), (_, tb) = timings.items()
            speedup[str(b)], speedup_median[str(b)] = ta.p10_ms / tb.p10_ms, ta.median_ms / tb.median_ms
    out = {"backend": "ort-cpu", "threads": threads, "spinning": spinning, "warmup": warmup, "repeats": repeats,
           "statistic": "p10 of repeats, the files interleaved; per file the mean of the fastest half of "
                        f">={n_passes} passes ({FAST_PASSES} under {FAST_MS:g} ms)" if passes is None else
                        f"p10 of repeats, the files interleaved; per file the mean of the fastest half of {n_passes} passes",
           "files": {k: {"path": os.path.abspath(p), "precision": _precision(p), "input_shape": shapes[k]}
                     for k, p in labels.items()},
           "rows": rows}
    if speedup:
        out["speedup"], out["speedup_median"] = speedup, speedup_median
    in_shapes = {k: tuple(v[1:]) for k, v in shapes.items()}
    if len(set(in_shapes.values())) > 1:
        (a, sa), (b, sb) = in_shapes.items()
        out["note"] = (f"the files take different inputs ({'x'.join(map(str, sa))} and {'x'.join(map(str, sb))}): "
                       "the speedup compares different work")
    return out


def format_onnx_bench(res: dict) -> str:
    workers = "workers spinning" if res["spinning"] else "workers blocked"
    lines = [f"ONNX files on ONNX Runtime CPU, {res['threads']} threads, {workers} "
             f"({res['repeats']} interleaved repeats a pass after {res['warmup']} warm-up; {res['statistic']}):"]
    for k, f in res["files"].items():
        lines.append(f"  {k}: {f['precision']}, input {'x'.join(map(str, f['input_shape'][1:]))}")
    for r in res["rows"]:
        lines.append(f"  batch {r['batch']:>3}  {r['model']}: median {r['median_ms']:.3f} ms (p10 {r['p10_ms']:.3f}, "
                     f"p90 {r['p90_ms']:.3f}), {r['throughput']:.1f} img/s, {r['passes']} passes")
    for b, s in res.get("speedup", {}).items():
        lines.append(f"  batch {b}: speedup of B over A {s:.2f}x by p10 ({res['speedup_median'][b]:.2f}x by median)")
    if res.get("note"):
        lines.append(f"  note: {res['note']}")
    return "\n".join(lines)
