"""ONNX Runtime sessions configured the way a deployment would run them, with fixed threads."""
from __future__ import annotations

import os
import platform

import numpy as np


def make_session(model_path_or_bytes, threads: int = 2, opt_level: str = "all", provider: str = "CPUExecutionProvider",
                 spinning: bool | None = None, profile_prefix: str | None = None, spin_between_runs: bool = True):
    """An InferenceSession with ``threads`` intra-op threads, 1 inter-op thread, sequential
    execution and the given graph optimisation level ('all' = what deployment uses).

    ``spinning``: None keeps ORT's default (worker threads spin-wait between ops); False makes
    them block. Latency tables time with False by default: with several sessions alive
    (interleaved timing) or other processes on the cores, spinning workers steal the CPU from
    the session being timed and measurements become meaningless (2-4x inflated, unstable).
    ``spin_between_runs=False`` (with spinning on): workers spin during a ``run`` and stop when it
    returns (ORT's ``session.force_spinning_stop``), so sessions can be timed side by side; alone,
    a session runs within a few % of ORT's default (which keeps spinning between runs).
    ``profile_prefix``: turn ORT's per-node profiler on, writing to files with this prefix."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt_level]
    so.log_severity_level = 3
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if spinning is not False and not spin_between_runs:
        so.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(model_path_or_bytes, sess_options=so, providers=[provider])


def random_feed(session, batch: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 inputs matching the session's input shapes (symbolic batch -> ``batch``)."""
    rng = np.random.default_rng(seed)
    feed = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) else (batch or 1) for d in inp.shape]
        if batch is not None and shape:
            shape[0] = batch
        feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def nchwc_block(info: dict[str, str] | None = None) -> int:
    """Channel block of ONNX Runtime's NCHWc layout on this CPU (MLAS: 16 with AVX-512F, 8 with
    AVX/AVX2; 0 where unknown, e.g. not x86 or no /proc/cpuinfo). A conv whose channel count is
    not a multiple of it stays in plain NCHW and ORT inserts layout reorders around it, which is
    why widths on this grid are the ones worth pruning to."""
    flags = cpu_flags(info)
    return 16 if "avx512f" in flags else 8 if ("avx2" in flags or "avx" in flags) else 0


#: instruction-set extensions that decide which kernels ONNX Runtime's MLAS runs (fp32 blocking,
#: int8 dot products, bf16/AMX; on Arm the dot-product and matrix-multiply extensions)
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
             "amx_bf16", "asimd", "asimddp", "i8mm", "sve", "bf16")


def _cpuinfo() -> dict[str, str]:
    """The fields of the first processor in /proc/cpuinfo (empty where there is none)."""
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip() and out:  # the end of the first processor's block
                    break
                key, sep, value = line.partition(":")
                if sep and key.strip() not in out:
                    out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


def cpu_flags(info: dict[str, str] | None = None) -> set[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features`` of /proc/cpuinfo; empty where unknown)."""
    info = _cpuinfo() if info is None else info
    return set((info.get("flags") or info.get("Features") or "").split())


def cpu_id(info: dict[str, str] | None = None) -> str:
    """The CPU's microarchitecture as /proc/cpuinfo numbers it -- x86 ``family F model M stepping
    S``, Arm ``implementer I part P variant V`` -- or '' where unknown. Cloud VMs often name the CPU
    only ``AMD EPYC`` whatever its generation, and generations differ most where the kernels differ
    (int8 dot products): one VM type labelled so ran int8 resnet18 1.87x faster than fp32 one day
    and 1.1x another (docs/latency.md), with nothing in the table to tell the two hosts apart."""
    info = _cpuinfo() if info is None else info
    if "cpu family" in info:
        return f"family {info['cpu family']} model {info.get('model', '?')} stepping {info.get('stepping', '?')}"
    if "CPU implementer" in info:
        return (f"implementer {info['CPU implementer']} part {info.get('CPU part', '?')} "
                f"variant {info.get('CPU variant', '?')}")
    return ""


def cpu_isa(info: dict[str, str] | None = None) -> list[str]:
    """Which of :data:`ISA_FLAGS` this CPU has (x86 ``flags``, Arm ``Features``), sorted."""
    return sorted(cpu_flags(info) & set(ISA_FLAGS))


def cpu_detail(fingerprint: dict) -> str:
    """``family 23 model 49 stepping 0; avx avx2 fma``: a fingerprint's microarchitecture and ISA
    extensions, for reports that name the CPU ('' for one recorded before they were)."""
    if not fingerprint.get("cpu_id"):
        return ""
    return f"{fingerprint['cpu_id']}; {' '.join(fingerprint.get('isa') or [])}"


def cpu_fingerprint() -> dict:
    """What identifies this host for a latency table: CPU model and microarchitecture (``cpu_id``,
    compared between a table and this machine where both record it), the instruction-set
    extensions the kernels use, cores, runtime versions."""
    import onnxruntime as ort

    info = _cpuinfo()
    model = info.get("model name") or platform.processor() or ""
    return {"cpu": model, "cpu_id": cpu_id(info), "isa": cpu_isa(info), "cores": os.cpu_count(),
            "machine": platform.machine(), "system": platform.system(), "python": platform.python_version(),
            "onnxruntime": ort.__version__, "numpy": np.__version__, "nchwc_block": nchwc_block(info)}
