"""The CPU pipeline: OpenCV resize, numpy normalisation into a reused buffer, a host runner, OpenCV nearest resize."""

import time

import cv2
import numpy as np
import torch

from .preprocess import normalisation, resize_frame
from .result import Segmentation


class HostPipeline:
    """Frames through a host runner (PyTorch on the CPU, ONNX Runtime, OpenVINO).

    The buffer has the layout the runner reads: 1 x H x W x 3 for PyTorch's
    channels_last (so the tensor is a view of it), 1 x 3 x H x W for ONNX.
    A runner that normalises in its own graph (layout "rgb8") gets the resized
    uint8 frame itself, without a copy.
    """

    def __init__(self, runner, input_size, mean, std, colors: np.ndarray):
        self.runner = runner
        self.input_size = tuple(input_size)
        self.colors = colors
        self.takes_frames = runner.layout == "rgb8"
        self.channels_last = runner.layout in ("nhwc", "rgb8")  # rgb8: the buffer serves preprocess_tensor only
        height, width = self.input_size
        scale, offset = normalisation(mean, std)
        if self.channels_last:
            # Rows of W * 3 values with the per-channel constants tiled along them: numpy's inner loop
            # then runs over a whole row instead of 3 values (4x faster at 360x480).
            self._buffer = np.empty((1, height, width, 3), np.float32)
            self._target = self._buffer.reshape(height, width * 3)
            self._scale, self._offset = np.tile(scale, width), np.tile(offset, width)
        else:
            self._buffer = np.empty((1, 3, height, width), np.float32)
            self._target = self._buffer
            self._scale, self._offset = scale.reshape(1, 3, 1, 1), offset.reshape(1, 3, 1, 1)

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """The batch the runner takes: the normalised buffer, or for "rgb8" the resized frame (1 x H x W x 3)."""
        rgb = resize_frame(rgb, self.input_size)
        return np.ascontiguousarray(rgb)[np.newaxis] if self.takes_frames else self.normalise(rgb)

    def normalise(self, rgb: np.ndarray) -> np.ndarray:
        height, width = self.input_size
        pixels = rgb.reshape(height, width * 3) if self.channels_last else rgb.transpose(2, 0, 1)[np.newaxis]
        np.multiply(pixels, self._scale, out=self._target)
        np.add(self._target, self._offset, out=self._target)
        return self._buffer

    def preprocess_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(self.normalise(resize_frame(rgb, self.input_size)))
        return tensor.permute(0, 3, 1, 2) if self.channels_last else tensor

    def inference_step(self, rgb: np.ndarray):
        batch = self.preprocess(rgb).copy()
        return lambda: self.runner(batch)

    def run(self, rgb, with_color, with_overlay, alpha) -> Segmentation:
        timer = HostTimer()
        batch = self.preprocess(rgb)
        timer.lap("preprocess")
        labels = self.runner(batch)[0]
        timer.lap("inference")
        if labels.shape != rgb.shape[:2]:
            labels = cv2.resize(labels, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        color = overlay = None
        if with_color or with_overlay:
            color = np.take(self.colors, labels, axis=0)
        if with_overlay:
            overlay = cv2.addWeighted(rgb, 1.0 - alpha, color, alpha, 0.0)
        timer.lap("postprocess")
        return Segmentation(labels, timer.finish(), color if with_color else None, overlay)


class HostTimer:
    """Wall-clock time per stage on the host."""

    def __init__(self):
        self._start = self._last = time.perf_counter()
        self.laps = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = (now - self._last) * 1000.0
        self._last = now

    def finish(self) -> dict:
        self.laps["total"] = (self._last - self._start) * 1000.0
        return self.laps
