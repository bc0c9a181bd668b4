"""``RunConfig``: every knob of ``hwprune run`` (:mod:`hwprune.pipeline` runs it), in a module free
of PyTorch so that ``hwprune run --help`` shows its defaults without importing the pipeline; its
checks import what they need when a config is built."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .budget import check_tables_exist, parse_budget, parse_budgets
from .errors import ConfigError


@dataclass
class RunConfig:
    """Every knob of ``hwprune run``; the defaults are the embedded demo."""

    model: str = "tiny_resnet_synthetic"
    weights: Optional[str] = None
    data: str = "synthetic"
    budget: str = "0.5x"  # the run's device's budget (its table: ``table``, else found or profiled)
    # further budgets, BUDGET@TABLE (or FLOPs/params): the one pruned model meets every one (issue #20;
    # hwprune.devices); the run profiles, benches and exports for the first device
    more_budgets: tuple[str, ...] = ()
    strategy: Optional[str] = None  # None: the first available of pipeline.PREFERRED_STRATEGIES
    criterion: str = "l1"
    backend: str = "ort-cpu"
    threads: int = 2
    spinning: bool = False  # ort-cpu: profile, check and bench with ORT's workers spinning (--ort-spinning)
    table: Optional[str] = None  # None: reuse a matching table from latency_tables/ or profile one
    closed_loop_rounds: int = 3  # re-searches after a measured miss (as PruneConfig)
    finetune_epochs: int = 1  # the demo recovers accuracy with one epoch; 0 disables
    train_epochs: Optional[int] = None  # default-model training (None: the trainer's default)
    batches: tuple[int, ...] = (1, 8)
    input_size: Optional[int] = None
    num_classes: Optional[int] = None
    # widths are multiples of this; None: the device's grid -- the given table's device, else this machine's
    # for ``backend`` (hwprune.latency.profile.search_align; the CLI's --align default)
    align: Optional[int] = None
    min_width: int = 8
    max_prune: float = 1.0  # no search removes more than this fraction of any group (as PruneConfig)
    out: str = "hwprune_run"
    quick: bool = False
    n_train: Optional[int] = None  # synthetic data: training images (None: 5000, --quick 256)
    n_val: Optional[int] = None  # synthetic data: held-out images the evaluator scores (None: 1000, --quick 128)
    seed: int = 0
    progress: bool = True
    precision: str = "fp32"  # int8: int8 table, int8 closed loop, int8 files and the fp32/int8 rows (hwprune.int8_run)
    # also compile baseline and pruned as AOTInductor packages (.pt2) for the backend's device and
    # bench them side by side; None: on for torch-cuda (the GPU artefact), off elsewhere
    aoti: Optional[bool] = None

    def __post_init__(self):
        from .backends import check_ort_spinning
        from .bench import parse_batches

        parse_budget(self.budget)
        self.more_budgets = tuple(self.more_budgets)
        if self.more_budgets:
            if self.precision == "int8":
                raise ConfigError("hwprune run --precision int8 takes one budget (the int8 table is found or "
                                  "profiled); for one model on several devices, some of them int8, leave --precision "
                                  "out and bind each device's table: --budget 0.5x --budget 4ms@INT8_TABLE")
            bounds = parse_budgets([self.budget, *self.more_budgets])  # the same kind twice on one table: refused
            check_tables_exist(bounds)  # before any model is trained or table profiled
        self.batches = parse_batches(self.batches)
        if self.threads < 1:
            raise ConfigError(f"threads {self.threads} must be >= 1")
        check_ort_spinning(self.spinning, self.backend)
        if self.finetune_epochs < 0:
            raise ConfigError(f"finetune-epochs {self.finetune_epochs} must be >= 0")
        from .prune_config import check_max_prune

        check_max_prune(self.max_prune)
        for flag, n in (("n-train", self.n_train), ("n-val", self.n_val)):
            if n is not None and n < 1:
                raise ConfigError(f"--{flag} {n} must be >= 1 (images of the synthetic data)")
        if self.train_epochs is not None and self.train_epochs < 1:
            raise ConfigError(f"train-epochs {self.train_epochs} must be >= 1")
        from .int8_budget import check_precision

        check_precision(self.precision, self.backend)
        if self.aoti is None:
            self.aoti = self.backend == "torch-cuda"
        elif self.aoti and self.backend not in ("torch-cuda", "torch-cpu"):
            raise ConfigError(f"--aoti compiles AOTInductor packages for a torch backend; --backend {self.backend} "
                              "deploys ONNX. Use --backend torch-cuda (GPU) or torch-cpu")

    @property
    def is_default_model(self) -> bool:
        return self.model == "tiny_resnet_synthetic" and not self.weights and self.data == "synthetic"
