"""scripts/recount_miou.py: the same mIoU as the package's metric, counted apart, from PNG files on disk."""

import importlib.util

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT

from road_seg_ros.training.metrics import ConfusionMatrix

spec = importlib.util.spec_from_file_location("recount_miou", REPO_ROOT / "scripts" / "recount_miou.py")
recount_miou = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recount_miou)


def test_the_recount_equals_the_package_metric_and_ignores_void(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "testannot").mkdir()
    (tmp_path / "pred").mkdir()
    confusion, lines = ConfusionMatrix(), []
    for index in range(3):
        label = rng.integers(0, 12, (36, 48), dtype=np.uint8)  # 11: void
        predicted = np.where(rng.random(label.shape) < 0.6, np.minimum(label, 10), rng.integers(0, 11, label.shape))
        predicted = predicted.astype(np.uint8)
        cv2.imwrite(str(tmp_path / "testannot" / f"f{index}.png"), label)
        cv2.imwrite(str(tmp_path / "pred" / f"f{index}.png"), predicted)
        lines.append(f"test/f{index}.png testannot/f{index}.png")
        confusion.update(predicted, label)
    (tmp_path / "test.txt").write_text("\n".join(lines) + "\n")
    miou, iou, frames = recount_miou.recount(tmp_path / "pred", tmp_path, "test")
    assert frames == 3 and iou.shape == (11,)
    assert miou == pytest.approx(100 * confusion.miou(), abs=1e-9)
    labels = [cv2.imread(str(tmp_path / "testannot" / f"f{index}.png"), cv2.IMREAD_UNCHANGED) for index in range(3)]
    for index, label in enumerate(labels):  # void predicted anywhere else changes nothing: void pixels are not counted
        predicted = cv2.imread(str(tmp_path / "pred" / f"f{index}.png"), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(tmp_path / "pred" / f"f{index}.png"), np.where(label == 11, 0, predicted).astype(np.uint8))
    assert recount_miou.recount(tmp_path / "pred", tmp_path, "test")[0] == pytest.approx(miou, abs=1e-9)
