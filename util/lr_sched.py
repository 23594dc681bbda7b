"""Per-iteration learning-rate schedule: linear warmup, then half-cycle cosine decay (MAE's
``util/lr_sched.py``; the paper's Table 5: cosine decay, 40 warmup epochs out of 150), or, with
``lr_schedule="constant"``, the same warmup and then the peak lr to the end.

The schedule is a function of the *fractional* epoch (``epoch + step / steps_per_epoch``), so it
is smooth within an epoch and independent of the batch size.
"""
from __future__ import annotations

import math


def cosine_lr(epoch: float, lr: float, min_lr: float, warmup_epochs: float, epochs: float) -> float:
    """Learning rate at fractional ``epoch``: ``lr * epoch / warmup`` during warmup, then
    ``min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2`` with progress 0 -> 1 over the
    remaining epochs."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    if epochs <= warmup_epochs:
        return lr
    progress = min(1.0, (epoch - warmup_epochs) / (epochs - warmup_epochs))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


LR_SCHEDULES = ("cosine", "constant")


def scheduled_lr(epoch: float, lr: float, min_lr: float, warmup_epochs: float, epochs: float,
                 schedule: str = "cosine") -> float:
    """``cosine_lr``, or for ``schedule="constant"`` its warmup followed by ``lr`` (``min_lr``
    unused)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown --lr_schedule {schedule!r}; choose from {LR_SCHEDULES}")
    if schedule == "constant":
        return lr * epoch / warmup_epochs if epoch < warmup_epochs else lr
    return cosine_lr(epoch, lr, min_lr, warmup_epochs, epochs)


def adjust_learning_rate(optimizer, epoch: float, args) -> float:
    """Set every param group's lr for fractional ``epoch`` (honouring an optional per-group
    ``lr_scale``, as MAE does for layer decay) and return the unscaled lr; ``args.lr_schedule``
    (absent: cosine) picks the schedule."""
    lr = scheduled_lr(epoch, args.lr, args.min_lr, args.warmup_epochs, args.epochs,
                      getattr(args, "lr_schedule", None) or "cosine")
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr
