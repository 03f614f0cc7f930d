"""The segmentation engine: RGB frame in, class-id image out. Knows nothing of ROS.

The node, the evaluator, the bag replay and the benchmark all call
``SegmentationEngine.segment``; its stage timings are the ones every front
end reports. ``segment_batch`` runs several frames (the node's cameras) as
one batch through the model, with the same results as one call each.

Per frame the engine does one resize, one normalisation, one forward pass
with its argmax, and one nearest-neighbour resize of the labels back to the
frame's size, plus the class colours and the overlay when asked for. The
size it resizes to keeps the frame's aspect ratio (``EngineOptions.keep_aspect``,
``preprocess.input_size_for``): each input size gets its own pipeline, built
at its first frame and kept, so a runtime that compiles for a shape
(OpenVINO, ONNX Runtime's export, torch.compile) does so once per camera size:

- on the CPU with OpenCV and numpy into reused buffers, then the backend's
  host runner (``HostPipeline``);
- on a CUDA GPU entirely on the device (``DevicePipeline``): the uint8 frame
  goes up through pinned memory, and only uint8 results come back.
"""

import copy
from collections import OrderedDict
from dataclasses import replace

import cv2
import numpy as np
import torch

from ..models import fuse_conv_bn
from .backends import RunnerSetup, resolve_backend, resolve_device, resolve_precision
from .checkpoint import load_checkpoint
from .device_pipeline import DevicePipeline
from .frames import check_frame
from .host_pipeline import HostPipeline
from .labels import color_table
from .options import DEFAULTS, THREAD_LIMITS, EngineError, EngineOptions
from .preprocess import MIN_INPUT_SIDE, input_size_for
from .result import Segmentation

# Input sizes whose pipelines (buffers, compiled models, CUDA graphs) are kept: one per camera aspect in practice;
# a stream of ever new aspects rebuilds the oldest instead of holding a compiled model for each.
MAX_INPUT_SIZES = 8


class SegmentationEngine:
    """Loads a checkpoint once and segments frames of any size.

    Frames are resized to an input size from the model's (the size it was
    trained at): its height and the frame's aspect, or stretched to it
    exactly without ``keep_aspect``; segmented, and the labels resized back
    with nearest-neighbour, so class ids are never blended. Not thread-safe:
    buffers are reused across frames.
    """

    def __init__(self, options: EngineOptions = DEFAULTS):
        self.checkpoint = options.checkpoint_path()
        model, info = load_checkpoint(self.checkpoint)
        self._setup(model, info, self.checkpoint.name, options)

    @classmethod
    def from_model(cls, model, info, name: str, options: EngineOptions = DEFAULTS) -> "SegmentationEngine":
        """An engine around a network in memory (eval mode, returning {"out": logits}); ``info``: a ModelInfo.

        The engine works on its own copy: folding BatchNorm and moving to a device or dtype change a network in
        place, and a caller may build several engines (precisions, backends) from one.
        """
        engine = cls.__new__(cls)
        engine.checkpoint = None
        engine._setup(copy.deepcopy(model), info, name, options)
        return engine

    def _setup(self, model, info, name, options: EngineOptions):
        self.options = options
        self.device = resolve_device(options.device, options.backend)
        backend = resolve_backend(options.backend, self.device, options.precision)
        self.backend = backend.name
        self.precision = resolve_precision(options.precision, backend, self.device)
        if not THREAD_LIMITS[0] <= options.num_threads <= THREAD_LIMITS[1]:
            raise EngineError(f"num_threads must be {THREAD_LIMITS[0]}..{THREAD_LIMITS[1]}, got {options.num_threads}")
        if options.num_threads:
            torch.set_num_threads(options.num_threads)
        self.info = info
        self.model_name = name
        self.input_size = tuple(options.input_size or info.input_size)
        if len(self.input_size) != 2 or min(self.input_size) < MIN_INPUT_SIDE:
            raise EngineError(
                f"input_size must be [height, width] of at least {MIN_INPUT_SIDE}, got {list(self.input_size)}"
            )
        self.color_table = color_table(info.class_colors)
        self.keep_aspect = bool(options.keep_aspect)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # cuda:N: streams and CUDA graphs use the current device
            torch.backends.cudnn.benchmark = True  # each input size is autotuned once, at its first frame
        self._backend = backend
        self._setup_for_runner = RunnerSetup(
            self.input_size,
            self.device,
            self.precision,
            options.num_threads,
            info.mean,
            info.std,
            self.checkpoint,
            cuda_compile=options.cuda_compile,
        )
        self._folded = fuse_conv_bn(model.eval())
        self._pipelines = OrderedDict()
        self._pipeline = self._pipeline_for(self.input_size)  # built now: the model's own size compiles at start-up
        runner = self._pipeline.runner
        # The PyTorch network the runner holds (on its device), else the folded fp32 one: for TTA and FLOP counts.
        self.model = runner.net.net if hasattr(runner, "net") else self._folded

    def input_size_for(self, frame_size) -> tuple:
        """The (height, width) the model runs a frame of ``frame_size`` (height, width) at."""
        return input_size_for(frame_size, self.input_size, self.keep_aspect)

    def _pipeline_for(self, input_size):
        """The pipeline for one input size, built on first use. PyTorch runs every size with one runner (eager, or
        compiled once per shape by torch.compile); the exported runtimes get a runner per size, exported and
        compiled once."""
        input_size = tuple(input_size)
        if input_size in self._pipelines:
            self._pipelines.move_to_end(input_size)
            return self._pipelines[input_size]
        if self._pipelines and self._backend.name == "torch":
            runner = self._pipeline.runner
        else:
            runner = self._backend.make_runner(self._folded, replace(self._setup_for_runner, input_size=input_size))
        info, options = self.info, self.options
        if runner.on_device:
            pipeline = DevicePipeline(runner, input_size, info.mean, info.std, self.color_table, options.cuda_graphs)
        else:
            pipeline = HostPipeline(runner, input_size, info.mean, info.std, self.color_table)
        if len(self._pipelines) >= MAX_INPUT_SIZES:
            self._evict_oldest()
        self._pipelines[input_size] = pipeline
        return pipeline

    def _evict_oldest(self) -> None:
        """Drops the least recently used pipeline other than the model's own size (kept as ``_pipeline``)."""
        for input_size in self._pipelines:
            if input_size != self.input_size:
                del self._pipelines[input_size]
                return

    @property
    def class_names(self):
        return list(self.info.class_names)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.precision == "fp16" else torch.float32

    def segment(self, rgb: np.ndarray, with_color=False, with_overlay=False, overlay_alpha=0.5) -> Segmentation:
        """Segments one H x W x 3 uint8 RGB frame; colours and overlay come from the same pass when asked for.

        ``overlay_alpha`` is the colours' weight in the overlay.
        """
        return self.segment_batch([rgb], with_color, with_overlay, overlay_alpha)[0]

    def segment_batch(self, frames, with_color=False, with_overlay=False, overlay_alpha=0.5) -> list[Segmentation]:
        """Segments frames of any sizes, those of one input size (``input_size_for``) as one batch through the
        model: each is resized to it, the network runs once on all of them, and each result is back at its
        frame's size, pixel for pixel what ``segment`` gives for that frame alone. A batch never mixes input
        sizes: frames of another aspect run as a batch of their own, one after the other, in the order their
        sizes first appear.

        ``with_color`` and ``with_overlay``: one flag for every frame, or a list of one per frame. Each
        result's timings are its input size's batch's (every frame waited for all of that batch).
        """
        frames = list(frames)
        for rgb in frames:
            check_frame(rgb)
        if not 0.0 <= overlay_alpha <= 1.0:
            raise ValueError(f"overlay_alpha must be in [0, 1], got {overlay_alpha}")
        if not frames:
            return []
        colors, overlays = (
            _per_frame(flags, len(frames), name)
            for flags, name in ((with_color, "with_color"), (with_overlay, "with_overlay"))
        )
        groups = OrderedDict()
        for index, rgb in enumerate(frames):
            groups.setdefault(self.input_size_for(rgb.shape[:2]), []).append(index)
        results = [None] * len(frames)
        for input_size, indices in groups.items():
            batch = self._pipeline_for(input_size).run_batch(
                [frames[i] for i in indices], [colors[i] for i in indices], [overlays[i] for i in indices],
                float(overlay_alpha),
            )  # fmt: skip
            for index, result in zip(indices, batch):
                results[index] = result
        return results

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """The normalised 1 x 3 x h x w batch ``self.model`` takes (h x w: ``input_size_for`` the frame); a view of
        a buffer the next frame of that size reuses."""
        check_frame(rgb)
        return self._pipeline_for(self.input_size_for(rgb.shape[:2])).preprocess_tensor(rgb)

    def inference_step(self, rgb: np.ndarray):
        """A function running only the inference stage (forward and argmax) on ``rgb``, preprocessed once.

        For measuring the model alone; it waits for the device, so each call is one frame's inference.
        """
        check_frame(rgb)
        return self._pipeline_for(self.input_size_for(rgb.shape[:2])).inference_step(rgb)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Class ids -> H x W x 3 RGB with the checkpoint's class colours."""
        return np.take(self.color_table, labels, axis=0)

    def overlay(self, rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5, color=None) -> np.ndarray:
        """Blends the class colours over the frame; ``alpha`` is the colours' weight."""
        color = self.colorize(labels) if color is None else color
        return cv2.addWeighted(rgb, 1.0 - alpha, color, alpha, 0.0)


def _per_frame(flags, count: int, name: str) -> list:
    """One bool for each of ``count`` frames, from one flag or a list or tuple of them."""
    if not isinstance(flags, (list, tuple)):
        return [bool(flags)] * count
    flags = [bool(flag) for flag in flags]
    if len(flags) != count:
        raise ValueError(f"{name} needs one flag per frame: {count}, got {len(flags)}")
    return flags
