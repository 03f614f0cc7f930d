"""The GPU pipeline: the whole frame on the device, from the uint8 upload to uint8 results.

On the CPU the same code runs eagerly, which is how the tests check it without a GPU.
"""

import time
import warnings
from collections import OrderedDict

import numpy as np
import torch
from torch.nn import functional as F

from .preprocess import Normalize, is_shrinking
from .result import Segmentation


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


def frame_to_batch(frame: torch.Tensor, geometry: FrameGeometry, normalize: Normalize, dtype) -> torch.Tensor:
    """H x W x 3 uint8 on the device -> normalised 1 x 3 x h x w batch in ``dtype``, channels_last.

    Resized as OpenCV does on the CPU path (area weights to shrink, bilinear to grow) and rounded to
    whole levels as its uint8 result is: the same pixels when shrinking, within one level when growing
    (OpenCV's bilinear is fixed point; test_engine.py checks both).
    """
    batch = frame.permute(2, 0, 1).unsqueeze(0).float()  # channels_last strides already, kept throughout
    if geometry.area:
        batch = torch.floor(geometry.area_rows @ batch @ geometry.area_cols + 0.5)
    elif geometry.resize:
        batch = F.interpolate(batch, size=geometry.input_size, mode="bilinear", align_corners=False)
        batch = torch.floor(batch + 0.5)
    return normalize(batch).to(dtype).contiguous(memory_format=torch.channels_last)


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

    One frame at a time (the fast path): on CUDA the uint8 frame is staged in pinned memory and uploaded without
    blocking; each stage is one CUDA graph over static buffers (captured for
    the fixed input size, and per frame size for the stages that depend on
    it; eager when capture fails or ``cuda_graphs`` is off), CUDA events time
    the stages without synchronising between them, and only the uint8
    results come back, through pinned memory. On the CPU the same code runs
    eagerly, which is how the tests check it without a GPU. A batch of several
    frames (``run_batch``) runs eagerly through the same functions, each frame
    resized on the device into one N-frame batch for one forward pass.
    """

    MAX_FRAME_SIZES = 4  # frame sizes whose buffers and graphs are kept
    MAX_GEOMETRIES = 16  # frame sizes whose resize tables the batched path keeps

    def __init__(self, runner, input_size, mean, std, colors: np.ndarray, cuda_graphs=True):
        """``runner``: a device runner (backends.TorchDeviceRunner), which holds the network, device and dtype."""
        self.runner = runner
        self.device, self.dtype = runner.device, runner.dtype
        self.input_size = tuple(input_size)
        self.on_cuda = self.device.type == "cuda"
        self.use_graphs = self.on_cuda and cuda_graphs
        self.normalize = Normalize(mean, std).to(self.device)
        self.colors = torch.from_numpy(colors).to(self.device)
        height, width = self.input_size
        self.batch = torch.zeros(1, 3, height, width, device=self.device, dtype=self.dtype).contiguous(
            memory_format=torch.channels_last
        )
        self.labels = torch.zeros(1, height, width, device=self.device, dtype=torch.uint8)
        self.infer = GraphedStep(self._infer_step, self.use_graphs)
        self._frames = OrderedDict()
        self._geometries = OrderedDict()
        self._marks = _StageMarks(self.on_cuda, 4)

    @torch.inference_mode()
    def _infer_step(self):
        self.labels.copy_(self.runner(self.batch))

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
        want = _wanted(with_color, with_overlay)
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

    def run_batch(self, frames, with_color, with_overlay, alpha) -> list[Segmentation]:
        """``frames`` as one batch; ``with_color`` and ``with_overlay``: one flag per frame. One frame takes the
        graphed path of ``run``; several run eagerly. Every result carries the batch's stage times."""
        if len(frames) == 1:
            return [self.run(frames[0], with_color[0], with_overlay[0], alpha)]
        marks = self._marks
        start = time.perf_counter()
        marks.mark(0)
        with torch.inference_mode():
            # from_numpy shares a frame's memory; a read-only one (a message's buffer) or a view with negative
            # strides (BGR made RGB by [..., ::-1]), which from_numpy refuses, is copied first
            uploaded = [torch.from_numpy(_shareable(rgb)).to(self.device) for rgb in frames]
            geometries = [self._geometry(rgb.shape[:2]) for rgb in frames]
            batch = torch.cat([frame_to_batch(f, g, self.normalize, self.dtype) for f, g in zip(uploaded, geometries)])
            batch = batch.contiguous(memory_format=torch.channels_last)
            marks.mark(1)
            labels = self.runner(batch)
            marks.mark(2)
            host = []
            for index, (frame, geometry) in enumerate(zip(uploaded, geometries)):
                want = _wanted(with_color[index], with_overlay[index])
                outputs = labels_to_outputs(labels[index : index + 1], frame, geometry, self.colors, want, alpha)
                host.append({name: self._to_host(tensor) for name, tensor in outputs.items()})
        marks.mark(3)
        marks.wait(3)
        arrived = time.perf_counter()
        results = [{name: tensor.numpy() for name, tensor in outputs.items()} for outputs in host]
        end = time.perf_counter()
        timings = {
            "preprocess": marks.elapsed_ms(0, 1),
            "inference": marks.elapsed_ms(1, 2),
            "postprocess": marks.elapsed_ms(2, 3) + (end - arrived) * 1000.0,
            "total": (end - start) * 1000.0,
        }
        return [Segmentation(r["labels"], dict(timings), r.get("color"), r.get("overlay")) for r in results]

    def _geometry(self, frame_size) -> FrameGeometry:
        """The resize tables for one frame size (kept for the last MAX_GEOMETRIES sizes)."""
        frame_size = tuple(frame_size)
        if frame_size in self._geometries:
            self._geometries.move_to_end(frame_size)
        else:
            if len(self._geometries) >= self.MAX_GEOMETRIES:
                self._geometries.popitem(last=False)
            self._geometries[frame_size] = FrameGeometry(frame_size, self.input_size, self.device)
        return self._geometries[frame_size]

    def _to_host(self, tensor: torch.Tensor) -> torch.Tensor:
        """A fresh host copy of a static output (pinned, without blocking, on CUDA); the caller keeps it."""
        if not self.on_cuda:
            return tensor.clone()
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        return host.copy_(tensor, non_blocking=True)


def _shareable(rgb: np.ndarray) -> np.ndarray:
    """The frame itself where torch.from_numpy can share its memory, else a contiguous copy."""
    return rgb if rgb.flags.writeable and all(stride > 0 for stride in rgb.strides) else rgb.copy()


def _wanted(with_color: bool, with_overlay: bool) -> tuple:
    return ("labels",) + (("color",) if with_color else ()) + (("overlay",) if with_overlay else ())


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
        self._preprocess = GraphedStep(self._preprocess_step, pipeline.use_graphs)
        self.postprocess = GraphedStep(self._postprocess_step, pipeline.use_graphs)
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
        p.batch.copy_(frame_to_batch(self.frame, self.geometry, p.normalize, p.dtype))

    @torch.inference_mode()
    def _postprocess_step(self):
        p = self.pipeline
        outputs = labels_to_outputs(p.labels, self.frame, self.geometry, p.colors, self.want, self.alpha)
        for name, tensor in outputs.items():
            self.outputs[name].copy_(tensor)


class GraphedStep:
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
