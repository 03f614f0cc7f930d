"""Inference backends: a registry of runtimes, each a runner factory and the devices and precisions it serves.

A runner takes a normalised batch and returns uint8 class ids at the same
size: the network and its argmax always run together (``LabelsNet``), in
PyTorch or exported to ONNX, so only one byte per pixel ever leaves it.
Host runners take numpy batches (N x H x W x 3 for ``layout`` "nhwc",
N x 3 x H x W for "nchw"); a device runner takes and returns tensors on its
GPU. Measured on the 2-core CPU: ONNX Runtime with the argmax inside the
graph is faster than returning logits and taking the argmax in numpy (see
benchmarks/cpu.md).

Adding a runtime is one runner class and one ``REGISTRY`` line.
"""

import importlib.util
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .options import DEVICES, PRECISIONS, EngineError

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


def onnx_bytes(net: nn.Module, input_size, with_argmax: bool = True) -> bytes:
    """Exports an fp32 CPU network at a fixed batch-1 input size; the graph outputs labels (or logits)."""
    height, width = input_size
    wrapper = (LabelsNet(net) if with_argmax else LogitsNet(net)).eval()
    sample = torch.zeros(1, 3, height, width)
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
            output_names=["labels" if with_argmax else "logits"],
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
    """PyTorch on a GPU (or eagerly on the CPU, for tests): an N x 3 x H x W tensor there in, labels there out."""

    layout = "nchw"
    on_device = True

    def __init__(self, net: nn.Module, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        self.net = LabelsNet(net).to(device, dtype, memory_format=torch.channels_last).eval()

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.net(batch)


class OnnxRuntimeRunner:
    """An exported ``LabelsNet`` in ONNX Runtime on the CPU; the batch is 1 x 3 x H x W float32."""

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


@dataclass(frozen=True)
class Backend:
    name: str
    precisions: dict  # device type -> precisions it runs there
    make_runner: Callable  # (network, RunnerSetup) -> runner
    module: str | None = None  # the Python package it needs; None: always there

    def installed(self) -> bool:
        return self.module is None or importlib.util.find_spec(self.module) is not None


def _torch_runner(net, setup: RunnerSetup):
    if setup.device.type == "cpu":
        return TorchRunner(net)
    return TorchDeviceRunner(net, setup.device, torch.float16 if setup.precision == "fp16" else torch.float32)


def _onnxruntime_runner(net, setup: RunnerSetup):
    return OnnxRuntimeRunner(onnx_bytes(net, setup.input_size), setup.num_threads or torch.get_num_threads())


REGISTRY = {
    "torch": Backend("torch", {"cpu": ("fp32",), "cuda": ("fp32", "fp16")}, _torch_runner),
    "onnxruntime": Backend("onnxruntime", {"cpu": ("fp32",)}, _onnxruntime_runner, module="onnxruntime"),
}
BACKENDS = ("auto", *REGISTRY)
# What "auto" tries on each device, fastest first (benchmarks/cpu.md): the first installed one that runs the
# precision asked for.
AUTO_ORDER = {"cpu": ("onnxruntime", "torch"), "cuda": ("torch",)}


def resolve_device(device: str, backend: str = "auto") -> torch.device:
    """The device to run on; ``auto`` is CUDA when present and ``backend`` runs there."""
    if device not in DEVICES:
        raise EngineError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "auto":
        runs_on_cuda = backend == "auto" or "cuda" in REGISTRY.get(backend, REGISTRY["torch"]).precisions
        return torch.device("cuda" if torch.cuda.is_available() and runs_on_cuda else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EngineError("device 'cuda' requested but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(device)


def resolve_backend(backend: str, device: torch.device, precision: str = "fp32") -> Backend:
    """The registry entry that runs ``precision`` on ``device``; ``auto`` picks the first of AUTO_ORDER that can."""
    if backend not in BACKENDS:
        raise EngineError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if precision not in PRECISIONS:
        raise EngineError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if backend == "auto":
        for name in AUTO_ORDER[device.type]:
            if REGISTRY[name].installed() and precision in REGISTRY[name].precisions.get(device.type, ()):
                return REGISTRY[name]
        backend = AUTO_ORDER[device.type][-1]  # none can: let the last one name why below
    chosen = REGISTRY[backend]
    if device.type not in chosen.precisions:
        places = " and ".join(chosen.precisions)
        raise EngineError(f"backend {backend!r} runs on {places} only; use another device or backend")
    if precision not in chosen.precisions[device.type]:
        needs = "needs a CUDA device" if precision == "fp16" else f"is not supported by {backend} on {device.type}"
        raise EngineError(f"precision {precision!r} {needs}; use one of {chosen.precisions[device.type]}")
    if not chosen.installed():
        raise EngineError(f"backend {backend!r} needs the Python package {chosen.module!r}, which is not installed")
    return chosen
