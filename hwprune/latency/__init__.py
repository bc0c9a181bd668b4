"""Per-layer latency look-up tables: profile a device, predict a pruned model's latency.

    from hwprune.latency import ProfileConfig, profile, LatencyTable, validate
    path = profile(load_model("resnet50"), ProfileConfig(backend="ort-cpu", threads=2))
    cost = LatencyTable.load(path).cost_model(graph)   # CostModel in ms
    validate(load_model("resnet50"), path, samples=30).median_abs_error
"""
from ..errors import TableError
from .profile import ProfileConfig, profile
from .table import LatencyTable, TableCostModel, TableMismatchWarning, as_table
from .validate import ValidationResult, validate

__all__ = ["ProfileConfig", "profile", "LatencyTable", "as_table", "TableCostModel", "TableError", "TableMismatchWarning",
           "validate", "ValidationResult"]
