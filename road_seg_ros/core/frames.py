"""Frames as the engine takes them (H x W x 3 uint8 RGB), synthetic ones for checks, and message stamps."""

import cv2
import numpy as np


def check_frame(rgb) -> None:
    """Raises ValueError naming what is wrong with a frame the engine cannot take."""
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(rgb).__name__}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, got {rgb.dtype}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"frame must be H x W x 3 RGB, got shape {rgb.shape}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"frame is empty: {rgb.shape[1]}x{rgb.shape[0]}")


def synthetic_frames(size, count=3, seed=0) -> list[np.ndarray]:
    """Deterministic frames at ``size`` (height, width): smooth colour fields with edges, like a scene's regions."""
    height, width = size
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (height // 24 + 2, width // 24 + 2, 3), dtype=np.uint8)
        frames.append(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC))
    return frames


def stamp_ns(header) -> int:
    """A message header's stamp in nanoseconds (rclpy and rosbags messages alike)."""
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def split_ns(nanoseconds: int) -> tuple[int, int]:
    """Nanoseconds -> (sec, nanosec), a builtin_interfaces/Time's fields."""
    return nanoseconds // 10**9, nanoseconds % 10**9
