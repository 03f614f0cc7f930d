"""The model's input normalisation and resize choice, shared by the host and device pipelines and by training."""

import cv2
import numpy as np
import torch


def normalisation(mean, std) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` per RGB channel so that ``uint8 * scale + offset`` is the normalised input."""
    scale = 1.0 / (255.0 * np.asarray(std, dtype=np.float64))
    offset = -np.asarray(mean, dtype=np.float64) / np.asarray(std, dtype=np.float64)
    return scale.astype(np.float32), offset.astype(np.float32)


class Normalize(torch.nn.Module):
    """uint8 (or whole-level float) N x 3 x H x W on any device -> the normalised float batch, channels_last."""

    def __init__(self, mean, std):
        super().__init__()
        scale, offset = normalisation(mean, std)
        self.register_buffer("scale", torch.from_numpy(scale).view(1, 3, 1, 1))
        self.register_buffer("offset", torch.from_numpy(offset).view(1, 3, 1, 1))

    def forward(self, images):
        return (images.float() * self.scale + self.offset).contiguous(memory_format=torch.channels_last)


def is_shrinking(frame_size, target_size) -> bool:
    """True when no side grows: area averaging then, bilinear interpolation otherwise."""
    return target_size[0] <= frame_size[0] and target_size[1] <= frame_size[1]


def resize_frame(rgb: np.ndarray, input_size) -> np.ndarray:
    """A uint8 H x W x 3 frame at the model's ``input_size`` (height, width), as the host pipeline feeds it."""
    if rgb.shape[:2] == tuple(input_size):
        return rgb
    height, width = input_size
    shrinking = is_shrinking(rgb.shape[:2], input_size)
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


MIN_INPUT_SIDE = 32  # pixels per side, at least, of any size the model runs at
# Aspect-kept widths differ from the model's by whole multiples of this: the deepest stride of the shipped
# architectures (the student's is 8, EfficientNet-Lite's 32), so every feature map keeps whole cells.
WIDTH_STEP = 32
# How much wider or narrower than the model's an aspect-kept width may get: a 1 x 4096 frame must not make a
# 360 x 1.5 M input. Frames beyond it run at the limit, stretched that much less.
MAX_WIDTH_FACTOR = 4


def input_size_for(frame_size, input_size, keep_aspect: bool = True) -> tuple:
    """The (height, width) a frame of ``frame_size`` (height, width) runs at.

    Without ``keep_aspect``: ``input_size``, every frame stretched to it. With it: ``input_size``'s height and
    the width that keeps the frame's aspect, moved from ``input_size``'s width in whole WIDTH_STEPs (so a frame
    of the model's own aspect, CamVid's 720 x 960, runs at ``input_size`` exactly; 1280 x 720 at 360 x 640 for
    a 360 x 480 model), within MAX_WIDTH_FACTOR of it and at least MIN_INPUT_SIDE.
    """
    height, width = (int(side) for side in input_size)
    if not keep_aspect:
        return height, width
    exact = height * frame_size[1] / frame_size[0]
    exact = min(max(exact, width / MAX_WIDTH_FACTOR), width * MAX_WIDTH_FACTOR)
    kept = width + round((exact - width) / WIDTH_STEP) * WIDTH_STEP
    if kept < MIN_INPUT_SIDE:
        kept += -(-(MIN_INPUT_SIDE - kept) // WIDTH_STEP) * WIDTH_STEP
    return height, kept
