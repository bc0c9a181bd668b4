"""What a relative budget means for an int8 search (``hwprune prune --precision int8``).

``--budget 0.25x`` is a share of the *unpruned* latency. With ``--budget-ref fp32`` (the default:
what the user runs today) that is the fp32 unpruned model; the int8 search spends an int8 table
whose unpruned cost is the *int8* unpruned model. So for the search the budget is turned into a
share of the int8 unpruned model by one side-by-side measurement of both unpruned models
(quantized as every int8 measurement is, :mod:`hwprune_deploy.quant`): ``0.25x of fp32 = 0.25 *
fp32_ms / int8_ms x of int8``. A share at or above 1 means quantization alone meets the budget
(nothing is pruned). The closed loop does not judge through that ratio: it times the fp32
unpruned model beside the int8 ones in every measurement and checks the share of it
(:func:`hwprune.closed_loop.measure_pair`), since the ratio drifts with the machine.
``--budget-ref int8`` takes the budget as given.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch

from .errors import ConfigError

PRECISIONS = ("fp32", "int8")
BUDGET_REFS = ("fp32", "int8")


def check_precision(precision: str, backend: Optional[str], budget_ref: str = "fp32") -> None:
    """ConfigError unless ``precision`` can be timed on ``backend`` (int8: ort-cpu) and
    ``budget_ref`` is one of fp32, int8."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if budget_ref not in BUDGET_REFS:
        raise ConfigError(f"--budget-ref {budget_ref!r} is not one of {', '.join(BUDGET_REFS)}")
    if precision == "int8" and backend:
        from .backends import backend_class, check_backend_name

        check_backend_name(backend)
        if "int8" not in getattr(backend_class(backend), "precisions", ()):
            raise ConfigError(f"--precision int8 cannot be measured on --backend {backend}: it runs "
                              f"{', '.join(backend_class(backend).precisions)} only; int8 runs on --backend ort-cpu "
                              "(static QDQ quantization by onnxruntime.quantization)")


def measure_int8_ratio(model: torch.nn.Module, x: torch.Tensor, backend: str = "ort-cpu", threads: int = 2,
                       spinning: bool = False) -> dict[str, float]:
    """The fp32 and the int8 unpruned model timed side by side (fp32 the reference in every chunk,
    the budget's estimator); ``ratio`` = fp32 / int8."""
    from hwprune_deploy.quant import quantize_qdq
    from hwprune_deploy.runner import timing_ms

    from .onnx_export import onnx_bytes
    from .latency.measure import Measurer

    fp32 = onnx_bytes(model.eval(), x)
    t = Measurer(backend, threads, "fp32", spinning=spinning).models({"fp32": fp32, "int8": quantize_qdq(fp32)}, x,
                                                                      reference="fp32")
    f, q = timing_ms(t["fp32"]), timing_ms(t["int8"])
    return {"fp32_unpruned_ms": f, "int8_unpruned_ms": q, "ratio": f / q}


def resolve_int8_budget(model: torch.nn.Module, config, x: torch.Tensor, spinning: bool = False):
    """(config to search with, what was done) for ``config.precision == 'int8'``: a relative
    latency budget referred to the fp32 unpruned model becomes the same milliseconds as a share of
    the int8 unpruned model (module doc). Other configs come back as they are, with None."""
    from .budget import parse_budget

    if getattr(config, "precision", "fp32") != "int8" or not config.budget:
        return config, None
    budget = parse_budget(config.budget)
    if not budget.is_latency or budget.fraction() is None:
        return config, None
    info: dict[str, Any] = {"budget": config.budget, "budget_ref": config.budget_ref}
    if config.budget_ref == "int8":
        return config, {**info, "effective_budget": config.budget}
    m = share_of_int8(budget, measure_int8_ratio(model, x, config.backend or "ort-cpu", config.threads, spinning))
    effective = f"{min(m['share_of_int8'], 1.0):.6g}x"
    info.update(m, effective_budget=effective)
    return dataclasses.replace(config, budget=effective), info


def share_of_int8(budget, measured: dict[str, float]) -> dict[str, Any]:
    """``measured`` (:func:`measure_int8_ratio`) with what the share ``budget`` of the fp32 unpruned
    model is of the int8 one (``share_of_int8``, may exceed 1) and a ``note`` saying so."""
    m, share = dict(measured), budget.fraction() * measured["ratio"]
    m.update(share_of_int8=share,
             note=(f"budget {budget.text} of the fp32 unpruned model ({m['fp32_unpruned_ms']:.3f} ms) = {share:.3f}x of "
                   f"the int8 unpruned model ({m['int8_unpruned_ms']:.3f} ms, measured side by side)"
                   + ("; quantization alone meets it: nothing to prune" if share >= 1 else "")))
    return m
