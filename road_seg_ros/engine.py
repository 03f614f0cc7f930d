"""The segmentation engine: RGB frame in, class-id image out. Knows nothing of ROS.

The node, the evaluator, the bag replay and the benchmark all call
``SegmentationEngine.segment``; its stage timings are the ones every front
end reports.

Per frame the engine does one resize, one normalisation, one forward pass
with its argmax, and one nearest-neighbour resize of the labels back to the
frame's size, plus the class colours and the overlay when asked for:

- on the CPU with OpenCV and numpy into reused buffers, then PyTorch or
  ONNX Runtime (``backend``);
- on a CUDA GPU entirely on the device (see ``DevicePipeline``): the uint8
  frame goes up through pinned memory, and only uint8 results come back.
"""

import sys
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from .backends import LabelsNet, OnnxRuntimeRunner, TorchRunner, onnx_bytes
from .camvid_classes import color_table
from .checkpoint import load_checkpoint
from .models import fuse_conv_bn

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT_NAME = "student.safetensors"

DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("fp32", "fp16")
# "auto": ONNX Runtime on the CPU (the faster there, see benchmarks/cpu.md), PyTorch on CUDA.
BACKENDS = ("auto", "torch", "onnxruntime")
STAGES = ("preprocess", "inference", "postprocess", "total")


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


def resolve_device(device: str, backend: str = "torch") -> torch.device:
    if device not in DEVICES:
        raise EngineError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "auto":
        use_cuda = torch.cuda.is_available() and backend != "onnxruntime"
        return torch.device("cuda" if use_cuda else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EngineError("device 'cuda' requested but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(device)


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise EngineError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "torch" if device.type == "cuda" else "onnxruntime"
    if backend == "onnxruntime" and device.type != "cpu":
        raise EngineError("backend 'onnxruntime' runs on the CPU only; use device 'cpu' or backend 'torch'")
    return backend


@dataclass
class Segmentation:
    labels: np.ndarray  # H x W uint8 class ids, at the input's size
    timings_ms: dict = field(default_factory=dict)  # preprocess, inference, postprocess, total
    color: np.ndarray | None = None  # H x W x 3 RGB class colours, when asked for
    overlay: np.ndarray | None = None  # H x W x 3 RGB colours blended over the frame, when asked for


class SegmentationEngine:
    """Loads a checkpoint once and segments frames of any size.

    Frames are resized to the model's input size (the size it was trained
    at), segmented, and the labels resized back with nearest-neighbour, so
    class ids are never blended. Not thread-safe: buffers are reused across
    frames.
    """

    def __init__(
        self,
        checkpoint=None,
        device="auto",
        precision="fp32",
        input_size=None,
        num_threads=None,
        backend="torch",
        cuda_graphs=True,
    ):
        self.checkpoint = Path(checkpoint) if checkpoint else default_checkpoint()
        model, info = load_checkpoint(self.checkpoint)
        self._setup(model, info, self.checkpoint.name, device, precision, input_size, num_threads, backend, cuda_graphs)

    @classmethod
    def from_model(
        cls,
        model,
        info,
        name,
        device="auto",
        precision="fp32",
        input_size=None,
        num_threads=None,
        backend="torch",
        cuda_graphs=True,
    ):
        """An engine around a network in memory (eval mode, returning {"out": logits}); ``info``: a ModelInfo."""
        engine = cls.__new__(cls)
        engine.checkpoint = None
        engine._setup(model, info, name, device, precision, input_size, num_threads, backend, cuda_graphs)
        return engine

    def _setup(self, model, info, name, device, precision, input_size, num_threads, backend, cuda_graphs):
        if precision not in PRECISIONS:
            raise EngineError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = resolve_device(device, backend)
        self.backend = resolve_backend(backend, self.device)
        if precision == "fp16" and self.device.type != "cuda":
            raise EngineError("precision 'fp16' needs a CUDA device; use 'fp32' on CPU")
        if num_threads:
            torch.set_num_threads(num_threads)
        self.info = info
        self.model_name = name
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.input_size = tuple(input_size or info.input_size)
        if len(self.input_size) != 2 or min(self.input_size) < 32:
            raise EngineError(f"input_size must be [height, width] of at least 32, got {list(self.input_size)}")
        self.color_table = color_table(info.class_colors)
        fused = fuse_conv_bn(model.eval())
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # the input size is fixed: autotune once, at warm-up
            self._pipeline = DevicePipeline(
                fused, self.device, self.dtype, self.input_size, info.mean, info.std, self.color_table, cuda_graphs
            )
            self.model = self._pipeline.net.net
            return
        self.model = fused.to(memory_format=torch.channels_last)
        if self.backend == "onnxruntime":
            runner = OnnxRuntimeRunner(onnx_bytes(fused, self.input_size), num_threads or torch.get_num_threads())
        else:
            runner = TorchRunner(self.model)
        self._pipeline = HostPipeline(runner, self.input_size, info.mean, info.std, self.color_table)

    @property
    def class_names(self):
        return list(self.info.class_names)

    def segment(self, rgb: np.ndarray, with_color=False, with_overlay=False, overlay_alpha=0.5) -> Segmentation:
        """Segments one H x W x 3 uint8 RGB frame; colours and overlay come from the same pass when asked for.

        ``overlay_alpha`` is the colours' weight in the overlay.
        """
        check_frame(rgb)
        if not 0.0 <= overlay_alpha <= 1.0:
            raise ValueError(f"overlay_alpha must be in [0, 1], got {overlay_alpha}")
        return self._pipeline.run(rgb, with_color, with_overlay, float(overlay_alpha))

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """The normalised 1 x 3 x H x W batch ``self.model`` takes; a view of a buffer the next frame reuses."""
        check_frame(rgb)
        return self._pipeline.preprocess_tensor(rgb)

    def inference_step(self, rgb: np.ndarray):
        """A function running only the inference stage (forward and argmax) on ``rgb``, preprocessed once.

        For measuring the model alone; it waits for the device, so each call is one frame's inference.
        """
        check_frame(rgb)
        return self._pipeline.inference_step(rgb)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Class ids -> H x W x 3 RGB with the checkpoint's class colours."""
        return np.take(self.color_table, labels, axis=0)

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


def is_shrinking(frame_size, target_size) -> bool:
    """True when no side grows: area averaging then, bilinear interpolation otherwise."""
    return target_size[0] <= frame_size[0] and target_size[1] <= frame_size[1]


def normalisation(mean, std) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` per RGB channel so that ``uint8 * scale + offset`` is the normalised input."""
    scale = 1.0 / (255.0 * np.asarray(std, dtype=np.float64))
    offset = -np.asarray(mean, dtype=np.float64) / np.asarray(std, dtype=np.float64)
    return scale.astype(np.float32), offset.astype(np.float32)


class HostPipeline:
    """CPU: OpenCV resize, numpy normalisation into a reused float buffer, the backend, OpenCV nearest resize.

    The buffer has the layout the backend reads: H x W x 3 for PyTorch's
    channels_last (so the tensor is a view of it), 1 x 3 x H x W for ONNX.
    """

    def __init__(self, runner, input_size, mean, std, colors: np.ndarray):
        self.runner = runner
        self.input_size = tuple(input_size)
        self.colors = colors
        height, width = self.input_size
        scale, offset = normalisation(mean, std)
        if runner.channels_last:
            # Rows of W * 3 values with the per-channel constants tiled along them: numpy's inner loop
            # then runs over a whole row instead of 3 values (4x faster at 360x480).
            self._buffer = np.empty((height, width, 3), np.float32)
            self._target = self._buffer.reshape(height, width * 3)
            self._scale, self._offset = np.tile(scale, width), np.tile(offset, width)
        else:
            self._buffer = np.empty((1, 3, height, width), np.float32)
            self._target = self._buffer
            self._scale, self._offset = scale.reshape(1, 3, 1, 1), offset.reshape(1, 3, 1, 1)

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        height, width = self.input_size
        if rgb.shape[:2] != self.input_size:
            shrinking = is_shrinking(rgb.shape[:2], self.input_size)
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        pixels = rgb.reshape(height, width * 3) if self.runner.channels_last else rgb.transpose(2, 0, 1)[np.newaxis]
        np.multiply(pixels, self._scale, out=self._target)
        np.add(self._target, self._offset, out=self._target)
        return self._buffer

    def preprocess_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(self.preprocess(rgb))
        return tensor.permute(2, 0, 1).unsqueeze(0) if self.runner.channels_last else tensor

    def inference_step(self, rgb: np.ndarray):
        batch = self.preprocess(rgb).copy()
        return lambda: self.runner(batch)

    def run(self, rgb, with_color, with_overlay, alpha) -> Segmentation:
        timer = _HostTimer()
        batch = self.preprocess(rgb)
        timer.lap("preprocess")
        labels = self.runner(batch)
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


class _HostTimer:
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


# --- everything on the device ------------------------------------------------------------------------------------


def nearest_indices(source: int, target: int) -> np.ndarray:
    """The source index OpenCV's INTER_NEAREST reads for each target index.

    OpenCV scales by ``1 / (target / source)`` in double precision, which is not always ``source / target``;
    copying it keeps the device's labels identical to the CPU path's.
    """
    scale = 1.0 / (target / source)
    return np.minimum(np.floor(np.arange(target) * scale).astype(np.int64), source - 1)


def area_weights(source: int, target: int) -> np.ndarray:
    """target x source matrix of OpenCV's INTER_AREA weights for shrinking (its computeResizeAreaTab)."""
    scale = 1.0 / (target / source)
    weights = np.zeros((target, source), np.float32)
    for index in range(target):
        start = index * scale
        end = start + scale
        cell = min(scale, source - start)
        first = min(int(np.ceil(start)), source - 1)
        last = min(int(np.floor(end)), source - 1)
        first = min(first, last)
        if first - start > 1e-3:
            weights[index, first - 1] = (first - start) / cell
        weights[index, first:last] = 1.0 / cell
        if end - last > 1e-3:
            weights[index, last] = min(end - last, 1.0, cell) / cell
    return weights


class FrameGeometry:
    """How one frame size maps to the model's input size and back, as tensors on the device."""

    def __init__(self, frame_size, input_size, device):
        self.frame_size, self.input_size = tuple(frame_size), tuple(input_size)
        (frame_h, frame_w), (input_h, input_w) = self.frame_size, self.input_size
        self.resize = self.frame_size != self.input_size
        self.area = self.resize and is_shrinking(self.frame_size, self.input_size)
        if self.area:
            self.area_rows = torch.from_numpy(area_weights(frame_h, input_h)).to(device)
            self.area_cols = torch.from_numpy(area_weights(frame_w, input_w)).t().contiguous().to(device)
        self.label_rows = torch.from_numpy(nearest_indices(input_h, frame_h)).to(device)
        self.label_cols = torch.from_numpy(nearest_indices(input_w, frame_w)).to(device)


def frame_to_batch(frame: torch.Tensor, geometry: FrameGeometry, mean, inv_std, dtype) -> torch.Tensor:
    """H x W x 3 uint8 on the device -> normalised 1 x 3 x h x w batch in ``dtype``, channels_last.

    Resized as OpenCV does on the CPU path (area weights to shrink, bilinear to grow) and rounded to
    whole levels as its uint8 result is, so both paths feed the network the same pixels.
    """
    batch = frame.permute(2, 0, 1).unsqueeze(0).float()  # channels_last strides already, kept throughout
    if geometry.area:
        batch = torch.floor(geometry.area_rows @ batch @ geometry.area_cols + 0.5)
    elif geometry.resize:
        batch = F.interpolate(batch, size=geometry.input_size, mode="bilinear", align_corners=False)
        batch = torch.floor(batch + 0.5)
    return ((batch - mean) * inv_std).to(dtype).contiguous(memory_format=torch.channels_last)


def labels_to_outputs(labels, frame, geometry: FrameGeometry, colors: torch.Tensor, want: tuple, alpha: float):
    """1 x h x w uint8 labels -> {"labels": H x W, "color", "overlay": H x W x 3} (those in ``want``) on the device.

    Nearest resize of the labels exactly as OpenCV's INTER_NEAREST; the overlay rounds as cv2.addWeighted.
    """
    labels = labels[0]
    if geometry.resize:
        labels = labels.index_select(0, geometry.label_rows).index_select(1, geometry.label_cols)
    outputs = {"labels": labels}
    if "color" in want or "overlay" in want:
        outputs["color"] = colors.index_select(0, labels.reshape(-1).long()).view(*labels.shape, 3)
    if "overlay" in want:
        blend = frame.float() * (1.0 - alpha) + outputs["color"].float() * alpha
        outputs["overlay"] = blend.round_().to(torch.uint8)
    return {name: tensor for name, tensor in outputs.items() if name in want}


class DevicePipeline:
    """The whole frame on the device: upload, resize, normalise, forward, argmax, labels resize, colours, overlay.

    On CUDA the uint8 frame is staged in pinned memory and uploaded without
    blocking; each stage is one CUDA graph over static buffers (captured for
    the fixed input size, and per frame size for the stages that depend on
    it; eager when capture fails or ``cuda_graphs`` is off), CUDA events time
    the stages without synchronising between them, and only the uint8
    results come back, through pinned memory. On the CPU the same code runs
    eagerly, which is how the tests check it without a GPU.
    """

    MAX_FRAME_SIZES = 4  # frame sizes whose buffers and graphs are kept

    def __init__(self, model, device, dtype, input_size, mean, std, colors: np.ndarray, cuda_graphs=True):
        self.device, self.dtype = torch.device(device), dtype
        self.input_size = tuple(input_size)
        self.on_cuda = self.device.type == "cuda"
        self.use_graphs = self.on_cuda and cuda_graphs
        self.net = LabelsNet(model).to(self.device, dtype, memory_format=torch.channels_last).eval()
        self.mean = (255.0 * torch.tensor(mean, dtype=torch.float32)).view(1, 3, 1, 1).to(self.device)
        self.inv_std = (1.0 / (255.0 * torch.tensor(std, dtype=torch.float32))).view(1, 3, 1, 1).to(self.device)
        self.colors = torch.from_numpy(colors).to(self.device)
        height, width = self.input_size
        self.batch = torch.zeros(1, 3, height, width, device=self.device, dtype=dtype).contiguous(
            memory_format=torch.channels_last
        )
        self.labels = torch.zeros(1, height, width, device=self.device, dtype=torch.uint8)
        self.infer = _Graphed(self._infer_step, self.use_graphs)
        self._frames = OrderedDict()
        self._marks = _StageMarks(self.on_cuda, 4)

    @torch.inference_mode()
    def _infer_step(self):
        self.labels.copy_(self.net(self.batch))

    def _frame_stages(self, frame_size, want, alpha) -> "_FrameStages":
        key = (frame_size, want, alpha)
        if key in self._frames:
            self._frames.move_to_end(key)
        else:
            if len(self._frames) >= self.MAX_FRAME_SIZES:
                self._frames.popitem(last=False)
            self._frames[key] = _FrameStages(self, frame_size, want, alpha)
        return self._frames[key]

    def _stage_frame(self, rgb: np.ndarray, want=("labels",), alpha=0.5) -> "_FrameStages":
        stages = self._frame_stages(rgb.shape[:2], want, alpha)
        stages.wait_for_upload()  # the pinned buffer is free again only once the last upload from it is done
        np.copyto(stages.host_frame.numpy(), rgb)
        return stages

    def preprocess_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        self._stage_frame(rgb).preprocess()
        return self.batch

    def inference_step(self, rgb: np.ndarray):
        self.preprocess_tensor(rgb)
        sync = torch.cuda.current_stream(self.device).synchronize if self.on_cuda else (lambda: None)

        def step():
            self.infer()
            sync()
            return self.labels

        return step

    def run(self, rgb, with_color, with_overlay, alpha) -> Segmentation:
        want = ("labels",) + (("color",) if with_color else ()) + (("overlay",) if with_overlay else ())
        marks = self._marks
        start = time.perf_counter()
        stages = self._stage_frame(rgb, want, alpha)
        staged = time.perf_counter()
        marks.mark(0)
        stages.preprocess()
        marks.mark(1)
        self.infer()
        marks.mark(2)
        stages.postprocess()
        host = {name: self._to_host(tensor) for name, tensor in stages.outputs.items()}
        marks.mark(3)
        marks.wait(3)
        arrived = time.perf_counter()
        results = {name: tensor.numpy() for name, tensor in host.items()}
        end = time.perf_counter()
        timings = {
            "preprocess": (staged - start) * 1000.0 + marks.elapsed_ms(0, 1),
            "inference": marks.elapsed_ms(1, 2),
            "postprocess": marks.elapsed_ms(2, 3) + (end - arrived) * 1000.0,
            "total": (end - start) * 1000.0,
        }
        return Segmentation(results["labels"], timings, results.get("color"), results.get("overlay"))

    def _to_host(self, tensor: torch.Tensor) -> torch.Tensor:
        """A fresh host copy of a static output (pinned, without blocking, on CUDA); the caller keeps it."""
        if not self.on_cuda:
            return tensor.clone()
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        return host.copy_(tensor, non_blocking=True)


class _FrameStages:
    """Static buffers and the pre- and postprocessing steps for one frame size and set of outputs."""

    def __init__(self, pipeline: DevicePipeline, frame_size, want, alpha):
        self.pipeline, self.want, self.alpha = pipeline, want, alpha
        height, width = frame_size
        self.geometry = FrameGeometry(frame_size, pipeline.input_size, pipeline.device)
        self.host_frame = torch.zeros(height, width, 3, dtype=torch.uint8, pin_memory=pipeline.on_cuda)
        self.frame = self.host_frame.to(pipeline.device) if pipeline.on_cuda else self.host_frame
        self.outputs = {"labels": torch.zeros(height, width, dtype=torch.uint8, device=pipeline.device)}
        for name in ("color", "overlay"):
            if name in want:
                self.outputs[name] = torch.zeros(height, width, 3, dtype=torch.uint8, device=pipeline.device)
        self._preprocess = _Graphed(self._preprocess_step, pipeline.use_graphs)
        self.postprocess = _Graphed(self._postprocess_step, pipeline.use_graphs)
        self._uploaded = torch.cuda.Event() if pipeline.on_cuda else None

    def preprocess(self) -> None:
        self._preprocess()
        if self._uploaded is not None:
            self._uploaded.record()

    def wait_for_upload(self) -> None:
        if self._uploaded is not None:
            self._uploaded.synchronize()

    @torch.inference_mode()
    def _preprocess_step(self):
        p = self.pipeline
        if self.frame is not self.host_frame:
            self.frame.copy_(self.host_frame, non_blocking=True)
        p.batch.copy_(frame_to_batch(self.frame, self.geometry, p.mean, p.inv_std, p.dtype))

    @torch.inference_mode()
    def _postprocess_step(self):
        p = self.pipeline
        outputs = labels_to_outputs(p.labels, self.frame, self.geometry, p.colors, self.want, self.alpha)
        for name, tensor in outputs.items():
            self.outputs[name].copy_(tensor)


class _Graphed:
    """Runs ``step`` (a function of static buffers only) as one CUDA graph, or eagerly.

    Eager when graphs are off, and when capture fails (with a warning): the
    results are the same, only the launch overhead differs.
    """

    WARMUP_RUNS = 3  # cudnn autotuning and the allocator settle before capture

    def __init__(self, step, use_graph: bool):
        self._step = step
        self._graph = _capture(step, self.WARMUP_RUNS) if use_graph else None

    def __call__(self):
        if self._graph is None:
            self._step()
        else:
            self._graph.replay()


def _capture(step, warmup_runs):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup_runs):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            step()
    except RuntimeError as error:
        torch.cuda.synchronize()
        warnings.warn(f"CUDA graph capture failed, running this stage eagerly: {error}", RuntimeWarning, stacklevel=3)
        return None
    return graph


class _StageMarks:
    """Stage boundaries on the device's clock: CUDA events (no sync between stages) on a GPU, wall clock on CPU."""

    def __init__(self, on_cuda: bool, count: int):
        self._events = [torch.cuda.Event(enable_timing=True) for _ in range(count)] if on_cuda else None
        self._times = [0.0] * count

    def mark(self, index: int) -> None:
        if self._events is not None:
            self._events[index].record()
        else:
            self._times[index] = time.perf_counter()

    def wait(self, index: int) -> None:
        if self._events is not None:
            self._events[index].synchronize()

    def elapsed_ms(self, first: int, second: int) -> float:
        if self._events is not None:
            return self._events[first].elapsed_time(self._events[second])
        return (self._times[second] - self._times[first]) * 1000.0
