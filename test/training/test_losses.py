"""Distillation terms vanish when student equals teacher and grow otherwise; OHEM keeps hard pixels."""

import torch

from road_seg_ros.core.labels import IGNORE_INDEX
from road_seg_ros.training.losses import (
    OhemCrossEntropy,
    channel_wise_distillation_loss,
    pixel_kd_loss,
    supervised_loss,
)


def test_pixel_kd_and_cwd_are_zero_for_equal_logits_and_positive_otherwise():
    torch.manual_seed(0)
    teacher = torch.randn(2, 11, 8, 12)
    for loss in (pixel_kd_loss, channel_wise_distillation_loss):
        assert loss(teacher.clone(), teacher, 2.0).abs() < 1e-6
        assert loss(torch.randn(2, 11, 8, 12), teacher, 2.0) > 1e-3


def test_cwd_normalises_each_channel_over_positions():
    # shifting a channel by a constant changes nothing for spatial softmax, unlike pixel KD
    teacher = torch.randn(1, 3, 4, 4)
    shifted = teacher + torch.tensor([1.0, -2.0, 5.0]).view(1, 3, 1, 1)
    assert channel_wise_distillation_loss(shifted, teacher, 1.0).abs() < 1e-5
    assert pixel_kd_loss(shifted, teacher, 1.0) > 1e-3


def test_distillation_gradients_pull_student_towards_teacher():
    teacher = torch.randn(1, 11, 6, 6)
    student = torch.zeros(1, 11, 6, 6, requires_grad=True)
    optimizer = torch.optim.SGD([student], lr=5.0)
    before = channel_wise_distillation_loss(student, teacher, 1.0).item()
    for _ in range(20):
        optimizer.zero_grad()
        (pixel_kd_loss(student, teacher) + channel_wise_distillation_loss(student, teacher, 1.0)).backward()
        optimizer.step()
    assert channel_wise_distillation_loss(student, teacher, 1.0).item() < 0.5 * before


def test_ohem_ignores_void_and_focuses_on_hard_pixels():
    logits = torch.zeros(1, 3, 1, 4)
    logits[0, 0] = torch.tensor([9.0, 9.0, 9.0, -9.0])  # class 0 confident everywhere but the last pixel
    target = torch.tensor([[[0, 0, IGNORE_INDEX, 0]]])
    ohem = OhemCrossEntropy(threshold=0.7, min_kept=1)
    hard_only = torch.nn.functional.cross_entropy(logits[..., 3:], target[..., 3:])
    assert torch.isclose(ohem(logits, target), hard_only)
    assert supervised_loss("ce")(logits, target) < ohem(logits, target)
