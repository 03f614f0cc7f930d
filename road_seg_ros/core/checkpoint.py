"""Model checkpoints: weights in safetensors, everything needed to use them in its metadata.

A checkpoint is one ``.safetensors`` file. Loading it never unpickles
anything; the metadata (JSON under the key ``road_seg``) holds the
architecture, class names and colours, normalisation and training input
size, so the engine needs nothing else to run it.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..models import build_model, resolve_architecture
from . import labels

FORMAT_VERSION = 1
METADATA_KEY = "road_seg"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message is one line naming why."""


@dataclass
class ModelInfo:
    arch: dict
    class_names: list = field(default_factory=lambda: list(labels.CLASS_NAMES))
    class_colors: list = field(default_factory=lambda: [list(c) for c in labels.CLASS_COLORS])
    mean: list = field(default_factory=lambda: list(labels.MEAN))
    std: list = field(default_factory=lambda: list(labels.STD))
    input_size: list = field(default_factory=lambda: [360, 480])  # height, width
    description: str = ""
    training: dict = field(default_factory=dict)  # recipe and results, for the model card

    def to_json(self) -> str:
        return json.dumps({"format_version": FORMAT_VERSION, **self.__dict__})

    @classmethod
    def from_json(cls, text: str) -> "ModelInfo":
        values = json.loads(text)
        version = values.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise CheckpointError(f"unsupported checkpoint format version {version!r} (expected {FORMAT_VERSION})")
        return cls(**values)


def save_checkpoint(path, model: torch.nn.Module, info: ModelInfo, half: bool = False) -> Path:
    """Writes the model's weights and ``info``; ``half`` stores float tensors as fp16."""
    info.arch = resolve_architecture(info.arch)
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[name] = tensor
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata={METADATA_KEY: info.to_json()})
    tmp.replace(path)  # never leave a half-written checkpoint under the real name
    return path


def read_info(path) -> ModelInfo:
    """Reads only a checkpoint's metadata."""
    return _open(path)[0]


def load_checkpoint(path, device="cpu") -> tuple[torch.nn.Module, ModelInfo]:
    """Builds the network a checkpoint describes and loads its weights (fp32, eval mode)."""
    info, state = _open(path, with_tensors=True)
    try:
        model = build_model(info.arch)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: bad architecture in metadata: {error}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match architecture {info.arch.get('name')}: "
            f"{len(missing)} missing (e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]})"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{path}: weight {name} has shape {tuple(tensor.shape)}, "
                f"architecture needs {tuple(expected[name].shape)}"
            )
        state[name] = tensor.to(expected[name].dtype)
    model.load_state_dict(state)
    return model.to(device).eval(), info


def _open(path, with_tensors=False):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if METADATA_KEY not in metadata:
                raise CheckpointError(f"{path}: not a road_seg checkpoint (no '{METADATA_KEY}' metadata)")
            info = ModelInfo.from_json(metadata[METADATA_KEY])
            state = {name: handle.get_tensor(name) for name in handle.keys()} if with_tensors else None
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: corrupt or not a safetensors file ({error})") from None
    except TypeError as error:
        raise CheckpointError(f"{path}: bad metadata ({error})") from None
    return info, state
