"""mIoU recounted from saved predictions, apart from the package's own metric code.

    .venv/bin/python scripts/recount_miou.py PREDICTIONS_DIR [--split test] [--data ../shared/camvid]

PREDICTIONS_DIR holds one uint8 label PNG per frame, named as the frame (`road-seg-eval --save-predictions`).
Counted as the dataset's README says: one confusion matrix over the whole split, void (11) ignored, the mean
over ids 0-10 of TP / (TP + FP + FN). Reads the split list and the PNGs itself (OpenCV and numpy only).
"""

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

CLASSES, VOID = 11, 11


def read_png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        sys.exit(f"recount_miou: cannot read {path}")
    return image


def recount(predictions: Path, data: Path, split: str) -> tuple:
    """(mIoU %, per-class IoU %, frames) of the PNGs in ``predictions`` against ``split``'s labels."""
    confusion = np.zeros((CLASSES, CLASSES), np.int64)
    lines = [line.split() for line in (data / f"{split}.txt").read_text().splitlines() if line.strip()]
    for image, label in lines:
        truth = read_png(data / label).astype(np.int64)
        predicted = read_png(predictions / Path(image).name).astype(np.int64)
        if predicted.shape != truth.shape:
            sys.exit(f"recount_miou: {image}: prediction {predicted.shape} against label {truth.shape}")
        kept = truth != VOID
        confusion += np.bincount(truth[kept] * CLASSES + predicted[kept], minlength=CLASSES * CLASSES).reshape(
            CLASSES, CLASSES
        )
    hits = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - hits
    iou = 100.0 * hits / np.maximum(union, 1)
    return float(iou.mean()), iou, len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "camvid")
    args = parser.parse_args()
    miou, iou, frames = recount(args.predictions, args.data, args.split)
    print(f"{frames} frames of {args.split}: mIoU {miou:.2f} ({' '.join(f'{value:.1f}' for value in iou)})")


if __name__ == "__main__":
    main()
