"""Training losses: supervised cross-entropy and the distillation terms.

All take logits N x C x H x W; targets are N x H x W class ids with
IGNORE_INDEX for void.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..core.labels import IGNORE_INDEX


class OhemCrossEntropy(nn.Module):
    """Cross-entropy over the hardest pixels only (online hard example mining).

    Keeps pixels whose true-class probability is below ``threshold``, but at
    least ``min_kept`` per batch, so rare classes are not drowned by road and sky.
    """

    def __init__(self, threshold=0.7, min_kept=100_000, weight=None, ignore_index=IGNORE_INDEX):
        super().__init__()
        self.threshold = threshold
        self.min_kept = min_kept
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits, target):
        pixel_loss = F.cross_entropy(
            logits, target, weight=self.weight, ignore_index=self.ignore_index, reduction="none"
        ).flatten()
        valid = target.flatten() != self.ignore_index
        pixel_loss = pixel_loss[valid]
        if pixel_loss.numel() == 0:
            return logits.sum() * 0.0
        # loss > -log(threshold) is the same as p(true class) < threshold
        hard = pixel_loss > -torch.log(torch.tensor(self.threshold, device=logits.device))
        if hard.sum() < min(self.min_kept, pixel_loss.numel()):
            return pixel_loss.topk(min(self.min_kept, pixel_loss.numel())).values.mean()
        return pixel_loss[hard].mean()


def supervised_loss(kind="weighted_ce", class_weight=None, ohem_threshold=0.7, ohem_min_kept=100_000):
    """The hard-label loss: ``ce``, ``weighted_ce`` (ENet weights) or ``ohem``."""
    if kind == "ce":
        return nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    if kind == "weighted_ce":
        return nn.CrossEntropyLoss(weight=class_weight, ignore_index=IGNORE_INDEX)
    if kind == "ohem":
        return OhemCrossEntropy(ohem_threshold, ohem_min_kept, weight=class_weight)
    raise ValueError(f"loss must be ce, weighted_ce or ohem, got {kind!r}")


def pixel_kd_loss(student_logits, teacher_logits, temperature=1.0):
    """Pixel-wise KD: KL(teacher || student) of temperature-softened class distributions, times T^2.

    Averaged over pixels. Zero exactly when the two logit maps are equal.
    """
    student_log_prob = F.log_softmax(student_logits / temperature, dim=1)
    teacher_log_prob = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = (teacher_log_prob.exp() * (teacher_log_prob - student_log_prob)).sum(dim=1)
    return kl.mean() * temperature**2


def channel_wise_distillation_loss(student_logits, teacher_logits, temperature=4.0):
    """Channel-wise distillation (Shu et al., ICCV 2021).

    Each class channel becomes a distribution over spatial positions (softmax
    over H*W with temperature T); the loss is KL(teacher || student) summed
    over positions, divided by N*C, times T^2.
    """
    n, c = student_logits.shape[:2]
    student_log_prob = F.log_softmax(student_logits.flatten(2) / temperature, dim=2)
    teacher_log_prob = F.log_softmax(teacher_logits.flatten(2) / temperature, dim=2)
    kl = (teacher_log_prob.exp() * (teacher_log_prob - student_log_prob)).sum()
    return kl / (n * c) * temperature**2


# The distillation losses a config may name; a new one is one function and one entry here.
DISTILLATION_LOSSES = {
    "pixel": pixel_kd_loss,
    "cwd": channel_wise_distillation_loss,
}


@dataclass(frozen=True)
class DistillationTerm:
    """One distillation loss with its weight and temperature; logged as ``loss_kd_<name>``."""

    name: str
    weight: float
    temperature: float

    def __call__(self, student_logits, teacher_logits):
        loss = DISTILLATION_LOSSES[self.name](student_logits, teacher_logits, self.temperature)
        return self.weight * loss
