"""Segmentation metrics from one confusion matrix over a whole split.

mIoU is the mean over classes of TP / (TP + FP + FN), each summed over every
pixel of the split (CamVid's convention), never a mean of per-image scores.
Pixels labelled ``ignore_index`` count nowhere.
"""

import numpy as np
import torch

from ..core.labels import IGNORE_INDEX, NUM_CLASSES


class ConfusionMatrix:
    """Accumulates a num_classes x num_classes matrix: rows are ground truth, columns predictions."""

    def __init__(self, num_classes=NUM_CLASSES, ignore_index=IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction, target) -> None:
        """Adds one batch or image; accepts numpy arrays or tensors of the same shape."""
        prediction = _as_int64(prediction).ravel()
        target = _as_int64(target).ravel()
        if prediction.shape != target.shape:
            raise ValueError(f"prediction and target differ in size: {prediction.shape} vs {target.shape}")
        keep = (target != self.ignore_index) & (target >= 0) & (target < self.num_classes)
        index = target[keep] * self.num_classes + prediction[keep]
        self.matrix += np.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both ground truth and predictions."""
        true_positive = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - true_positive
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, true_positive / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes present (as a fraction, 0..1)."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.diag(self.matrix).sum() / total) if total else 0.0

    def summary(self, class_names) -> dict:
        """The JSON-ready result: percentages, per-class IoU by name (None where undefined)."""
        return {
            "miou": 100.0 * self.miou(),
            "pixel_accuracy": 100.0 * self.pixel_accuracy(),
            "per_class_iou": {
                name: (None if np.isnan(value) else 100.0 * float(value))
                for name, value in zip(class_names, self.iou())
            },
        }


def _as_int64(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.asarray(array).astype(np.int64, copy=False)


def format_iou_table(summary: dict) -> str:
    """A markdown table of per-class IoU with the mIoU as its last row."""
    lines = ["| class | IoU (%) |", "| --- | ---: |"]
    for name, value in summary["per_class_iou"].items():
        lines.append(f"| {name} | {'n/a' if value is None else f'{value:.2f}'} |")
    lines.append(f"| **mIoU** | **{summary['miou']:.2f}** |")
    return "\n".join(lines)
