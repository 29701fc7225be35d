"""``sniper train``: the SNIPER schedule (method §4, §8) as one resumable run.

Stages (mode "two_stage"): ``rpn`` (the RPN alone on positive chips), ``negatives`` (its proposals
over the training set at the inference resolutions -> each image's negative-chip pool), ``detector``
(the full detector, from a fresh initialisation, on positives plus sampled negatives). Mode
"positives" runs only ``detector`` on positive chips, "single_scale" only ``detector`` on whole
images at one resolution.

``DIR`` receives ``config.json``, ``metrics.jsonl``, ``last.pt`` (atomic, every
``solver.checkpoint_every`` iterations and at every stage end), ``rpn.pt``, ``chips.npz`` (the chips
trained on: with the negative pools in mode two_stage),
``loss.png``. With ``resume=True`` a run continues from ``last.pt`` (if any) to the same result as
an uninterrupted one: the chip stream, the anchor samples and the lr are functions of the iteration.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch

from ..config import TrainConfig, config_to_dict, save_config
from .checkpoint import load_checkpoint, save_checkpoint
from .dataset import DatasetInfo, open_dataset
from .distributed import DistInfo, barrier, init_distributed
from .metrics import MetricsLog, plot_losses
from .trainer import StageResult, make_optimizer, resolve_precision, train_stage

__all__ = ["train", "TrainSummary", "load_detector", "stages_of"]

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
    if mode == "two_stage":
        return ("rpn", "negatives", "detector")
    if mode in ("positives", "single_scale"):
        return ("detector",)
    raise ValueError(f"mode must be 'two_stage', 'positives' or 'single_scale', got {mode!r}")


def _fresh_model(cfg: TrainConfig, stage: str, device):
    from ..modeling import build_model
    from ..modeling.resnet import load_torchvision_weights

    torch.manual_seed(cfg.seed * 1000 + _SALT[stage])
    model = build_model(cfg.model, cfg.data)
    if cfg.backbone_weights:
        load_torchvision_weights(model.backbone, cfg.backbone_weights)
    return model.to(device)


def _positive_db(cfg, ds: DatasetInfo, progress: bool):
    from ..chips import plan_dataset

    if cfg.mode == "single_scale":
        from .single_scale import single_scale_db

        return single_scale_db(ds.records, cfg.single_scale_resolution, cfg.chips)
    return plan_dataset(ds.records, None, cfg.chips, seed=cfg.seed, progress=progress)


def _checkpoint_extra(cfg: TrainConfig, ds: DatasetInfo, completed: list):
    cfg_dict = config_to_dict(cfg)
    cats = list(ds.categories)
    return lambda: {"config": cfg_dict, "categories": cats, "completed": list(completed)}


def load_detector(path: str, device="cpu"):
    """(model in eval mode, TrainConfig, categories) from a checkpoint of ``sniper train``."""
    from ..config import config_from_dict
    from ..modeling import build_model

    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"])
    model = build_model(cfg.model, cfg.data)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg, state.get("categories") or []


def _run_stage(stage, cfg, ds, db, dist, out_dir, completed, state, log, progress, max_iter):
    from ..data import ChipDataset, ChipStream, make_chip_loader

    model = _fresh_model(cfg, stage, dist.device)
    optimizer = make_optimizer(model, cfg.solver)
    precision = resolve_precision(cfg.solver.precision, dist.device)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    start = 0
    if state is not None and state.get("stage") == stage and not state.get("stage_done"):
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        start = int(state["iter"])
    seed = cfg.seed * 1000 + _SALT[stage]
    probe = ChipStream(db, cfg.solver.batch_size, seed=seed, rank=dist.rank, world_size=dist.world_size)
    epochs = cfg.solver.rpn_epochs if stage == "rpn" else cfg.solver.epochs
    total = probe.iters_for(epochs)
    if max_iter is not None:
        total = min(total, max_iter)
    stream = ChipStream(
        db,
        cfg.solver.batch_size,
        seed=seed,
        rank=dist.rank,
        world_size=dist.world_size,
        start_iter=start,
        num_iters=max(0, total - start),
    )
    dataset = ChipDataset(db, ds.image_root, ds.category_ids, pixel_mean=cfg.data.pixel_mean)
    loader = make_chip_loader(dataset, stream, workers=cfg.data.workers)
    result = train_stage(
        stage=stage,
        model=model,
        optimizer=optimizer,
        loader=loader,
        stream=stream,
        solver=cfg.solver,
        dist=dist,
        start_iter=start,
        num_iters=total,
        rpn_only=stage == "rpn",
        checkpoint_path=os.path.join(out_dir, "last.pt"),
        checkpoint_extra=_checkpoint_extra(cfg, ds, completed),
        log=log,
        progress=progress,
        scaler=scaler,
    )
    return model, result


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
    with ``resume=True``."""
    from ..chips import NEGATIVE, ChipDB, plan_dataset
    from ..inference.multiscale import rpn_proposals

    t0 = time.perf_counter()
    dist = dist or init_distributed(device)
    say = echo if dist.is_main else (lambda *a, **k: None)
    stages = stages_of(cfg.mode)
    if stop_after is not None:
        if stop_after not in stages:
            raise ValueError(f"stop_after must be one of the stages of mode {cfg.mode}: {', '.join(stages)}")
        stages = stages[: stages.index(stop_after) + 1]
    os.makedirs(out_dir, exist_ok=True)
    last = os.path.join(out_dir, "last.pt")
    state = load_checkpoint(last) if resume and os.path.exists(last) else None
    completed: list = []
    if state is not None:
        completed = list(state.get("completed", [])) + ([state["stage"]] if state.get("stage_done") else [])
        say(f"resuming from {last}: {state['stage']} stage, iteration {state['iter']}")
    elif resume:
        say(f"--resume: no {last} yet, starting from the beginning")

    ds = open_dataset(cfg.data, os.path.join(out_dir, "data"), progress=progress and dist.is_main)
    for line in ds.issues.summary():
        say(f"skipped: {line}")
    if cfg.model.num_classes != len(ds.categories):
        say(f"model.num_classes {cfg.model.num_classes} -> {len(ds.categories)} (the dataset's categories)")
        cfg.model.num_classes = len(ds.categories)
    if dist.is_main:
        save_config(cfg, os.path.join(out_dir, "config.json"))
    log = MetricsLog(
        os.path.join(out_dir, "metrics.jsonl"),
        enabled=dist.is_main,
        keep_until=(state["stage"], int(state["iter"])) if state is not None else None,
        fresh=state is None,
    )
    summary = TrainSummary(out_dir)
    say(f"{len(ds.records)} training images, {len(ds.categories)} classes; stages: {', '.join(stages)}")
    db_pos = _positive_db(cfg, ds, progress and dist.is_main)
    db = db_pos
    rpn_model = None
    chips_path = os.path.join(out_dir, "chips.npz")
    if cfg.mode != "two_stage" and dist.is_main:  # two_stage writes it with the negative pools
        db_pos.save(chips_path)
    try:
        for stage in stages:
            if stage == "rpn":
                if "rpn" in completed:
                    continue
                rpn_model, result = _run_stage(
                    "rpn", cfg, ds, db_pos, dist, out_dir, completed, state, log, progress, max_iter
                )
                summary.stages.append(result)
                completed.append("rpn")
                if dist.is_main:
                    save_checkpoint(
                        os.path.join(out_dir, "rpn.pt"),
                        {"model": rpn_model.state_dict(), **_checkpoint_extra(cfg, ds, completed)()},
                    )
            elif stage == "negatives":
                if "negatives" in completed:
                    try:
                        db = ChipDB.load(chips_path)
                        continue
                    except (OSError, ValueError):
                        pass  # recomputed below (deterministic)
                if rpn_model is None:
                    src = os.path.join(out_dir, "rpn.pt")
                    if not os.path.exists(src):
                        src = last
                    rpn_model = _fresh_model(cfg, "rpn", dist.device)
                    rpn_model.load_state_dict(load_checkpoint(src, map_location=dist.device)["model"])
                t = time.perf_counter()
                say("proposals of the RPN over the training images at the inference resolutions (method §4)")
                props = rpn_proposals(
                    rpn_model,
                    ds.records,
                    ds.image_root,
                    cfg.inference,
                    device=dist.device,
                    precision=cfg.solver.precision,
                    workers=cfg.data.workers,
                    dist=dist,
                    progress=progress,
                    pixel_mean=cfg.data.pixel_mean,
                )
                db = plan_dataset(ds.records, props, cfg.chips, seed=cfg.seed, progress=False)
                for r in ds.records:  # plan_dataset attached them; the records stay reusable
                    r.proposals = None
                if dist.is_main:
                    db.save(chips_path)
                completed.append("negatives")
                if dist.is_main:
                    save_checkpoint(
                        last,
                        {
                            **_checkpoint_extra(cfg, ds, completed)(),
                            "stage": "negatives",
                            "iter": 0,
                            "stage_done": True,
                            "model": rpn_model.state_dict(),
                        },
                    )
                n_neg = int((db.chip_kind == NEGATIVE).sum())
                summary.stages.append(StageResult("negatives", 0, time.perf_counter() - t))
                say(f"negative-chip pools: {n_neg} chips over {len(ds.records)} images")
                summary.chip_stats = db.stats()
                rpn_model = None
            elif stage == "detector":
                if "detector" in completed:
                    continue
                if cfg.mode == "two_stage" and "negatives" in completed and db is db_pos:
                    db = ChipDB.load(chips_path)
                model, result = _run_stage(
                    "detector", cfg, ds, db, dist, out_dir, completed, state, log, progress, max_iter
                )
                summary.stages.append(result)
                completed.append("detector")
            barrier(dist)
    finally:
        log.close()
    if dist.is_main:
        plot_losses(
            os.path.join(out_dir, "metrics.jsonl"), os.path.join(out_dir, "loss.png"), title=f"{cfg.name}: loss"
        )
    summary.seconds = time.perf_counter() - t0
    summary.checkpoint = last
    if stages[-1] != "detector":
        say(f"stopped after the {stages[-1]} stage; continue with --resume")
    if not summary.chip_stats:
        summary.chip_stats = db.stats()
    return summary
