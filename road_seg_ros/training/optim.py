"""The optimiser and the learning-rate schedule every training loop here uses."""

import time

import torch


class PolySchedule:
    """Linear warm-up, then poly decay (power 0.9) over steps, or over a time budget if that runs out first."""

    def __init__(self, total_steps: int, warmup_steps: int, budget_seconds: float = 0.0, power: float = 0.9):
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.budget_seconds, self.power = budget_seconds, power
        self.elapsed_before = 0.0  # seconds spent in earlier runs of a resumed training
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def progress(self, step: int) -> float:
        by_steps = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        by_time = self.elapsed() / self.budget_seconds if self.budget_seconds else 0.0
        return min(1.0, max(by_steps, by_time))

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return (1.0 - self.progress(step)) ** self.power


def load_scheduler_state(scheduler, state: dict, elapsed_seconds: float) -> None:
    """A saved run's step count and time spent; the schedule's length and budget stay this run's.

    The saved state also holds the old schedule's fields, its clock among them: restoring that clock
    counted the time between the two runs as spent (a resumed 15-minute adaptation stopped after one step).
    """
    scheduler.load_state_dict({**state, "lr_lambdas": [None] * len(scheduler.lr_lambdas)})
    for schedule in scheduler.lr_lambdas:
        schedule.elapsed_before = elapsed_seconds


def make_optimizer(model, kind: str, lr: float, weight_decay: float, encoder_lr_factor: float = 1.0):
    """AdamW or SGD (Nesterov), with no weight decay on BatchNorm parameters and biases; a pretrained
    ``model.encoder`` learns at ``lr * encoder_lr_factor``."""
    encoder = getattr(model, "encoder", None)
    encoder_ids = {id(p) for p in encoder.parameters()} if encoder is not None and encoder_lr_factor != 1.0 else set()
    groups = {}
    for parameter in model.parameters():
        key = (id(parameter) in encoder_ids, parameter.ndim <= 1)
        groups.setdefault(key, []).append(parameter)
    param_groups = [
        {
            "params": params,
            "lr": lr * (encoder_lr_factor if in_encoder else 1.0),
            "weight_decay": 0.0 if no_decay else weight_decay,
        }  # fmt: skip
        for (in_encoder, no_decay), params in sorted(groups.items())
    ]
    if kind == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr)
    if kind == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=0.9, nesterov=True)
    raise ValueError(f"optimizer must be adamw or sgd, got {kind!r}")
