"""``sniper train``: the SNIPER schedule (method §4, §8) as one resumable run.

Stages (mode "two_stage"): ``rpn`` (the RPN alone on positive chips), ``negatives`` (its proposals
over the training set at the inference resolutions -> each image's negative-chip pool), ``detector``
(the full detector, from a fresh initialisation, on positives plus sampled negatives). Mode
"positives" runs only ``detector`` on positive chips, "single_scale" only ``detector`` on whole
images at one resolution, "pyramid" only ``detector`` on whole images at every training scale
(the baselines of method §10). Each stage is a small function of the run's :class:`RunContext`;
:data:`SCHEDULES` lists them per mode.

``DIR`` receives ``config.json`` (the configuration as resolved for the dataset, saved once and
not changed after), ``metrics.jsonl``, ``last.pt`` (atomic, every ``solver.checkpoint_every``
iterations and at every stage end), ``rpn.pt``, ``chips.npz`` (the chips trained on: with the
negative pools in mode two_stage), ``loss.png``. With ``resume=True`` a run continues from
``last.pt`` (if any) to the same result as an uninterrupted one: the chip stream, the anchor
samples and the lr are functions of the iteration.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..chips import NEGATIVE, ChipDB
from ..config import TrainConfig, config_to_dict, save_config, validate_config
from ..data import ChipDataset, ChipStream, Dataset, make_chip_loader, open_dataset, write_proposals_npz
from ..errors import DataError
from ..inference import MultiScaleInference
from ..modeling import SniperRCNN, build_model
from ..modeling.resnet import load_torchvision_weights
from ..runtime import (
    DistInfo,
    barrier,
    broadcast_object,
    checkpoint_config,
    init_distributed,
    load_checkpoint,
    load_detector,
    resolve_precision,
    save_checkpoint,
)
from .metrics import MetricsLog, plot_losses
from .planning import load_plan, plan_key, plan_shared, rank_batches
from .run_folder import RunLock, remove_stale_temporaries, resume_changes
from .single_scale import pyramid_db, single_scale_db
from .trainer import StageResult, make_optimizer, train_stage

__all__ = ["RunContext", "SCHEDULES", "TrainSummary", "load_detector", "resolve_config", "stages_of", "train"]

#: the stages of each training mode, in order
SCHEDULES = {
    "two_stage": ("rpn", "negatives", "detector"),
    "positives": ("detector",),
    "single_scale": ("detector",),
    "pyramid": ("detector",),
}

_SALT = {"rpn": 1, "detector": 3}


@dataclass
class TrainSummary:
    out_dir: str
    stages: list = field(default_factory=list)  # StageResult
    chip_stats: dict = field(default_factory=dict)
    seconds: float = 0.0
    checkpoint: str = ""

    def lines(self) -> list[str]:
        out = []
        for r in self.stages:
            losses = ", ".join(f"{k} {v:.3f}" for k, v in r.last_losses.items())
            out.append(
                f"{r.stage:>9}: {r.iterations} iterations, {r.seconds:.0f} s, {r.chips_per_s:.1f} chips/s"
                + (f"; last {losses}" if losses else "")
            )
        return out


def stages_of(mode: str) -> tuple:
    if mode not in SCHEDULES:
        raise ValueError(f"mode must be one of {', '.join(SCHEDULES)}, got {mode!r}")
    return SCHEDULES[mode]


def resolve_config(cfg: TrainConfig, dataset: Dataset) -> TrainConfig:
    """``cfg`` for ``dataset``: a copy with ``model.num_classes`` set to its category count (the
    caller's configuration is not changed)."""
    n = len(dataset.categories)
    if cfg.model.num_classes == n:
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=n))


@dataclass
class RunContext:
    """Everything the stages of one run share. ``cfg`` is resolved for the dataset and saved as
    ``config.json``; nothing changes it afterwards. ``state``: the checkpoint resumed from (None
    for a fresh run); ``completed``: the stages done (in earlier calls too); ``db``: the chips
    the next stage trains on; ``rpn_model``: the RPN trained in this call, for negative mining."""

    cfg: TrainConfig
    out_dir: str
    dist: DistInfo
    dataset: Dataset
    log: MetricsLog
    summary: TrainSummary
    say: Callable
    progress: bool
    max_iter: int | None
    state: dict | None
    completed: list
    db: ChipDB
    rpn_model: SniperRCNN | None = None

    def path(self, name: str) -> str:
        return os.path.join(self.out_dir, name)

    def checkpoint_extra(self) -> Callable[[], dict]:
        """The run-level fields of every checkpoint: the configuration, the categories and the
        stages completed so far."""
        cfg_dict = config_to_dict(self.cfg)
        cats = list(self.dataset.categories)
        return lambda: {"config": cfg_dict, "categories": cats, "completed": list(self.completed)}

    def fresh_model(self, stage: str) -> SniperRCNN:
        """The model a stage starts from: seeded per stage, the backbone weights if any."""
        torch.manual_seed(self.cfg.seed * 1000 + _SALT[stage])
        model = build_model(self.cfg.model, self.cfg.data)
        if self.cfg.backbone_weights:
            load_torchvision_weights(model.backbone, self.cfg.backbone_weights)
        return model.to(self.dist.device)


def _train_model(ctx: RunContext, stage: str) -> SniperRCNN:
    """One training stage over ``ctx.db`` (resumed from ``ctx.state`` when it stopped inside
    this stage); returns the trained model."""
    cfg, dist = ctx.cfg, ctx.dist
    model = ctx.fresh_model(stage)
    optimizer = make_optimizer(model, cfg.solver)
    precision = resolve_precision(cfg.solver.precision, dist.device)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    start = 0
    state = ctx.state
    if state is not None and state.get("stage") == stage and not state.get("stage_done"):
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        start = int(state["iter"])
    seed = cfg.seed * 1000 + _SALT[stage]
    epochs = cfg.solver.rpn_epochs if stage == "rpn" else cfg.solver.epochs
    total = ChipStream(ctx.db, cfg.solver.batch_size, seed=seed, rank=dist.rank, world_size=dist.world_size).iters_for(
        epochs
    )
    if ctx.max_iter is not None:
        total = min(total, ctx.max_iter)
    stream = ChipStream(
        ctx.db,
        cfg.solver.batch_size,
        seed=seed,
        rank=dist.rank,
        world_size=dist.world_size,
        start_iter=start,
        num_iters=max(0, total - start),
    )
    dataset = ChipDataset(ctx.db, ctx.dataset.image_root, ctx.dataset.category_ids, pixel_mean=cfg.data.pixel_mean)
    result = train_stage(
        stage=stage,
        model=model,
        optimizer=optimizer,
        loader=make_chip_loader(dataset, stream, workers=cfg.data.workers),
        stream=stream,
        solver=cfg.solver,
        dist=dist,
        start_iter=start,
        num_iters=total,
        rpn_only=stage == "rpn",
        checkpoint_path=ctx.path("last.pt"),
        checkpoint_extra=ctx.checkpoint_extra(),
        log=ctx.log,
        progress=ctx.progress,
        scaler=scaler,
    )
    ctx.summary.stages.append(result)
    return model


# ---------------------------------------------------------------------------------------------
# The stages


def stage_rpn(ctx: RunContext) -> None:
    """§4 step 1: the RPN alone on positive chips; ``rpn.pt`` at the end."""
    ctx.rpn_model = _train_model(ctx, "rpn")
    ctx.completed.append("rpn")
    if ctx.dist.is_main:
        save_checkpoint(ctx.path("rpn.pt"), {"model": ctx.rpn_model.state_dict(), **ctx.checkpoint_extra()()})


def stage_negatives(ctx: RunContext) -> None:
    """§4 steps 2-3: the RPN's proposals over the training images at the inference resolutions,
    and the chip plan with each image's negative-chip pool (``chips.npz``)."""
    cfg, dist = ctx.cfg, ctx.dist
    if ctx.rpn_model is None:  # trained in an earlier call
        src = ctx.path("rpn.pt") if os.path.exists(ctx.path("rpn.pt")) else ctx.path("last.pt")
        ctx.rpn_model = ctx.fresh_model("rpn")
        ctx.rpn_model.load_state_dict(load_checkpoint(src, map_location=dist.device)["model"])
    t = time.perf_counter()
    ctx.say("proposals of the RPN over the training images at the inference resolutions (method §4)")
    # Each rank takes its planning batches: their proposals (written as this rank's shard, in the
    # binary format), then their chips; the parts meet in chips.npz.
    table = ctx.dataset.records
    mine = rank_batches(len(table), dist)
    idx = np.concatenate([np.arange(s, e) for s, e in mine]) if mine else np.zeros(0, np.int64)
    engine = MultiScaleInference.for_config(
        ctx.rpn_model,
        cfg,
        device=dist.device,
        precision=cfg.solver.precision,
        workers=cfg.data.workers,
        progress=ctx.progress and dist.is_main,
    )
    proposals = engine.proposals(table.take(idx), ctx.dataset.image_root)
    write_proposals_npz(ctx.path(f"proposals.rank{dist.rank}.npz"), proposals)
    per_image = [proposals.get(i) for i in table.image_ids.tolist()]
    ctx.db = plan_shared(
        table,
        cfg.chips,
        seed=cfg.seed,
        dist=dist,
        out_path=ctx.path("chips.npz"),
        proposals=per_image,
        key=plan_key(table, cfg.chips, cfg.seed, "negatives"),
        workers=cfg.data.workers,
    )
    ctx.completed.append("negatives")
    if dist.is_main:
        extra = ctx.checkpoint_extra()()
        save_checkpoint(
            ctx.path("last.pt"),
            {**extra, "stage": "negatives", "iter": 0, "stage_done": True, "model": ctx.rpn_model.state_dict()},
        )
    n_neg = int((ctx.db.chip_kind == NEGATIVE).sum())
    ctx.summary.stages.append(StageResult("negatives", 0, time.perf_counter() - t))
    ctx.say(f"negative-chip pools: {n_neg} chips over {len(table)} images")
    ctx.summary.chip_stats = ctx.db.stats()
    ctx.rpn_model = None


def stage_detector(ctx: RunContext) -> None:
    """§4 step 4 (or the only stage of the other modes): the full detector on ``ctx.db``."""
    _train_model(ctx, "detector")
    ctx.completed.append("detector")


STAGES: dict[str, Callable[[RunContext], None]] = {
    "rpn": stage_rpn,
    "negatives": stage_negatives,
    "detector": stage_detector,
}


# ---------------------------------------------------------------------------------------------
# The run


def _positive_db(cfg: TrainConfig, dataset: Dataset, dist: DistInfo, out_dir: str, progress: bool, say) -> ChipDB:
    """The positive chips: reused from ``chips_positive.npz`` when it was planned for this
    configuration and dataset (a resumed or staged run), else planned by all ranks together."""
    if cfg.mode == "single_scale":
        return single_scale_db(dataset.records, cfg.single_scale_resolution, cfg.chips)
    if cfg.mode == "pyramid":
        return pyramid_db(dataset.records, cfg.chips)
    path = os.path.join(out_dir, "chips_positive.npz")
    key = plan_key(dataset.records, cfg.chips, cfg.seed)
    db = load_plan(path, key) if dist.is_main else None
    if broadcast_object(dist, db is not None):  # every rank takes the same path (collectives)
        say(f"positive chips: {path} (planned for this configuration and dataset)")
        return db if db is not None else ChipDB.load(path)
    t = time.perf_counter()
    db = plan_shared(
        dataset.records,
        cfg.chips,
        seed=cfg.seed,
        dist=dist,
        out_path=path,
        key=key,
        workers=cfg.data.workers,
        progress=progress,
    )
    say(f"positive chips: planned {len(db)} for {len(dataset.records)} images in {time.perf_counter() - t:.1f} s")
    return db


def _check_backbone_weights(cfg: TrainConfig) -> None:
    """The backbone weight file fits the configured backbone (checked before any file is written)."""
    if not cfg.backbone_weights:
        return
    model = build_model(cfg.model, cfg.data)
    try:
        load_torchvision_weights(model.backbone, cfg.backbone_weights)
    except ValueError as e:
        msg = str(e).removeprefix("load_torchvision_weights: ")
        raise DataError(cfg.backbone_weights, None, msg.replace(f"{cfg.backbone_weights!r}", "it")) from None


def open_run(
    cfg: TrainConfig,
    out_dir: str,
    *,
    resume: bool,
    progress: bool,
    dist: DistInfo,
    echo: Callable,
    max_iter: int | None,
) -> RunContext:
    """The run's context: the checkpoint resumed from, the dataset (checked), the configuration
    resolved for it and saved, the metrics log, and the chips of the next stage. Everything is
    checked (configuration, resume compatibility, data, backbone weights) before the first file
    of the run is written."""
    say = echo if dist.is_main else (lambda *a, **k: None)
    validate_config(cfg)
    last = os.path.join(out_dir, "last.pt")
    if dist.is_main:
        for name in remove_stale_temporaries(out_dir):
            say(f"removed {name}, left by a killed run")
    state = load_checkpoint(last) if resume and os.path.exists(last) else None
    completed: list = []
    if state is not None:
        completed = list(state.get("completed", [])) + ([state["stage"]] if state.get("stage_done") else [])
        say(f"resuming from {last}: {state['stage']} stage, iteration {state['iter']}")
    elif resume:
        say(f"--resume: no {last} yet, starting from the beginning")
    # The first rank renders the synthetic data and builds the dataset index; the others then
    # open what it wrote.
    if dist.is_main:
        dataset = open_dataset(cfg.data, os.path.join(out_dir, "data"), progress=progress)
    barrier(dist)
    if not dist.is_main:
        dataset = open_dataset(cfg.data, os.path.join(out_dir, "data"))
    for line in dataset.issues.summary():
        say(f"skipped: {line}")
    resolved = resolve_config(cfg, dataset)
    if resolved is not cfg:
        say(f"model.num_classes {cfg.model.num_classes} -> {resolved.model.num_classes} (the dataset's categories)")
    if state is not None:
        saved = checkpoint_config(last, state)
        changes = resume_changes(saved, resolved, out_dir)
        if changes:
            say("--resume: applying changed settings: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in changes))
        # a kill between the RPN stage's last.pt and its rpn.pt: rpn.pt from the checkpoint
        rpn_path = os.path.join(out_dir, "rpn.pt")
        if "rpn" in completed and not os.path.exists(rpn_path) and state["stage"] in ("rpn", "negatives"):
            if dist.is_main:
                save_checkpoint(rpn_path, {k: v for k, v in state.items() if k not in ("optimizer", "scaler", "rng")})
            say(f"rewrote {rpn_path} from {last}")
    _check_backbone_weights(resolved)
    if dist.is_main:
        save_config(resolved, os.path.join(out_dir, "config.json"))
    log = MetricsLog(
        os.path.join(out_dir, "metrics.jsonl"),
        enabled=dist.is_main,
        keep_until=(state["stage"], int(state["iter"])) if state is not None else None,
        fresh=state is None,
    )
    db = _positive_db(resolved, dataset, dist, out_dir, progress and dist.is_main, say)
    chips_path = os.path.join(out_dir, "chips.npz")
    if resolved.mode != "two_stage":
        if dist.is_main:  # two_stage writes it with the negative pools
            db.save(chips_path)
    elif "negatives" in completed:
        try:  # the negative pools of an earlier call
            db = ChipDB.load(chips_path)
        except (OSError, ValueError):
            completed.remove("negatives")  # recomputed (deterministic)
    return RunContext(
        cfg=resolved,
        out_dir=out_dir,
        dist=dist,
        dataset=dataset,
        log=log,
        summary=TrainSummary(out_dir),
        say=say,
        progress=progress,
        max_iter=max_iter,
        state=state,
        completed=completed,
        db=db,
    )


class _Rollback:
    """Until the run has something to resume from (its first checkpoint), a failure leaves the
    output folder as it was: what this call created in it is removed (the folder too, if it
    created it)."""

    def __init__(self, out_dir: str, enabled: bool):
        self.out_dir = out_dir
        self.enabled = enabled
        self.folder_existed = os.path.isdir(out_dir)
        self.before = set(os.listdir(out_dir)) if self.folder_existed else set()
        self.last_mtime = self._mtime()

    def _mtime(self):
        try:
            return os.stat(os.path.join(self.out_dir, "last.pt")).st_mtime_ns
        except OSError:
            return None

    def undo(self) -> None:
        if not self.enabled or self._mtime() != self.last_mtime:  # a checkpoint was written: keep
            return
        if not self.folder_existed:
            shutil.rmtree(self.out_dir, ignore_errors=True)
            return
        for name in set(os.listdir(self.out_dir)) - self.before:
            path = os.path.join(self.out_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def train(
    cfg: TrainConfig,
    out_dir: str,
    *,
    resume: bool = False,
    progress: bool = True,
    device: str = "auto",
    max_iter: int | None = None,
    dist: DistInfo | None = None,
    echo=print,
    stop_after: str | None = None,
) -> TrainSummary:
    """Runs (or resumes) a training run into ``out_dir``; see the module docstring. ``stop_after``
    (a stage name) ends the run after that stage: the schedule stage by stage, each later call
    with ``resume=True``. ``cfg`` is not changed."""
    t0 = time.perf_counter()
    dist = dist or init_distributed(device)
    stages = stages_of(cfg.mode)
    if stop_after is not None:
        if stop_after not in stages:
            raise ValueError(f"stop_after must be one of the stages of mode {cfg.mode}: {', '.join(stages)}")
        stages = stages[: stages.index(stop_after) + 1]
    rollback = _Rollback(out_dir, enabled=dist.is_main)
    lock = RunLock(out_dir)
    if dist.is_main:
        lock.acquire()  # before anything is written; a folder locked by another run is not ours to tidy
    try:
        ctx = open_run(cfg, out_dir, resume=resume, progress=progress, dist=dist, echo=echo, max_iter=max_iter)
        ctx.say(
            f"{len(ctx.dataset.records)} training images, {len(ctx.dataset.categories)} classes; "
            f"stages: {', '.join(stages)}"
        )
        try:
            for stage in stages:
                if stage not in ctx.completed:
                    STAGES[stage](ctx)
                barrier(dist)
        finally:
            ctx.log.close()
    except BaseException:
        lock.release()
        rollback.undo()
        raise
    if dist.is_main:
        plot_losses(ctx.path("metrics.jsonl"), ctx.path("loss.png"), title=f"{ctx.cfg.name}: loss")
    summary = ctx.summary
    summary.seconds = time.perf_counter() - t0
    summary.checkpoint = ctx.path("last.pt")
    if stages[-1] != "detector":
        ctx.say(f"stopped after the {stages[-1]} stage; continue with --resume")
    if not summary.chip_stats:
        summary.chip_stats = ctx.db.stats()
    lock.release()
    return summary
