"""CamVid: split lists, decoding and in-memory datasets.

Frames are decoded once and held as uint8 arrays (all of CamVid is about
0.5 GB), so loading never limits training speed.
"""

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.labels import NUM_CLASSES
from ..core.resources import REPO_ROOT

SPLITS = ("train", "val", "test")


class DataError(RuntimeError):
    """The data set cannot be read; the message is one line naming why."""


def camvid_root(root=None) -> Path:
    """``root`` if given, else $CAMVID_ROOT, else ../shared/camvid beside the checkout."""
    root = Path(root or os.environ.get("CAMVID_ROOT") or REPO_ROOT.parent / "shared" / "camvid")
    if not (root / "train.txt").is_file():
        raise DataError(f"no CamVid data set at {root} (expected train.txt there; pass --data or set CAMVID_ROOT)")
    return root


@dataclass(frozen=True)
class Sample:
    name: str  # file stem, e.g. 0001TP_008550; sorting gives each drive in time order
    image: Path
    label: Path


@dataclass(frozen=True)
class SplitSpec:
    """Splits joined by '+', and optionally one drive kept alone ('@DRIVE') or left out ('-DRIVE').

    ``train+val-0006R0`` trains on every labeled frame but one drive's, and ``train@0006R0`` validates on that
    drive alone: a held-out drive, the only way to choose a recipe for unseen roads without test frames (val
    is the same drive as 0016E5's training frames).
    """

    names: tuple
    drive: str | None = None
    keep_drive: bool = True  # True: only the drive's frames; False: all but the drive's

    def selects(self, sample: Sample) -> bool:
        if self.drive is None:
            return True
        return sample.name.startswith(f"{self.drive}_") == self.keep_drive


def parse_split(spec: str) -> SplitSpec:
    """A split name, or several joined by '+' (``train+val``, the CamVid convention for a final model), then
    optionally '@DRIVE' (that drive's frames alone) or '-DRIVE' (all but that drive's)."""
    if not isinstance(spec, str):
        raise DataError(f"split must be a string, got {spec!r}")
    splits, drive, keep = spec, None, True
    for mark in ("@", "-"):
        if mark in spec:
            splits, drive = spec.split(mark, 1)
            keep = mark == "@"
            break
    names = splits.split("+")
    valid_drive = drive is None or (drive.isalnum() and drive)
    if not all(name in SPLITS for name in names) or len(set(names)) != len(names) or not valid_drive:
        raise DataError(
            f"split must be one of {', '.join(SPLITS)}, or several joined by '+', then optionally @DRIVE or -DRIVE "
            f"(e.g. train+val-0006R0), got {spec!r}"
        )
    return SplitSpec(tuple(names), drive, keep)


SPLIT_HELP = f"{', '.join(SPLITS)}, several joined by '+', then optionally @DRIVE or -DRIVE (e.g. train@0006R0)"


def split_argument(text: str) -> str:
    """An argparse type: a split spec that parse_split accepts (its error is the one line)."""
    try:
        parse_split(text)
    except DataError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def read_split(root, split: str) -> list[Sample]:
    """The samples of a split spec (see parse_split), sorted by name (drive, then time)."""
    spec = parse_split(split)
    root = camvid_root(root)
    listed = [sample for name in spec.names for sample in _read_list(root, name)]
    samples = [sample for sample in listed if spec.selects(sample)]
    if not samples:
        raise DataError(f"split {split!r} has no frames: no drive {spec.drive!r} in {'+'.join(spec.names)}")
    if len(samples) == len(listed) and spec.drive:
        raise DataError(f"split {split!r} leaves nothing out: no drive {spec.drive!r} in {'+'.join(spec.names)}")
    return sorted(samples, key=lambda s: s.name)


def _read_list(root: Path, split: str) -> list[Sample]:
    """The image/label pairs a split's list file names; DataError if it is missing or malformed."""
    path = root / f"{split}.txt"
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read split list {path}: {error}") from None
    samples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{path}:{number}: expected 'image label', got {line.strip()!r}")
        samples.append(Sample(Path(parts[0]).stem, root / parts[0], root / parts[1]))
    if not samples:
        raise DataError(f"split list {path} names no frames")
    return samples


def load_rgb(path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)  # as its label: unturned
    if bgr is None:
        raise DataError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_label(path) -> np.ndarray:
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None or label.ndim != 2:
        raise DataError(f"cannot read single-channel label {path}")
    return label


class CamVid(Dataset):
    """A split held in memory as uint8 arrays; ``transform(image, label)`` returns tensors."""

    def __init__(self, root, split, transform=None, limit=None):
        self.samples = read_split(root, split)[:limit]
        self.images = [load_rgb(s.image) for s in self.samples]
        self.labels = [load_label(s.label) for s in self.samples]
        self.transform = transform or to_tensors
        self.soft_targets = None  # per frame H x W x C arrays (a teacher's logits) the transform warps alike

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        if self.soft_targets is None:
            return self.transform(self.images[index], self.labels[index])
        return self.transform(self.images[index], self.labels[index], self.soft_targets[index])


def to_tensors(image: np.ndarray, label: np.ndarray):
    """uint8 HWC image -> uint8 CHW tensor; label -> int64 tensor. Normalisation happens on the device."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.from_numpy(label.astype(np.int64))


def class_weights(labels, num_classes=NUM_CLASSES, c=1.10) -> torch.Tensor:
    """ENet class weights w = 1 / ln(c + p_class), from the pixel frequencies of ``labels``."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for label in labels:
        counts += np.bincount(label.ravel(), minlength=256)[:num_classes]
    frequency = counts / max(counts.sum(), 1.0)
    return torch.tensor(1.0 / np.log(c + frequency), dtype=torch.float32)
