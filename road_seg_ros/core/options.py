"""Engine options: the one dataclass every front end builds an engine from, with the node's defaults.

The node's parameters, ``road-seg-eval``, ``road-seg-replay --offline`` and
``road-seg-bench`` all fill an ``EngineOptions``; the choices for device and
precision live here, those for the backend (and which precisions each runs,
and what "auto" picks) in the backend registry.
"""

import re
from dataclasses import dataclass, replace
from pathlib import Path

from .resources import shipped_or_default

DEVICES = ("auto", "cuda", "cpu")  # and cuda:N, one GPU by its index
CUDA_INDEX = re.compile(r"cuda:(\d{1,3})")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
DEFAULT_CHECKPOINT_NAME = "student.safetensors"
# Node parameter -> EngineOptions field, for the settings that describe the engine.
NODE_PARAMETERS = {
    "model_path": "checkpoint",
    "device": "device",
    "precision": "precision",
    "backend": "backend",
    "num_threads": "num_threads",
    "cuda_compile": "cuda_compile",
    "keep_aspect": "keep_aspect",
}


def device_problem(device) -> str | None:
    """Why ``device`` names no device (None when it names one): auto, cuda, cpu or cuda:N."""
    if device in DEVICES or (isinstance(device, str) and CUDA_INDEX.fullmatch(device)):
        return None
    return f"device must be one of {', '.join(DEVICES)} or cuda:N (a GPU by its index), got {device!r}"


class EngineError(RuntimeError):
    """The engine cannot start as asked; the message is one line naming why."""


@dataclass(frozen=True)
class EngineOptions:
    checkpoint: str = ""  # .safetensors to run; empty: the shipped student
    device: str = "auto"  # auto picks CUDA when present (and the backend runs there)
    # auto: the fastest precision whose test mIoU stays within 0.5 of fp32 (see backends.AUTO_PRECISION)
    precision: str = "auto"
    # auto: the fastest runtime installed for the device (see backends.AUTO_ORDER)
    backend: str = "auto"
    num_threads: int = 0  # CPU threads for inference; 0: the runtime's default
    input_size: tuple | None = None  # (height, width) the model runs at; None: the checkpoint's
    # Each frame runs at an input size of its own aspect ratio: input_size's height, the width that keeps the frame's
    # aspect (preprocess.input_size_for), so a 16:9 camera is not squeezed into the model's 4:3. Frames of
    # input_size's own aspect run at input_size either way. False: every frame stretched to input_size.
    keep_aspect: bool = True
    cuda_graphs: bool = True
    # torch.compile the network where PyTorch runs it on CUDA (ignored elsewhere), its depthwise 3x1 / 1x3
    # convolutions as shifted sums (models.shift_depthwise); the first frame of each batch size waits for the
    # compiler (about 18 s). End to end, fp16, on an H100 in one run (benchmarks/gpu_compiled.md): 1968 against
    # 574 FPS at 360x480 (3.43x), 944 against 207 at 720x960 (4.56x); labels 99.97% the same as uncompiled.
    cuda_compile: bool = True

    def checkpoint_path(self) -> Path:
        return Path(self.checkpoint) if self.checkpoint else default_checkpoint()

    def with_changes(self, **changes) -> "EngineOptions":
        """A copy with the given fields changed; None values are ignored (an unset CLI flag)."""
        return replace(self, **{name: value for name, value in changes.items() if value is not None})

    @classmethod
    def from_parameters(cls, values: dict) -> "EngineOptions":
        """Options from the node's parameter values (model_path, device, ...); other keys are ignored."""
        return cls().with_changes(**{field: values.get(name) for name, field in NODE_PARAMETERS.items()})


DEFAULTS = EngineOptions()
THREAD_LIMITS = (0, 256)  # num_threads: 0 (the runtime's default) up to this many


def default_checkpoint() -> Path:
    """The shipped student: models/ in a source checkout, else the installed package share."""
    return shipped_or_default("models", DEFAULT_CHECKPOINT_NAME)
