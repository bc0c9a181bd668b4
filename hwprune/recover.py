"""Recover a pruned network's accuracy (``hwprune train``), and the one training loop hwprune has.

``recover(loaded, data, RecoverConfig(...), teacher=None) -> RecoverResult`` trains a (pruned)
model in place in one of two ways:

- ``init="inherit"``: fine-tune the weights it has (the usual plan -> cut -> fine-tune recipe);
- ``init="scratch"``: re-initialise every parameter and BatchNorm statistic first and train the
  pruned *architecture* from scratch. Liu et al., "Rethinking the Value of Network Pruning"
  (ICLR 2019) show that for structured pruning a small network trained from scratch often
  matches or beats fine-tuning the inherited weights, provided it gets the same *computation*
  budget as the large one: Scratch-B (their Sec. 4) trains for
  ``round(base_epochs * FLOPs(unpruned) / FLOPs(pruned))`` epochs, where ``base_epochs`` is how
  long the unpruned model was trained (``scratch_b=True``; :mod:`hwprune.scratch`).

Either way a ``teacher`` adds Hinton et al. (2015) knowledge distillation:
``(1 - alpha) * CE + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``.

:func:`fit` is the loop itself: SGD (momentum 0.9, Nesterov, weight decay 5e-4) with a one-cycle
(Smith & Topin 2019: short warm-up then cosine decay) or a plain per-step cosine schedule. It can
hand its state to a callback after every epoch and continue from such a state
(:mod:`hwprune.train_state`), so a killed run resumes and ends bit-identical to an uninterrupted
one. :func:`hwprune.train.train` and ``finetune`` (used by ``prune`` and ``run``) are thin
wrappers over it.

With ``config.out`` the per-epoch state is kept in ``OUT.partial/`` and ``OUT`` is written whole
at the end (``trained.pt`` in the ``pruned.pt`` format, plan kept, and ``report.json``).
"""
from __future__ import annotations

import itertools
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base_model import LoadedModel
from .defaults import DEFAULT_LR, INITS, SCHEDULES  # noqa: F401  (recover.INITS etc. re-exported)
from .errors import ConfigError, ModelLoadError
from .scratch import base_train_epochs, reinitialize_, scratch_b_epochs


def _loader(data):
    return getattr(data, "train", data)


def model_outputs(model: nn.Module, x: torch.Tensor) -> Optional[int]:
    """How many logits ``model`` gives per image (None when its output is not (N, K) logits)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            y = model(x[:1])
    finally:
        model.train(was)
    return int(y.shape[1]) if isinstance(y, torch.Tensor) and y.dim() == 2 else None


def check_num_classes(model: nn.Module, data, input_size: Optional[int] = None) -> None:
    """Refuse, before any work, data whose labels go beyond the model's outputs: they would reach
    ``cross_entropy`` as an index error deep in training (and score as always wrong in accuracy).
    ``data`` is a DataBundle (others are not checked); one forward pass of one image."""
    n = getattr(data, "num_classes", None)
    if not n:
        return
    size = input_size or getattr(data, "input_size", None)
    if size:
        x = torch.zeros(1, 3, size, size)
    else:
        try:
            x = next(iter(_loader(data)))[0]
        except Exception:
            return
    k = model_outputs(model, x)
    if k is not None and k < n:
        spec = getattr(data, "spec", "") or ""
        raise ConfigError(f"the data{' ' + spec if spec else ''} has {n} classes but the model gives {k} outputs: "
                          f"labels {k}..{n - 1} have no logit; pass --num-classes {n} (with weights made for {n} "
                          f"classes, or none), or use data with at most {k} classes")


def seed_loader(loader, seed: int) -> None:
    """Re-seed the torch generators ``loader`` draws from (its sampler's shuffling and any
    augmentation generator its dataset holds; :func:`hwprune.train_state.loader_generators`).
    Without this a loader keeps its stream across trainings, and a run's data order depends on
    what trained on that loader before it, not on its seed."""
    from .train_state import loader_generators

    for k, g in enumerate(loader_generators(loader)):
        g.manual_seed(1_000_003 * (seed + 1) + k)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# the loop
@dataclass
class LoopSettings:
    """What :func:`fit` runs: ``epochs`` epochs (or exactly ``steps`` steps) at peak ``lr``."""

    epochs: int = 1
    lr: float = 0.05
    schedule: str = "one-cycle"
    weight_decay: float = 5e-4
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0
    steps: Optional[int] = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 0 or (self.steps is not None and self.steps < 1):
            raise ConfigError(f"epochs {self.epochs} / steps {self.steps} must be >= 0 / >= 1")
        if self.lr <= 0:
            raise ConfigError(f"learning rate {self.lr} must be > 0")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise ConfigError(f"kd_alpha {self.kd_alpha} must be in [0, 1]")
        if self.kd_temperature <= 0:
            raise ConfigError(f"kd_temperature {self.kd_temperature} must be > 0")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}")


def _scheduler(opt: torch.optim.Optimizer, s: LoopSettings, total: int):
    if s.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=total, pct_start=0.15,
                                               anneal_strategy="cos", cycle_momentum=False)


def fit(model: nn.Module, data, settings: LoopSettings, teacher: Optional[nn.Module] = None,
        resume: Optional[dict[str, Any]] = None,
        on_epoch_end: Optional[Callable[[dict[str, Any]], None]] = None,
        extra_loss: Optional[Callable[[nn.Module], torch.Tensor]] = None) -> dict[str, Any]:
    """Train ``model`` in place on ``data.train`` (a DataBundle or a loader). Returns
    ``{"loss": [per-epoch mean], "steps", "epochs", "seconds"}``.

    ``extra_loss(model)``, when given, is called once per step and its (scalar, differentiable)
    value is added to the CE/KD loss: a regulariser such as :mod:`hwprune.regularize`'s.

    After each epoch ``on_epoch_end`` gets ``{epoch, steps, total_steps, loss, optimizer,
    scheduler, rng, seconds}`` (state dicts and random states); ``resume`` is such a dict (with the
    model's weights already loaded by the caller): the loop continues after that epoch, drawing
    the same data order and randomness an uninterrupted run would.

    ``settings.seed`` sets the global RNGs *and* the loader's own generators (shuffling,
    augmentation; :func:`seed_loader`), so two calls with one seed train on one data order
    whatever ran before them on that loader."""
    from tqdm import tqdm

    from .train_state import capture_rng, restore_rng

    loader = _loader(data)
    if loader is None:
        raise ConfigError("training needs data: pass --data synthetic (or imagefolder:PATH ...)")
    check_num_classes(model, data)
    try:
        per_epoch = len(loader)
    except TypeError:
        per_epoch = None
    total = settings.steps if settings.steps is not None else (per_epoch or 0) * settings.epochs
    if total <= 0:
        return {"loss": [], "steps": 0, "epochs": 0, "seconds": 0.0}
    torch.manual_seed(settings.seed)
    if resume is None:
        seed_loader(loader, settings.seed)
    opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9, nesterov=True,
                          weight_decay=settings.weight_decay)
    sched = _scheduler(opt, settings, total)
    from .sparsity import keep_masks

    keep_masks(model, opt)  # a model with 2:4 masks (hwprune.sparsity) trains with them fixed, as ASP does
    hist: dict[str, Any] = {"loss": []}
    done = epoch = 0
    prior_seconds = 0.0
    if resume is not None:
        if resume["total_steps"] != total:
            raise ConfigError(f"the saved training state is for {resume['total_steps']} steps, this run has {total}: "
                              "resume with the same epochs, data and batch size")
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        done, epoch, hist["loss"] = int(resume["steps"]), int(resume["epoch"]), list(resume["loss"])
        prior_seconds = float(resume.get("seconds", 0.0))
        restore_rng(resume["rng"], loader)
    if teacher is not None:
        teacher = teacher.eval()
    bar = tqdm(total=total, initial=done, desc="train", file=sys.stderr, disable=not settings.progress,
               dynamic_ncols=True, leave=False)
    t0 = time.perf_counter()
    model.train()
    while done < total:
        run, n = 0.0, 0
        for xb, yb in itertools.islice(iter(loader), total - done):
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(xb)
                T = settings.kd_temperature
                kd = F.kl_div(F.log_softmax(logits / T, 1), F.softmax(t_logits / T, 1), reduction="batchmean") * T * T
                loss = (1 - settings.kd_alpha) * loss + settings.kd_alpha * kd
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            run, n = run + float(loss.detach()), n + 1
            bar.update(1)
            bar.set_postfix(loss=f"{run / n:.3f}")
        if n == 0:
            break
        hist["loss"].append(run / n)
        epoch += 1
        if on_epoch_end is not None:
            on_epoch_end({"epoch": epoch, "steps": done, "total_steps": total, "loss": list(hist["loss"]),
                          "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                          "rng": capture_rng(loader), "seconds": prior_seconds + time.perf_counter() - t0})
    bar.close()
    model.eval()
    hist.update(steps=done, epochs=epoch, seconds=prior_seconds + time.perf_counter() - t0)
    return hist


# ---------------------------------------------------------------------------------------------
# the verb
@dataclass
class RecoverConfig:
    """How to recover. Exactly one of ``epochs`` or ``scratch_b``; ``lr`` None means
    :data:`DEFAULT_LR` of the init; ``out`` None trains in memory only (no files)."""

    epochs: Optional[int] = None
    init: str = "inherit"
    scratch_b: bool = False
    base_epochs: Optional[int] = None
    lr: Optional[float] = None
    schedule: str = "one-cycle"
    weight_decay: float = 5e-4
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0
    input_size: Optional[int] = None
    seed: int = 0
    out: Optional[str] = None
    resume: bool = False
    progress: bool = True
    evaluate: bool = True  # top-1 before/after on data.val (off when a caller scores with its own evaluator)

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ConfigError(f"init {self.init!r} is not one of {', '.join(INITS)}")
        if self.scratch_b and self.epochs is not None:
            raise ConfigError(f"pass either --epochs ({self.epochs}) or --scratch-b, not both")
        if not self.scratch_b and self.epochs is None:
            raise ConfigError("how long to train: pass --epochs E, or --scratch-b for the unpruned model's "
                              "computation budget (Rethinking the Value of Network Pruning, Scratch-B)")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs {self.epochs} must be >= 1")
        if self.scratch_b and self.init != "scratch":
            raise ConfigError("--scratch-b is a from-scratch budget: add --init scratch (or pass --epochs E to "
                              "fine-tune the inherited weights)")
        if self.base_epochs is not None and (not self.scratch_b or self.base_epochs < 1):
            raise ConfigError(f"--base-epochs {self.base_epochs} sets the Scratch-B budget: it needs --scratch-b "
                              "and must be >= 1")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"learning rate {self.lr} must be > 0")
        if self.input_size is not None and self.input_size < 8:
            raise ConfigError(f"input size {self.input_size} is too small; use at least 8 pixels")
        if self.resume and not self.out:
            raise ConfigError("--resume continues the run whose state is kept next to --out: pass --out DIR")
        self.loop_settings(1)  # schedule, kd_alpha, kd_temperature checked once, here

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.init]

    def loop_settings(self, epochs: int) -> LoopSettings:
        return LoopSettings(epochs=epochs, lr=self.learning_rate, schedule=self.schedule,
                            weight_decay=self.weight_decay, kd_alpha=self.kd_alpha,
                            kd_temperature=self.kd_temperature, seed=self.seed, progress=self.progress)


@dataclass
class RecoverReport:
    """What ``report.json`` holds."""

    model: str
    init: str
    epochs: int
    epochs_rule: dict[str, Any]
    lr: float
    schedule: str
    seed: int
    data: str
    kd: Optional[dict[str, Any]]
    accuracy: dict[str, Optional[float]]
    loss: list[float]
    steps: int
    seconds: float
    resumed_from_epoch: Optional[int] = None
    reinitialized_by_fallback: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sparsity: Optional[dict[str, Any]] = None  # the 2:4 masks kept fixed while training (hwprune.sparsity)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RecoverResult:
    model: nn.Module
    plan: Any  # PruningPlan, or None for an unpruned model
    report: RecoverReport
    meta: dict[str, Any] = field(default_factory=dict)  # what trained.pt's meta holds


def check_teacher(student: nn.Module, teacher: nn.Module, input_size: int, name: str = "the teacher") -> None:
    """Refuse a teacher that cannot distil into ``student``: one that fails on the input size or
    gives another number of logits (KD matches the two class by class)."""
    x = torch.zeros(1, 3, input_size, input_size)
    try:
        k_t = model_outputs(teacher, x)
    except Exception as e:
        raise ModelLoadError(f"{name} fails on a {input_size}x{input_size} input ({type(e).__name__}: {e}); "
                             "--distill-from needs a model of the same task and input size") from None
    k_s = model_outputs(student, x)
    if k_t is None or k_t != k_s:
        raise ConfigError(f"{name} gives {k_t if k_t is not None else 'no (N, K)'} logits per image but the model "
                          f"gives {k_s}: distillation matches them class by class, so --distill-from needs a model "
                          "of the same task (e.g. the unpruned model the checkpoint was pruned from)")


def _as_loaded(model: Union[LoadedModel, nn.Module], size: Optional[int]) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    return LoadedModel(model=model, model_id={}, input_size=size or 32)


def _fingerprint(loaded: LoadedModel, data, config: RecoverConfig, epochs: int, size: int,
                 teacher: Optional[nn.Module]) -> dict[str, Any]:
    """The settings a resumed run must share with the interrupted one."""
    from .train_state import weights_digest

    loader = _loader(data)
    batch = getattr(loader, "batch_size", None) or getattr(getattr(loader, "sampler", None), "batch_size", None)
    return {"model_id": loaded.model_id, "plan_widths": loaded.plan.widths if loaded.plan is not None else None,
            "start_weights": weights_digest(loaded.model), "init": config.init, "epochs": epochs,
            "lr": config.learning_rate, "schedule": config.schedule, "weight_decay": config.weight_decay,
            "seed": config.seed, "input_size": size,
            "kd": None if teacher is None else {"teacher": weights_digest(teacher), "alpha": config.kd_alpha,
                                                "temperature": config.kd_temperature},
            "data": {"spec": getattr(data, "spec", ""), "meta": getattr(data, "meta", {}), "batch_size": batch,
                     "batches_per_epoch": len(loader) if hasattr(loader, "__len__") else None}}


def _saved_state(config: RecoverConfig,
                 fp: dict[str, Any]) -> tuple[Optional[dict[str, Any]], Optional[str], list[str]]:
    """(the interrupted run's state to continue from or None, the state folder or None without
    ``out``, notes). Checks ``out`` and the state folder up front; refuses a state without
    ``resume`` (it is never overwritten by accident) and one saved under other settings."""
    from .outdir import check_output_dir
    from .train_state import check_partial_dir, fingerprint_mismatch, load_state, partial_dir

    if not config.out:
        return None, None, []
    check_output_dir(config.out)
    partial = partial_dir(config.out)
    check_partial_dir(partial)
    state = load_state(partial)
    if state is None:
        return None, partial, [f"--resume: no saved state in {partial}; started at epoch 1"] if config.resume else []
    if not config.resume:
        raise ConfigError(f"{partial!r} holds an interrupted run of --out {config.out!r} ({state['loop']['epoch']} "
                          f"of {state['fingerprint'].get('epochs')} epochs done): pass --resume to continue it, or "
                          "delete that folder to start over")
    diff = fingerprint_mismatch(state["fingerprint"], fp)
    if diff:
        more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
        raise ConfigError(f"--resume: the interrupted run in {partial!r} had other settings ({'; '.join(diff[:4])}"
                          f"{more}); resume with the same --model, --data, --init, epochs, lr, --schedule, "
                          "--distill-from and --seed, or delete that folder to start over")
    return state, partial, []


def recover(loaded: Union[LoadedModel, nn.Module], data, config: RecoverConfig,
            teacher: Union[LoadedModel, nn.Module, None] = None, teacher_name: str = "the teacher") -> RecoverResult:
    """Fine-tune (``init="inherit"``) or retrain from scratch (``init="scratch"``) ``loaded.model``
    in place on ``data`` (a DataBundle), distilling from ``teacher`` when given; top-1 before and
    after on ``data.val``. With ``config.out``: per-epoch state in ``OUT.partial/`` (``resume``
    continues from it), then ``OUT/trained.pt`` + ``OUT/report.json`` written whole."""
    from .evaluate import top1

    if data is None or _loader(data) is None:
        raise ConfigError("hwprune train needs training data: pass --data synthetic (or imagefolder:PATH, "
                          "cifar10:PATH, module:function)")
    size = config.input_size or getattr(data, "input_size", None) or getattr(loaded, "input_size", None) or 32
    loaded = _as_loaded(loaded, size)
    model = loaded.model
    if config.out and not loaded.model_id:
        raise ConfigError("writing trained.pt needs the model's id to rebuild it: pass a LoadedModel "
                          "(hwprune.models.load_model) or leave config.out unset")
    t_model = teacher.model if isinstance(teacher, LoadedModel) else teacher
    check_num_classes(model, data, size)
    if t_model is not None:
        check_teacher(model, t_model, size, teacher_name)
    if config.scratch_b:
        base, source = base_train_epochs(loaded, config.base_epochs)
        epochs, rule = scratch_b_epochs(loaded, base, size)
        rule = {"rule": "scratch-b", **rule, "base_epochs_from": source}
    else:
        epochs, rule = int(config.epochs), {"rule": "given"}
    fp = _fingerprint(loaded, data, config, epochs, size, t_model)
    state, partial, notes = _saved_state(config, fp)

    def log(msg: str) -> None:
        if config.progress:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)  # above the progress bar, not through it

    for n in notes:
        log(f"note: {n}")
    val = getattr(data, "val", None) if config.evaluate else None
    if state is not None:
        before = state["extra"].get("top1_before")
        model.load_state_dict(state["model"])
        log(f"resuming after epoch {state['loop']['epoch']} of {epochs} from {partial}")
    else:
        before = top1(model, val) if val is not None else None
    seed_everything(config.seed)
    fallback = reinitialize_(model) if config.init == "scratch" and state is None else []

    def save_epoch(loop: dict[str, Any]) -> None:
        from .train_state import save_state

        os.makedirs(partial, exist_ok=True)
        save_state(partial, model, loop, fp, extra={"top1_before": before})
        log(f"epoch {loop['epoch']}/{epochs}: loss {loop['loss'][-1]:.4f} (state saved; --resume continues from here)")

    hist = fit(model, data, config.loop_settings(epochs), teacher=t_model,
               resume=state["loop"] if state is not None else None, on_epoch_end=save_epoch if partial else None)
    after = top1(model, val) if val is not None else None
    report = RecoverReport(
        model=str(loaded.model_id.get("spec", type(model).__name__)), init=config.init, epochs=epochs,
        epochs_rule=rule, lr=config.learning_rate, schedule=config.schedule, seed=config.seed,
        data=str(getattr(data, "spec", "") or ""),
        kd=None if t_model is None else {"teacher": teacher_name, "alpha": config.kd_alpha,
                                         "temperature": config.kd_temperature},
        accuracy={"before": before, "after": after}, loss=[float(v) for v in hist["loss"]], steps=int(hist["steps"]),
        seconds=float(hist["seconds"]), resumed_from_epoch=int(state["loop"]["epoch"]) if state is not None else None,
        reinitialized_by_fallback=fallback, notes=notes)
    from .sparsity import masks_of

    if (masks := masks_of(model)) is not None:
        report.sparsity = masks.summary(model)
    meta = _trained_meta(loaded, config, epochs, rule, report)
    result = RecoverResult(model=model, plan=loaded.plan, report=report, meta=meta)
    if config.out:
        write_outputs(config.out, result, loaded, size)
    return result


def _trained_meta(loaded: LoadedModel, config: RecoverConfig, epochs: int, rule: dict[str, Any],
                  report: RecoverReport) -> dict[str, Any]:
    """``train_epochs``: epochs of training behind these weights by this verb (scratch: all of
    them; inherit: added to what the checkpoint recorded, when it did); ``base_train_epochs``:
    the unpruned model's, carried along for a later Scratch-B."""
    prior = (loaded.meta or {}).get("train_epochs")
    meta: dict[str, Any] = {
        "train_epochs": epochs if config.init == "scratch" or not prior else int(prior) + epochs,
        "init": config.init, "accuracy": dict(report.accuracy),
        "recover": {"epochs": epochs, "epochs_rule": rule, "lr": report.lr, "schedule": report.schedule,
                    "seed": report.seed, "data": report.data, "kd": report.kd},
    }
    try:
        meta["base_train_epochs"] = base_train_epochs(loaded, config.base_epochs)[0]
    except ConfigError:
        pass
    return meta


def write_outputs(out: str, result: RecoverResult, loaded: LoadedModel, input_size: int) -> list[str]:
    """``OUT/trained.pt`` (the ``pruned.pt`` format: plan + weights; an unpruned model gets a plan
    that keeps every channel) and ``OUT/report.json``, written whole (:func:`staged_output_dir`);
    then the per-epoch state folder is removed."""
    from .checkpoint import save_checkpoint
    from .jsonio import write_json
    from .outdir import staged_output_dir
    from .plan import PruningPlan
    from .train_state import partial_dir, remove_partial_dir

    plan = result.plan
    if plan is None:
        plan = PruningPlan(model_id=loaded.model_id, input_shape=[1, 3, input_size, input_size], kept={},
                           provenance={"note": "unpruned: every channel kept", "written_by": "hwprune train"})
    with staged_output_dir(out) as work:
        save_checkpoint(os.path.join(work, "trained.pt"), result.model, plan, meta=result.meta)
        write_json(os.path.join(work, "report.json"), result.report.to_dict())
    remove_partial_dir(partial_dir(out))
    return ["trained.pt", "report.json"]
