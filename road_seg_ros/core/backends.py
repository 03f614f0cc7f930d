"""Inference backends: a registry of runtimes, each a runner factory and the devices and precisions it serves.

A runner takes a normalised batch and returns uint8 class ids at the same
size: the network and its argmax always run together (``LabelsNet``), in
PyTorch or exported to ONNX, so only one byte per pixel ever leaves it.
Host runners take numpy batches (N x H x W x 3 float32 for ``layout``
"nhwc", N x 3 x H x W float32 for "nchw", both normalised; N x H x W x 3 uint8
frames for "rgb8", which the runner normalises itself); a device runner takes
and returns tensors on its GPU. Measured on the 2-core CPU: ONNX Runtime with the argmax inside the
graph is faster than returning logits and taking the argmax in numpy (see
benchmarks/cpu.md).

Adding a runtime is one runner class and one ``REGISTRY`` line.
"""

import copy
import importlib.util
import io
import platform
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models import shift_depthwise
from .options import PRECISIONS, EngineError, device_problem

ONNX_OPSET = 17
ONNX_INPUT = "input"


class LabelsNet(nn.Module):
    """A segmentation network plus its argmax: N x 3 x H x W normalised batch -> N x H x W uint8 class ids."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, batch):
        return self.net(batch)["out"].argmax(dim=1).to(torch.uint8)


class LogitsNet(nn.Module):
    """The network's logits alone, for measuring the argmax outside the ONNX graph."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, batch):
        return self.net(batch)["out"]


def onnx_bytes(net: nn.Module, input_size, with_argmax: bool = True, dynamic_batch: bool = False) -> bytes:
    """Exports an fp32 CPU network at a fixed input size; the graph outputs labels (or logits).

    The batch is 1, or any N with ``dynamic_batch`` (ONNX Runtime runs one graph for every batch size).
    """
    height, width = input_size
    wrapper = (LabelsNet(net) if with_argmax else LogitsNet(net)).eval()
    sample = torch.zeros(1, 3, height, width)
    output = "labels" if with_argmax else "logits"
    dynamic_axes = {ONNX_INPUT: {0: "batch"}, output: {0: "batch"}} if dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode():
        # The TorchScript exporter needs no extra dependency and traces a fixed-size graph,
        # which is what we want; its deprecation notice and the tracer's shape-check notices are moot here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper,
            (sample,),
            buffer,
            input_names=[ONNX_INPUT],
            output_names=[output],
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


# --------------------------------------------------------------------------- runners


class TorchRunner:
    """PyTorch on the CPU; the batch is N x H x W x 3 float32, which is a channels_last view of the tensor."""

    layout = "nhwc"
    on_device = False

    def __init__(self, net: nn.Module):
        self.net = LabelsNet(net.to(memory_format=torch.channels_last)).eval()

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.net(torch.from_numpy(batch).permute(0, 3, 1, 2)).numpy()


class TorchDeviceRunner:
    """PyTorch on a GPU (or eagerly on the CPU, for tests): an N x 3 x H x W tensor there in, labels there out.

    ``compiled``: through ``torch.compile``, compiled at the first call of each batch shape, with the depthwise
    3x1 and 1x3 convolutions as shifted sums the compiler fuses (shift_depthwise: 4.87x at 720x960 on an H100);
    if the compiler fails (no Triton, no C compiler), a warning says so and the network runs eagerly from then on.
    """

    layout = "nchw"
    on_device = True

    def __init__(self, net: nn.Module, device: torch.device, dtype: torch.dtype, compiled: bool = False):
        self.device, self.dtype = device, dtype
        self.net = self._on_device(net)
        self.compiled = None
        if compiled:  # the eager network stays as it is, for the fallback below
            self.compiled = torch.compile(self._on_device(shift_depthwise(copy.deepcopy(net))), dynamic=False)

    def _on_device(self, net: nn.Module) -> nn.Module:
        return LabelsNet(net).to(self.device, self.dtype, memory_format=torch.channels_last).eval()

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(batch)
            except Exception as error:  # the compiler's failures share no type; eager then runs or raises alone
                first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
                message = f"torch.compile failed, running the network eagerly: {first_line}"
                warnings.warn(message, RuntimeWarning, stacklevel=2)
                self.compiled = None
        return self.net(batch)


class OnnxRuntimeRunner:
    """An exported ``LabelsNet`` in ONNX Runtime on the CPU; the batch is N x 3 x H x W float32 (N = 1 unless the
    graph was exported with a dynamic batch)."""

    layout = "nchw"
    on_device = False

    def __init__(self, model, num_threads: int, spinning: bool = False):
        """``model``: ONNX bytes or a file path.

        ``spinning`` off by default: the node shares the CPU with the rest of the robot's
        processes, and spinning worker threads then steal the cores they wait for (measured
        about twice the latency on this 2-core machine while it was loaded).
        """
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        source = str(model) if isinstance(model, Path) else model
        self.session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The graph's first output for a batch (labels or logits)."""
        return self.session.run(None, {self._input: batch})[0]

    __call__ = run


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class RunnerSetup:
    """What a runner factory may need besides the network (fp32, BatchNorm folded, eval mode)."""

    input_size: tuple
    device: torch.device
    precision: str
    num_threads: int  # 0: the runtime's default
    mean: tuple = (0.0, 0.0, 0.0)  # the checkpoint's normalisation, for runners that normalise in their graph
    std: tuple = (1.0, 1.0, 1.0)
    checkpoint: Path | None = None  # the file the network came from, if any
    cuda_compile: bool = False  # EngineOptions.cuda_compile


@dataclass(frozen=True)
class Backend:
    name: str
    precisions: dict  # device type -> precisions it runs there
    make_runner: Callable  # (network, RunnerSetup) -> runner
    module: str | None = None  # the Python package it needs; None: always there
    auto_machines: tuple | None = None  # platform.machine() values where "auto" may pick it; None: any
    hardware_runs: Callable | None = None  # (precision) -> whether this machine runs it natively; None: all

    def installed(self) -> bool:
        return self.module is None or importlib.util.find_spec(self.module) is not None

    def require_installed(self) -> None:
        if not self.installed():
            raise EngineError(f"backend {self.name!r} needs the Python package {self.module!r}, which is not installed")

    def auto_candidate(self, device_type: str, precision: str) -> bool:
        """Whether "auto" may pick this backend for ``precision`` on ``device_type`` on this machine."""
        machine_fits = self.auto_machines is None or platform.machine() in self.auto_machines
        runs = precision == "auto" or precision in self.precisions.get(device_type, ())
        return machine_fits and device_type in self.precisions and runs and self.installed()

    def runs(self, device_type: str, precision: str) -> bool:
        """Whether this backend runs ``precision`` on ``device_type``, on this machine's hardware."""
        listed = precision in self.precisions.get(device_type, ())
        return listed and (self.hardware_runs is None or self.hardware_runs(precision))

    def auto_precision(self, device_type: str) -> str:
        """The first of AUTO_PRECISION that this backend runs on ``device_type`` on this machine."""
        return next(p for p in AUTO_PRECISION[device_type] if self.runs(device_type, p))


def _torch_runner(net, setup: RunnerSetup):
    if setup.device.type == "cpu":
        return TorchRunner(net)
    dtype = torch.float16 if setup.precision == "fp16" else torch.float32
    return TorchDeviceRunner(net, setup.device, dtype, compiled=setup.cuda_compile)


def _onnxruntime_runner(net, setup: RunnerSetup):
    model = onnx_bytes(net, setup.input_size, dynamic_batch=True)  # one graph for the node's batches of cameras
    return OnnxRuntimeRunner(model, setup.num_threads or torch.get_num_threads())


def _openvino_hardware_runs(precision: str) -> bool:
    from .openvino_backend import cpu_runs

    return cpu_runs(precision)


def _openvino_runner(net, setup: RunnerSetup):
    from .openvino_backend import OpenVinoRunner, quantized_model

    if setup.precision == "int8":  # the network NNCF quantized for this checkpoint, saved beside it
        return OpenVinoRunner(quantized_model(setup.checkpoint, setup.input_size), setup)
    return OpenVinoRunner(onnx_bytes(net, setup.input_size), setup)


# OpenVINO is built and tuned for Intel CPUs; "auto" picks it on x86-64 only (it runs elsewhere when asked for).
X86_64 = ("x86_64", "AMD64")
REGISTRY = {
    "torch": Backend("torch", {"cpu": ("fp32",), "cuda": ("fp32", "fp16")}, _torch_runner),
    "onnxruntime": Backend("onnxruntime", {"cpu": ("fp32",)}, _onnxruntime_runner, module="onnxruntime"),
    "openvino": Backend(
        "openvino",
        {"cpu": ("fp32", "bf16", "int8")},
        _openvino_runner,
        module="openvino",
        auto_machines=X86_64,
        hardware_runs=_openvino_hardware_runs,
    ),
}
BACKENDS = ("auto", *REGISTRY)
# What "auto" tries on each device, fastest first (benchmarks/cpu.md): the first installed one that runs the
# precision asked for (and, for OpenVINO, an x86-64 CPU).
AUTO_ORDER = {"cpu": ("openvino", "onnxruntime", "torch"), "cuda": ("torch",)}
# What precision "auto" runs, fastest first among those whose CamVid test mIoU stays within 0.5 of fp32 PyTorch
# (docs/results.md): the first the backend runs there and the hardware supports. int8 is as accurate but no
# faster than bf16 on AMX CPUs and needs a quantized model made beforehand, so it is never picked by itself.
AUTO_PRECISION = {"cpu": ("bf16", "fp32"), "cuda": ("fp32",)}


def resolve_device(device: str, backend: str = "auto") -> torch.device:
    """The device to run on; ``auto`` is CUDA when present and ``backend`` runs there; ``cuda:N`` the GPU N."""
    if problem := device_problem(device):
        raise EngineError(problem)
    if device == "auto":
        runs_on_cuda = backend == "auto" or "cuda" in REGISTRY.get(backend, REGISTRY["torch"]).precisions
        return torch.device("cuda" if torch.cuda.is_available() and runs_on_cuda else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EngineError(f"device {device!r} requested but no CUDA device is available (use 'auto' or 'cpu')")
        count, index = torch.cuda.device_count(), int(device.partition(":")[2] or 0)
        if index >= count:
            raise EngineError(f"device {device!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device(device)


def resolve_precision(precision: str, backend: Backend, device: torch.device) -> str:
    """``precision``, or for ``auto`` the first of AUTO_PRECISION that ``backend`` and this machine run."""
    return backend.auto_precision(device.type) if precision == "auto" else precision


def resolve_backend(backend: str, device: torch.device, precision: str = "auto") -> Backend:
    """The registry entry that runs ``precision`` on ``device``; ``auto`` picks the first of AUTO_ORDER that can."""
    if backend not in BACKENDS:
        raise EngineError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if precision not in PRECISIONS:
        raise EngineError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if backend == "auto":
        for name in AUTO_ORDER[device.type]:
            if REGISTRY[name].auto_candidate(device.type, precision):
                return REGISTRY[name]
        runs_it = [name for name in AUTO_ORDER[device.type] if precision in REGISTRY[name].precisions[device.type]]
        backend = (runs_it or AUTO_ORDER[device.type])[-1]  # none can: let the last that might name why below
    chosen = REGISTRY[backend]
    if device.type not in chosen.precisions:
        places = " and ".join(chosen.precisions)
        raise EngineError(f"backend {backend!r} runs on {places} only; use another device or backend")
    if precision != "auto" and precision not in chosen.precisions[device.type]:
        raise EngineError(
            f"precision {precision!r} {where_precision_runs(precision)}, not with {backend} on "
            f"{device.type}; {backend} there runs {' and '.join(chosen.precisions[device.type])}"
        )
    chosen.require_installed()
    return chosen


def where_precision_runs(precision: str) -> str:
    """E.g. "runs with torch on cuda": the backends and devices of the registry that run ``precision``."""
    places = [
        f"{name} on {device}"
        for name, entry in REGISTRY.items()
        for device, runs in entry.precisions.items()
        if precision in runs
    ]
    return f"runs with {' or '.join(places)} only"
