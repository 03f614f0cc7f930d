"""Self-training on unlabeled frames: the student learns a teacher's soft targets on a new drive.

Each step mixes a batch of the new drive's frames, strongly augmented, with
the teacher's class probabilities warped alike (pixel KD and CWD), plus
cross-entropy on the pixels the teacher is confident about (a threshold per
class, as CBST does, so road and sky do not drown the rare classes), with a
labeled CamVid batch so the classes rare on the new drive are not forgotten.
The weights and the BatchNorm statistics are averaged (EMA); those statistics
come from the training passes, half the new drive's frames and half CamVid's.
Re-estimating them on the new drive alone (AdaBN) lowered the shipped student's
agreement with its own multi-scale teacher on held-out Seq05VD frames from 95.3%
to 92.6% before any fine-tuning, so it is not done. The result lies halfway between
that average and the base (``base_weight``).
"""

import copy
import math
from dataclasses import dataclass, replace

import cv2
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from ..core.labels import IGNORE_INDEX
from ..core.preprocess import Normalize, is_shrinking
from .augment import Augmentation, DeviceAugmentation
from .config import default_distillation
from .losses import DistillationTerm, supervised_loss
from .optim import PolySchedule, load_scheduler_state, make_optimizer


@dataclass(frozen=True)
class SelfTrainingSettings:
    lr: float = 5e-4  # a fine-tune: a tenth of from-scratch training's peak
    weight_decay: float = 0.01
    target_batch: int = 4
    source_batch: int = 4
    source_weight: float = 1.0  # the labeled CamVid batch's cross-entropy
    confident_weight: float = 1.0  # cross-entropy on the teacher's confident pixels
    confidence_quantile: float = 0.5  # per class: the median confidence of its pixels, capped below
    max_threshold: float = 0.9
    ema_decay: float = 0.99
    # The result is base_weight x the base's weights + the rest x the fine-tuned average (WiSE-FT, Wortsman et
    # al., CVPR 2022): interpolating back towards the base keeps more of what it knew. 0.5 against 0, wide
    # default on Seq05VD's odd frames (development loop, docs/results.md): val 85.39 against 84.15 (base
    # 85.65), held-out agreement with the teacher 96.79 against 96.24 (base 96.55).
    base_weight: float = 0.5
    warmup_steps: int = 20
    distillation: tuple = tuple(DistillationTerm(**term) for term in default_distillation())  # training's own
    # Strong views of the new drive: no rotation or shrinking below the crop, so no void padding.
    augmentation: Augmentation = Augmentation(
        crop_size=(256, 320),
        scale_range=(0.75, 1.5),
        rotation_degrees=0.0,
        jitter=0.4,
        hue_degrees=20.0,
        gamma_range=(0.6, 1.6),
        blur_probability=0.0,
        noise_std=6.0,
        rare_crop_probability=0.0,
        rare_classes=(),
    )


def with_crop(settings: SelfTrainingSettings, input_size, crop_size=None) -> SelfTrainingSettings:
    """``settings`` with views of the new drive cropped to ``crop_size`` from frames at the model's ``input_size``
    (default: the settings' crop, or the input size where smaller).

    The smallest zoom rises so that a view never shrinks below the crop: no void padding, whose teacher
    probabilities would be zeros.
    """
    if crop_size is None:
        crop_size = [min(side, limit) for side, limit in zip(settings.augmentation.crop_size, input_size)]
    if crop_size[0] > input_size[0] or crop_size[1] > input_size[1]:
        raise ValueError(f"crop {crop_size[0]}x{crop_size[1]} is larger than the model's input "
                         f"{input_size[0]}x{input_size[1]}")  # fmt: skip
    low, high = settings.augmentation.scale_range
    low = max(low, crop_size[0] / input_size[0], crop_size[1] / input_size[1])
    augmentation = replace(settings.augmentation, crop_size=tuple(crop_size), scale_range=(low, max(low, high)))
    return replace(settings, augmentation=augmentation)


# The floor of the teacher's probabilities (stored in half precision) and of the student's, in the distillation
# terms: both sides are log-probabilities floored alike.
PROBABILITY_FLOOR = 1e-6


def distillation_losses(terms, student_logits: torch.Tensor, teacher_probabilities: torch.Tensor) -> dict:
    """Each distillation term between the student and a teacher given as class probabilities.

    The student's logits become log-probabilities floored like the teacher's. Pixel KD does not notice (a
    softmax over classes ignores a per-pixel shift), but CWD's softmax over positions does: raw logits against
    log-probabilities put the weighted CWD term at 7.66 between the shipped student and its own multi-scale
    teacher, with which it agrees on 96% of pixels; with both floored log-probabilities it is 0.83
    (scripts/teacher_gap.py on Seq05VD frames). The adaptation had spent its steps on that gap.
    """
    floor = math.log(PROBABILITY_FLOOR)
    student = torch.log_softmax(student_logits.float(), dim=1).clamp_min(floor)
    teacher = torch.log(teacher_probabilities.float().clamp_min(PROBABILITY_FLOOR))
    return {f"kd_{term.name}": term(student, teacher) for term in terms}


def class_thresholds(probabilities: torch.Tensor, quantile: float, cap: float) -> torch.Tensor:
    """Per class, the ``quantile`` of the teacher's confidence over the pixels it gives that class, at most ``cap``.

    ``probabilities``: N x C x H x W. Classes the teacher never predicts get ``cap``.
    """
    confidence, labels = probabilities.float().max(dim=1)
    thresholds = torch.full((probabilities.shape[1],), cap)
    for label in labels.unique().tolist():
        values = confidence[labels == label]
        sample = values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(label))[:100_000]]
        thresholds[label] = min(cap, float(torch.quantile(sample, quantile)))
    return thresholds


def pseudo_labels(probabilities: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """The teacher's labels where it is confident for that class, void elsewhere (N x H x W int64)."""
    confidence, labels = probabilities.float().max(dim=1)
    labels[confidence < thresholds.to(labels.device)[labels]] = IGNORE_INDEX
    return labels


class SelfTraining:
    """The adaptation loop's state: student, its average, optimiser, schedule, and the data it draws from.

    ``frames``: N x 3 x h x w uint8 of the new drive at the model's input size; ``probabilities``: the
    teacher's N x C x h x w class probabilities for them; ``source``: a CamVid dataset whose transform
    augments (or None for no labeled batches); ``class_weight``: the source loss's class weights.
    """

    def __init__(self, student, frames, probabilities, source, class_weight, info, budget_seconds, settings,
                 device, seed=0):  # fmt: skip
        self.settings, self.device = settings, device
        self.student = student.to(device).train()
        self.base_state = {name: tensor.detach().clone() for name, tensor in self.student.state_dict().items()}
        self.ema = AveragedModel(self.student, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True)
        self.normalize = Normalize(info.mean, info.std).to(device)
        self.frames, self.probabilities = frames, probabilities
        self.labels = pseudo_labels(probabilities, class_thresholds(probabilities, settings.confidence_quantile,
                                                                    settings.max_threshold))  # fmt: skip
        self.generator = torch.Generator().manual_seed(seed)
        self.augment = DeviceAugmentation(settings.augmentation, self.generator)
        self.source = iter(()) if source is None else _forever(source, settings.source_batch, seed)
        self.source_loss = supervised_loss("weighted_ce", class_weight.to(device)) if source is not None else None
        self.confident_loss = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
        self.optimizer = make_optimizer(self.student, "adamw", settings.lr, settings.weight_decay)
        # steps are open-ended: the time budget alone anneals the learning rate
        self.schedule = PolySchedule(10**9, settings.warmup_steps, budget_seconds)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)
        self.steps = 0

    def step(self) -> dict:
        """One optimisation step; returns its loss terms."""
        index = torch.randint(len(self.frames), (self.settings.target_batch,), generator=self.generator)
        images, labels, soft = self.augment(self.frames[index], self.labels[index], self.probabilities[index])
        logits = self.student(self.normalize(images.to(self.device)))["out"]
        parts = distillation_losses(self.settings.distillation, logits, soft.to(self.device))
        parts["confident"] = self.settings.confident_weight * self.confident_loss(logits, labels.to(self.device))
        if self.source_loss is not None:
            images, labels = next(self.source)
            source_logits = self.student(self.normalize(images.to(self.device)))["out"]
            parts["source"] = self.settings.source_weight * self.source_loss(source_logits, labels.to(self.device))
        loss = sum(parts.values())
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"the adaptation loss became {loss.item()} at step {self.steps}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update_parameters(self.student)
        self.steps += 1
        return {name: value.item() for name, value in parts.items()}

    def budget_spent(self) -> bool:
        return self.schedule.elapsed() >= self.schedule.budget_seconds

    def adapted_model(self):
        """The averaged weights and BatchNorm statistics, moved ``base_weight`` of the way back to the base's, in
        eval mode (integer buffers, BatchNorm's step counts, stay the average's)."""
        model = copy.deepcopy(self.ema.module).eval()  # the average itself stays as it is (resume, a second call)
        weight = self.settings.base_weight
        if weight:
            state = model.state_dict()
            model.load_state_dict({
                name: torch.lerp(tensor, self.base_state[name], weight) if tensor.is_floating_point() else tensor
                for name, tensor in state.items()
            })  # fmt: skip
        return model

    def state_dict(self) -> dict:
        return {
            "student": self.student.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "elapsed_seconds": self.schedule.elapsed(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        load_scheduler_state(self.scheduler, state["scheduler"], state["elapsed_seconds"])
        self.steps = state["steps"]


def _forever(dataset, batch_size: int, seed: int):
    """Labeled batches without end, reshuffled each pass."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator)


def resized_for_model(rgb, input_size) -> torch.Tensor:
    """An H x W x 3 uint8 frame at the model's input size, as the engine resizes it, as a 3 x h x w tensor."""
    height, width = input_size
    if rgb.shape[:2] != tuple(input_size):
        interpolation = cv2.INTER_AREA if is_shrinking(rgb.shape[:2], input_size) else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (width, height), interpolation=interpolation)
    return torch.from_numpy(rgb.transpose(2, 0, 1).copy())
