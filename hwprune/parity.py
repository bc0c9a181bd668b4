"""ONNX Runtime vs PyTorch parity: tolerances relative to the reference's spread.

Parity is checked on several random inputs (and, with a dynamic batch axis, at several batch
sizes), comparing ONNX Runtime's output with eager PyTorch. The tolerance is relative to the
reference's *spread* (its standard deviation): ``atol + rtol * std(ref)``, with a tiny ``atol``.
A tolerance relative to the output's size lets a near-zero output pass any graph: random-init
EfficientNet, MobileNet and MNASNet output logits of 1e-10..1e-22 (see :mod:`hwprune.randinit`).
The input of the final classifier is compared too (exposed as an extra output of a copy of the
graph), so a degenerate head does not hide the network behind it. A check where neither has
spread is refused (:class:`~hwprune.errors.VacuousParityError`). A reference output that is
constant (torchvision's ViT zero-initialises its classifier head, so an untrained ViT outputs
exactly 0 for every input) is flagged ``degenerate`` and the check is repeated on a probe copy
whose all-zero parameters were re-randomised, so the head's weights in the graph are verified too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from .defaults import DEFAULT_ATOL, DEFAULT_RTOL, VACUOUS_FACTOR  # noqa: F401  (parity.DEFAULT_* re-exported)
from .errors import ExportError



@dataclass
class Parity:
    """What an ONNX Runtime vs PyTorch comparison found, and what it was measured against.

    ``ok`` means ``max|err| <= atol + rtol * spread`` on every input, for the output and (when the
    model ends in an ``nn.Linear``) the classifier's input, where ``spread`` is the standard
    deviation of the PyTorch reference; a check where both had negligible spread (``vacuous``)
    is never ok."""

    max_abs: float
    max_rel: float  # max|err| / max|ref| (kept for reports; the pass criterion uses the spread)
    ok: bool
    inputs: int = 1
    batches: tuple[int, ...] = ()
    degenerate: bool = False  # the reference output was constant: this comparison alone proves nothing
    note: str = ""
    spread: float = 0.0  # smallest std of the PyTorch output over the inputs compared
    tolerance: float = 0.0  # atol + rtol * spread: what max|err| had to stay under at that input
    max_err_spread: float = 0.0  # worst max|err| / spread
    min_spread: float = 0.0  # a spread at or below this is negligible (VACUOUS_FACTOR x atol)
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    basis: str = "output"  # what the verdict rests on: "output", "classifier input" or "none" (vacuous)
    vacuous: bool = False
    features: Optional[dict] = None  # the classifier input compared too: module, onnx tensor, spread, ...

    def __str__(self) -> str:
        s = (f"max |err| {self.max_abs:.2e} (tolerance {self.tolerance:.2e} = {self.atol:g} + {self.rtol:g} x output "
             f"spread {self.spread:.2e}), max rel err {self.max_rel:.2e} ({'ok' if self.ok else 'MISMATCH'})")
        if self.features:
            f = self.features
            s += (f"; classifier input ({f['module']}): max |err| {f['max_abs']:.2e}, tolerance {f['tolerance']:.2e}, "
                  f"spread {f['spread']:.2e}")
        if self.inputs > 1 or self.batches:
            s += f" over {self.inputs} random input(s)" + (f", batch {','.join(map(str, self.batches))}"
                                                           if self.batches else "")
        if self.note:
            s += f"; {self.note}"
        return s

    def to_dict(self) -> dict:
        return {"max_abs": self.max_abs, "max_rel": self.max_rel, "ok": self.ok, "inputs": self.inputs,
                "batches": list(self.batches), "degenerate": self.degenerate, "note": self.note,
                "spread": self.spread, "tolerance": self.tolerance, "max_err_spread": self.max_err_spread,
                "min_spread": self.min_spread, "atol": self.atol, "rtol": self.rtol, "basis": self.basis,
                "vacuous": self.vacuous, "features": dict(self.features) if self.features else None}


def _reference(model: nn.Module, x: torch.Tensor, feature_module: Optional[str] = None
               ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(output, input of ``feature_module``) of eager PyTorch on ``x``."""
    # The eager inference path a user runs (no_grad: MultiheadAttention takes its fused fast path,
    # the exporter traced the slow path -- both are the same maths, so they must agree to ~1e-6).
    seen: list = []
    hook = (model.get_submodule(feature_module).register_forward_hook(lambda m, i, o: seen.append(i[0]))
            if feature_module else None)
    try:
        with torch.no_grad():
            out = model.eval()(x)
    finally:
        if hook is not None:
            hook.remove()
    if isinstance(out, (tuple, list)):
        out = out[0]
    feat = seen[-1].float().cpu().numpy() if seen else None
    return out.float().cpu().numpy(), feat


def _is_constant(a: np.ndarray) -> bool:
    return a.size == 0 or float(a.max() - a.min()) == 0.0


def _spread(a: np.ndarray) -> float:
    return float(a.astype(np.float64).std()) if a.size else 0.0


def _err_over_spread(err: float, spread: float) -> float:
    return err / spread if spread else (0.0 if err == 0 else float("inf"))


def _max_err(got: np.ndarray, ref: np.ndarray) -> float:
    diff = np.abs(got.astype(np.float64) - ref)
    max_abs = float(diff.max()) if diff.size else 0.0
    if not np.all(np.isfinite(got)) and np.all(np.isfinite(ref)):
        max_abs = float("inf")
    return max_abs


def classifier_input_tensor(data: bytes) -> tuple[bytes, Optional[str]]:
    """The ONNX graph with the input of its final Gemm/MatMul (the classifier's input) added as
    a second graph output, and that tensor's name; ``(data, None)`` when the first output is not
    produced by a matrix product. Only an output is added: every node is the exported one."""
    import onnx

    proto = onnx.load_from_string(data)
    g = proto.graph
    producers = {o: n for n in g.node for o in n.output}
    node = producers.get(g.output[0].name)
    if node is not None and node.op_type == "Add":  # MatMul + Add (a Linear the exporter did not fuse)
        node = next((producers[i] for i in node.input if i in producers and producers[i].op_type == "MatMul"), None)
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        return data, None
    if node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute):
        return data, None
    name = node.input[0]
    taken = {i.name for i in g.initializer} | {i.name for i in g.input} | {o.name for o in g.output}
    if name in taken:
        return data, None
    g.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return proto.SerializeToString(), name


def check_parity(model: nn.Module, data: bytes, x: torch.Tensor, threads: int = 2,
                 atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> Parity:
    """Run the ONNX bytes in ONNX Runtime and compare with PyTorch on ``x``."""
    return check_parity_many(model, data, [x], threads=threads, atol=atol, rtol=rtol)


def check_parity_many(model: nn.Module, data: bytes, inputs: Sequence[torch.Tensor], threads: int = 2,
                      atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL, classifier_input: bool = True) -> Parity:
    """Compare ORT with PyTorch on every input; the worst error decides.

    Tolerances scale with what the reference *varies* by, not with its size: on each input,
    ``max|err| <= atol + rtol * std(ref)``. An output whose std is at most ``VACUOUS_FACTOR * atol``
    is negligible (any graph would pass); then the verdict rests on the classifier's input (the
    input of the graph's final Gemm, exposed as an extra ONNX output and captured in PyTorch with a
    forward hook on the ``nn.Linear`` whose output is the model's), which is compared on every
    input whenever the model has one. When both are negligible the result is ``vacuous`` and not ok.
    """
    from hwprune_deploy.ort import make_session

    from .randinit import final_linear

    feat_module = final_linear(model, inputs[0])[0] if classifier_input and len(inputs) else None
    feat_tensor = None
    if feat_module is not None:
        data, feat_tensor = classifier_input_tensor(data)
        feat_module = feat_module if feat_tensor else None
    sess = make_session(data, threads=threads)
    name = sess.get_inputs()[0].name
    min_spread = VACUOUS_FACTOR * atol
    worst_abs, worst_rel, worst_spread_rel, ok, degenerate = 0.0, 0.0, 0.0, True, True
    spread = tol = float("inf")
    skipped = ""
    feat = {"module": feat_module, "onnx_tensor": feat_tensor, "spread": float("inf"), "tolerance": float("inf"),
            "max_abs": 0.0, "max_err_spread": 0.0, "ok": True} if feat_module else None
    for x in inputs:
        ref, fref = _reference(model, x, feat_module)
        outs = sess.run(None, {name: x.detach().cpu().numpy().astype(np.float32)})
        got = outs[0]
        if got.shape != ref.shape:
            raise ExportError(f"ONNX output shape {got.shape} differs from PyTorch {ref.shape} "
                              f"for input shape {tuple(x.shape)}")
        max_abs, s = _max_err(got, ref), _spread(ref)
        t = atol + rtol * s
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        worst_abs = max(worst_abs, max_abs)
        worst_rel = max(worst_rel, max_abs / (scale or 1.0))
        worst_spread_rel = max(worst_spread_rel, _err_over_spread(max_abs, s))
        spread, tol = min(spread, s), min(tol, t)
        ok = ok and bool(max_abs <= t)
        degenerate = degenerate and _is_constant(ref)
        if feat is not None:
            fgot = outs[-1]
            if fref is None or fgot.shape != fref.shape:  # not the tensor we took it for: compare the output only
                skipped = (f"classifier input not compared ({feat_module}: PyTorch shape "
                           f"{None if fref is None else fref.shape}, ONNX {feat_tensor!r} {fgot.shape})")
                feat = None
                continue
            fmax, fs = _max_err(fgot, fref), _spread(fref)
            ft = atol + rtol * fs
            feat["max_abs"] = max(feat["max_abs"], fmax)
            feat["max_err_spread"] = max(feat["max_err_spread"], _err_over_spread(fmax, fs))
            feat["spread"], feat["tolerance"] = min(feat["spread"], fs), min(feat["tolerance"], ft)
            feat["ok"] = feat["ok"] and bool(fmax <= ft)
    if not inputs:
        spread = tol = 0.0
    out_says = spread > min_spread
    feat_says = feat is not None and feat["spread"] > min_spread
    vacuous = not (out_says or feat_says)
    basis = "output" if out_says else ("classifier input" if feat_says else "none")
    ok = ok and (feat is None or feat["ok"]) and not vacuous
    note = ""
    if degenerate:
        note = "reference output is constant (all-zero head?)"
    elif not out_says:
        note = f"reference output has negligible spread (std {spread:.1e} <= {min_spread:.1e})"
    if not out_says and feat_says:
        note += f"; the verdict rests on the classifier input ({feat_module}, std {feat['spread']:.1e})"
    note = "; ".join(n for n in (note, skipped) if n)
    batches = tuple(sorted({int(x.shape[0]) for x in inputs}))
    return Parity(worst_abs, worst_rel, ok, inputs=len(inputs), batches=batches, degenerate=degenerate, note=note,
                  spread=spread, tolerance=tol, max_err_spread=worst_spread_rel, min_spread=min_spread, atol=atol,
                  rtol=rtol, basis=basis, vacuous=vacuous, features=feat)


def vacuous_message(model: nn.Module, parity: Parity) -> str:
    """Why a vacuous parity check is refused, and what to do about it."""
    feat = parity.features
    where = (f"and the classifier input ({feat['module']}) has std {feat['spread']:.1e}" if feat else
             "and the model does not end in an nn.Linear whose input could be compared instead")
    return (f"ONNX parity of {type(model).__name__} would prove nothing: PyTorch's output 'logits' has std "
            f"{parity.spread:.1e} over {parity.inputs} random input(s) {where}, at or below {parity.min_spread:.1e} "
            f"({VACUOUS_FACTOR:g} x atol {parity.atol:g}), so any graph would pass. This is what a random-init model "
            "with eval-mode BatchNorm outputs (torchvision's EfficientNet/MobileNet/MNASNet init shrinks the "
            "activations block by block). Export a trained model, or give a random-init one spread first with "
            "hwprune.randinit.give_spread_(model, input_size) (re-estimates BatchNorm statistics on random inputs, "
            "re-initialises a degenerate classifier)")


def parity_inputs(x: torch.Tensor, samples: int = 3, batches: Sequence[int] = (), seed: int = 0) -> list[torch.Tensor]:
    """``samples`` random inputs shaped like ``x`` (first one is ``x`` itself), plus one per
    extra batch size in ``batches`` (for a dynamic batch axis)."""
    g = torch.Generator().manual_seed(seed)
    out = [x] + [torch.randn(x.shape, generator=g) for _ in range(max(0, samples - 1))]
    for b in batches:
        if b != x.shape[0]:
            out.append(torch.randn((b, *x.shape[1:]), generator=g))
    return out
