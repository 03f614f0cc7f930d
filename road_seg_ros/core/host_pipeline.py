"""The CPU pipeline: OpenCV resize, numpy normalisation into a reused buffer, a host runner, OpenCV nearest resize."""

import time

import cv2
import numpy as np
import torch

from .preprocess import normalisation, resize_frame
from .result import Segmentation


class HostPipeline:
    """Frames through a host runner (PyTorch on the CPU, ONNX Runtime, OpenVINO), one at a time or as a batch.

    The buffer has the layout the runner reads: N x H x W x 3 for PyTorch's
    channels_last (so the tensor is a view of it), N x 3 x H x W for ONNX; it
    grows to the largest batch seen. A runner that normalises in its own graph
    (layout "rgb8") gets the resized uint8 frame itself, without a copy (a
    batch: the frames stacked).
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
            self._frame_shape = (height, width, 3)
            self._scale, self._offset = np.tile(scale, width), np.tile(offset, width)
        else:
            self._frame_shape = (3, height, width)
            self._scale, self._offset = scale.reshape(1, 3, 1, 1), offset.reshape(1, 3, 1, 1)
        self._buffer = np.empty((1, *self._frame_shape), np.float32)

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """The batch the runner takes: the normalised buffer, or for "rgb8" the resized frame (1 x H x W x 3)."""
        return self.preprocess_batch([rgb])

    def preprocess_batch(self, frames) -> np.ndarray:
        """The batch the runner takes for ``frames``, each resized to the input size first."""
        resized = [resize_frame(rgb, self.input_size) for rgb in frames]
        if self.takes_frames:
            return np.ascontiguousarray(resized[0])[np.newaxis] if len(resized) == 1 else np.stack(resized)
        if len(self._buffer) < len(resized):
            self._buffer = np.empty((len(resized), *self._frame_shape), np.float32)
        batch = self._buffer[: len(resized)]
        for index, rgb in enumerate(resized):
            self._normalise_into(rgb, batch[index : index + 1])
        return batch

    def normalise(self, rgb: np.ndarray) -> np.ndarray:
        """A frame at the input size, normalised into the buffer: the 1-frame batch."""
        return self._normalise_into(rgb, self._buffer[:1])

    def _normalise_into(self, rgb: np.ndarray, out: np.ndarray) -> np.ndarray:
        height, width = self.input_size
        if self.channels_last:
            pixels, target = rgb.reshape(height, width * 3), out.reshape(height, width * 3)  # out is contiguous: a view
        else:
            pixels, target = rgb.transpose(2, 0, 1)[np.newaxis], out
        np.multiply(pixels, self._scale, out=target)
        np.add(target, self._offset, out=target)
        return out

    def preprocess_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(self.normalise(resize_frame(rgb, self.input_size)))
        return tensor.permute(0, 3, 1, 2) if self.channels_last else tensor

    def inference_step(self, rgb: np.ndarray):
        batch = self.preprocess(rgb).copy()
        return lambda: self.runner(batch)

    def run_batch(self, frames, with_color, with_overlay, alpha) -> list[Segmentation]:
        """``frames`` through the runner as one batch; ``with_color`` and ``with_overlay``: one flag per frame.

        Every result carries the batch's stage times: each frame waited for all of them.
        """
        timer = HostTimer()
        batch = self.preprocess_batch(frames)
        timer.lap("preprocess")
        labels = self.runner(batch)
        timer.lap("inference")
        results = [
            self._outputs(rgb, frame_labels, color, overlay, alpha)
            for rgb, frame_labels, color, overlay in zip(frames, labels, with_color, with_overlay)
        ]
        timer.lap("postprocess")
        timings = timer.finish()
        return [Segmentation(labels, dict(timings), color, overlay) for labels, color, overlay in results]

    def _outputs(self, rgb, labels, with_color, with_overlay, alpha) -> tuple:
        """(labels at the frame's size, colours or None, overlay or None)."""
        if labels.shape != rgb.shape[:2]:
            labels = cv2.resize(labels, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        color = overlay = None
        if with_color or with_overlay:
            color = np.take(self.colors, labels, axis=0)
        if with_overlay:
            overlay = cv2.addWeighted(rgb, 1.0 - alpha, color, alpha, 0.0)
        return labels, color if with_color else None, overlay


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
