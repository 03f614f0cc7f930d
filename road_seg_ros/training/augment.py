"""Training augmentation, on the CPU (one frame at a time, in DataLoader workers) or on the device (a batch).

From-scratch training on a few hundred frames lives or dies by augmentation,
and CamVid's test split is mostly a drive never seen in training (Seq05VD):
geometric (scale 0.5-2, crops, flips, slight rotation) and photometric
(brightness, contrast, saturation, hue, gamma, blur, noise) changes stand in
for other cameras, light and weather. Rare-class crops centre some crops on
a pole, sign, fence, pedestrian or bicyclist pixel, so those classes are
seen at full resolution more often.
"""

import math
from dataclasses import dataclass, fields

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from ..core.labels import IGNORE_INDEX
from .data import to_tensors

# RGB <-> YIQ: a hue shift is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


@dataclass(frozen=True)
class Augmentation:
    """The augmentation settings; TrainConfig holds their defaults and checks (same field names)."""

    crop_size: tuple
    scale_range: tuple
    rotation_degrees: float  # uniform in +-this
    jitter: float  # brightness, contrast and saturation factors uniform in 1 +- jitter
    hue_degrees: float  # hue shift uniform in +-this
    gamma_range: tuple  # gamma uniform in [low, high]; (1, 1): off
    blur_probability: float  # chance of a Gaussian blur (sigma 0.3..1.5)
    noise_std: float  # Gaussian noise, standard deviation uniform in [0, this] grey levels
    rare_crop_probability: float  # chance a crop is centred on a pixel of a rare class
    rare_classes: tuple

    @classmethod
    def from_config(cls, config) -> "Augmentation":
        return cls(**{field.name: getattr(config, field.name) for field in fields(cls)})


def hue_matrix(degrees: float) -> np.ndarray:
    """3x3 RGB -> RGB matrix that rotates hue by ``degrees`` (in YIQ space)."""
    angle = math.radians(degrees)
    rotation = np.array(
        [[1, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]], np.float32
    )
    return _YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ


class TrainAugmentation:
    """One frame: one affine warp (scale, rotation, crop; void outside), flip, then the photometric changes."""

    def __init__(self, settings: Augmentation, seed=None):
        self.settings = settings
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray, label: np.ndarray, soft: np.ndarray | None = None):
        """uint8 image and label -> tensors; ``soft`` (H x W x C, e.g. a teacher's logits) is warped alike,
        bilinearly, and returned third as a float C x h x w tensor."""
        image, label, soft = self._geometric(image, label, soft)
        tensors = to_tensors(self._photometric(image), label)
        if soft is None:
            return tensors
        return *tensors, torch.from_numpy(np.ascontiguousarray(soft.transpose(2, 0, 1)))

    def _geometric(self, image, label, soft=None):
        s, rng = self.settings, self.rng
        crop_h, crop_w = s.crop_size
        scale = rng.uniform(*s.scale_range)
        angle = rng.uniform(-s.rotation_degrees, s.rotation_degrees) if s.rotation_degrees else 0.0
        centre = self._crop_centre(label, crop_h / scale, crop_w / scale)
        # source -> crop: rotate and scale about the chosen centre, which lands in the crop's middle
        matrix = cv2.getRotationMatrix2D(centre, angle, scale)
        matrix[:, 2] += (crop_w / 2 - centre[0], crop_h / 2 - centre[1])
        image = cv2.warpAffine(image, matrix, (crop_w, crop_h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        label = cv2.warpAffine(label, matrix, (crop_w, crop_h), flags=cv2.INTER_NEAREST, borderValue=IGNORE_INDEX)
        if soft is not None:
            soft = cv2.warpAffine(soft.astype(np.float32), matrix, (crop_w, crop_h), flags=cv2.INTER_LINEAR)
        if rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
            soft = soft[:, ::-1] if soft is not None else None
        return image, label, soft

    def _crop_centre(self, label, span_h, span_w) -> tuple:
        """(x, y) in the source: on a rare-class pixel sometimes, else anywhere that keeps the crop inside."""
        s, rng = self.settings, self.rng
        height, width = label.shape
        if s.rare_crop_probability and rng.random() < s.rare_crop_probability:
            rare = np.flatnonzero(np.isin(label, s.rare_classes))
            if rare.size:
                y, x = divmod(int(rare[rng.integers(rare.size)]), width)
                return float(x), float(y)
        return _centre(width, span_w, rng), _centre(height, span_h, rng)

    def _photometric(self, image: np.ndarray) -> np.ndarray:
        s, rng = self.settings, self.rng
        pixels = image.astype(np.float32)
        if s.gamma_range[0] != 1.0 or s.gamma_range[1] != 1.0:
            pixels = 255.0 * (pixels / 255.0) ** rng.uniform(*s.gamma_range)
        if s.hue_degrees:
            pixels = pixels @ hue_matrix(rng.uniform(-s.hue_degrees, s.hue_degrees)).T
        if s.jitter:
            brightness, contrast, saturation = 1.0 + rng.uniform(-s.jitter, s.jitter, 3)
            pixels *= brightness
            mean = pixels.mean()
            pixels = (pixels - mean) * contrast + mean
            gray = pixels.mean(axis=2, keepdims=True)
            pixels = (pixels - gray) * saturation + gray
        if s.blur_probability and rng.random() < s.blur_probability:
            pixels = cv2.GaussianBlur(pixels, (5, 5), rng.uniform(0.3, 1.5))
        if s.noise_std:
            pixels += rng.normal(0.0, rng.uniform(0.0, s.noise_std), pixels.shape).astype(np.float32)
        return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)


def _centre(size: int, span: float, rng) -> float:
    """A crop centre along one axis: the crop inside the frame where it fits, else the frame centred in it."""
    if span >= size:
        return size / 2.0
    return rng.uniform(span / 2.0, size - span / 2.0)


class DeviceAugmentation:
    """TrainAugmentation for a whole batch at once on the batch's device (GPU training): one ``grid_sample``.

    Blur and rare-class crops are CPU-only (the config refuses them with device_augmentation).
    """

    def __init__(self, settings: Augmentation, generator=None):
        self.settings = settings
        self.generator = generator

    def _uniform(self, n, low, high, device):
        return low + (high - low) * torch.rand(n, device=device, generator=self.generator)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None = None):
        """uint8 N x 3 x H x W and integer N x H x W -> uint8 N x 3 x h x w and int64 N x h x w (crop size).

        ``soft`` (N x C x H x W, e.g. a teacher's class probabilities) is warped alike, bilinearly, and
        returned third.
        """
        s = self.settings
        crop_h, crop_w = s.crop_size
        n, _, height, width = images.shape
        device = images.device
        scale = self._uniform(n, *s.scale_range, device)
        angle = self._uniform(n, -s.rotation_degrees, s.rotation_degrees, device) * (math.pi / 180.0)
        # In normalised coordinates a crop of the scaled image spans crop / (size * scale) of the source.
        span_x, span_y = crop_w / (width * scale), crop_h / (height * scale)
        # Crop centre anywhere that keeps the crop inside the image, or centred when the image is smaller (padding).
        centre_x = (1 - span_x).clamp(min=0) * self._uniform(n, -1.0, 1.0, device)
        centre_y = (1 - span_y).clamp(min=0) * self._uniform(n, -1.0, 1.0, device)
        flip = torch.where(torch.rand(n, device=device, generator=self.generator) < 0.5, -1.0, 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(n, 2, 3, device=device)
        theta[:, 0, 0] = cos * span_x * flip
        theta[:, 0, 1] = -sin * span_y * height / width
        theta[:, 1, 0] = sin * span_x * width / height * flip
        theta[:, 1, 1] = cos * span_y
        theta[:, 0, 2], theta[:, 1, 2] = centre_x, centre_y
        grid = F.affine_grid(theta, (n, 1, crop_h, crop_w), align_corners=False)
        sampled = F.grid_sample(images.float(), grid, mode="bilinear", align_corners=False)
        # Labels shifted by one so that the zero padding of grid_sample becomes the void class.
        shifted = (labels.float() + 1).unsqueeze(1)
        label_crop = F.grid_sample(shifted, grid, mode="nearest", align_corners=False).squeeze(1).long() - 1
        label_crop[label_crop < 0] = IGNORE_INDEX
        images = self._photometric(sampled).round().clamp(0, 255).to(torch.uint8)
        if soft is None:
            return images, label_crop
        return images, label_crop, F.grid_sample(soft.float(), grid, mode="bilinear", align_corners=False)

    def _photometric(self, images):
        s = self.settings
        n, device = images.shape[0], images.device

        def per_image(low, high):
            return self._uniform(n, low, high, device).view(n, 1, 1, 1)

        if s.gamma_range[0] != 1.0 or s.gamma_range[1] != 1.0:
            images = 255.0 * (images / 255.0) ** per_image(*s.gamma_range)
        if s.hue_degrees:
            shifts = self._uniform(n, -s.hue_degrees, s.hue_degrees, device).tolist()
            matrices = torch.from_numpy(np.stack([hue_matrix(shift) for shift in shifts])).to(device)
            images = torch.einsum("nij,njhw->nihw", matrices, images)
        if s.jitter:
            images = images * per_image(1 - s.jitter, 1 + s.jitter)
            mean = images.mean(dim=(1, 2, 3), keepdim=True)
            images = (images - mean) * per_image(1 - s.jitter, 1 + s.jitter) + mean
            gray = images.mean(dim=1, keepdim=True)
            images = (images - gray) * per_image(1 - s.jitter, 1 + s.jitter) + gray
        if s.noise_std:
            noise = torch.randn(images.shape, device=device, generator=self.generator)
            images = images + noise * per_image(0.0, s.noise_std)
        return images
