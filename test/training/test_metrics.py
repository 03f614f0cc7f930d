"""Metrics match a confusion matrix computed by hand."""

import numpy as np
import pytest

from road_seg_ros.training.metrics import ConfusionMatrix, format_iou_table


def test_confusion_matrix_iou_matches_hand_computation():
    target = np.array([[0, 0, 1, 1], [2, 2, 3, 3]])  # 3 is void here
    prediction = np.array([[0, 1, 1, 1], [2, 0, 0, 2]])
    confusion = ConfusionMatrix(num_classes=3, ignore_index=3)
    confusion.update(prediction, target)
    # rows = truth, cols = prediction
    assert confusion.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 1, FN 1 -> 1/2
    assert confusion.iou() == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert confusion.miou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert confusion.pixel_accuracy() == pytest.approx(4 / 6)


def test_split_level_not_per_image_mean_and_absent_classes():
    confusion = ConfusionMatrix(num_classes=3, ignore_index=255)
    confusion.update(np.array([0, 0]), np.array([0, 0]))
    confusion.update(np.array([1, 0]), np.array([1, 1]))
    # class 0: TP 2, FP 1 -> 2/3; class 1: TP 1, FN 1 -> 1/2; class 2 absent -> NaN, excluded
    assert confusion.iou()[:2] == pytest.approx([2 / 3, 1 / 2])
    assert np.isnan(confusion.iou()[2])
    summary = confusion.summary(["a", "b", "c"])
    assert summary["miou"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
    assert summary["per_class_iou"]["c"] is None
    assert "| **mIoU** | **58.33** |" in format_iou_table(summary)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in size"):
        ConfusionMatrix().update(np.zeros(3), np.zeros(4))
