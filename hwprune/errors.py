"""One exception root for everything hwprune reports to a user.

Each subclass is raised with a message that names the bad value and says how to fix it, so the
CLI can print it as-is (no traceback) and library users can catch one type.
"""


class HwpruneError(Exception):
    """Root of every error hwprune raises on purpose."""


class ConfigError(HwpruneError, ValueError):
    """A user-supplied value is out of range or malformed (ratio, budget, batch list, ...)."""


class ModelLoadError(HwpruneError):
    """A model spec could not be resolved or its factory/weights failed."""


class UnsupportedModelError(HwpruneError):
    """The channel graph cannot handle a layer; the message names the module and its type."""


class PlanMismatchError(HwpruneError):
    """A pruning plan does not fit the model it is applied to."""


class TableError(HwpruneError):
    """A latency table is missing, corrupted, truncated or of the wrong version."""


class TableBatchError(TableError):
    """A table profiled at one batch asked to price the model traced at another (one table holds
    one batch): the fix is the batch, not another table or model."""


class BudgetError(HwpruneError):
    """A budget cannot be reached (states the smallest reachable value)."""


class BackendUnavailableError(HwpruneError):
    """An optional backend (TensorRT, CUDA, ...) is not installed or has no device."""


class ExportError(HwpruneError):
    """Export failed or the exported model diverges from PyTorch."""


class VacuousParityError(ExportError):
    """A parity check would prove nothing: the reference output (and the classifier input) has no
    spread, so every graph would pass (e.g. a random-init model whose logits are ~0)."""
