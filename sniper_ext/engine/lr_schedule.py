"""The learning rate as a pure function of the iteration (method §8): linear warm-up, then step
decay at given epochs. Being a function and not a stateful scheduler, it resumes exactly."""

from __future__ import annotations

__all__ = ["scaled_lr", "lr_at"]


def scaled_lr(base_lr: float, global_batch: int, reference_batch: int) -> float:
    """The linear scaling rule: ``base_lr`` is right for ``reference_batch`` chips."""
    return base_lr * global_batch / reference_batch


def lr_at(
    it: int,
    lr: float,
    iters_per_epoch: float,
    *,
    warmup_iters: int = 1000,
    warmup_factor: float = 1.0 / 3,
    steps: tuple = (),
    gamma: float = 0.1,
) -> float:
    """The rate of iteration ``it`` (0-based): ``lr`` times gamma^(steps passed, in epochs), times
    a factor rising linearly from ``warmup_factor`` to 1 over ``warmup_iters``."""
    decay = gamma ** sum(1 for s in steps if it >= s * iters_per_epoch)
    if it < warmup_iters:
        alpha = it / warmup_iters
        decay *= warmup_factor * (1 - alpha) + alpha
    return lr * decay
