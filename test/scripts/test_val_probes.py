"""scripts/val_probes.py: the per-class offset it adds to logits, and the one it fits."""

import importlib.util

import numpy as np
import torch
from conftest import REPO_ROOT

from road_seg_ros.core.labels import IGNORE_INDEX, NUM_CLASSES

spec = importlib.util.spec_from_file_location("val_probes", REPO_ROOT / "scripts" / "val_probes.py")
val_probes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(val_probes)


def random_case(seed=0, frames=2, height=16, width=20):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(NUM_CLASSES, (frames, height, width), generator=generator)
    labels[:, :2] = IGNORE_INDEX
    logits = torch.randn(frames, NUM_CLASSES, height, width, generator=generator)
    return logits, labels


def test_an_offset_moves_pixels_to_the_class_it_raises():
    logits, labels = random_case()
    bias = torch.zeros(NUM_CLASSES)
    bias[3] = 100.0
    shifted = val_probes.miou(logits, labels, bias)
    expected = 100 * (labels == 3).sum().item() / (labels != IGNORE_INDEX).sum().item() / NUM_CLASSES
    assert np.isclose(shifted, expected)


def test_the_fitted_offset_undoes_a_class_s_handicap():
    labels = torch.arange(NUM_CLASSES).repeat_interleave(10).view(1, 1, -1).expand(1, 4, -1).clone()
    logits = torch.nn.functional.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).float()
    logits[:, 5] -= 1.3  # class 5 now loses its own pixels to class 0, whose logit is 0 there
    handicapped = val_probes.miou(logits, labels)
    bias = val_probes.fit_bias(logits, labels)
    assert handicapped < 100 and val_probes.miou(logits, labels, bias) == 100
    assert bias[5] > 0
