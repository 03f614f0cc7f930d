"""Inference backends: a normalised batch in, uint8 class ids at the same size out.

The network and its argmax always run together (``LabelsNet``), in PyTorch
or exported to ONNX, so only one byte per pixel ever leaves the backend.
Measured on the 2-core CPU: ONNX Runtime with the argmax inside the graph is
faster than returning logits and taking the argmax in numpy (see
benchmarks/cpu.md).
"""

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

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


class TorchRunner:
    """Runs ``LabelsNet`` on a CPU batch given as an H x W x 3 float array (a channels_last view, no copy)."""

    channels_last = True

    def __init__(self, net: nn.Module):
        self.net = LabelsNet(net).eval()

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(batch).permute(2, 0, 1).unsqueeze(0)
        return self.net(tensor)[0].numpy()


class OnnxRuntimeRunner:
    """Runs an exported ``LabelsNet`` with ONNX Runtime on the CPU; the batch is 1 x 3 x H x W float32."""

    channels_last = False

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
        """The graph's first output for a 1 x 3 x H x W batch (labels or logits)."""
        return self.session.run(None, {self._input: batch})[0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch)[0]
