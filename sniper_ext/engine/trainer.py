"""One training stage: SGD over a chip stream with the lr schedule, mixed precision, gradient
clipping, DDP, atomic checkpoints every N iterations, metrics and a progress bar."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

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

    def save(it_done: int, done: bool) -> None:
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
        with autocast_for(device, precision):
            losses = ddp_model(batch, rpn_only=rpn_only)
        loss = losses["loss"]
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(
                f"{stage} stage, iteration {it + 1}: the loss is {float(loss)} "
                f"({', '.join(f'{k} {float(v):.4g}' for k, v in losses.items())}); lower solver.base_lr or "
                "set solver.clip_grad_norm"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if solver.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], solver.clip_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        it += 1
        n = int(batch["images"].shape[0]) * dist.world_size
        result.chips += n
        chips_window += n
        values = {k: float(v.detach()) for k, v in losses.items() if k == "loss" or k.startswith(("rpn_", "rcnn_"))}
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
                    **{k: round(v, 6) for k, v in values.items()},
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
