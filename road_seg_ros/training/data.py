"""CamVid: split lists, decoding, in-memory datasets and training augmentation.

Frames are decoded once and held as uint8 arrays (all of CamVid is about
0.5 GB), so loading never limits training speed.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.labels import IGNORE_INDEX, NUM_CLASSES
from ..core.resources import REPO_ROOT

SPLITS = ("train", "val", "test")


class DataError(RuntimeError):
    """The data set cannot be read; the message is one line naming why."""


def camvid_root(root=None) -> Path:
    """``root`` if given, else $CAMVID_ROOT, else ../shared/camvid beside the checkout."""
    chosen = root or os.environ.get("CAMVID_ROOT") or REPO_ROOT.parent / "shared" / "camvid"
    chosen = Path(chosen)
    if not (chosen / "train.txt").is_file():
        raise DataError(f"no CamVid data set at {chosen} (expected train.txt there; pass --data or set CAMVID_ROOT)")
    return chosen


@dataclass(frozen=True)
class Sample:
    name: str  # file stem, e.g. 0001TP_008550; sorting gives each drive in time order
    image: Path
    label: Path


def parse_split(spec: str) -> list[str]:
    """A split name, or several joined by '+' (``train+val``, the CamVid convention for a final model)."""
    names = spec.split("+") if isinstance(spec, str) else [spec]
    if not all(name in SPLITS for name in names) or len(set(names)) != len(names):
        raise DataError(f"split must be one of {', '.join(SPLITS)} or several joined by '+', got {spec!r}")
    return names


def read_split(root, split: str) -> list[Sample]:
    """The samples of a split (or splits joined by '+'), sorted by name (drive, then time)."""
    names = parse_split(split)
    root = camvid_root(root)
    samples = []
    for name in names:
        samples += _read_list(root, name)
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
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
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

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.transform(self.images[index], self.labels[index])


def to_tensors(image: np.ndarray, label: np.ndarray):
    """uint8 HWC image -> uint8 CHW tensor; label -> int64 tensor. Normalisation happens on the device."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.from_numpy(label.astype(np.int64))


class TrainAugmentation:
    """Random scale, crop (void-padded), horizontal flip and photometric jitter.

    From-scratch training on 367 frames lives or dies by augmentation; the
    scale range follows the DABNet/CGNet recipes (about 0.5 to 2).
    """

    def __init__(self, crop_size=(360, 480), scale_range=(0.5, 2.0), jitter=0.3, seed=None):
        self.crop_height, self.crop_width = crop_size
        self.scale_range = scale_range
        self.jitter = jitter
        self.rng = np.random.default_rng(seed)

    def __call__(self, image, label):
        scale = self.rng.uniform(*self.scale_range)
        height, width = label.shape
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        image, label = self._pad(image, label)
        top = self.rng.integers(0, image.shape[0] - self.crop_height + 1)
        left = self.rng.integers(0, image.shape[1] - self.crop_width + 1)
        image = image[top : top + self.crop_height, left : left + self.crop_width]
        label = label[top : top + self.crop_height, left : left + self.crop_width]
        if self.rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        return to_tensors(self._photometric(image), label)

    def _pad(self, image, label):
        pad_h = max(0, self.crop_height - image.shape[0])
        pad_w = max(0, self.crop_width - image.shape[1])
        if pad_h or pad_w:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=IGNORE_INDEX)
        return image, label

    def _photometric(self, image):
        if not self.jitter:
            return image
        brightness = 1.0 + self.rng.uniform(-self.jitter, self.jitter)
        contrast = 1.0 + self.rng.uniform(-self.jitter, self.jitter)
        saturation = 1.0 + self.rng.uniform(-self.jitter, self.jitter)
        pixels = image.astype(np.float32) * brightness
        pixels = (pixels - pixels.mean()) * contrast + pixels.mean()
        gray = pixels.mean(axis=2, keepdims=True)
        pixels = (pixels - gray) * saturation + gray
        return np.clip(pixels, 0, 255).astype(np.uint8)


def class_weights(labels, num_classes=NUM_CLASSES, c=1.10) -> torch.Tensor:
    """ENet class weights w = 1 / ln(c + p_class), from the pixel frequencies of ``labels``."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for label in labels:
        counts += np.bincount(label.ravel(), minlength=256)[:num_classes]
    frequency = counts / max(counts.sum(), 1.0)
    return torch.tensor(1.0 / np.log(c + frequency), dtype=torch.float32)


class DeviceAugmentation:
    """TrainAugmentation's random scale, crop, flip and jitter for a whole batch at once, on the batch's device.

    The training set lives on the GPU as uint8 tensors; each batch is one
    affine ``grid_sample`` per tensor, so the GPU never waits for a loader.
    """

    def __init__(self, crop_size=(360, 480), scale_range=(0.5, 2.0), jitter=0.3, generator=None):
        self.crop_height, self.crop_width = crop_size
        self.scale_range = scale_range
        self.jitter = jitter
        self.generator = generator

    def _uniform(self, n, low, high, device):
        return low + (high - low) * torch.rand(n, device=device, generator=self.generator)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        """uint8 N x 3 x H x W and integer N x H x W -> uint8 N x 3 x h x w and int64 N x h x w (crop size)."""
        n, _, height, width = images.shape
        device = images.device
        scale = self._uniform(n, *self.scale_range, device)
        # In normalised coordinates a crop of the scaled image spans crop / (size * scale) of the source.
        span_x = self.crop_width / (width * scale)
        span_y = self.crop_height / (height * scale)
        # Crop centre anywhere that keeps the crop inside the image, or centred when the image is smaller (padding).
        centre_x = (1 - span_x).clamp(min=0) * self._uniform(n, -1.0, 1.0, device)
        centre_y = (1 - span_y).clamp(min=0) * self._uniform(n, -1.0, 1.0, device)
        flip = torch.where(torch.rand(n, device=device, generator=self.generator) < 0.5, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3, device=device)
        theta[:, 0, 0] = span_x * flip
        theta[:, 0, 2] = centre_x
        theta[:, 1, 1] = span_y
        theta[:, 1, 2] = centre_y
        grid = torch.nn.functional.affine_grid(theta, (n, 1, self.crop_height, self.crop_width), align_corners=False)
        sampled = torch.nn.functional.grid_sample(images.float(), grid, mode="bilinear", align_corners=False)
        # Labels shifted by one so that the zero padding of grid_sample becomes the void class.
        shifted = (labels.float() + 1).unsqueeze(1)
        label_crop = torch.nn.functional.grid_sample(shifted, grid, mode="nearest", align_corners=False)
        label_crop = label_crop.squeeze(1).long() - 1
        label_crop[label_crop < 0] = IGNORE_INDEX
        return self._photometric(sampled).round().clamp(0, 255).to(torch.uint8), label_crop

    def _photometric(self, images):
        if not self.jitter:
            return images
        n, device = images.shape[0], images.device
        brightness, contrast, saturation = (
            1.0 + self._uniform(n, -self.jitter, self.jitter, device).view(n, 1, 1, 1) for _ in range(3)
        )
        images = images * brightness
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * contrast + mean
        gray = images.mean(dim=1, keepdim=True)
        return (images - gray) * saturation + gray
