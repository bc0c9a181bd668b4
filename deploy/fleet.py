"""The device side of fleet profiling (issue #20 item 3): what a Ray task runs on a device's node.

Torch-free like the rest of ``hwprune_deploy``: a node that has only ``pip install ./deploy`` (numpy
+ onnxruntime) and Ray can run it. The host (:mod:`hwprune.fleet`) ships the bundle's bytes and
gets the result document back, the same one ``hwprune-deploy measure`` writes to a file.
"""
from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import replace
from typing import Optional


def measure_bundle_bytes(data: bytes, threads: int = 2, backend: str = "ort-cpu", repeats: Optional[int] = None,
                         min_repeat_ms: Optional[float] = None) -> dict:
    """Measure a bundle given as bytes (:func:`hwprune_deploy.runner.measure_bundle`); the result
    also names the node it ran on (``node``)."""
    from .runner import MODEL_PROTOCOL, UNIT_PROTOCOL, measure_bundle

    over = {k: v for k, v in (("repeats", repeats), ("min_repeat_ms", min_repeat_ms)) if v is not None}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bundle.zip")
        with open(path, "wb") as f:
            f.write(data)
        res = measure_bundle(path, threads=threads, backend=backend, progress=False,
                             unit_protocol=replace(UNIT_PROTOCOL, **over), model_protocol=replace(MODEL_PROTOCOL, **over))
    res["node"] = socket.gethostname()
    return res
