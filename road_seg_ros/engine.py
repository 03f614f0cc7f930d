"""The segmentation engine: RGB frame in, class-id image out. Knows nothing of ROS.

The node, the evaluator, the bag replay and the benchmark all call
``SegmentationEngine.segment``; its stage timings are the ones every front
end reports.
"""

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from .camvid_classes import color_table
from .checkpoint import load_checkpoint
from .models import fuse_conv_bn

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT_NAME = "student.safetensors"

DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("fp32", "fp16")


class EngineError(RuntimeError):
    """The engine cannot start as asked; the message is one line naming why."""


def default_checkpoint() -> Path:
    """The shipped student: models/ in a source checkout, else the installed package share."""
    candidates = [PACKAGE_ROOT / "models", Path(sys.prefix) / "share" / "road_seg_ros" / "models"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("road_seg_ros")) / "models")
    except (ImportError, LookupError, OSError):
        pass  # not in a ROS 2 workspace
    for folder in candidates:
        if (folder / DEFAULT_CHECKPOINT_NAME).is_file():
            return folder / DEFAULT_CHECKPOINT_NAME
    return candidates[0] / DEFAULT_CHECKPOINT_NAME


def resolve_device(device: str) -> torch.device:
    if device not in DEVICES:
        raise EngineError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EngineError("device 'cuda' requested but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(device)


@dataclass
class Segmentation:
    labels: np.ndarray  # H x W uint8 class ids, at the input's size
    timings_ms: dict = field(default_factory=dict)  # preprocess, inference, postprocess


class SegmentationEngine:
    """Loads a checkpoint once and segments frames of any size.

    Frames are resized to the model's input size (the size it was trained
    at), segmented, and the labels resized back with nearest-neighbour, so
    class ids are never blended.
    """

    def __init__(self, checkpoint=None, device="auto", precision="fp32", input_size=None, num_threads=None):
        if precision not in PRECISIONS:
            raise EngineError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = resolve_device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise EngineError("precision 'fp16' needs a CUDA device; use 'fp32' on CPU")
        if num_threads:
            torch.set_num_threads(num_threads)
        self.checkpoint = Path(checkpoint) if checkpoint else default_checkpoint()
        model, self.info = load_checkpoint(self.checkpoint)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.precision = precision
        self.input_size = tuple(input_size or self.info.input_size)
        if len(self.input_size) != 2 or min(self.input_size) < 32:
            raise EngineError(f"input_size must be [height, width] of at least 32, got {list(self.input_size)}")
        self.model = fuse_conv_bn(model).to(self.device, self.dtype, memory_format=torch.channels_last)
        scale = 255.0 * torch.tensor(self.info.std)
        self._mean = (255.0 * torch.tensor(self.info.mean)).view(1, 3, 1, 1).to(self.device)
        self._inv_std = (1.0 / scale).view(1, 3, 1, 1).to(self.device)
        self.color_table = color_table(self.info.class_colors)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    @property
    def class_names(self):
        return list(self.info.class_names)

    @property
    def model_name(self) -> str:
        return self.checkpoint.name

    def segment(self, rgb: np.ndarray) -> Segmentation:
        """Segments one H x W x 3 uint8 RGB frame."""
        check_frame(rgb)
        timer = _StageTimer(self.device)
        batch = self._preprocess(rgb)
        timer.lap("preprocess")
        with torch.inference_mode():
            logits = self.model(batch)["out"]
            labels = logits.argmax(dim=1)[0].to(torch.uint8)
        timer.lap("inference")
        labels = labels.cpu().numpy()
        if labels.shape != rgb.shape[:2]:
            labels = cv2.resize(labels, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        timer.lap("postprocess")
        return Segmentation(labels, timer.laps)

    def _preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        height, width = self.input_size
        tensor = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device, non_blocking=True)
        tensor = tensor.permute(2, 0, 1).unsqueeze(0).float()
        if tensor.shape[-2:] != (height, width):
            tensor = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        tensor = (tensor - self._mean) * self._inv_std
        return tensor.to(self.dtype).contiguous(memory_format=torch.channels_last)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Class ids -> H x W x 3 RGB with the checkpoint's class colours."""
        return self.color_table[labels]

    def overlay(self, rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5, color=None) -> np.ndarray:
        """Blends the class colours over the frame; ``alpha`` is the colours' weight."""
        color = self.colorize(labels) if color is None else color
        return cv2.addWeighted(rgb, 1.0 - alpha, color, alpha, 0.0)


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


class _StageTimer:
    """Wall-clock time per stage, synchronising CUDA so each stage is charged its own work."""

    def __init__(self, device: torch.device):
        self._sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self._last = time.perf_counter()
        self.laps = {}

    def lap(self, name: str) -> None:
        self._sync()
        now = time.perf_counter()
        self.laps[name] = (now - self._last) * 1000.0
        self._last = now
