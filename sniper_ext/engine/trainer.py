"""One training stage: SGD over a chip stream with the lr schedule, mixed precision, gradient
clipping, DDP, atomic checkpoints every N iterations, metrics and a progress bar."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ..errors import TrainingDiverged
from ..runtime import autocast_for, resolve_precision, save_checkpoint
from .lr_schedule import lr_at, scaled_lr

__all__ = ["StageResult", "make_optimizer", "train_stage"]


@dataclass
class StageResult:
    stage: str
    iterations: int
    seconds: float = 0.0
    chips: int = 0
    last_losses: dict = field(default_factory=dict)

    @property
    def chips_per_s(self) -> float:
        return self.chips / self.seconds if self.seconds > 0 else 0.0


def make_optimizer(model: torch.nn.Module, solver) -> torch.optim.SGD:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=solver.base_lr, momentum=solver.momentum, weight_decay=solver.weight_decay)


def _finite(params) -> bool:
    """Every parameter finite (one reduction per tensor, one sync)."""
    if not params:
        return True
    return bool(torch.stack([torch.isfinite(p.detach()).all() for p in params]).all())


def _any_rank(flag: bool, dist) -> bool:
    """``flag`` of any rank, on every rank."""
    if not dist.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=dist.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def train_stage(
    *,
    stage: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader,
    stream,
    solver,
    dist,
    start_iter: int,
    num_iters: int,
    rpn_only: bool,
    checkpoint_path: str,
    checkpoint_extra,
    log,
    progress: bool = True,
    scaler=None,
) -> StageResult:
    """Runs global iterations ``start_iter .. num_iters - 1``. ``checkpoint_extra()`` returns the
    run-level fields of a checkpoint (stage list, config); the model, optimizer, scaler, stage and
    iteration are added here. Returns what was done."""
    device = dist.device
    precision = resolve_precision(solver.precision, device)
    ddp_model = model
    if dist.distributed:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=rpn_only,  # the R-CNN head takes no part in the RPN stage
        )
    lr = scaled_lr(solver.base_lr, stream.global_batch, solver.reference_batch)
    ipe = stream.iters_per_epoch
    model.train()
    result = StageResult(stage, 0)
    bar = tqdm(
        total=num_iters,
        initial=start_iter,
        unit="it",
        desc=f"{stage} stage",
        disable=not (progress and dist.is_main),
        mininterval=0.5,
        dynamic_ncols=True,
    )
    t_start, t_window, chips_window = time.perf_counter(), time.perf_counter(), 0
    it = start_iter
    params = [p for p in model.parameters() if p.requires_grad]
    # what a user can fall back on if the run diverges
    last_good = (
        f"{checkpoint_path} ({stage} stage, iteration {start_iter})"
        if start_iter
        else (f"{checkpoint_path} (the end of the previous stage)" if os.path.exists(checkpoint_path) else "none yet")
    )
    bad_steps = 0

    def diverged(what: str) -> TrainingDiverged:
        return TrainingDiverged(
            f"{stage} stage, iteration {it + 1}: {what}; the last good checkpoint is {last_good}. Lower "
            "solver.base_lr, set solver.clip_grad_norm, or let solver.max_bad_steps skip such steps"
        )

    def save(it_done: int, done: bool) -> None:
        nonlocal last_good
        if not _finite(params):  # never a checkpoint of diverged weights
            raise diverged("the weights are not finite")
        if dist.is_main:
            state = dict(checkpoint_extra())
            state.update(
                stage=stage,
                iter=it_done,
                stage_done=done,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                scaler=scaler.state_dict() if scaler is not None else None,
                rng=torch.get_rng_state(),
            )
            save_checkpoint(checkpoint_path, state)
        last_good = f"{checkpoint_path} ({stage} stage, iteration {it_done})"

    for batch in loader:
        if it >= num_iters:
            break
        for g in optimizer.param_groups:
            g["lr"] = lr_at(
                it,
                lr,
                ipe,
                warmup_iters=solver.warmup_iters,
                warmup_factor=solver.warmup_factor,
                steps=solver.steps if stage == "detector" else (),
                gamma=solver.gamma,
            )
        batch = _to_device(batch, device)
        try:
            with autocast_for(device, precision):
                losses = ddp_model(batch, rpn_only=rpn_only)
        except (ValueError, RuntimeError) as e:
            # an op's input check tripped over diverged weights or the activations they give
            if not _finite(params):
                raise diverged("the weights are not finite") from None
            if "must be finite" in str(e):
                raise diverged(f"the model's outputs are not finite ({e})") from None
            raise
        loss = losses["loss"]
        # Every rank takes the same decision (a skipped step must be skipped by all: collectives).
        bad = _any_rank(not math.isfinite(float(loss.detach())), dist)
        what = (
            "the loss is not finite ("
            + ", ".join(
                f"{k} {float(v.detach()):.4g}"
                for k, v in losses.items()
                if k.startswith(("rpn_", "rcnn_", "focus_", "loss"))
            )
            + ")"
        )
        optimizer.zero_grad(set_to_none=True)
        if not bad:
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            max_norm = solver.clip_grad_norm or math.inf
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.zeros(())
            if scaler is None and not math.isfinite(float(norm)):  # the scaler skips such steps itself
                bad, what = True, f"the gradient norm is {float(norm)}"
        if bad:
            bad_steps += 1
            optimizer.zero_grad(set_to_none=True)
            if bad_steps > solver.max_bad_steps:
                raise diverged(what)
            log.log({"stage": stage, "iter": it + 1, "skipped": what, "skipped_steps": bad_steps})
            it += 1
            bar.update(1)
            continue
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        it += 1
        n = int(batch["images"].shape[0]) * dist.world_size
        result.chips += n
        chips_window += n
        values = {
            k: float(v.detach())
            for k, v in losses.items()
            if k == "loss" or k.startswith(("rpn_", "rcnn_", "focus_", "acc_"))
        }
        if dist.distributed:  # the logged losses are the mean over ranks
            t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
            torch.distributed.all_reduce(t)
            values = dict(zip(values, (t / dist.world_size).tolist()))
        result.last_losses = values
        if it % solver.log_every == 0 or it == num_iters:
            now = time.perf_counter()
            rate = chips_window / max(now - t_window, 1e-9)
            t_window, chips_window = now, 0
            log.log(
                {
                    "stage": stage,
                    "iter": it,
                    # an accuracy over no cell of its kind is NaN: logged as null (strict JSON)
                    **{k: (round(v, 6) if math.isfinite(v) else None) for k, v in values.items()},
                    "lr": optimizer.param_groups[0]["lr"],
                    "epoch": round(stream.epoch_of(it), 4),
                    "chips_per_s": round(rate, 2),
                }
            )
            bar.set_postfix_str(f"loss {values['loss']:.3f} | {rate:.1f} chips/s", refresh=False)
        bar.update(1)
        if solver.checkpoint_every and it % solver.checkpoint_every == 0 and it < num_iters:
            save(it, False)
    bar.close()
    result.iterations = it - start_iter  # done by this call
    result.seconds = time.perf_counter() - t_start
    save(it, True)
    return result
